"""Training steering codes on the tiny model: YaPO learns a synthetic preference; CLI; NaN guard."""

from __future__ import annotations

import pytest
from helpers import make_sae, synthetic_pairs

from saesteer.cli import main
from saesteer.steer.codes import DenseVector, LatentCode
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.io import load_code
from saesteer.steer.pairs import write_pairs
from saesteer.steer.train import fit_steering


def test_yapo_learns_a_synthetic_preference(tiny_model):
    model, tokenizer = tiny_model
    config = TrainSteerConfig(
        pairs="synthetic",
        method="yapo",
        support_by="effect",  # dense phase, then refit (the default mean-diff start has none)
        epochs=3,
        lr=5e-2,
        beta=1.0,
        l1=0.5,
        top_k=16,
        progress=False,
    )
    result = fit_steering(
        model,
        tokenizer,
        synthetic_pairs(24, 0),
        config,
        sae=make_sae("relu"),
        val_pairs=synthetic_pairs(16, 1),
    )
    code = result.code
    assert isinstance(code, LatentCode) and 0 < code.support_size <= 16
    assert code.meta["val_accuracy"] >= 0.9, code.meta  # chance is 0.5
    assert code.meta["val_accuracy_reversed"] <= 0.1  # α = −1 steers the other way
    phases = [row["phase"] for row in result.history]  # 3 dense epochs, then 2 on the support
    assert phases == ["yapo dense"] * 3 + ["yapo refit"] * 2 and code.meta["data_checksum"]
    # epoch times are recorded even without a progress bar (they read 0 when tqdm was disabled)
    assert 0 < result.history[0]["seconds"] < result.history[-1]["seconds"]


def test_bipo_and_mean_diff_and_cli(tiny_model, tmp_path):
    model, tokenizer = tiny_model
    train, val = synthetic_pairs(16, 0), synthetic_pairs(8, 1)
    codes = {}
    for method in ("bipo", "mean-diff"):
        config = TrainSteerConfig(
            pairs="x",
            method=method,
            epochs=2,
            lr=5e-2,
            beta=1.0,
            hook_name="blocks.0.hook_resid_pre",
            progress=False,
        )
        codes[method] = fit_steering(model, tokenizer, train, config, val_pairs=val).code
        assert isinstance(codes[method], DenseVector) and codes[method].vector.norm() > 0
    assert codes["bipo"].meta["val_accuracy"] >= 0.9
    with pytest.raises(ValueError, match="pass an SAE"):
        fit_steering(model, tokenizer, train, TrainSteerConfig(pairs="x"), val_pairs=val)
    write_pairs(train + val, tmp_path / "pairs.jsonl")
    out = tmp_path / "code"
    rc = main(
        [
            "train-steer",
            "--model",
            "tiny-test",
            "--pairs",
            str(tmp_path / "pairs.jsonl"),
            "--method",
            "bipo",
            "--hook-name",
            "blocks.1.hook_resid_post",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0 and load_code(out).meta["n_train_pairs"] == 19


def test_non_finite_loss_stops_with_a_clear_error(tiny_model):
    model, tokenizer = tiny_model
    config = TrainSteerConfig(
        pairs="x",
        method="bipo",
        lr=float("inf"),
        epochs=2,
        progress=False,
        hook_name="blocks.0.hook_resid_post",
    )
    with pytest.raises(FloatingPointError, match="lower --lr"):
        fit_steering(model, tokenizer, synthetic_pairs(8, 0), config)
    assert all(p.requires_grad for p in model.parameters())  # the model is handed back as it was


def test_learning_rate_is_in_activation_units_and_effect_size_is_recorded(tiny_model):
    """AdamW runs with lr·c (c: a typical active latent for yapo, ‖h‖/√d for bipo), so the code can
    grow to the activations' scale; the edit's size ‖Δh‖ (and ‖Δh‖/‖h‖) at α = 1 is recorded."""
    import math

    import torch

    from saesteer.steer.batching import tokenize_pairs
    from saesteer.steer.train import _cache_split

    model, tokenizer = tiny_model
    train, val = synthetic_pairs(8, 0), synthetic_pairs(4, 1)
    sae = make_sae("relu")
    split = _cache_split(model, tokenize_pairs(tokenizer, train), 1, "cpu")
    h = split.resid[split.tokens.target_mask > 0]
    z = sae.encode(h).detach()
    expected = {"yapo": z[z > 0].mean().item(), "bipo": (h.norm(dim=-1) / math.sqrt(64)).mean()}
    for method in ("yapo", "bipo"):
        config = TrainSteerConfig(
            pairs="x", method=method, yapo_mode="reference", epochs=1, lr=0.1, progress=False
        )
        code = fit_steering(model, tokenizer, train, config, sae=sae, val_pairs=val).code
        meta = code.meta
        assert meta["activation_scale"] == pytest.approx(float(expected[method]), rel=1e-4)
        assert meta["effect_norm"] > 0
        vh = _cache_split(model, tokenize_pairs(tokenizer, val), 1, "cpu")
        hv = vh.resid[vh.tokens.target_mask > 0]
        assert meta["effect_ratio"] == pytest.approx(
            meta["effect_norm"] / hv.norm(dim=-1).mean().item(), rel=1e-4
        )
        values = code.values if method == "yapo" else code.vector
        # 2 AdamW steps (1 warm-up step, then the cosine's first factor 1) move a coordinate by
        # at most ≈ lr·c each
        assert 0.9 * 0.1 * meta["activation_scale"] <= values.abs().max()
        assert values.abs().max() <= 2.1 * 0.1 * meta["activation_scale"]
        assert torch.isfinite(values).all()
