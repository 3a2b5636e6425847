"""GrAInS on the tiny model: IG against direct computation, the fitted intervention's invariants
(identity at α = 0, per-token norm, saving, KV cache), the reduction's rules, and bad input."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from helpers import steered_logit_shift, synthetic_pairs

from saesteer.steer.batching import completion_logprobs, tokenize_pairs
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered
from saesteer.steer.hooks import record, steer
from saesteer.steer.io import load_code, save_code
from saesteer.steer.methods import fit_intervention, grains
from saesteer.steer.operators import AddRescale
from saesteer.steer.pairs import PreferencePair
from saesteer.steer.sites import Site

SITE = "blocks.1.hook_resid_post"


def _config(**overrides) -> TrainSteerConfig:
    values = dict(pairs="x", method="grains", hook_name=SITE, ig_steps=4, grains_top_k=3)
    values.update(overrides)
    return TrainSteerConfig(**values)


@pytest.fixture(scope="module")
def fitted(tiny_model):
    """(model, tokenizer, pairs, intervention) fitted once on six synthetic pairs."""
    model, tokenizer = tiny_model
    pairs = synthetic_pairs(6, seed=0)
    return model, tokenizer, pairs, grains.fit(model, tokenizer, pairs, _config())


def _ids(tokenizer, pairs) -> torch.Tensor:
    return tokenize_pairs(tokenizer, pairs).input_ids


def _direct_f(model, tokens, scale: float) -> torch.Tensor:
    """sign · log π(y|x) per row with the embeddings scaled by `scale`, by TL's own hook API."""
    logits = model.run_with_hooks(
        tokens.input_ids, fwd_hooks=[("hook_embed", lambda e, hook: e * scale)]
    )
    logp = completion_logprobs(logits, tokens.input_ids, tokens.target_mask)
    return logp * torch.tensor([1.0, -1.0]).repeat(logp.shape[0] // 2)


# --------------------------------------------------------------------------- attribution


def test_completion_scores_equal_completion_logprobs(tiny_model):
    model, tokenizer = tiny_model
    tokens = tokenize_pairs(tokenizer, synthetic_pairs(3, seed=1))
    with torch.no_grad():
        direct = completion_logprobs(model(tokens.input_ids), tokens.input_ids, tokens.target_mask)
        ours = grains.completion_scores(model, tokens.input_ids, tokens.target_mask)
    torch.testing.assert_close(ours, direct, atol=1e-4, rtol=1e-5)


def test_ig_completeness_against_direct_computation_tightens_with_steps(tiny_model):
    """Σ_t A_t → f(e) − f(a·e), with f computed directly; the gap shrinks as the steps grow."""
    model, tokenizer = tiny_model
    tokens = tokenize_pairs(tokenizer, synthetic_pairs(3, seed=0))
    start = 0.1
    with torch.no_grad():
        change = _direct_f(model, tokens, 1.0) - _direct_f(model, tokens, start)
    gaps = []
    for steps in (4, 16, 64):
        attribution = grains.integrated_gradients(model, tokens, steps, start)
        torch.testing.assert_close(
            attribution.f_input - attribution.f_baseline, change, atol=1e-4, rtol=1e-4
        )
        gaps.append(float((attribution.scores.sum(dim=1) - change).abs().max()))
        assert attribution.scores[tokens.target_mask == 0].abs().sum() > 0  # prompt tokens count
    assert gaps[0] > gaps[1] > gaps[2], gaps
    assert gaps[2] < 0.01 * float(change.abs().mean()), gaps  # ~O(1/m²): 64 steps within 1 %


def test_ig_scores_are_zero_on_padding_and_the_last_token(tiny_model):
    model, tokenizer = tiny_model
    tokens = tokenize_pairs(tokenizer, synthetic_pairs(2, seed=3))
    scores = grains.integrated_gradients(model, tokens, 2, 0.1).scores
    lengths = grains.sequence_lengths(tokens.target_mask)
    for row, length in enumerate(lengths.tolist()):
        assert torch.all(scores[row, length - 1 :] == 0)  # nothing scored depends on them
        assert scores[row, : length - 1].abs().sum() > 0


def test_top_positions_takes_the_k_largest_of_one_sign_among_allowed():
    scores = torch.tensor([[3.0, -1.0, 2.0, 5.0, -4.0], [-1.0, -2.0, 0.5, 0.0, 0.0]])
    allowed = torch.tensor([[True, True, True, False, True], [True, True, True, True, False]])
    positive = grains.top_positions(scores, allowed, 2, 1.0)
    negative = grains.top_positions(scores, allowed, 2, -1.0)
    assert positive.tolist() == [
        [True, False, True, False, False],
        [False, False, True, False, False],
    ]
    assert negative.tolist() == [
        [False, True, False, False, True],
        [True, True, False, False, False],
    ]
    assert grains.top_positions(scores, allowed, 99, 1.0).sum() == 3  # k beyond T: all of them


def test_ablatable_skips_special_tokens_the_last_token_and_padding(tiny_model):
    _, tokenizer = tiny_model
    pad = grains.ablation_token(tokenizer)
    ids = torch.tensor([[1, 50, 60, 70, pad, pad], [80, pad, 90, 95, 96, 97]])
    lengths = torch.tensor([4, 6])
    allowed = grains.ablatable(ids, lengths, tokenizer.all_special_ids, pad)
    assert allowed.tolist() == [
        [False, True, True, False, False, False],
        [True, False, True, True, True, False],
    ]


# --------------------------------------------------------------------------- reduction


def test_pca_reduction_is_signed_by_the_mean_and_mean_reduction_is_the_mean():
    g = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(16, generator=g, dtype=torch.float64), dim=0)
    spread = torch.randn(40, 1, generator=g).double() * 3
    deltas = 2.0 * axis + spread * axis + 0.05 * torch.randn(40, 16, generator=g).double()
    for flip in (1.0, -1.0):
        reduced = grains.reduce_deltas(flip * deltas, "pca", "positive")
        assert reduced.vector @ reduced.mean > 0
        assert abs(float(reduced.vector @ axis)) > 0.99 and reduced.explained > 0.95
        torch.testing.assert_close(reduced.vector.norm(), torch.tensor(1.0, dtype=torch.float64))
    mean = grains.reduce_deltas(deltas, "mean", "negative")
    torch.testing.assert_close(mean.vector, deltas.mean(0))
    with pytest.raises(ValueError, match=r"at least 2.*grains_reduce='mean'"):
        grains.reduce_deltas(deltas[:1], "pca", "positive")


