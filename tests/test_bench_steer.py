"""`saesteer bench-steer` end to end on the tiny model: a 2-method × 2-strength grid, its numbers
against direct computation, the page in Chromium, resume, extension, and bad input."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from saesteer.bench import BenchSteerConfig, run_bench
from saesteer.outputs import Output

SETTINGS = {
    "model": "tiny-test",
    "sae": "",
    "behaviours": ["sentiment"],
    "methods": ["mean-diff", "bipo"],
    "alphas": "1,4",
    "seeds": 1,
    "epochs": 1,
    "n_prompts": 3,
    "max_new_tokens": 6,
    "n_capability": 8,
    "brown_tokens": 256,
    "boot": 200,
    "progress": False,
}


def _config(out, **changes) -> BenchSteerConfig:
    return BenchSteerConfig(out=str(out), **{**SETTINGS, **changes})


@pytest.fixture(scope="module")
def bench(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "grid"
    model, tokenizer = tiny_model
    return run_bench(_config(out), model, tokenizer)


def _row(result, method: str, alpha: float) -> dict:
    return next(r for r in result.report["rows"] if r["method"] == method and r["alpha"] == alpha)


def test_outputs_and_the_grid(bench):
    root = bench.results.parent
    for name in (
        "results.json",
        "report.html",
        "leaderboard.md",
        "pareto_sentiment.png",
        "strength_sentiment.png",
    ):
        assert (root / name).stat().st_size > 0
    report = json.loads(bench.results.read_text())
    assert bench.failures == [] and report["failures"] == []
    assert {(r["method"], r["alpha"]) for r in report["rows"]} == {
        (m, a) for m in ("mean-diff", "bipo") for a in (1.0, 4.0)
    }
    entry = report["behaviours"]["sentiment"]
    assert entry["leader"] in ("mean-diff", "bipo")
    assert len(entry["prompts"]) == 3
    for part in ("fit", "generation", "scoring", "capability", "wall"):
        assert report["seconds"][part] > 0
    # capability at the baseline and at each method's best cell within the budget
    assert 0 <= entry["unsteered"]["mc_accuracy"] <= 1 and entry["unsteered"]["brown_ppl"] > 1
    for method in entry["methods"].values():
        if method["best"] is not None:
            assert method["best"]["mc_accuracy"] is not None
        assert len(method["codes"]["0"]["code_sha256"]) == 64


def test_one_cell_matches_direct_computation(bench, tiny_model):
    """mean-diff at α = 4: texts, success, perplexity and KL recomputed without the harness."""
    from saesteer.audit.config import NEUTRAL_PROMPTS
    from saesteer.generation import prompt_token_ids
    from saesteer.steer.behaviours import behaviour
    from saesteer.steer.generate import generate_ids_steered, generate_steered
    from saesteer.steer.hooks import steer
    from saesteer.steer.io import load_code

    model, tokenizer = tiny_model
    root = bench.results.parent
    prompts = bench.report["behaviours"]["sentiment"]["prompts"]
    code = load_code(root / "codes" / "sentiment" / "mean-diff" / "seed0")
    texts = generate_steered(model, tokenizer, prompts, code, 4.0, max_new_tokens=6)
    plain = generate_steered(model, tokenizer, prompts, None, 0.0, max_new_tokens=6)
    assert texts != plain  # the intervention moves the output
    cell = json.loads((root / "cells/sentiment/mean-diff/seed0/alpha=4.0.json").read_text())
    assert cell["texts"] == texts
    chosen = behaviour("sentiment")
    assert cell["success"] == [float(chosen.succeeded(t)) for t in texts]

    nll, count = 0.0, 0
    eos = tokenizer.eos_token_id
    for prompt in prompts:
        ids = prompt_token_ids(tokenizer, prompt)
        mask = torch.ones_like(ids)
        new = generate_ids_steered(model, ids, mask, code, 4.0, max_new_tokens=6, eos_token_id=eos)[
            0
        ]
        new = new[: int((new == eos).nonzero()[0, 0])] if (new == eos).any() else new
        full = torch.cat([ids[0], new])
        with torch.no_grad():
            logp = torch.log_softmax(model(full[None])[0].double(), -1)
        n = ids.shape[1]
        nll -= sum(logp[t - 1, full[t]].item() for t in range(n, full.numel()))
        count += new.numel()
    assert cell["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-4)

    kls = []
    for prompt in NEUTRAL_PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            p0 = torch.log_softmax(model(ids)[0].double(), -1)
            with steer(model, code, 4.0):
                p1 = torch.log_softmax(model(ids)[0].double(), -1)
        kls.append((p0.exp() * (p0 - p1)).sum(-1).mean().item())
    assert cell["kl"] == pytest.approx(sum(kls) / len(kls), rel=1e-4, abs=1e-9)

    row = _row(bench, "mean-diff", 4.0)
    assert row["success_rate"] == pytest.approx(sum(cell["success"]) / 3)
    assert row["ppl"] == cell["ppl"] and row["kl"] == cell["kl"]
    base_ppl = bench.report["behaviours"]["sentiment"]["unsteered"]["ppl"]
    c = min(1.0, base_ppl / row["ppl"])
    s = row["success_rate"]
    assert row["combined"] == pytest.approx(2 * s * c / (s + c) if s and c else 0.0)


def test_report_page_loads_and_shows_the_leaderboard(bench, tmp_path):
    from browser import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium).")
    entry = bench.report["behaviours"]["sentiment"]
    with Browser() as browser:
        page = browser.open(bench.html)
        assert page.errors == []
        assert all(u.startswith("file:") for u in page.requests)
        assert page.evaluate("document.querySelectorAll('table.leaderboard').length") == 1
        shown = page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('table.leaderboard td[data-metric]')]"
            ".map(td => [td.dataset.method + '/' + td.dataset.metric, td.textContent]))"
        )
        widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
        page.screenshot(tmp_path / "bench.png")
    assert len(widths) == 2 and all(w > 0 for w in widths)
    for method, data in entry["methods"].items():
        if data["best"] is not None:
            value = data["best"]["success_rate"]
            assert float(shown[f"{method}/success_rate"]) == pytest.approx(value, abs=5e-4)
    assert float(shown["unsteered/ppl"]) == pytest.approx(entry["unsteered"]["ppl"], rel=1e-3)


def test_resume_recomputes_only_missing_cells_and_extends_the_grid(bench, tiny_model, tmp_path):
    model, tokenizer = tiny_model
    out = tmp_path / "grid"
    shutil.copytree(bench.results.parent, out)
    cells = sorted((out / "cells").rglob("*.json"))
    missing = out / "cells/sentiment/bipo/seed0/alpha=1.0.json"
    missing.unlink()
    kept = {p: p.stat().st_mtime_ns for p in cells if p != missing}
    code_json = out / "codes/sentiment/bipo/seed0/code.json"
    code_time = code_json.stat().st_mtime_ns
    again = run_bench(_config(out), model, tokenizer)
    assert missing.is_file()
    assert code_json.stat().st_mtime_ns == code_time  # the code was read back, not refitted
    changed = [p for p, t in kept.items() if p.stat().st_mtime_ns != t]
    assert all("alpha=4.0" in p.name for p in changed)  # at most the best cell gains capability
    assert again.report["rows"] == bench.report["rows"]

    extended = run_bench(_config(out, alphas="1,2,4"), model, tokenizer)
    new = sorted((out / "cells").rglob("*.json"))
    assert {p.name for p in set(new) - set(cells)} == {"alpha=2.0.json"}
    assert {r["alpha"] for r in extended.report["rows"]} == {1.0, 2.0, 4.0}


def test_a_failing_method_is_reported_and_the_finished_cells_kept(bench, tmp_path, capsys):
    from saesteer.cli import main
    from saesteer.steer.codes import DenseVector
    from saesteer.steer.io import save_code

    out = tmp_path / "grid"
    shutil.copytree(bench.results.parent, out)
    bad = tmp_path / "bad-code"
    save_code(
        DenseVector(torch.ones(7), "blocks.0.hook_resid_post", "tiny-test", "mean-diff", {}), bad
    )
    flags = [
        f"--{k.replace('_', '-')}" for k in ("model", "alphas", "seeds", "epochs", "n_prompts")
    ]
    values = ["tiny-test", "1,4", "1", "1", "3"]
    argv = ["bench-steer", *[x for pair in zip(flags, values, strict=True) for x in pair]]
    argv += [
        "--sae", "", "--behaviours", "sentiment", "--max-new-tokens", "6", "--n-capability", "8",
        "--brown-tokens", "256", "--boot", "200", "--no-progress", "--out", str(out),
        "--methods", "mean-diff", "bipo", f"code:{bad}",
    ]  # fmt: skip
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert f"failed: sentiment code:{bad} seed 0" in printed and "d_model" in printed
    report = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in report["rows"]} == {"mean-diff", "bipo"}
    assert report["failures"][0]["method"] == f"code:{bad}"


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"methods": ["mean-diff", "dpo"]}, ValueError, "Unknown steering method 'dpo'"),
        ({"behaviours": ["jokes"]}, ValueError, "Unknown behaviour data set 'jokes'"),
        ({"methods": ["yapo"]}, ValueError, "pass --sae"),
        ({"methods": ["bipo", "bipo"]}, ValueError, "twice"),
        ({"methods": ["code:/nonexistent"]}, FileNotFoundError, "not a steering-code folder"),
    ],
)
def test_bad_names_fail_before_any_work(tmp_path, changes, error, message):
    out = tmp_path / "never"
    with pytest.raises(error, match=message):
        run_bench(_config(out, **changes))
    assert not out.exists()


def test_foreign_or_other_folders_are_refused_and_left_alone(bench, tmp_path, tiny_model):
    model, tokenizer = tiny_model
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.md").write_text("keep me")
    with pytest.raises(FileExistsError, match="saesteer did not write"):
        run_bench(_config(foreign), model, tokenizer)
    assert (foreign / "notes.md").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        run_bench(_config(tmp_path / "file"), model, tokenizer)
    root = bench.results.parent
    before = (root / "bench-steer.json").read_text()
    with pytest.raises(ValueError, match="max_new_tokens"):
        run_bench(_config(root, max_new_tokens=7), model, tokenizer)
    assert (root / "bench-steer.json").read_text() == before


def test_a_second_writer_fails_fast(bench, tiny_model):
    model, tokenizer = tiny_model
    root = bench.results.parent
    with Output(root, "bench-steer"), pytest.raises(RuntimeError, match="Another saesteer"):
        run_bench(_config(root), model, tokenizer)


def test_help_reads_well(capsys):
    from saesteer.cli import main

    with pytest.raises(SystemExit):
        main(["bench-steer", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--behaviours", "--methods", "--alphas", "--seeds", "--budget", "--capability"):
        assert flag in text
    assert "rerun the same command to continue" in text


def test_an_intervention_method_runs_in_the_benchmark(tiny_model, tmp_path):
    """A gated multi-operator method (stmp) goes through fit → save → reload → cells like a code."""
    from saesteer.steer.intervention import Intervention
    from saesteer.steer.io import load_code

    model, tokenizer = tiny_model
    result = run_bench(_config(tmp_path / "grid", methods=["stmp"], alphas="1"), model, tokenizer)
    assert result.failures == []
    row = _row(result, "stmp", 1.0)
    assert row["ppl"] > 0 and 0 <= row["success_rate"] <= 1
    saved = load_code(next((tmp_path / "grid" / "codes").rglob("code.json")).parent)
    assert isinstance(saved, Intervention) and saved.edits[0].gate is not None


def test_the_printed_summary_reads_a_kl_that_was_not_measured(bench):
    """A controller's KL is None (not measured): the table prints "–" (it once crashed)."""
    import copy

    from saesteer.commands.bench_steer import summary_lines

    report = copy.deepcopy(bench.report)
    name, entry = next(iter(report["behaviours"].items()))
    method = next(m for m, d in entry["methods"].items() if d["best"] is not None)
    entry["methods"][method]["best"]["kl"] = None
    lines = summary_lines(report)
    row = next(line for line in lines if line.strip().startswith(method + " "))
    assert " – " in row and f"{name} (best α within" in "\n".join(lines)
