"""report.html of a benchmark: one static page (inline CSS, no script, no network), from results.json.

Per behaviour: the leaderboard (each method at its best α within the coherence budget, with its
interval and whether it is distinguishable from the leader), the Pareto and strength PNGs, every
cell's numbers, and sample generations per cell. Every leaderboard and cell value sits in a
`<td data-metric=... data-method=...>` so tools and tests can read the page back.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from saesteer.audit.report import STYLE, fmt
from saesteer.bench import plot

LEADERBOARD = (
    ("success_rate", "success", "fraction of generations the behaviour's scorer accepts"),
    (
        "embed_rate",
        "embed.",
        "fraction closer to the chosen than the rejected completions (embedding)",
    ),
    ("ppl", "ppl", "perplexity of the generations under the unsteered model"),
    ("combined", "H", "harmonic mean of success and coherence min(1, ppl₀/ppl)"),
    ("kl", "KL", "mean KL(p₀ ‖ p_α) of next tokens on neutral prompts"),
    ("distinct_2", "distinct-2", "distinct bigrams / bigrams"),
    ("compression", "zlib", "bytes / zlib-compressed bytes (repetition: high)"),
    ("side", "side eff.", "off-target attribute change, in unsteered standard deviations"),
    ("mc_accuracy", "MC acc.", "multiple-choice accuracy under steering (chance 0.25)"),
    ("brown_ppl", "Brown ppl", "held-out Brown perplexity under steering"),
)
EXTRA_STYLE = (
    ".leaderboard td { white-space: nowrap; } .leaderboard td:last-child { white-space: normal; }"
)
CELL_COLUMNS = (
    ("alpha", "α", "strength"),
    *LEADERBOARD[:8],
    ("along", "along", "requested change"),
)


def _cell(method: str, key: str, value: Any) -> str:
    return f'<td data-method="{escape(method, quote=True)}" data-metric="{key}">{fmt(value)}</td>'


def _leaderboard(name: str, entry: dict[str, Any], budget: float) -> str:
    head = "".join(
        f'<th title="{escape(t, quote=True)}">{escape(n)}</th>' for _, n, t in LEADERBOARD
    )
    base = entry["unsteered"]
    rows = [
        "<tr class='base'><td class='text'>unsteered</td><td></td><td></td>"
        + "".join(_cell("unsteered", k, base.get(k)) for k, _, _ in LEADERBOARD)
        + "<td></td><td></td></tr>"
    ]
    ranked = sorted(
        entry["methods"].items(),
        key=lambda kv: -(kv[1]["best"]["success_rate"] if kv[1]["best"] else -1),
    )
    for method, data in ranked:
        best = data["best"]
        alphas = ", ".join(fmt(a) for a in data["best_alpha"])
        if best is None:
            cells = f"<td colspan='{len(LEADERBOARD)}' class='text muted'>no strength within the budget</td>"
            ci = ""
        else:
            cells = "".join(_cell(method, k, best.get(k)) for k, _, _ in LEADERBOARD)
            ci = f"[{fmt(best['ci'][0])}, {fmt(best['ci'][1])}]"
        if method == entry["leader"]:
            versus = "<b>leader</b>"
        elif data.get("distinguishable") is None:
            versus = "–"
        else:
            lo, hi = data["vs_leader"]
            verdict = "worse" if data["distinguishable"] else "not distinguishable"
            versus = f"{verdict} (Δ [{fmt(lo)}, {fmt(hi)}])"
        reached = "" if data["success_at_budget_reached"] else "≥ "
        rows.append(
            f"<tr data-row='{escape(method, quote=True)}'><td class='text'><b>{escape(method)}</b></td>"
            f"<td>{alphas}</td><td>{ci}</td>{cells}"
            f"<td data-method='{escape(method, quote=True)}' data-metric='success_at_budget'>"
            f"{reached}{fmt(data['success_at_budget'])}</td><td class='text'>{versus}</td></tr>"
        )
    return (
        f"<table class='leaderboard' data-behaviour='{escape(name, quote=True)}'><tr>"
        "<th class='text'>method</th><th>best α (per seed)</th><th>95 % CI</th>"
        f"{head}<th title='success interpolated where ppl = {budget:g}× unsteered'>"
        f"success@{budget:g}×</th><th class='text'>vs leader</th></tr>{''.join(rows)}</table>"
    )


def _cells(entry: dict[str, Any], samples: int) -> str:
    parts = []
    head = "".join(
        f'<th title="{escape(t, quote=True)}">{escape(n)}</th>' for _, n, t in CELL_COLUMNS
    )
    for method, data in entry["methods"].items():
        for seed, rows in data["cells"].items():
            body = "".join(
                "<tr>" + "".join(_cell(method, k, r.get(k)) for k, _, _ in CELL_COLUMNS) + "</tr>"
                for r in rows
            )
            texts = []
            for alpha, gens in data["samples"][seed].items():
                items = "".join(
                    f"<div class='gen'>{escape(g) or '(empty)'}</div>" for g in gens[:samples]
                )
                texts.append(f"<div class='muted'>α = {escape(alpha)}</div>{items}")
            codes = data["codes"][seed]
            size = codes.get("support_size")
            parts.append(
                f"<details><summary><b>{escape(method)}</b>, seed {escape(str(seed))}: "
                f"{'support ' + str(size) + ' latents' if size else 'dense'}, validation preference "
                f"accuracy {fmt(codes.get('val_accuracy'))}</summary>"
                f"<table>{'<tr>' + head + '</tr>'}{body}</table>{''.join(texts)}</details>"
            )
    return "".join(parts)


def render_html(report: dict[str, Any], images: dict[str, tuple[str, str]]) -> str:
    config = report["config"]
    seconds = report["seconds"]
    work = sum(seconds[k] for k in ("fit", "generation", "scoring", "capability")) or 1.0
    shares = ", ".join(
        f"{k} {seconds[k]:.0f} s ({100 * seconds[k] / work:.0f} %)"
        for k in ("fit", "generation", "scoring", "capability")
    )
    sections = []
    for name, entry in report["behaviours"].items():
        pareto_png, strength_png = images[name]
        sections.append(
            f"<h2 id='{escape(name, quote=True)}'>{escape(name)}</h2>"
            f"<p class='muted'>{escape(entry['description'])}; {len(entry['prompts'])} held-out "
            f"prompts; perplexity budget {fmt(entry['limit_ppl'])} "
            f"({config['budget']:g}× the unsteered {fmt(entry['unsteered']['ppl'])}).</p>"
            f"{_leaderboard(name, entry, config['budget'])}"
            f"<img src='{escape(pareto_png, quote=True)}' alt='success against perplexity, {escape(name)}'>"
            f"<img src='{escape(strength_png, quote=True)}' alt='strength curves, {escape(name)}'>"
            f"<h3>Every cell</h3>{_cells(entry, config['samples'])}"
        )
    failures = "".join(
        f"<li>{escape(f['behaviour'])} · {escape(f['method'])} · seed {f['seed']}: "
        f"<code>{escape(f['error'])}</code></li>"
        for f in report["failures"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:">
<title>Steering benchmark</title><style>{STYLE}{EXTRA_STYLE}</style></head><body>
<h1>Steering benchmark</h1>
<p>Model <code>{escape(config["model"])}</code>, SAE <code>{escape(config["sae"] or "none")}</code>;
methods {escape(", ".join(config["methods"]))}; strengths {escape(config["alphas"])};
{config["seeds"]} seed(s) for trained methods; {config["max_new_tokens"]} greedy tokens per prompt.</p>
<p class="muted">Each method is read at its <b>best α within the coherence budget</b> (the most
successful strength whose generations stay under the perplexity limit), as a user would choose it.
The interval is a 95 % bootstrap over seeds and prompts; "not distinguishable" means the paired
interval of the difference to the leader contains 0. Wall time {seconds["wall"]:.0f} s: {shares}.</p>
{"<h2>Failures</h2><ul>" + failures + "</ul>" if failures else ""}
{"".join(sections)}
<h2>Provenance</h2>
<details><summary>config</summary><pre>{escape(json.dumps(config, indent=2))}</pre></details>
</body></html>
"""


