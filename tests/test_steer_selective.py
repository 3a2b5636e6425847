"""Selective Steering (`saesteer.steer.methods.selective`) fitted on the tiny model: what it builds
(b1, the plane, the mask, the gate), that it steers, saves, and is KV-cache safe, and its errors.

The paper's raw sign test keeps few or none of the random tiny model's layers, so the tests use the
centred test (`selective_center`); the empty mask is made on purpose (a shared embedding offset)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import assert_hf_steers_like_tl, synthetic_pairs

from saesteer.steer.batching import tokenize_pairs
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.contrast import pair_contrasts
from saesteer.steer.gates import ProjectionGate
from saesteer.steer.generate import generate_ids_steered
from saesteer.steer.hooks import steer
from saesteer.steer.intervention import Intervention
from saesteer.steer.io import load_code, save_code
from saesteer.steer.methods import selective
from saesteer.steer.operators import Rotation2D, orthonormal_plane
from saesteer.steer.pairs import PreferencePair
from saesteer.steer.sites import Site

PAIRS = synthetic_pairs(12, seed=3)
IDS = torch.tensor([[1, 5, 9, 200, 17, 33], [0, 0, 4, 8, 15, 16]])
MASK = (IDS != 0).long()


def _config(**overrides) -> TrainSteerConfig:
    center = overrides.pop("selective_center", True)
    values = dict(pairs="synthetic", method="selective", chat=False, max_length=32, progress=False)
    config = TrainSteerConfig(**{**values, **overrides})
    config.selective_center = center  # read with getattr until TrainSteerConfig has the field
    return config


@pytest.fixture(scope="module")
def fitted(tiny_model) -> Intervention:
    model, tokenizer = tiny_model
    return selective.fit(model, tokenizer, PAIRS, _config())


def test_b1_plane_and_mask_follow_the_formulas(tiny_model, fitted):
    """b1 = the candidate unit(μ⁺ − μ⁻) of highest mean cosine; B orthonormal; both sites of each
    kept layer carry the same rotation by `angle` degrees per α; meta says what was done."""
    model, tokenizer = tiny_model
    sites = [Site(layer, s) for layer in range(model.cfg.n_layers) for s in ("attn_in", "mlp_in")]
    contrasts = pair_contrasts(model, tokenize_pairs(tokenizer, PAIRS, False, 32), sites)
    d = torch.stack([contrasts[s].diff_in_means() for s in sites])
    d = d / d.norm(dim=1, keepdim=True)
    best = int((d @ d.T).mean(1).argmax())
    meta = fitted.meta
    assert meta["b1_site"] == sites[best].name
    plane = fitted.edits[0].operator.plane
    torch.testing.assert_close(plane[:, 0], d[best], atol=1e-5, rtol=0)
    torch.testing.assert_close(plane.T @ plane, torch.eye(2), atol=1e-5, rtol=0)
    kept = meta["layer_mask"]
    assert kept and fitted.sites == [
        Site(layer, s) for layer in kept for s in ("attn_in", "mlp_in")
    ]
    for edit in fitted.edits:
        assert isinstance(edit.operator, Rotation2D) and edit.operator.degrees == 30.0
        assert edit.gate is None
        assert torch.equal(edit.operator.plane, plane)  # one plane, a copy per edit
    assert meta["strength_unit"] == "degrees per alpha" and meta["degrees_per_alpha"] == 30.0
    assert set(meta["alignment"]) == {s.name for s in sites}
    assert all(meta["alignment"][s.name]["on"] for s in fitted.sites)
    assert meta["sign_test"] == "centred" and meta["position_summary"] == "completion-span mean"


def test_steers_at_nonzero_alpha_and_is_the_identity_at_zero(tiny_model, fitted):
    model, _ = tiny_model
    plain = model(IDS)
    with steer(model, fitted, 0.0):
        assert torch.equal(model(IDS), plain)
    with steer(model, fitted, 2.0):
        moved = model(IDS)
    assert (moved - plain).abs().max() > 0.05
    greedy = generate_ids_steered(model, IDS, MASK, max_new_tokens=6)
    steered = [
        generate_ids_steered(model, IDS, MASK, fitted, a, max_new_tokens=6) for a in (2.0, 4.0, 6.0)
    ]
    assert any(not torch.equal(out, greedy) for out in steered)


def test_alpha_plus_one_favours_the_chosen_completions(tiny_model, fitted):
    """The orientation rule: the mean chosen-minus-rejected log-prob is higher at α = +1 than −1."""
    model, tokenizer = tiny_model
    tokens = tokenize_pairs(tokenizer, PAIRS, False, 32)
    plus, minus = (selective.mean_margin(model, tokens, fitted, a) for a in (1.0, -1.0))
    assert plus >= minus
    orientation = fitted.meta["orientation"]
    assert max(orientation.values()) == pytest.approx(plus, abs=1e-4)


def test_save_load_gives_identical_outputs(tiny_model, fitted, tmp_path):
    model, _ = tiny_model
    with steer(model, fitted, 1.5):
        before = model(IDS)
    loaded = load_code(save_code(fitted, tmp_path / "selective"))
    assert isinstance(loaded, Intervention) and loaded.method == "selective"
    assert loaded.meta["layer_mask"] == fitted.meta["layer_mask"]
    with steer(model, loaded, 1.5):
        torch.testing.assert_close(model(IDS), before, atol=0, rtol=0)


@pytest.fixture(scope="module")
def adaptive(tiny_model) -> Intervention:
    model, tokenizer = tiny_model
    return selective.fit(model, tokenizer, PAIRS, _config(selective_mode="adaptive", angle=45.0))


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_greedy_tokens_equal_with_and_without_kv_cache(tiny_model, fitted, adaptive, mode):
    model, _ = tiny_model
    intervention = fitted if mode == "standard" else adaptive
    kv = generate_ids_steered(model, IDS, MASK, intervention, 3.0, max_new_tokens=6)
    no_kv = generate_ids_steered(
        model, IDS, MASK, intervention, 3.0, max_new_tokens=6, use_cache=False
    )
    assert torch.equal(kv, no_kv)


def test_adaptive_mode_rotates_only_tokens_on_the_b1_side(adaptive):
    intervention = adaptive
    b1 = intervention.edits[0].operator.plane[:, 0]
    for edit in intervention.edits:
        assert isinstance(edit.gate, ProjectionGate)
        assert edit.gate.side == "above" and edit.gate.threshold == 0.0
        torch.testing.assert_close(edit.gate.direction, b1, atol=1e-6, rtol=0)
        assert edit.operator.degrees == 45.0
    h = torch.stack([b1 * 3, -b1 * 3])[None]  # [1, 2, d]: one token each side of 0 on b1
    h = h + torch.randn(h.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    out = intervention.edits[0].apply(h, 1.0)
    assert not torch.allclose(out[0, 0], h[0, 0]) and torch.equal(out[0, 1], h[0, 1])


def test_layers_option_restricts_the_candidates(tiny_model):
    model, tokenizer = tiny_model
    intervention = selective.fit(model, tokenizer, PAIRS, _config(layers="1"))
    assert intervention.meta["candidate_layers"] == [1]
    assert intervention.sites == [Site(1, "attn_in"), Site(1, "mlp_in")]
    assert selective.parse_layers(" 1, 0 ,1", 2) == [0, 1]
    assert selective.parse_layers("all", 3) == selective.parse_layers("", 3) == [0, 1, 2]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ("5", r"layer\(s\) \[5\] do not exist.*2 layers"),
        ("0,,1", "not a layer index"),
        ("x", "'x'"),
    ],
)
def test_bad_layers_are_refused(tiny_model, layers, message):
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match=message):
        selective.fit(model, tokenizer, PAIRS, _config(layers=layers))


def test_identical_chosen_and_rejected_are_refused(tiny_model):
    model, tokenizer = tiny_model
    same = [PreferencePair(p.prompt, p.chosen, p.chosen) for p in PAIRS[:4]]
    with pytest.raises(ValueError, match=r"μ⁺ = μ⁻.*identical"):
        selective.fit(model, tokenizer, same, _config())


def _flat_model(model, gains: torch.Generator | None = None, offset: float = 0.0):
    """A copy of `model` whose attention and MLP outputs are zero, so every norm site reads
    RMSNorm(embedding)·γ; γ = 1 (no `gains`) or random in [0.5, 1.5] per site. With `offset`, each
    token's embedding is c + offset·e (one shared random c, e the token's own, unit scale)."""
    flat = copy.deepcopy(model)
    with torch.no_grad():
        for block in flat.blocks:
            for tensor in (block.attn.W_O, block.attn.b_O, block.mlp.W_out, block.mlp.b_out):
                tensor.zero_()
            for norm in (block.ln1, block.ln2):
                norm.w.copy_(
                    1 if gains is None else 0.5 + torch.rand(norm.w.shape, generator=gains)
                )
        if offset:
            shared = torch.randn(flat.cfg.d_model, generator=torch.Generator().manual_seed(1))
            flat.embed.W_E.copy_(shared + offset * flat.embed.W_E / flat.embed.W_E.std())
    return flat


def test_a_shared_offset_keeps_no_layer_in_the_raw_test_and_centring_fixes_it(tiny_model):
    """Embeddings c + 0.01·e: every norm output is mostly the shared c, so ĥ⁺·b1 and ĥ⁻·b1 have
    the same sign at every site and the raw test keeps no layer (an error naming the fixes);
    the centred test removes c and keeps both layers."""
    model, tokenizer = tiny_model
    offset = _flat_model(model, torch.Generator().manual_seed(0), offset=0.01)
    with pytest.raises(ValueError, match=r"kept no layer.*config\.layers.*selective_center=True"):
        selective.fit(offset, tokenizer, PAIRS, _config(selective_center=False))
    centred = selective.fit(offset, tokenizer, PAIRS, _config(selective_center=True))
    assert centred.meta["layer_mask"] == [0, 1]


def test_identical_candidates_are_a_degenerate_plane(tiny_model):
    """With unit gains every norm site of the flat model reads the same vector, so all candidates
    coincide and b2 cannot be found."""
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match=r"degenerate.*b2 would be parallel to b1"):
        selective.fit(_flat_model(model), tokenizer, PAIRS, _config())


def test_candidates_along_one_line_are_a_degenerate_plane():
    """PC1 parallel to b1 (candidates spread only along b1's line) reaches orthonormal_plane."""
    b1 = torch.zeros(8, dtype=torch.float64)
    b1[0] = 1.0
    directions = torch.stack([b1, b1, -b1])
    pc1 = selective.principal_direction(directions)
    with pytest.raises(ValueError, match=r"degenerate.*parallel"):
        orthonormal_plane(directions[0], pc1)


def test_the_registry_fits_it_and_records_how(tiny_model):
    """`fit_intervention` finds the method, adds the run's facts and the held-out accuracy."""
    from saesteer.steer.methods import fit_intervention

    model, tokenizer = tiny_model
    result = fit_intervention(model, tokenizer, PAIRS, _config(), val_pairs=synthetic_pairs(4, 9))
    meta = result.code.meta
    assert result.code.method == "selective" and meta["n_train_pairs"] == len(PAIRS)
    assert 0 <= meta["val_accuracy"] <= 1 and meta["sites"] == [s.name for s in result.code.sites]
    json.dumps(meta)  # saved as code.json


@pytest.mark.slow
def test_same_steering_on_transformer_lens_and_hugging_face(default_model, default_hf_model):
    """Fitted on the default model (three layers, a few pairs): HF logits equal TL logits."""
    from saesteer.steer.behaviours import behaviour_pairs

    model, tokenizer = default_model
    pairs = behaviour_pairs("sentiment")[:6]
    config = _config(layers="8,12,16", selective_center=True)
    intervention = selective.fit(model, tokenizer, pairs, config)
    ids = tokenizer("The ocean was calm that morning, and", return_tensors="pt").input_ids
    assert_hf_steers_like_tl(model, default_hf_model, intervention, 2.0, ids)
