"""Steering codes: the support-restricted edit equals the full formula; save/load; mismatch errors."""

from __future__ import annotations

import pytest
import torch
from helpers import make_sae, sparse_code

from saesteer.steer.codes import DenseVector, LatentCode, feature_code
from saesteer.steer.io import CodeMismatchError, check_model, load_code, save_code

HOOK = "blocks.0.hook_resid_post"


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("alpha", [1.0, -2.5, 0.3])
def test_support_restricted_equals_full_formula(arch, alpha):
    sae = make_sae(arch)
    v = sparse_code()
    h = torch.randn(3, 7, 64)
    code = LatentCode(sae, v, method="yapo")
    assert code.support_size == 12
    with torch.no_grad():
        z = sae.encode(h)
        full = sae.decode(torch.relu(z + alpha * v)) + (h - sae.decode(z))
    torch.testing.assert_close(code.apply(h, alpha), full, atol=1e-5, rtol=1e-5)
    assert (code.apply(h, alpha) - h).abs().max() > 1e-3  # not a silent no-op


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "topk"])
def test_alpha_zero_is_exactly_identity(arch):
    h = torch.randn(4, 5, 64)
    for code in (
        LatentCode(make_sae(arch), sparse_code(), method="yapo"),
        DenseVector(torch.randn(64), HOOK, "tiny-test", "bipo"),
    ):
        assert torch.equal(code.apply(h, 0.0), h)


def test_feature_clamp_sets_latents_and_add_matches_yapo():
    sae = make_sae("relu")
    h = torch.randn(10, 64)
    clamp = feature_code(sae, {3: 5.0, 40: 0.0}, mode="clamp")
    with torch.no_grad():
        z = sae.encode(h)
        z_clamped = z.clone()
        z_clamped[:, 3], z_clamped[:, 40] = 5.0, 0.0
        expected = sae.decode(z_clamped) + (h - sae.decode(z))
    torch.testing.assert_close(clamp.apply(h, 1.0), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(clamp.apply(h, 0.0), h)
    add = feature_code(sae, {7: 3.0})
    v = torch.zeros(256)
    v[7] = 3.0
    torch.testing.assert_close(add.apply(h, 2.0), LatentCode(sae, v, "yapo").apply(h, 2.0))
    with pytest.raises(ValueError, match="outside"):
        feature_code(sae, {999: 1.0})


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "topk"])
def test_save_load_round_trip_without_and_with_sae(tmp_path, arch):
    sae = make_sae(arch)
    code = LatentCode(sae, sparse_code(), method="yapo", meta={"data_checksum": "abc"})
    save_code(code, tmp_path / "c")
    h = torch.randn(6, 64)
    for loaded in (load_code(tmp_path / "c"), load_code(tmp_path / "c", sae=sae)):
        assert loaded.meta["data_checksum"] == "abc" and loaded.support_size == 12
        torch.testing.assert_close(loaded.apply(h, 1.5), code.apply(h, 1.5))
    dense = DenseVector(torch.randn(64), HOOK, "tiny-test", "mean-diff")
    save_code(dense, tmp_path / "d")
    assert torch.equal(load_code(tmp_path / "d").vector, dense.vector)


def test_code_for_another_sae_layer_or_model_is_refused(tmp_path, tiny_model):
    model, _ = tiny_model
    code = LatentCode(make_sae("relu", seed=0), sparse_code(), method="yapo")
    save_code(code, tmp_path / "c")
    with pytest.raises(CodeMismatchError, match="checksum"):
        load_code(tmp_path / "c", sae=make_sae("relu", seed=5))
    with pytest.raises(CodeMismatchError, match=r"blocks\.1\.hook_resid_post"):
        load_code(tmp_path / "c", sae=make_sae("relu", seed=0, hook="blocks.1.hook_resid_post"))
    check_model(code, model)
    wide = DenseVector(torch.randn(576), HOOK, "smollm2-135m-instruct", "bipo")
    with pytest.raises(CodeMismatchError, match="made for model"):
        check_model(wide, model)
    deep = DenseVector(torch.randn(64), "blocks.7.hook_resid_post", "tiny-test", "bipo")
    with pytest.raises(CodeMismatchError, match="only 2 layers"):
        check_model(deep, model)
    with pytest.raises(ValueError, match="residual-stream hook"):
        DenseVector(torch.randn(64), "blocks.0.attn.hook_z", "tiny-test", "bipo")
    with pytest.raises(FileNotFoundError, match="not a steering-code folder"):
        load_code(tmp_path)


def test_topk_latent_outside_the_tokens_top_k_still_adds_its_decoder_row():
    """z_i = 0 off the token's top-k, so relu(z_i + α·v_i) − z_i = α·v_i: the k-th value never clips."""
    sae = make_sae("topk")
    h = torch.randn(5, 64)
    with torch.no_grad():
        z = sae.encode(h)
    off = int((z == 0).all(0).nonzero()[0])  # a latent in no token's top-k
    v = torch.zeros(256)
    v[off] = 3.0
    code = LatentCode(sae, v, method="yapo")
    expected = h + 2.0 * 3.0 * sae.W_dec[off].detach()
    torch.testing.assert_close(code.apply(h, 2.0), expected, atol=1e-5, rtol=1e-5)
