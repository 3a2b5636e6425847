"""CDAS (saesteer.steer.methods.cdas) on the tiny model: the JSD, the data it is trained on, that
training lowers it, the clamp it returns seen through the model, saving, KV-cache safety, bad input."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from helpers import STEER_HOOK, steered_logit_shift, synthetic_pairs

from saesteer.steer.batching import tokenize_pairs
from saesteer.steer.behaviours import BEHAVIOURS, behaviour_pairs
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered
from saesteer.steer.hooks import record, steer
from saesteer.steer.intervention import Intervention
from saesteer.steer.io import load_code, save_code
from saesteer.steer.methods import cdas, fit_intervention
from saesteer.steer.sites import Site

SITE = Site.parse(STEER_HOOK)  # blocks.0.resid_post: the interchange runs through layer 1
LAYER = 1
N_PAIRS = 4


def config(pairs: str = "formality", **overrides) -> TrainSteerConfig:
    values = dict(
        pairs=pairs,
        method="cdas",
        hook_name=STEER_HOOK,
        epochs=2,
        batch_pairs=2,
        progress=False,
        chat=BEHAVIOURS[pairs].chat if pairs in BEHAVIOURS else False,
    )
    return TrainSteerConfig(**{**values, **overrides})


def small_pairs(name: str = "formality", n: int = N_PAIRS):
    return behaviour_pairs(name)[:n]


@pytest.fixture(scope="module")
def fitted(tiny_model) -> Intervention:
    model, tokenizer = tiny_model
    return cdas.fit(model, tokenizer, small_pairs(), config())


@pytest.fixture(scope="module")
def ids(tiny_model) -> torch.Tensor:
    """Chat rows (prompt + completion) of two validation pairs [rows, T]."""
    pairs = behaviour_pairs("formality", "validation")[:2]
    return tokenize_pairs(tiny_model[1], pairs, chat=True).input_ids


def data_for(tiny_model, name: str, n: int = 2) -> cdas.ContrastData:
    model, tokenizer = tiny_model
    cfg = config(name)
    plus, minus, _ = cdas.instructed_pairs(small_pairs(name, n), cfg, cfg.chat)
    return cdas.build_data(model, tokenizer, plus, minus, LAYER, cfg.chat, cfg.max_length, "cpu")


def site_projection(model, ids, intervention, alpha: float) -> torch.Tensor:
    """v̂·h at the site [rows, T] as the model passes h on (after the edit)."""
    with steer(model, intervention, alpha), record(model, [SITE]) as seen:
        model(ids, return_type=None)
    return seen[SITE][-1] @ intervention.edits[0].operator.direction


# --------------------------------------------------------------------------- pieces


def test_jsd_matches_a_direct_computation():
    p = [0.5, 0.3, 0.2, 0.0]
    q = [0.1, 0.1, 0.4, 0.4]

    def kl(a, b):
        return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)

    m = [(x + y) / 2 for x, y in zip(p, q, strict=True)]
    expected = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    logp = torch.tensor(p, dtype=torch.float64).log()[None]
    logq = torch.tensor(q, dtype=torch.float64).log()[None]
    assert cdas.jsd(logp, logq).item() == pytest.approx(expected, rel=1e-12)
    assert cdas.jsd(logq, logp).item() == pytest.approx(expected, rel=1e-12)  # symmetric
    assert cdas.jsd(logp, logp).item() == pytest.approx(0.0, abs=1e-15)
    disjoint = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64).log()
    assert cdas.jsd(disjoint[:1], disjoint[1:]).item() == pytest.approx(math.log(2))


def test_the_interchange_replaces_the_coordinate_on_v_only_where_asked():
    generator = torch.Generator().manual_seed(0)
    h, h_src = torch.randn(2, 5, 8, generator=generator), torch.randn(2, 8, generator=generator)
    u = torch.nn.functional.normalize(torch.randn(8, generator=generator), dim=0)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[:, 0] = False
    out = cdas.interchange(h, u, h_src, mask)
    assert torch.allclose(out[:, 1:] @ u, (h_src @ u)[:, None].expand(2, 4), atol=1e-6)
    assert torch.equal(out[:, 0], h[:, 0])
    orthogonal = out - (out @ u)[..., None] * u
    assert torch.allclose(orthogonal, h - (h @ u)[..., None] * u, atol=1e-6)


def test_the_data_pairs_each_base_with_its_source(tiny_model):
    model, tokenizer = tiny_model
    data = data_for(tiny_model, "formality")
    chosen_side, rejected_side = BEHAVIOURS["formality"].instructions
    pair = small_pairs()[0]
    plus_text = tokenizer.decode(data.base_ids[0])  # "+": rejected-side prompt, chosen reply
    minus_text = tokenizer.decode(data.base_ids[1])  # "−": chosen-side prompt, rejected reply
    assert rejected_side in plus_text and pair.chosen.strip() in plus_text
    assert chosen_side in minus_text and pair.rejected.strip() in minus_text
    assert not data.edit_mask[:, 0].any() and data.edit_mask[:, 1:].all()  # BOS left alone
    # the source of row 0 is x⁺ + y⁺: its last-prompt activation and distributions, recomputed
    source = tokenize_pairs(tokenizer, [BEHAVIOURS["formality"].instructed(pair, 0)], chat=True)
    ids, target = source.input_ids[:1], source.target_mask[0].bool()
    start = int(target.nonzero()[0])
    _, cache = model.run_with_cache(ids, names_filter=[STEER_HOOK])
    assert torch.allclose(data.source_h[0], cache[STEER_HOOK][0, start - 1], atol=1e-5)
    logits = model(ids)[0, start - 1 : int(target.nonzero()[-1])]
    expected = torch.log_softmax(logits.float(), dim=-1)
    got = data.source_logp[data.offsets[0] : data.offsets[1]]
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4)


def test_continuation_pairs_get_a_preface_and_every_position_is_written(tiny_model):
    data = data_for(tiny_model, "sentiment")
    text = tiny_model[1].decode(data.base_ids[0])
    assert text.startswith(f"({BEHAVIOURS['sentiment'].instructions[1]})")
    assert data.edit_mask[:, 0].all()  # no BOS here: the first token is text


# --------------------------------------------------------------------------- training


def test_training_lowers_the_jsd_and_the_meta_records_it(fitted):
    meta = fitted.meta
    assert meta["jsd_final"] < meta["jsd_init"], meta
    assert meta["jsd_final"] < meta["jsd_unsteered"], meta
    assert meta["loss_curve"][-1] < meta["loss_curve"][0], meta
    assert [row["epoch"] for row in meta["history"]] == [1, 2]
    assert len(meta["step_losses"]) == 2 * math.ceil(N_PAIRS / 2)
    assert meta["f_plus"] > meta["f_minus"]
    assert 0 < meta["cos_mean_diff"] <= 1 and meta["fit_seconds"] > 0
    assert meta["n_interchanges"] == 2 * N_PAIRS and meta["contrast"] == "behaviour:formality"
    assert meta["init"] == "mean-diff" and meta["cos_init"] == pytest.approx(meta["cos_mean_diff"])
    operator = fitted.edits[0].operator
    assert operator.kind == "set-projection" and fitted.edits[0].site == SITE
    assert (operator.target, operator.reverse_target) == (meta["f_plus"], meta["f_minus"])
    assert operator.direction.norm().item() == pytest.approx(1.0, abs=1e-6)


def test_random_initialisation_trains_too(tiny_model):
    model, tokenizer = tiny_model
    cfg = config(cdas_lr=0.1)
    cfg.cdas_init = "random"
    meta = cdas.fit(model, tokenizer, small_pairs(), cfg).meta
    assert meta["init"] == "random" and meta["cos_init"] < 1
    assert meta["jsd_final"] < meta["jsd_init"], meta


# --------------------------------------------------------------------------- the clamp


def test_alpha_one_moves_the_logits_and_zero_is_the_identity(tiny_model, fitted, ids):
    assert steered_logit_shift(tiny_model[0], fitted, ids).max() > 1e-3


def test_alpha_one_clamps_every_position_to_f_plus_and_minus_one_to_f_minus(
    tiny_model, fitted, ids
):
    model, _ = tiny_model
    f_plus, f_minus = fitted.meta["f_plus"], fitted.meta["f_minus"]
    up = site_projection(model, ids, fitted, 1.0)
    down = site_projection(model, ids, fitted, -1.0)
    assert torch.allclose(up, torch.full_like(up, f_plus), atol=1e-4)
    assert torch.allclose(down, torch.full_like(down, f_minus), atol=1e-4)
    plain = site_projection(model, ids, fitted, 0.0)
    twice = site_projection(model, ids, fitted, 2.0)  # overshoot: s' = 2f⁺ − s
    assert torch.allclose(twice, 2 * f_plus - plain, atol=1e-4)


def test_with_multiplier_gives_the_papers_clamp(tiny_model, fitted, ids):
    model, _ = tiny_model
    scaled = cdas.with_multiplier(fitted, 3.0)
    up = site_projection(model, ids, scaled, 1.0)
    assert torch.allclose(up, torch.full_like(up, 3.0 * fitted.meta["f_plus"]), atol=1e-4)
    assert scaled.meta["multiplier"] == 3.0


def test_saved_and_loaded_gives_identical_outputs(tiny_model, fitted, ids, tmp_path):
    model, _ = tiny_model
    loaded = load_code(save_code(fitted, tmp_path / "cdas"))
    assert isinstance(loaded, Intervention) and loaded.method == "cdas"
    assert loaded.meta["f_plus"] == fitted.meta["f_plus"]
    assert torch.equal(loaded.edits[0].operator.direction, fitted.edits[0].operator.direction)
    with torch.no_grad():
        for alpha in (1.0, -1.0):
            with steer(model, fitted, alpha):
                before = model(ids)
            with steer(model, loaded, alpha):
                after = model(ids)
            assert torch.equal(before, after)


def test_greedy_generation_equal_with_and_without_kv_cache(tiny_model, fitted):
    model, tokenizer = tiny_model
    prompts = ["Write a note to a colleague.", "Say hello."]
    ids, mask = batch_prompt_ids(tokenizer, prompts, chat=True)
    kwargs = dict(max_new_tokens=6, eos_token_id=None)
    cached = generate_ids_steered(model, ids, mask, fitted, 2.0, use_cache=True, **kwargs)
    uncached = generate_ids_steered(model, ids, mask, fitted, 2.0, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, generate_ids_steered(model, ids, mask, **kwargs))


# --------------------------------------------------------------------------- other routes


def test_file_pairs_carry_their_own_contrast_and_the_registry_fits_them(tiny_model):
    model, tokenizer = tiny_model
    texts = ["Answer with the word yes.", "Answer with the word no."]
    pairs = [
        dataclasses.replace(p, metadata={"instructions": texts}) for p in synthetic_pairs(4, 0)
    ]
    result = fit_intervention(model, tokenizer, pairs, config("pairs.jsonl", epochs=1))
    assert result.code.method == "cdas" and result.code.meta["contrast"] == "metadata"
    assert result.history == result.code.meta["history"] and len(result.history) == 1


# --------------------------------------------------------------------------- bad input


def test_pairs_without_a_contrast_are_refused(tiny_model):
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match=r"system-prompt contrast.*metadata"):
        cdas.fit(model, tokenizer, synthetic_pairs(3, 0), config("pairs.jsonl"))


def test_a_prompt_cut_to_the_same_tokens_is_refused(tiny_model):
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match=r"tokenize identically.*max_length"):
        cdas.fit(model, tokenizer, small_pairs(n=2), config(max_length=32))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"cdas_lr": float("inf")}, "cdas_lr must be a finite"),
        ({"cdas_lr": float("nan")}, "cdas_lr must be a finite"),
        ({"cdas_lr": -0.1}, "cdas_lr must be a finite"),
        ({"hook_name": "blocks.0.hook_mlp_out"}, "residual-stream site"),
        ({"hook_name": "blocks.7.hook_resid_post"}, "beyond the model"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(tiny_model, overrides, message):
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match=message):
        cdas.fit(model, tokenizer, small_pairs(n=2), config(**overrides))


def test_an_unknown_init_is_refused(tiny_model):
    model, tokenizer = tiny_model
    cfg = config()
    cfg.cdas_init = "zeros"
    with pytest.raises(ValueError, match="cdas_init must be one of"):
        cdas.fit(model, tokenizer, small_pairs(n=2), cfg)


def test_a_model_with_nan_weights_is_refused(tiny_model):
    model, tokenizer = tiny_model
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.blocks[1].mlp.W_out.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="not finite"):
        cdas.fit(broken, tokenizer, small_pairs(n=2), config())


def test_a_nan_loss_stops_training_with_a_clear_error(tiny_model):
    model, _ = tiny_model
    data = data_for(tiny_model, "formality")
    data.base_resid[0, 3] = float("nan")
    v0 = cdas.initial_direction(data, "mean-diff", 0)
    with pytest.raises(FloatingPointError, match="Non-finite cdas loss"):
        cdas.train_direction(model, data, LAYER, v0, config(), 0.04)
