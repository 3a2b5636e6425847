"""sae-lens interoperability in both directions: folders and in-memory objects, same encode/decode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import (
    interop_sae,
    one_thread,  # noqa: F401  (autouse: one torch thread)
)

from saesteer.sae.interop import from_saelens, to_saelens
from saesteer.sae.io import load_sae, save_sae
from saesteer.sae.model import SAE

ARCHS = ["relu", "topk", "batchtopk", "jumprelu"]


@pytest.fixture(scope="module")
def sae_lens():
    return pytest.importorskip("sae_lens")


def _same(ours: SAE, theirs, x: torch.Tensor) -> None:
    with torch.no_grad():
        z_ours, z_theirs = ours.encode(x), theirs.encode(x)
        assert (z_ours > 0).sum() > 0
        assert torch.allclose(z_ours, z_theirs, atol=1e-5)
        assert torch.allclose(ours.decode(z_ours), theirs.decode(z_theirs), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_saesteer_folder_loads_in_sae_lens(arch: str, sae_lens, tmp_path: Path) -> None:
    sae = interop_sae(arch)
    save_sae(sae, tmp_path / arch, log10_density=torch.full((64,), -2.0))
    theirs = sae_lens.SAE.load_from_disk(tmp_path / arch)
    expected = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}
    assert theirs.cfg.architecture() == expected[arch]
    assert theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    _same(sae, theirs, torch.randn(50, 24))
    ours_again = load_sae(tmp_path / arch)
    assert ours_again.cfg.arch == arch
    _same(sae, ours_again, torch.randn(50, 24))


@pytest.mark.parametrize("arch", ARCHS)
def test_sae_lens_folder_and_object_load_in_saesteer(arch: str, sae_lens, tmp_path: Path) -> None:
    theirs = to_saelens(interop_sae(arch, seed=3))
    theirs.save_model(tmp_path / arch)
    x = torch.randn(50, 24)
    from_folder = load_sae(tmp_path / arch)
    _same(from_folder, theirs, x)
    _same(from_saelens(theirs), theirs, x)


def test_sae_lens_conventions_are_folded(sae_lens) -> None:
    """apply_b_dec_to_input=False and rescale_acts_by_decoder_norm=True give the same z and x̂."""
    torch.manual_seed(5)
    cfg = sae_lens.TopKSAEConfig(
        d_in=24, d_sae=64, k=6, apply_b_dec_to_input=False, rescale_acts_by_decoder_norm=True
    )
    theirs = sae_lens.TopKSAE(cfg)
    with torch.no_grad():
        theirs.W_dec.mul_(torch.rand(64, 1) + 0.5)
        theirs.b_enc.normal_(0, 0.2)
        theirs.b_dec.normal_(0, 0.5)
    ours = from_saelens(theirs)
    x = torch.randn(50, 24)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_sae_lens_batchtopk_training_sae_converts_to_its_inference_form(sae_lens) -> None:
    torch.manual_seed(7)
    cfg = sae_lens.BatchTopKTrainingSAEConfig(
        d_in=24, d_sae=64, k=6, rescale_acts_by_decoder_norm=False
    )
    theirs = sae_lens.BatchTopKTrainingSAE(cfg)
    with torch.no_grad():
        theirs.b_enc.normal_(0, 0.2)
        theirs.topk_threshold.fill_(0.3)
    ours = from_saelens(theirs)
    assert ours.cfg.arch == "batchtopk" and torch.allclose(ours.threshold, torch.full((64,), 0.3))
    x = torch.randn(50, 24)
    pre = (x - theirs.b_dec) @ theirs.W_enc + theirs.b_enc
    expected = torch.relu(pre) * (pre > 0.3)
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), expected, atol=1e-5)
