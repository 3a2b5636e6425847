"""The benchmark's formulas, the strength search and the method specs, on hand-made cases."""

from __future__ import annotations

import math

import pytest

from saesteer.bench import metrics
from saesteer.bench.config import BenchSteerConfig
from saesteer.bench.methods import parse_method
from saesteer.bench.strength import auto_alphas
from saesteer.bench.summary import best_cell, mark_distinguishable, summarise_method


def test_coherence_formulas():
    assert metrics.distinct_n([[1, 2, 1, 2], [3]], 2) == pytest.approx(2 / 3)
    assert metrics.distinct_n([[1]], 2) == 1.0
    loop = "the cat sat " * 20
    varied = "A quick brown fox jumps over the lazy dog near a river bank at dawn."
    assert metrics.compression_ratio([loop]) > 3 > metrics.compression_ratio([varied])
    assert metrics.compression_ratio(["", "  "]) == 1.0
    assert metrics.coherence(4.0, 2.0) == 0.5
    assert metrics.coherence(1.0, 2.0) == 1.0
    assert metrics.coherence(float("nan"), 2.0) == 0.0
    assert metrics.harmonic_mean(1.0, 0.5) == pytest.approx(2 / 3)
    assert metrics.harmonic_mean(0.0, 1.0) == 0.0


def test_reading_grade_orders_simple_below_academic_text():
    assert metrics.syllables("cat") == 1
    assert metrics.syllables("table") == 2
    assert metrics.syllables("make") == 1
    simple = "The cat sat. The dog ran. We had fun."
    academic = (
        "Comprehensive institutional considerations necessitate interdisciplinary "
        "methodological evaluation of organisational responsibilities."
    )
    assert metrics.reading_grade(simple) < 2 < 15 < metrics.reading_grade(academic)
    # by hand: 9 words, 3 sentences, 9 syllables → 0.39·3 + 11.8·1 − 15.59
    assert metrics.reading_grade(simple) == pytest.approx(0.39 * 3 + 11.8 - 15.59)
    assert metrics.reading_grade("") == 0.0


def test_side_effects_split_the_change_into_requested_and_orthogonal_parts():
    base = [{"target": 0.0, "length": 10.0}, {"target": 2.0, "length": 14.0}]  # σ: 1 and 2
    steered = [{"target": 3.0, "length": 18.0}, {"target": 3.0, "length": 18.0}]  # Δ: 2 and 3
    out = metrics.side_effects(steered, base, "target")
    assert out["delta_target"] == pytest.approx(2.0)
    assert out["delta_length"] == pytest.approx(3.0)
    assert out["along"] == pytest.approx(2.0)
    assert out["side"] == pytest.approx(3.0)
    flat = metrics.side_effects(base, [{"target": 1.0, "length": 10.0}] * 2, "target")
    assert math.isfinite(flat["side"])  # a zero spread is floored, not divided by


def test_success_at_budget_interpolates_where_ppl_crosses_the_limit():
    curve = [(2.0, 0.0), (3.0, 0.4), (5.0, 0.8)]
    assert metrics.success_at_budget(curve, 4.0) == (pytest.approx(0.6), True)
    assert metrics.success_at_budget(curve, 9.0) == (0.8, False)


def test_bootstrap_intervals():
    assert metrics.bootstrap_interval([[1.0] * 5, [1.0] * 5], 200) == (1.0, 1.0)
    lo, hi = metrics.bootstrap_interval([[0.0, 1.0] * 10], 500)
    assert lo < 0.5 < hi
    same = [[0.0, 1.0, 1.0, 0.0]]
    assert metrics.paired_difference_interval(same, same, 200) == (0.0, 0.0)
    better = [[1.0, 1.0, 1.0, 1.0]]
    lo, hi = metrics.paired_difference_interval(better, [[0.0, 0.0, 0.0, 0.0]], 200)
    assert lo == hi == 1.0
    with pytest.raises(ValueError, match="same prompts"):
        metrics.paired_difference_interval([[1.0]], [[1.0, 0.0]])