def test_coinciding_sides_are_refused():
    ones = torch.ones(8, dtype=torch.float64)
    side = grains.Reduced(ones, ones, None, 3)
    with pytest.raises(ValueError, match="v_pos and v_neg coincide"):
        grains.contrast_vector(side, side)


# --------------------------------------------------------------------------- the intervention


def test_fit_returns_one_add_rescale_edit_with_a_json_meta(fitted):
    _, _, _, intervention = fitted
    (edit,) = intervention.edits
    assert edit.site == Site.parse(SITE) and isinstance(edit.operator, AddRescale)
    assert edit.gate is None and intervention.method == "grains"
    meta = intervention.meta
    json.dumps(meta)  # saved as code.json
    expected = meta["grains_scale"] * meta["median_norm"]
    assert math.isclose(float(edit.operator.vector.norm()), expected, rel_tol=1e-4)
    for side in ("positive_ablation", "negative_ablation"):
        assert meta[side]["top_tokens"] and meta[side]["n_deltas"] > 0
        assert 0 < meta[side]["explained_variance_pc1"] <= 1
    assert meta["norm_v_pos"] == pytest.approx(1.0) and meta["norm_v_neg"] == pytest.approx(1.0)
    assert -1 <= meta["cos_v_pos_v_neg"] <= 1 and -1 <= meta["cos_v_mean_diff"] <= 1
    assert 0 <= meta["ig_completeness_error"] < 0.5


def test_alpha_zero_is_the_identity_and_alpha_one_moves_the_logits(fitted):
    model, tokenizer, pairs, intervention = fitted
    shift = steered_logit_shift(model, intervention, _ids(tokenizer, pairs))
    assert shift.max() > 0.1 and shift.mean() > 1e-3


def test_the_norm_of_every_token_is_kept_at_the_site(fitted):
    model, tokenizer, pairs, intervention = fitted
    ids, site = _ids(tokenizer, pairs), Site.parse(SITE)
    with torch.no_grad(), record(model, [site]) as plain:
        model(ids)
    with torch.no_grad(), steer(model, intervention, 2.0), record(model, [site]) as steered:
        model(ids)
    before, after = plain[site][0], steered[site][0]  # [rows, T, d]
    torch.testing.assert_close(after.norm(dim=-1), before.norm(dim=-1), atol=1e-4, rtol=1e-5)
    cos = torch.nn.functional.cosine_similarity(after, before, dim=-1)
    assert cos.max() < 0.999  # every token turned
    u = intervention.edits[0].operator.vector
    assert ((after - before) @ u).min() > 0  # towards v


