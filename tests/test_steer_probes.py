"""SwFC / StTP / StMP (saesteer.steer.methods.probes) on the tiny model: the probe, each method's
edit seen through the model, saving, KV-cache safety, and probes that cannot separate the classes."""

from __future__ import annotations

import random

import pytest
import torch
from helpers import STEER_HOOK, synthetic_pairs

from saesteer.steer.batching import tokenize_pairs
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered
from saesteer.steer.hooks import record, steer
from saesteer.steer.intervention import Intervention
from saesteer.steer.io import load_code, save_code
from saesteer.steer.methods import fit_intervention, probes
from saesteer.steer.pairs import PreferencePair
from saesteer.steer.sites import Site

METHODS = probes.METHODS
SITE = Site.parse(STEER_HOOK)  # blocks.0.resid_post: the edit runs through layer 1


def config(method: str, **overrides) -> TrainSteerConfig:
    values = dict(pairs="synthetic", method=method, hook_name=STEER_HOOK, progress=False)
    return TrainSteerConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def fitted(tiny_model) -> dict[str, Intervention]:
    """Each method fitted on the separable " yes" vs " no" pairs."""
    model, tokenizer = tiny_model
    pairs = synthetic_pairs(32, 0)
    return {m: probes.fit(model, tokenizer, pairs, config(m)) for m in METHODS}


@pytest.fixture(scope="module")
def ids(tiny_model) -> torch.Tensor:
    """Rows of prompt + chosen / rejected completion [rows, T] (prompt and completion tokens)."""
    return tokenize_pairs(tiny_model[1], synthetic_pairs(6, 3)).input_ids


def site_activation(model, ids: torch.Tensor, intervention=None, alpha: float = 1.0):
    """h at SITE [rows, T, d], as the model passes it on (after the edit, if steering)."""
    if intervention is None:
        with record(model, [SITE]) as seen:
            model(ids, return_type=None)
    else:
        with steer(model, intervention, alpha), record(model, [SITE]) as seen:
            model(ids, return_type=None)
    return seen[SITE][-1]


def direction(intervention: Intervention) -> torch.Tensor:
    """v̂ of the probe: the operator's unit direction (swfc: its vector Δ·v̂, normalised)."""
    operator = intervention.edits[0].operator
    return (
        operator.vector / operator.vector.norm() if operator.kind == "add" else operator.direction
    )


def projection(intervention: Intervention, h: torch.Tensor) -> torch.Tensor:
    return h @ direction(intervention)


def test_the_probe_separates_and_the_meta_records_it(fitted):
    meta = fitted["sttp"].meta
    assert meta["probe_train_accuracy"] > 0.9 and meta["probe_heldout_accuracy"] > 0.8, meta
    assert meta["probe_folds"] == 5 and meta["n_tokens_chosen"] == meta["n_tokens_rejected"] == 32
    assert meta["n_tokens_shared_dropped"] > 0  # the shared " w1 w2" prefix carries no label
    assert meta["mean_chosen"] > meta["threshold"] > meta["mean_rejected"]
    assert meta["gap"] == pytest.approx(meta["mean_chosen"] - meta["mean_rejected"])
    assert meta["gate_open_chosen"] == pytest.approx(0.2, abs=0.05)  # ≈ probe_percentile / 100
    assert meta["gate_open_rejected"] > 0.8
    # one probe for all three: same direction, boundary and threshold
    for method in ("swfc", "stmp"):
        other = fitted[method]
        assert other.method == method and other.meta["boundary"] == meta["boundary"]
        torch.testing.assert_close(direction(other), direction(fitted["sttp"]))
    assert fitted["swfc"].edits[0].gate is None and fitted["swfc"].meta["scale"] == meta["gap"]
    stmp = fitted["stmp"].meta
    assert stmp["mirror"] == max(stmp["boundary"], stmp["threshold"])


@pytest.mark.parametrize("method", METHODS)
def test_each_method_moves_the_logits_and_is_the_identity_at_zero(tiny_model, fitted, ids, method):
    model, _ = tiny_model
    plain = model(ids)
    with steer(model, fitted[method], 0.0):
        assert torch.equal(model(ids), plain)
    with steer(model, fitted[method], 1.0):
        moved = (model(ids) - plain).abs().amax()
    assert moved > 1e-2, (method, float(moved))