def markdown(report: dict[str, Any]) -> str:
    """The leaderboards as Markdown tables (leaderboard.md), one row per method at its best α."""
    budget = report["config"]["budget"]
    lines = []
    for name, entry in report["behaviours"].items():
        base = entry["unsteered"]
        lines += [
            f"**{name}** (budget ppl {fmt(entry['limit_ppl'])} = {budget:g}× unsteered; "
            f"{len(entry['prompts'])} prompts)",
            "",
            "| method | best α | success [95 % CI] | ppl | KL | H | side | MC acc. | Brown ppl "
            "| success@budget | vs leader |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| unsteered | | {fmt(base['success_rate'])} | {fmt(base['ppl'])} | | | "
            f"| {fmt(base.get('mc_accuracy'))} | {fmt(base.get('brown_ppl'))} | | |",
        ]
        for method, data in entry["methods"].items():
            best = data["best"]
            reached = "" if data["success_at_budget_reached"] else "≥ "
            if best is None:
                lines.append(
                    f"| {method} | none within budget | | | | | | | | {reached}{fmt(data['success_at_budget'])} | |"
                )
                continue
            if method == entry["leader"]:
                versus = "leader"
            else:
                lo, hi = data["vs_leader"]
                versus = (
                    "worse" if data["distinguishable"] else "not distinguishable"
                ) + f" [{fmt(lo)}, {fmt(hi)}]"
            alphas = "/".join(fmt(a) for a in data["best_alpha"])
            lines.append(
                f"| {method} | {alphas} | {fmt(best['success_rate'])} [{fmt(best['ci'][0])}, "
                f"{fmt(best['ci'][1])}] | {fmt(best['ppl'])} | {fmt(best['kl'])} | "
                f"{fmt(best['combined'])} | {fmt(best['side'])} | {fmt(best['mc_accuracy'])} | "
                f"{fmt(best['brown_ppl'])} | {reached}{fmt(data['success_at_budget'])} | {versus} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> Path:
    """Draw the PNGs and write report.html into `out`; returns the page's path."""
    from saesteer.paths import atomic_write_bytes

    images = {}
    for name, entry in report["behaviours"].items():
        plot.pareto(name, entry, out / f"pareto_{name}.png")
        plot.strength(name, entry, out / f"strength_{name}.png")
        images[name] = (f"pareto_{name}.png", f"strength_{name}.png")
    atomic_write_bytes(out / "leaderboard.md", markdown(report).encode())
    page = out / "report.html"
    atomic_write_bytes(page, render_html(report, images).encode())
    return page