def test_auto_alphas_bracket_then_bisect_the_budget_crossing():
    calls = []

    def ppl_at(alpha):  # monotone in α: crosses the limit 4 at α = 3
        calls.append(alpha)
        return 1.0 + alpha

    probes = auto_alphas(ppl_at, 4.0, 6)
    assert calls[:3] == [1.0, 2.0, 4.0]  # bracket: double from the trained strength
    assert len(probes) == len(calls) == 6  # each strength evaluated once
    inside = max(a for a in probes if 1 + a <= 4)
    over = min(a for a in probes if 1 + a > 4)
    assert inside <= 3 < over and over / inside < 1.2  # bisected close to the crossing
    # too strong at α = 1: halves until within the budget
    probes = auto_alphas(lambda a: 1.0 + 10 * a, 4.0, 4)
    assert min(probes) < 0.3 and max(probes) == 1.0


def test_best_cell_is_the_grid_best_within_budget():
    cells = [
        {"alpha": 1.0, "ppl": 3.0, "success": [0.0, 1.0]},
        {"alpha": 2.0, "ppl": 3.5, "success": [1.0, 1.0]},
        {"alpha": 4.0, "ppl": 9.0, "success": [1.0, 1.0]},
    ]
    assert best_cell(cells, 4.0)["alpha"] == 2.0
    assert best_cell(cells, 2.0) is None


def _cells(success: list[float], ppl: float = 3.0) -> list[dict]:
    n = len(success)
    return [
        {
            "alpha": 1.0,
            "ppl": ppl,
            "success": success,
            "score": success,
            "embed": [0.0] * n,
            "kl": 0.0,
            "distinct_2": 1.0,
            "repetition": 0.0,
            "compression": 1.0,
        }
    ]


def test_distinguishability_against_the_leader():
    base = {"ppl": 2.0, "success": [0.0] * 8, "score": [0.0] * 8, "embed": [0.0] * 8}
    entries = {
        "strong": summarise_method({0: _cells([1.0] * 8)}, base, 2.0, 200),
        "close": summarise_method({0: _cells([1.0] * 7 + [0.0])}, base, 2.0, 200),
        "weak": summarise_method({0: _cells([0.0] * 8)}, base, 2.0, 200),
        "broken": summarise_method({0: _cells([1.0] * 8, ppl=50.0)}, base, 2.0, 200),
    }
    assert mark_distinguishable(entries, 500) == "strong"
    assert entries["close"]["distinguishable"] is False
    assert entries["weak"]["distinguishable"] is True
    assert entries["broken"]["best"] is None and "vs_leader" not in entries["broken"]


def test_method_specs():
    assert parse_method("bipo").base == "bipo"
    spec = parse_method("sparse-mean-diff")
    assert spec.base == "yapo" and dict(spec.overrides) == {"support_by": "mean-diff", "lr": 0}
    assert spec.deterministic and parse_method("mean-diff").deterministic
    assert not parse_method("yapo").deterministic
    custom = parse_method("yapo:top_k=64,yapo_mode=anneal,lr=1e-3")
    assert dict(custom.overrides) == {"top_k": 64, "yapo_mode": "anneal", "lr": 0.001}
    config = custom.train_config("sentiment", False, 3, {"model": "tiny-test"})
    assert (config.top_k, config.yapo_mode, config.seed, config.method) == (64, "anneal", 3, "yapo")
    assert parse_method("code:some/dir").code_dir == "some/dir"
    with pytest.raises(ValueError, match="Unknown steering method 'dpo'"):
        parse_method("dpo")
    with pytest.raises(ValueError, match="not key=value"):
        parse_method("yapo:topk=3")
    with pytest.raises(ValueError, match="not key=value"):
        parse_method("yapo:seed=3")  # the harness owns seeds
    with pytest.raises(ValueError, match="code folder"):
        parse_method("code:")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"alphas": "1,x"}, "--alphas must be"),
        ({"alphas": "0"}, "non-zero"),
        ({"alphas": "1,nan"}, "finite"),
        ({"budget": 1.0}, "--budget"),
        ({"budget": float("inf")}, "--budget"),
        ({"seeds": 0}, "--seeds"),
        ({"n_prompts": -1}, "--n-prompts"),
        ({"methods": []}, "at least one"),
        ({"capability": "some"}, "--capability"),
    ],
)
def test_config_rejects_bad_values_at_once(values, message):
    with pytest.raises(ValueError, match=message):
        BenchSteerConfig(out="x", **values)


def test_config_grid():
    assert BenchSteerConfig(out="x").grid() is None
    assert BenchSteerConfig(out="x", alphas="4, 1,0,1").grid() == [1.0, 4.0]
