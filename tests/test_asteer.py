"""ASTEER strength prediction on the tiny model: features (KV cache, α), labels against direct
computation, the search on a case whose answer is known, predictor save/refit, resumable
rollouts, `saesteer generate --alpha auto`, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import hand_controller, one_thread  # noqa: F401 (one_thread: an autouse fixture)

from saesteer.steer.asteer.features import FeatureSpec, feature_names, steer_features
from saesteer.steer.asteer.labels import CLASSES, Judge, LabelRule, label_of, rollout
from saesteer.steer.asteer.predictor import (
    PredictorMismatchError,
    StrengthPredictor,
    StrengthTable,
    leave_one_group_out,
    load_predictor,
    train_predictor,
)
from saesteer.steer.asteer.search import (
    Candidates,
    compare_on_table,
    grid_search,
    search_strength,
)
from saesteer.steer.codes import DenseVector
from saesteer.steer.generate import batch_prompt_ids

PROMPTS = ["Hello there, how are", "The cat sat on the"]
GRID = [1.0, 2.0, 4.0, 8.0]


@pytest.fixture(scope="module")
def code():
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    return DenseVector(v, "blocks.0.hook_resid_post", "tiny-test", "mean-diff")


def _batch(tokenizer):
    return batch_prompt_ids(tokenizer, PROMPTS)


def synthetic_table(n_per_group: int = 40, seed: int = 0) -> StrengthTable:
    """Random features whose α column decides the label: α < 2 under, 2 ≤ α ≤ 6 success, else over."""
    spec = FeatureSpec()
    rng = np.random.default_rng(seed)
    names = feature_names(spec)
    rows, labels, groups = [], [], []
    for g in range(3):
        for _ in range(n_per_group):
            alpha = float(rng.choice([0.5, 1, 2, 4, 6, 8, 12]))
            x = rng.normal(size=len(names))
            x[names.index("alpha")] = alpha
            rows.append(x)
            labels.append(0 if alpha < 2 else (1 if alpha <= 6 else 2))
            groups.append(g)
    model = {"name": "tiny-test", "d_model": 64, "n_layers": 2}
    return StrengthTable(
        np.array(rows), np.array(labels), np.array(groups), ["a", "b", "c"], spec, model
    )


class PeakPredictor:
    """P(success) highest at α = `peak`, read from the α feature (a synthetic predictor)."""

    def __init__(self, peak: float, spec: FeatureSpec | None = None) -> None:
        self.peak, self.spec = peak, spec or FeatureSpec()
        self.column = feature_names(self.spec).index("alpha")

    def predict_proba(self, X):
        alpha = np.asarray(X)[:, self.column]
        p = 1 / (1 + np.abs(alpha - self.peak))
        return np.stack([(1 - p) / 2, p, (1 - p) / 2], 1)


def judge_at(alpha_ok: float):
    """A judge whose success is known: exactly the rollouts at α = alpha_ok."""

    def judge(alpha, indices, rollouts):
        return ["success" if alpha == alpha_ok else "under" for _ in rollouts]

    return judge


# ----------------------------------------------------------------------------------- features


def test_features_same_with_and_without_kv_cache_and_change_with_alpha(tiny_model, code):
    model, tokenizer = tiny_model
    ids, mask = _batch(tokenizer)
    spec = FeatureSpec()
    names = feature_names(spec)
    cached = steer_features(model, code, ids, mask, 3.0, spec, use_cache=True)
    uncached = steer_features(model, code, ids, mask, 3.0, spec, use_cache=False)
    assert cached.shape == (2, len(names))
    assert torch.equal(cached, uncached)
    other = steer_features(model, code, ids, mask, 6.0, spec)
    assert not torch.allclose(cached, other)
    col = {n: i for i, n in enumerate(names)}
    assert cached[:, col["alpha"]].tolist() == [3.0, 3.0]
    # additive code: the edit at the site is exactly αv, so ‖Δ‖ = α‖v‖ and at layer L, s − r ∥ Δ
    assert cached[:, col["delta_norm"]].tolist() == pytest.approx(
        [3 * code.vector.norm().item()] * 2, rel=1e-5
    )
    assert cached[:, col["align_t0_L+0"]].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert cached[:, col["dist_t0_L+0"]].tolist() == pytest.approx(
        [3 * code.vector.norm().item()] * 2, rel=1e-5
    )
    off = steer_features(model, code, ids, mask, 0.0, spec)
    assert off[:, col["dist_mean"]].abs().max().item() == 0.0


def _code_of_every_kind(kind, model, tokenizer, tmp_path):
    """A code of each run-time kind `steer` takes: a feedback intervention (lqr), a weight edit
    (steer2edit), a gated probe edit (swfc) and a controller."""
    from saesteer.steer.behaviours import BEHAVIOURS, behaviour_pairs
    from saesteer.steer.config import TrainSteerConfig
    from saesteer.steer.train import fit_steering

    if kind == "controller":
        cfg = model.cfg
        return hand_controller(cfg.d_model, cfg.n_layers, cfg.model_name)
    extra = {"lqr_prompts": 3, "lqr_jacobians": str(tmp_path / "j.safetensors")}
    config = TrainSteerConfig(
        pairs="formality",
        method=kind,
        chat=BEHAVIOURS["formality"].chat,
        progress=False,
        **(extra if kind == "lqr" else {}),
    )
    return fit_steering(model, tokenizer, behaviour_pairs("formality")[:9], config).code


@pytest.mark.parametrize("kind", ["lqr", "steer2edit", "swfc", "controller"])
def test_features_and_search_for_every_kind_of_code(tiny_model, tmp_path, kind):
    """`--alpha auto` is method-agnostic: features of each kind are finite, the same with and
    without the KV cache, move with α, are zero-edit at α = 0, and the search runs on them."""
    model, tokenizer = tiny_model
    code = _code_of_every_kind(kind, model, tokenizer, tmp_path)
    ids, mask = _batch(tokenizer)
    col = feature_names(FeatureSpec()).index("dist_mean")
    cached = steer_features(model, code, ids, mask, 2.0, use_cache=True)
    assert torch.isfinite(cached).all()
    assert torch.equal(cached, steer_features(model, code, ids, mask, 2.0, use_cache=False))
    assert not torch.allclose(cached, steer_features(model, code, ids, mask, 4.0))
    assert cached[:, col].min() > 0
    assert steer_features(model, code, ids, mask, 0.0)[:, col].abs().max() == 0
    found = search_strength(
        model, tokenizer, code, PROMPTS, GRID, PeakPredictor(4.0), judge_at(4.0), max_new_tokens=4
    )
    assert found.alphas == [4.0, 4.0] and found.decodes == [1, 1]


def test_features_on_a_hugging_face_model(tiny_model):
    """The HF path (batched, left-padded forwards): same features with and without the KV cache,
    and a prompt's features do not depend on the batch it is padded into."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = tiny_model
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    hf = LlamaForCausalLM(config).eval()
    code = DenseVector(torch.randn(64) * 3, "blocks.0.hook_resid_post", "", "mean-diff")
    ids, mask = _batch(tokenizer)
    cached = steer_features(hf, code, ids, mask, 2.0)
    assert torch.equal(cached, steer_features(hf, code, ids, mask, 2.0, use_cache=False))
    alone = steer_features(hf, code, *batch_prompt_ids(tokenizer, PROMPTS[1:]), 2.0)
    assert torch.allclose(cached[1], alone[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- labels


def test_label_rule_on_texts():
    from saesteer.steer.behaviours import behaviour

    food = behaviour("topic-food")
    rule = LabelRule(budget=2.0, max_repetition=0.5)
    on, off = "I love cooking pasta and eating fresh bread.", "The weather was grey all week."
    assert food.succeeded(on) and not food.succeeded(off)
    assert label_of(food.succeeded(on), 3.0, 2.0, 0.1, rule) == "success"  # 3 ≤ 2 · 2
    assert label_of(food.succeeded(on), 4.5, 2.0, 0.1, rule) == "over"  # 4.5 > 4
    assert label_of(food.succeeded(on), 3.0, 2.0, 0.6, rule) == "over"  # repetition
    assert label_of(food.succeeded(off), 3.0, 2.0, 0.1, rule) == "under"
    assert label_of(False, float("nan"), 2.0, 0.0, rule) == "under"  # empty rollout
    with pytest.raises(ValueError, match="budget"):
        LabelRule(budget=1.0)


def test_rollout_labels_match_direct_computation(tiny_model, code):
    from saesteer.audit.metrics import ngram_repetition
    from saesteer.steer.hooks import steer

    model, tokenizer = tiny_model
    ids, mask = _batch(tokenizer)
    base = rollout(model, tokenizer, None, 0.0, ids, mask, 8)
    outs = rollout(model, tokenizer, code, 6.0, ids, mask, 8)
    ref = math.exp(sum(r["nll"] for r in base) / sum(r["tokens"] for r in base))
    succeeded = lambda text: "a" in text  # noqa: E731
    labels = Judge(succeeded, ref, LabelRule())(6.0, [0, 1], outs)
    for i, (out, label) in enumerate(zip(outs, labels, strict=True)):
        prompt = ids[i][mask[i].bool()]
        # the steered model's greedy tokens, then their perplexity under the unsteered model
        with steer(model, code, 6.0):
            row = prompt.clone()
            for _ in range(out["tokens"]):
                row = torch.cat([row, model(row[None])[0, -1].argmax()[None]])
        gen = row[prompt.numel() :]
        assert gen.tolist() == out["ids"]
        logp = torch.log_softmax(model(row[None])[0].double(), -1)
        nll = -logp[prompt.numel() - 1 : -1].gather(-1, gen[:, None])[:, 0].sum().item()
        ppl = math.exp(nll / gen.numel())
        assert out["ppl"] == pytest.approx(ppl, rel=1e-4)
        rep = ngram_repetition(gen.tolist(), 3)
        text = tokenizer.decode(gen, skip_special_tokens=True).strip()
        want = "over" if ppl > 2 * ref or rep > 0.5 else ("success" if "a" in text else "under")
        assert label == want


# ------------------------------------------------------------------------------------- search


def test_search_finds_the_grids_alpha_with_fewer_tokens(tiny_model, code):
    model, tokenizer = tiny_model
    judge = judge_at(4.0)
    searched = search_strength(
        model, tokenizer, code, PROMPTS, GRID, PeakPredictor(4.0), judge, max_new_tokens=8
    )
    full = grid_search(model, tokenizer, code, PROMPTS, GRID, judge, max_new_tokens=8)
    assert full.alphas == [4.0, 4.0] and full.success == [True, True]
    assert searched.alphas == full.alphas and searched.success == [True, True]
    assert searched.decodes == [1, 1] and full.decodes == [4, 4]
    assert sum(searched.tokens) < sum(full.tokens)
    assert searched.ranked[0][0][0] == 4.0
    # the predictor's favourite fails: the search goes on to its second choice
    second = search_strength(
        model,
        tokenizer,
        code,
        PROMPTS,
        GRID,
        PeakPredictor(3.0),
        judge,
        max_new_tokens=8,
        max_decodes=3,
    )
    assert second.alphas == [4.0, 4.0] and second.decodes == [2, 2]
    # no predictor: the ascending sweep, no feature steps (1 and 2 under, then 4)
    swept = search_strength(model, tokenizer, code, PROMPTS, GRID, None, judge, max_new_tokens=8)
    assert swept.alphas == [4.0, 4.0] and swept.decodes == [3, 3]
    assert [a for a, _ in swept.ranked[0]] == GRID and all(t <= 3 * 8 for t in swept.tokens)
    # no judge: the top-1 α, decoded once
    blind = search_strength(
        model, tokenizer, code, PROMPTS, GRID, PeakPredictor(2.0), None, max_new_tokens=8
    )
    assert blind.alphas == [2.0, 2.0] and blind.success == [None, None] and blind.decodes == [1, 1]


def test_pruning_stops_a_search_that_cannot_succeed(tiny_model, code):
    """Under at α ≤ 2, over at α ≥ 4: no α of the grid succeeds. Ranked 4, 2, 8, 1 (peak 4), the
    pruned search decodes 4 (over: closes 4, 8) and 2 (under: closes 1, 2) and stops; unpruned it
    decodes the whole grid."""
    model, tokenizer = tiny_model

    def judge(alpha, indices, rollouts):
        return ["under" if alpha <= 2 else "over" for _ in rollouts]

    runs = {
        prune: search_strength(
            model,
            tokenizer,
            code,
            PROMPTS,
            GRID,
            PeakPredictor(4.0),
            judge,
            max_new_tokens=4,
            max_decodes=0,
            prune=prune,
        )
        for prune in (True, False)
    }
    assert runs[True].decodes == [2, 2] and runs[True].success == [False, False]
    assert runs[False].decodes == [4, 4] and runs[False].success == [False, False]
    assert runs[True].alphas == runs[False].alphas == [4.0, 4.0]  # the top-ranked candidate
    assert sum(runs[True].tokens) < sum(runs[False].tokens)


def test_candidates_prune_and_pick():
    grid = [0.5, 1.0, 2.0, 4.0, 8.0]
    ranked = Candidates(grid, [3, 0, 4, 2, 1])
    assert ranked.next() == 3
    ranked.tell(3, "over")  # closes 4 and 8
    assert ranked.open == {0, 1, 2} and ranked.next() == 0
    ranked.tell(0, "under")  # closes 0.5
    assert ranked.open == {1, 2} and ranked.next() == 2
    unpruned = Candidates(grid, [3, 0, 4, 2, 1], prune=False)
    unpruned.tell(3, "over")
    assert unpruned.next() == 0 and unpruned.open == {0, 1, 2, 4}
    halves = Candidates(grid, pick="bisect")
    assert halves.next() == 2  # the lower median of 5
    halves.tell(2, "under")
    assert halves.next() == 3  # of {4, 8}: the lower
    halves.tell(3, "over")
    assert halves.next() is None
    with pytest.raises(ValueError, match="ranked"):
        Candidates(grid, pick="bisect", order=[0])


def test_compare_on_table_by_hand():
    grid = [1.0, 2.0, 4.0]
    labels = np.array([[0, 1, 2], [0, 0, 1]])  # item 0 succeeds at α=2, item 1 at α=4
    tokens = np.full((2, 3), 10)
    p = np.array([[0.1, 0.9, 0.2], [0.3, 0.5, 0.4]])  # item 1's top-1 is wrong, its 2nd right
    out = compare_on_table(p, labels, tokens, grid, k_steps=2, budgets=(1, 2))
    assert out["search@1"]["success_rate"] == 0.5 and out["search@1"]["tokens"] == 2 * 3 * 2 + 20
    assert out["search@2"]["success_rate"] == 1.0 and out["search@2"]["tokens"] == 12 + 30
    assert out["grid"] == {
        "success_rate": 1.0,
        "tokens": 60.0,
        "tokens_per_item": 30.0,
        "decodes": 6.0,
    }
    assert out["sweep"]["tokens"] == 20 + 30 and out["oracle"]["tokens"] == 20
    assert out["fixed"]["success_rate"] == 0.5 and out["fixed"]["alpha"] == 2.0
    # bisection: item 0 succeeds at its median α = 2; item 1 is under there, then succeeds at 4
    assert out["bisection"] == {
        "success_rate": 1.0,
        "tokens": 30.0,
        "tokens_per_item": 15.0,
        "decodes": 3.0,
    }
    # item 2 breaks the monotone order (over at α = 1, success at 2): pruning loses it
    labels3 = np.vstack([labels, [2, 1, 2]])
    p3, tokens3 = np.vstack([p, [0.9, 0.5, 0.1]]), np.full((3, 3), 10)
    out = compare_on_table(p3, labels3, tokens3, grid, k_steps=2, budgets=(1, 2))
    assert out["grid"]["success_rate"] == 1.0 and out["sweep"]["success_rate"] == 1.0
    assert out["sweep, pruned"]["success_rate"] == pytest.approx(2 / 3)
    assert out["sweep, pruned"]["tokens"] == 20 + 30 + 10  # item 2: one decode, then nothing open
    assert out["search, pruned"]["success_rate"] == pytest.approx(2 / 3)
    assert out["search@2"]["success_rate"] == 1.0  # unpruned: its 2nd choice α = 2 succeeds
    assert out["search"]["success_rate"] == 1.0 and out["search"]["tokens"] == 18 + 10 + 20 + 20


# ---------------------------------------------------------------------------------- predictor


def test_predictor_saves_and_refits_to_identical_predictions(tmp_path):
    table = synthetic_table()
    predictor = train_predictor(table, n_trials=3, seed=0, info={"grid": GRID})
    assert len(predictor.search) == 3
    X = synthetic_table(seed=1).X
    before = predictor.predict_proba(X)
    assert before.shape == (len(X), 3)
    assert (before.argmax(1) == synthetic_table(seed=1).y).mean() > 0.9
    folder = predictor.save(tmp_path / "p")
    again = load_predictor(folder)
    assert np.array_equal(again.predict_proba(X), before)
    assert again.params == predictor.params and again.info == {"grid": GRID}
    again.check_model(64, 2, "tiny-test")
    with pytest.raises(PredictorMismatchError, match="trained on model tiny-test"):
        again.check_model(576, 30, "smollm2-135m-instruct")
    with pytest.raises(PredictorMismatchError, match="trained on features"):
        load_predictor(folder, spec=FeatureSpec(k_steps=3))
    meta = json.loads((folder / "predictor.json").read_text())
    meta["feature_names"] = meta["feature_names"][:-1]
    (folder / "predictor.json").write_text(json.dumps(meta))
    with pytest.raises(PredictorMismatchError, match="another feature set"):
        load_predictor(folder)
    (folder / "table.safetensors").write_bytes((folder / "table.safetensors").read_bytes()[:-8])
    with pytest.raises(PredictorMismatchError, match="checksum"):
        load_predictor(folder)


@pytest.mark.parametrize("nested", [False, True])
def test_leave_one_behaviour_out(nested):
    table = synthetic_table()
    result = leave_one_group_out(table, n_trials=2, seed=0, nested=nested)
    assert set(result["per_group"]) == {"a", "b", "c"} and result["nested"] == nested
    assert result["macro_f1"] > 0.8 and result["proba"].shape == (120, 3)
    assert sum(map(sum, result["confusion"])) == 120
    if not nested:  # the best trial's out-of-behaviour predictions, refitted by hand
        from saesteer.steer.asteer.predictor import subset

        held = table.groups == 1
        alone = StrengthPredictor(subset(table, ~held), result["params"], seed=0)
        assert np.allclose(alone.predict_proba(table.X[held]), result["proba"][held])


def test_resumable_rollouts(tiny_model, code, tmp_path, monkeypatch):
    from saesteer.steer.asteer import rollouts as module

    model, tokenizer = tiny_model
    store = module.RolloutStore(tmp_path / "r")

    def collect():
        return module.collect_rollouts(
            model,
            tokenizer,
            code,
            "sentiment",
            "md",
            PROMPTS,
            [1.0, 4.0],
            max_new_tokens=6,
            store=store,
        )

    rows = collect()
    assert len(rows) == 4 and {r["label"] for r in rows} <= set(CLASSES)
    assert len(rows[0]["features"]) == len(feature_names(FeatureSpec()))

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a stored cell")

    monkeypatch.setattr(module, "rollout", fail)
    monkeypatch.setattr(module, "steer_features", fail)
    again = collect()
    assert again == rows


def test_generate_alpha_auto_cli(tiny_model, code, tmp_path, capsys):
    from saesteer.cli import main
    from saesteer.steer.io import save_code

    save_code(code, tmp_path / "code")
    table = synthetic_table()
    StrengthPredictor(table, seed=0, info={"grid": [0.5, 4.0, 12.0]}).save(tmp_path / "pred")
    argv = [
        "generate",
        "--model",
        "tiny-test",
        "--prompt",
        PROMPTS[0],
        "--prompt",
        PROMPTS[1],
        "--max-new-tokens",
        "4",
        "--steer",
        str(tmp_path / "code"),
        "--alpha",
        "auto",
        "--strength-model",
        str(tmp_path / "pred"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("### α = 4 ·") == 2  # the synthetic predictor's success band is 2..6
    assert main([*argv, "--alpha-grid", "0.5,12"]) == 0
    assert "### α = 4" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------- bad input


def test_bad_input(tiny_model, code, tmp_path):
    from saesteer.steer.asteer.features import check_alpha_grid
    from saesteer.steer.asteer.rollouts import collect_rollouts

    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match="grid is empty"):
        check_alpha_grid([])
    with pytest.raises(ValueError, match="grid is empty"):
        search_strength(model, tokenizer, code, PROMPTS, [], PeakPredictor(1.0))
    with pytest.raises(ValueError, match="finite"):
        check_alpha_grid([1.0, float("nan")])
    with pytest.raises(ValueError, match="Unknown behaviour"):
        collect_rollouts(model, tokenizer, code, "no-such-behaviour", "md", PROMPTS, [1.0])
    predictor = StrengthPredictor(synthetic_table(), seed=0)
    n = predictor.n_features
    with pytest.raises(ValueError, match=f"trained on {n} features"):
        predictor.predict_proba(np.zeros((2, n + 5)))
    with pytest.raises(ValueError, match="features but the feature spec"):
        StrengthTable(np.zeros((3, 10)), np.zeros(3), np.zeros(3), ["a"])
    with pytest.raises(ValueError, match="k_steps"):
        FeatureSpec(k_steps=0)
    with pytest.raises(FileNotFoundError, match="strength-predictor folder"):
        load_predictor(tmp_path / "missing")
    with pytest.raises(ValueError, match="max_decodes"):
        search_strength(model, tokenizer, code, PROMPTS, GRID, PeakPredictor(1.0), max_decodes=-1)
    from saesteer.cli import main

    assert main(["generate", "--model", "tiny-test", "--prompt", "x", "--alpha", "auto"]) != 0


# ------------------------------------------------------------------------ bench-steer policy


def test_bench_steer_alphas_predicted(tiny_model, tmp_path):
    from saesteer.bench import BenchSteerConfig, run_bench

    model, tokenizer = tiny_model
    config = BenchSteerConfig(
        out=str(tmp_path / "bench"),
        model="tiny-test",
        sae="",
        behaviours=["sentiment", "topic-food"],
        methods=["mean-diff"],
        alphas="predicted",
        strength_grid="1,2,4,8",
        strength_decodes=1,
        strength_trials=2,
        n_prompts=2,
        max_new_tokens=12,
        capability="none",
        boot=50,
        progress=False,
    )
    result = run_bench(config, model, tokenizer)
    assert result.failures == []
    for name in ("sentiment", "topic-food"):
        method = result.report["behaviours"][name]["methods"]["mean-diff"]
        search = method["codes"][0]["strength_search"]
        other = {"sentiment": "topic-food", "topic-food": "sentiment"}[name]
        assert search["trained_on"] == [other] and search["grid"] == [1.0, 2.0, 4.0, 8.0]
        assert len(search["decoded"]) == 1 and search["decoded"][0] == search["ranking"][0]["alpha"]
        assert [r["alpha"] for r in method["cells"][0]] == search["decoded"]  # the leaderboard's
        # tokens: K · G · n feature steps + the decoded cell, against all G cells
        assert search["search"]["tokens"] <= 5 * 4 * 2 + 12 * 2
        assert search["grid_search"]["tokens"] <= 4 * 12 * 2
        assert search["tokens_saved"] == pytest.approx(
            1 - search["search"]["tokens"] / search["grid_search"]["tokens"]
        )
    # every decode: over the limit closes the larger α, within it the smaller (never revisited)
    wide = {**vars(config), "out": str(tmp_path / "wide"), "strength_decodes": 4}
    wide["strength_compare"] = False
    report = run_bench(BenchSteerConfig(**wide), model, tokenizer).report
    lengths = []
    for name in ("sentiment", "topic-food"):
        method = report["behaviours"][name]["methods"]["mean-diff"]
        limit = report["behaviours"][name]["limit_ppl"]
        cells = {c["alpha"]: c for c in method["cells"][0]}
        decoded = method["codes"][0]["strength_search"]["decoded"]
        assert decoded[0] == method["codes"][0]["strength_search"]["ranking"][0]["alpha"]
        for i, alpha in enumerate(decoded):
            over = cells[alpha]["ppl"] > limit
            assert all((a < alpha) if over else (a > alpha) for a in decoded[i + 1 :])
        lengths.append(len(decoded))
    assert max(lengths) > 1 and min(lengths) < 4  # it searched, and pruning stopped it early
    with pytest.raises(ValueError, match="strength-grid is empty"):
        BenchSteerConfig(out=str(tmp_path / "x"), alphas="predicted", strength_grid="")
    single = {**vars(config), "out": str(tmp_path / "one"), "behaviours": ["sentiment"]}
    failed = run_bench(BenchSteerConfig(**single), model, tokenizer).failures
    assert len(failed) == 1 and "at least two" in failed[0]["error"]


def test_train_strength_cli_then_generate_auto(tiny_model, tmp_path, capsys):
    """`saesteer train-strength` end to end (tiny settings), its predictor used by generate."""
    from saesteer.cli import main

    out = tmp_path / "strength"
    argv = ["train-strength", "--model", "tiny-test", "--behaviours", "sentiment", "topic-food",
            "--n-prompts", "2", "--alphas", "1,4", "--max-new-tokens", "4", "--trials", "1",
            "--threads", "0", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    assert sum(sum(c.values()) for c in report["labels"].values()) == 2 * 2 * 2
    assert set(report["lobo"]["per_group"]) == {"sentiment", "topic-food"}
    assert {"search@1", "grid", "sweep", "fixed", "oracle"} <= set(report["search"]["all"])
    predictor = load_predictor(out / "predictor")
    assert predictor.info["grid"] == [1.0, 4.0] and predictor.table.X.shape[0] == 8
    capsys.readouterr()
    code_dir = out / "codes" / "sentiment" / "mean-diff"
    assert main(["generate", "--model", "tiny-test", "--prompt", "Hi", "--max-new-tokens", "3",
                 "--steer", str(code_dir), "--alpha", "auto", "--strength-model",
                 str(out / "predictor")]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("### α = ")
    with pytest.raises(ValueError, match="at least 2 behaviours"):
        from saesteer.steer.asteer.train import TrainStrengthConfig

        TrainStrengthConfig(out=str(out), behaviours=["sentiment"])
