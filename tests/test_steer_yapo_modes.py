"""YaPO's modes: the step rules against hand computations, support selection, and each mode on the
tiny model (sparse modes return ≤ k latents; the reference recipe learns the preference)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import make_sae, synthetic_pairs

from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.optimise import (
    Curves,
    Phase,
    annealed_cap,
    keep_top_,
    lr_factor,
    optimise,
    ramp,
    soft_threshold_,
)
from saesteer.steer.sparse_support import latent_effect, select_support, sparse_fit
from saesteer.steer.train import fit_steering


def test_schedule_and_projections_by_hand():
    # warm-up W = 2 of T = 10 steps, then cosine over the remaining 8
    assert [lr_factor(t, 10, 2) for t in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_factor(6, 10, 2) == pytest.approx(0.5)  # cos(π · 4/8) = 0
    assert lr_factor(9, 10, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    # annealed cap: 1024 → 16 geometrically over the first half of 100 steps
    assert annealed_cap(0, 100, 1024, 16, 0.5) == 1024
    assert annealed_cap(25, 100, 1024, 16, 0.5) == 128  # √(1024 · 16)
    assert annealed_cap(50, 100, 1024, 16, 0.5) == annealed_cap(99, 100, 1024, 16, 0.5) == 16
    assert ramp(0, 100, 0.5) == 0.0 and ramp(25, 100, 0.5) == 0.5 and ramp(80, 100, 0.5) == 1.0
    v = torch.tensor([0.5, -2.0, 0.1, 3.0, -0.3])
    soft_threshold_(v, 0.4)
    assert torch.allclose(v, torch.tensor([0.1, -1.6, 0.0, 2.6, 0.0]))
    keep_top_(v, 2)
    assert torch.allclose(v, torch.tensor([0.0, -1.6, 0.0, 2.6, 0.0]))


def _linear_problem(v: torch.Tensor, n_pairs: int = 3):
    """log π_{d·v}(y_row) = d · (w_row · v): a preference problem whose gradient is easy to write."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2 * n_pairs, v.shape[0], generator=g)
    return dict(
        logprobs=lambda rows, d: d * (w[rows] @ v),
        logp_ref=torch.zeros(2 * n_pairs),
        rows_of=lambda pairs: torch.stack([2 * pairs, 2 * pairs + 1], 1).reshape(-1),
        n_pairs=n_pairs,
        batch_pairs=n_pairs,
        grad_accum=1,
        beta=0.5,
        val_accuracy=None,
        progress=False,
    ), w


@pytest.mark.parametrize("mode", ["reference", "masked", "l1"])
def test_one_step_equals_the_hand_computed_update(mode):
    """First AdamW step from v = 0 is −lr·f(0)·g/|g| per coordinate (bias-corrected Adam), with
    the gradient of −log σ(d·β·(r_w − r_l)) written out by hand; masked coordinates never move and
    the L1 ramp is 0 at step 0, so its first step is the plain one."""
    v = torch.zeros(6, requires_grad=True)
    problem, w = _linear_problem(v)
    mask = torch.tensor([True, False, True, True, False, True]) if mode == "masked" else None
    project = (
        (lambda u, t, total, lr: soft_threshold_(u, lr * 10.0 * ramp(t, total, 0.5)))
        if mode == "l1"
        else None
    )
    phase = Phase(mode, 1, lr=0.2, warmup_fraction=0.5, mask=mask, project=project)
    optimise(v, phase, seed=3, curves=Curves(), **problem)
    # by hand at v = 0, for either direction d: the margin m = d·(w_w − w_l)·v is 0 and
    # ∂/∂v −log σ(d·β·m) = −σ(0) · d·β · d·(w_w − w_l) = −½ · β · (w_w − w_l), β = 0.5
    grad = -0.5 * 0.5 * (w[0::2] - w[1::2]).mean(0)
    warm = lr_factor(0, 1, 1)  # W = ⌈0.5 · 1⌉ = 1
    expected = -0.2 * warm * torch.sign(grad)
    if mask is not None:
        expected = expected * mask
    assert torch.allclose(v.detach(), expected, atol=1e-5), v.detach() - expected