def test_save_and_load_give_identical_outputs(fitted, tmp_path):
    model, tokenizer, pairs, intervention = fitted
    loaded = load_code(save_code(intervention, tmp_path / "grains"))
    assert loaded.method == "grains" and loaded.meta["top_k"] == intervention.meta["top_k"]
    ids = _ids(tokenizer, pairs)
    with torch.no_grad():
        with steer(model, intervention, 1.5):
            before = model(ids)
        with steer(model, loaded, 1.5):
            after = model(ids)
    assert torch.equal(before, after)


def test_greedy_generation_is_the_same_with_and_without_the_kv_cache(fitted):
    model, tokenizer, _, intervention = fitted
    ids, mask = batch_prompt_ids(tokenizer, ["river stone cloud", "a lamp in the garden window"])
    runs = {
        cache: generate_ids_steered(
            model, ids, mask, intervention, 2.0, max_new_tokens=6, use_cache=cache
        )
        for cache in (True, False)
    }
    assert torch.equal(runs[True], runs[False])


def test_fit_intervention_records_the_run_and_the_default_site(tiny_model):
    model, tokenizer = tiny_model
    pairs = synthetic_pairs(5, seed=2)
    config = _config(hook_name=None, ig_steps=2, grains_reduce="mean")
    result = fit_intervention(model, tokenizer, pairs, config, val_pairs=synthetic_pairs(2, 9))
    meta = result.code.meta
    assert meta["site"] == "blocks.1.resid_post"  # the middle layer of 2 (n_layers // 2)
    assert meta["reduce"] == "mean" and meta["norm_v_pos"] > 0
    assert 0 <= meta["val_accuracy"] <= 1 and meta["n_train_pairs"] == 5


# --------------------------------------------------------------------------- bad input


def test_pairs_whose_chosen_equals_rejected_are_refused(tiny_model):
    model, tokenizer = tiny_model
    pairs = synthetic_pairs(3, seed=0)
    same = [pairs[0], PreferencePair(pairs[1].prompt, " same words", " same words"), pairs[2]]
    with pytest.raises(ValueError, match=r"chosen == rejected.*pairs 1\b"):
        grains.fit(model, tokenizer, same, _config())


def test_top_k_beyond_every_sequence_ablates_all_candidates_and_warns(tiny_model):
    model, tokenizer = tiny_model
    pairs = synthetic_pairs(4, seed=5)
    tokens = tokenize_pairs(tokenizer, pairs)
    lengths = grains.sequence_lengths(tokens.target_mask)
    special = tokenizer.all_special_ids
    allowed = grains.ablatable(tokens.input_ids, lengths, special, grains.ablation_token(tokenizer))
    most = int(allowed.sum(dim=1).max())
    with pytest.warns(UserWarning, match="grains_top_k=500 is more than"):
        huge = grains.fit(model, tokenizer, pairs, _config(grains_top_k=500, ig_steps=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        capped = grains.fit(model, tokenizer, pairs, _config(grains_top_k=most, ig_steps=2))
    torch.testing.assert_close(huge.edits[0].operator.vector, capped.edits[0].operator.vector)
    assert huge.meta["positive_ablation"]["sequences_short_of_k"] == 2 * len(pairs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hook_name": "blocks.7.hook_resid_post"}, "only 2 layers"),
        ({"hook_name": "blocks.1.hook_attn_scores"}, "is not a site"),
        ({"grains_scale": 0.0}, "grains_scale must be > 0"),
        ({"grains_ig_start": 1.0}, r"grains_ig_start must be in \[0, 1\)"),
    ],
)
def test_bad_options_are_refused_before_any_work(tiny_model, overrides, message):
    model, tokenizer = tiny_model
    config = _config(**{k: v for k, v in overrides.items() if k == "hook_name"})
    for name, value in overrides.items():
        setattr(config, name, value)  # grains_scale / grains_ig_start: read with getattr
    with pytest.raises(ValueError, match=message):
        grains.fit(model, tokenizer, synthetic_pairs(2, seed=0), config)