def test_sttp_puts_every_gated_token_on_the_target_and_leaves_the_rest(tiny_model, fitted, ids):
    model, _ = tiny_model
    sttp = fitted["sttp"]
    before, after = site_activation(model, ids), site_activation(model, ids, sttp)
    s = projection(sttp, before)
    gated = s < sttp.meta["threshold"]
    assert gated.any() and (~gated).any()
    target = torch.full_like(s[gated], sttp.meta["target"])
    torch.testing.assert_close(projection(sttp, after)[gated], target, atol=1e-4, rtol=0)
    assert torch.equal(after[~gated], before[~gated])
    moved = after - before  # only along v̂
    v = direction(sttp)
    torch.testing.assert_close(
        moved - (moved @ v)[..., None] * v, torch.zeros_like(moved), atol=1e-5, rtol=0
    )


def test_stmp_mirrors_gated_tokens_forward_and_twice_is_once(tiny_model, fitted, ids):
    model, _ = tiny_model
    stmp = fitted["stmp"]
    edit, mirror, tau = stmp.edits[0], stmp.meta["mirror"], stmp.meta["threshold"]
    before = site_activation(model, ids)
    after = site_activation(model, ids, stmp)
    torch.testing.assert_close(after, edit.apply(before, 1.0), atol=1e-5, rtol=0)  # the site's edit
    s, s_after = projection(stmp, before), projection(stmp, after)
    gated = s < tau
    assert gated.any() and (~gated).any()
    torch.testing.assert_close(s_after[gated], 2 * mirror - s[gated], atol=1e-4, rtol=0)
    assert (s_after[gated] > s[gated]).all() and (s_after[gated] >= tau - 1e-4).all()
    assert torch.equal(after[~gated], before[~gated])
    half = projection(stmp, edit.apply(before, 0.5))[gated]  # α = ½ stops on the mirror
    torch.testing.assert_close(half, torch.full_like(half, mirror), atol=1e-4, rtol=0)
    # a mirrored token has left the gate, so the edit does not fire again
    torch.testing.assert_close(edit.apply(after, 1.0), after, atol=1e-5, rtol=0)


def test_swfc_shifts_every_token_by_alpha_times_the_class_gap(tiny_model, fitted, ids):
    model, _ = tiny_model
    swfc = fitted["swfc"]
    before = site_activation(model, ids)
    after = site_activation(model, ids, swfc, alpha=2.0)
    shift = projection(swfc, after) - projection(swfc, before)
    torch.testing.assert_close(
        shift, torch.full_like(shift, 2 * swfc.meta["gap"]), atol=1e-4, rtol=0
    )


def test_threshold_target_and_percentile(tiny_model):
    model, tokenizer = tiny_model
    pairs = synthetic_pairs(32, 0)
    sttp = probes.fit(
        model, tokenizer, pairs, config("sttp", probe_target="threshold", probe_percentile=50)
    )
    assert sttp.meta["target"] == sttp.meta["threshold"] and sttp.meta["target_rule"] == "threshold"
    assert sttp.meta["gate_open_chosen"] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("method", METHODS)
def test_saved_and_loaded_gives_identical_outputs(tiny_model, fitted, ids, tmp_path, method):
    model, _ = tiny_model
    save_code(fitted[method], tmp_path / method)
    loaded = load_code(tmp_path / method)
    assert isinstance(loaded, Intervention) and loaded.method == method
    assert loaded.meta["threshold"] == fitted[method].meta["threshold"]
    with steer(model, fitted[method], 1.5):
        expected = model(ids)
    with steer(model, loaded, 1.5):
        assert torch.equal(model(ids), expected)


@pytest.mark.parametrize("method", METHODS)
def test_greedy_generation_equal_with_and_without_kv_cache(tiny_model, fitted, method):
    model, tokenizer = tiny_model
    prompts = ["river stone cloud lamp garden", "paper", "forest bridge candle winter"]
    ids, mask = batch_prompt_ids(tokenizer, prompts)
    kwargs = dict(max_new_tokens=6, eos_token_id=None)
    cached = generate_ids_steered(model, ids, mask, fitted[method], 2.0, **kwargs)
    uncached = generate_ids_steered(
        model, ids, mask, fitted[method], 2.0, use_cache=False, **kwargs
    )
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, generate_ids_steered(model, ids, mask, **kwargs))


def test_the_registry_fits_a_probe_method_and_scores_it(tiny_model):
    model, tokenizer = tiny_model
    result = fit_intervention(
        model, tokenizer, synthetic_pairs(16, 0), config("stmp"), synthetic_pairs(8, 1)
    )
    intervention = result.code
    assert isinstance(intervention, Intervention) and intervention.method == "stmp"
    assert intervention.meta["sites"] == [SITE.name]
    assert 0 <= intervention.meta["val_accuracy"] <= 1