def test_support_rules_by_hand():
    sae = make_sae("relu").requires_grad_(False)
    h = torch.randn(40, 64, generator=torch.Generator().manual_seed(1))
    v = torch.zeros(256)
    v[[3, 10, 50, 200]] = torch.tensor([5.0, -0.1, 2.0, -4.0])
    assert select_support("magnitude", 2, sae, h, v).tolist() == [3, 200]
    z = sae.encode(h)
    by_hand = 0.5 * ((torch.relu(z + v) - z).abs().mean(0) + (torch.relu(z - v) - z).abs().mean(0))
    assert torch.allclose(latent_effect(sae, h, v), by_hand * sae.W_dec.norm(dim=-1))
    top2 = sorted(by_hand[[3, 10, 50, 200]].topk(2).indices.tolist())
    assert select_support("effect", 2, sae, h, v).tolist() == [[3, 10, 50, 200][i] for i in top2]
    assert select_support("omp", 10, sae, h, v).tolist() == [3, 10, 50, 200]  # only v ≠ 0
    with pytest.raises(ValueError, match="support rule"):
        select_support("largest", 2, sae, h, v)


def test_omp_recovers_an_exactly_sparse_direction():
    atoms = torch.randn(50, 16, generator=torch.Generator().manual_seed(2))
    atoms = atoms / atoms.norm(dim=-1, keepdim=True)
    direction = 2 * atoms[3] - 1.5 * atoms[41]
    fit = sparse_fit(direction, atoms, 2)
    assert sorted(fit.support.tolist()) == [3, 41] and fit.cos2 == pytest.approx(1.0, abs=1e-9)
    one = sparse_fit(direction, atoms, 1)
    assert 0 < one.cos2 < 1  # one atom cannot express two


@pytest.mark.parametrize("mode", ["refit", "anneal", "l1", "reference"])
def test_each_mode_on_the_tiny_model(tiny_model, mode):
    model, tokenizer = tiny_model
    config = TrainSteerConfig(
        pairs="synthetic",
        method="yapo",
        yapo_mode=mode,
        support_by="effect",  # the refit with a dense phase (mean-diff: its own test below)
        epochs=3,
        refit_epochs=1,
        lr=0.05,
        beta=1.0,
        l1=1.0,
        top_k=8,
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
    if mode == "reference":
        assert code.support_size > 8  # no cap: every latent the data activates
    else:
        assert 0 < code.support_size <= 8
    assert code.meta["val_accuracy"] >= 0.9, code.meta  # chance 0.5; 0 at v = 0 (margins 0)
    steps = code.meta["loss_curve"]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    assert len(steps) == 6 * (3 + (mode == "refit"))  # 24 pairs / 4 per step, per epoch


def test_mean_diff_support_starts_from_the_sparse_fit_of_the_mean_difference(tiny_model):
    """support_by mean-diff: no dense phase; with lr 0 the code is exactly the k-latent OMP fit of
    the pairs' mean difference; trained, it keeps that support and learns the preference."""
    from saesteer.steer.batching import tokenize_pairs
    from saesteer.steer.train import _cache_split, mean_difference

    model, tokenizer = tiny_model
    sae = make_sae("relu").requires_grad_(False)
    train, val = synthetic_pairs(24, 0), synthetic_pairs(16, 1)
    split = _cache_split(model, tokenize_pairs(tokenizer, train), 1, "cpu")
    fit = sparse_fit(mean_difference(split), sae.W_dec, 8)
    codes = {}
    for lr in (0.0, 0.05):
        config = TrainSteerConfig(
            pairs="x",
            method="yapo",
            support_by="mean-diff",
            top_k=8,
            epochs=3,
            lr=lr,
            beta=1.0,
            progress=False,
        )
        result = fit_steering(model, tokenizer, train, config, sae=sae, val_pairs=val)
        codes[lr] = result.code
        assert result.dense_values is None
        phases = {s["phase"] for s in result.code.meta["loss_curve"]}
        assert phases == ({"yapo refit"} if lr else set())  # lr 0: no steps are taken at all
        assert result.code.meta["mean_diff_fit_cos2"] == pytest.approx(fit.cos2)
    order = fit.support.argsort()
    assert codes[0.0].support.tolist() == sorted(fit.support.tolist())
    assert torch.allclose(codes[0.0].values, fit.coefficients[order], atol=1e-6)
    assert codes[0.05].support.tolist() == codes[0.0].support.tolist()
    accuracy = {lr: c.meta["val_accuracy"] for lr, c in codes.items()}
    assert accuracy[0.05] > accuracy[0.0] >= 0.7, accuracy  # chance 0.5 (measured 0.81 > 0.75)
