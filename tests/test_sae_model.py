"""SAE core: config errors, weight folds, sparse vs dense training paths, JumpReLU STE, checksum."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    sparse_data,
)

from saesteer.sae.io import sae_checksum
from saesteer.sae.model import SAE, SAEConfig
from saesteer.sae.sparse import (
    dense_topk_autoencode,
    sparse_topk_autoencode,
    triton_topk_autoencode,
)
from saesteer.sae.training import LossSettings, TrainingSAE, _JumpReLU, _Step


def _sae(arch: str, d_in: int = 16, d_sae: int = 48, k: int | None = 4, seed: int = 0) -> SAE:
    torch.manual_seed(seed)
    sae = SAE(
        SAEConfig(d_in=d_in, d_sae=d_sae, arch=arch, k=k if arch in ("topk", "batchtopk") else None)
    )
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
        sae.threshold.fill_(0.05)
    return sae


def test_k_larger_than_d_sae_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="k ≤ d_sae"):
        SAEConfig(d_in=8, d_sae=16, arch="topk", k=32)
    with pytest.raises(ValueError, match="Unknown SAE architecture"):
        SAEConfig(d_in=8, d_sae=16, arch="gated")


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_folds_leave_reconstruction_unchanged(arch: str) -> None:
    sae = _sae(arch)
    x = torch.randn(32, 16)
    scale = 2.5
    with torch.no_grad():
        if (
            arch != "topk"
        ):  # rescaling latents reorders TopK's choice: only unit-norm rows fold there
            sae.W_dec.mul_(torch.rand(48, 1) + 0.5)  # non-unit rows, as a relu SAE trains them
        expected = sae(x * scale) / scale
        sae.fold_decoder_norms()
        sae.fold_input_scale(scale)
    assert torch.allclose(sae(x), expected, atol=1e-5)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(48), atol=1e-5)


def _interpreter_or_gpu() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()


@pytest.mark.parametrize(
    "fast",
    [
        sparse_topk_autoencode,
        pytest.param(
            triton_topk_autoencode,
            marks=pytest.mark.skipif(
                not _interpreter_or_gpu(), reason="Triton runs on a GPU or under TRITON_INTERPRET=1"
            ),
        ),
    ],
)
def test_sparse_topk_matches_dense_forward_and_gradients(fast) -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 16)
    grads = []
    for fn in (fast, dense_topk_autoencode):
        sae = _sae("topk")
        out = fn(x - sae.b_dec, sae.W_enc, sae.b_enc, sae.W_dec, 4)
        loss = (out.recon + sae.b_dec - x).pow(2).sum()
        loss.backward()
        grads.append((out.recon.detach(), [p.grad.clone() for p in sae.parameters()]))
    (r1, g1), (r2, g2) = grads
    assert torch.allclose(r1, r2, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_training_forward_sparse_equals_dense(arch: str) -> None:
    x = sparse_data(n=128, d=16)
    results = []
    for sparse in (True, False):
        sae = _sae(arch)
        module = TrainingSAE(sae, LossSettings(sparse=sparse, aux_k=8))
        dead = torch.zeros(48, dtype=torch.bool)
        dead[:10] = True
        out = module(x, dead)
        out.loss.backward()
        results.append((out.loss.detach(), out.recon, [p.grad.clone() for p in sae.parameters()]))
    (l1, r1, g1), (l2, r2, g2) = results
    assert torch.allclose(l1, l2, rtol=1e-5)
    assert torch.allclose(r1, r2, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_batchtopk_keeps_k_per_row_on_average_and_learns_threshold() -> None:
    sae = _sae("batchtopk")
    sae.threshold.zero_()
    module = TrainingSAE(sae, LossSettings(threshold_lr=0.5))
    out = module(sparse_data(n=64, d=16), torch.zeros(48, dtype=torch.bool))
    assert float(out.l0) == pytest.approx(4.0)
    assert float(sae.threshold[0]) > 0 and torch.all(sae.threshold == sae.threshold[0])


def test_jumprelu_straight_through_gradients() -> None:
    """∂H(pre − θ)/∂θ = −(1/ε)·1[|pre − θ| < ε/2] and ∂z/∂θ = −(θ/ε)·1[…]; ∂z/∂pre = H(pre − θ)."""
    eps = 0.5
    pre = torch.randn(40, 12, requires_grad=True)
    theta = torch.full((12,), 0.2, requires_grad=True)
    band = ((pre - theta).abs() < eps / 2).float().detach()
    (g_step,) = torch.autograd.grad(_Step.apply(pre, theta, eps).sum(), theta)
    assert torch.allclose(g_step, -(1 / eps) * band.sum(0))
    g_pre, g_theta = torch.autograd.grad(_JumpReLU.apply(pre, theta, eps).sum(), (pre, theta))
    assert torch.allclose(g_theta, -(0.2 / eps) * band.sum(0), atol=1e-6)
    assert torch.equal(g_pre, (pre > theta).float())


def test_checksum_is_stable_and_sensitive() -> None:
    a, b = _sae("topk"), _sae("topk")
    assert sae_checksum(a) == sae_checksum(b) and len(sae_checksum(a)) == 64
    with torch.no_grad():
        b.W_enc[0, 0] += 1e-6
    assert sae_checksum(a) != sae_checksum(b)


def test_auxk_trains_only_through_dead_latents() -> None:
    """Latents outside every row's TopK get encoder gradient only from the AuxK loss."""
    x = sparse_data(n=64, d=16)
    sae = _sae("topk", k=2)
    with torch.no_grad():
        chosen = sae.pre_acts(x).topk(2, dim=-1).indices.unique()
    dead = torch.ones(48, dtype=torch.bool)
    dead[chosen] = False
    grads = {}
    for coefficient in (0.0, 1.0):
        sae.zero_grad()
        out = TrainingSAE(sae, LossSettings(aux_coefficient=coefficient, aux_k=4))(x, dead)
        out.loss.backward()
        grads[coefficient] = sae.W_enc.grad[:, dead].abs().sum()
        if coefficient:
            assert float(out.parts["aux"]) > 0
    assert float(grads[0.0]) == 0 and float(grads[1.0]) > 0