def test_instructed_contrast_reads_each_side_under_its_system_prompt(tiny_model):
    from saesteer.steer.behaviours import behaviour_pairs

    model, tokenizer = tiny_model
    pairs = behaviour_pairs("sentiment")[:12]
    cfg = config("sttp", pairs="sentiment")  # not (yet) config fields: set as attributes
    cfg.probe_contrast, cfg.probe_min_accuracy = "instructed", 0.0
    instructed = probes.fit(model, tokenizer, pairs, cfg)
    assert instructed.meta["probe_contrast"] == "instructed"
    assert instructed.meta["n_tokens_shared_dropped"] == 0  # different prompts: nothing shared
    cfg.pairs = "my-pairs.jsonl"
    with pytest.raises(ValueError, match="not a shipped behaviour"):
        probes.fit(model, tokenizer, pairs, cfg)


def test_newton_reaches_the_penalised_optimum():
    """At the returned θ the gradient of the class-balanced L2 logistic loss is zero."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 8, generator=g, dtype=torch.float64)
    y = (z[:, 0] + 0.5 * torch.randn(300, generator=g, dtype=torch.float64) > 0.3).long()
    design = torch.cat([z, torch.ones(300, 1, dtype=torch.float64)], dim=1)
    theta = probes.newton_logistic(design, y, l2=1e-2).requires_grad_(True)
    a = probes.balanced_weights(y.double())
    probes.logistic_loss(design, y.double(), a, theta, 1e-2).backward()
    assert theta.grad.abs().max() < 1e-6 and theta[0] > 1.0  # found the informative coordinate


def stats(threshold: float, mean_chosen: float) -> probes.ProjectionStats:
    return probes.ProjectionStats(threshold, mean_chosen, -1.0, 0.2, 0.9)


def test_the_mirror_is_the_boundary_unless_the_gate_reaches_past_it():
    v = torch.zeros(64)
    v[3] = 1.0
    probe = probes.Probe(
        v, 2.0, boundary=0.5, train_accuracy=1.0, heldout_accuracy=1.0, folds=5, seconds=0
    )
    for tau, mirror, across in ((0.2, 0.5, "boundary"), (0.9, 0.9, "threshold")):
        edit, meta = probes.build_edit("stmp", SITE, probe, stats(tau, 2.0), "mean")
        assert meta["mirror"] == mirror and meta["mirror_across"] == across
        assert edit.operator.boundary == mirror and edit.gate.threshold == tau
    # a chosen mean below τ (heavy lower tail) would push gated tokens back: raised to τ
    edit, meta = probes.build_edit("sttp", SITE, probe, stats(0.9, 0.7), "mean")
    assert edit.operator.target == 0.9 and meta["target_raised"]


# --------------------------------------------------------------------------- bad input


def test_identical_chosen_and_rejected_completions_are_refused(tiny_model):
    model, tokenizer = tiny_model
    same = [PreferencePair(p.prompt, p.chosen, p.chosen) for p in synthetic_pairs(12, 0)]
    with pytest.raises(ValueError, match="identical"):
        probes.fit(model, tokenizer, same, config("sttp"))


def test_a_probe_that_cannot_separate_random_labels_is_refused(tiny_model):
    """Which of " yes" / " no" is chosen is a coin flip: the training fit may separate the few
    tokens (d = 64), the held-out accuracy cannot."""
    model, tokenizer = tiny_model
    rng = random.Random(6)  # held-out balanced accuracy 0.45 (training 0.68)
    pairs = []
    for pair in synthetic_pairs(120, 13):
        middle = pair.chosen[: -len(" yes")]
        yes, no = middle + " yes", middle + " no"
        pairs.append(PreferencePair(pair.prompt, *((yes, no) if rng.random() < 0.5 else (no, yes))))
    with pytest.raises(ValueError, match=r"cannot separate.*another layer or site"):
        probes.fit(model, tokenizer, pairs, config("stmp"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"probe_l2": 0.0}, "probe_l2 must be > 0"),
        ({"method": "mean-diff"}, "not a probe method"),
    ],
)
def test_bad_options_are_refused(tiny_model, overrides, message):
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match=message):
        probes.fit(
            model, tokenizer, synthetic_pairs(4, 0), config(**{"method": "sttp", **overrides})
        )


def test_an_unknown_probe_contrast_is_refused(tiny_model):
    model, tokenizer = tiny_model
    cfg = config("sttp")
    cfg.probe_contrast = "prompts"
    with pytest.raises(ValueError, match="probe_contrast must be one of"):
        probes.fit(model, tokenizer, synthetic_pairs(4, 0), cfg)
