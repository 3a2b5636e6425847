"""report.html: one static page (inline CSS, no script, no network) rendered from report.json.

A code's "what it is" is its latents table (`#latents`); an intervention's is its edits table
(`#edits`, one row per edit with `data-site`), then per edit its directions' logit lens and nearest
SAE latents and a latent edit's latents; one note says why norm-output sites have none.

Every generated string (model text, token text, paths) goes through `html.escape`. Numbers are
printed with 4 significant digits (`fmt`); each sweep-table cell carries `data-metric` and
`data-alpha` attributes so tools and tests can read values back from the page.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

COLUMNS = (
    ("success_rate", "success rate", "fraction of generations the behaviour's scorer accepts"),
    ("mean_score", "mean score", "mean scorer value of the generations"),
    ("log_odds", "log-odds", "mean log π(y_w|x) − log π(y_l|x) on validation pairs"),
    ("log_odds_change", "Δ log-odds", "mean change of the log-odds from α = 0"),
    ("preference_accuracy", "pref. acc.", "fraction of pairs whose log-odds rose"),
    ("perplexity", "perplexity", "of the generations under the unsteered model"),
    ("repetition", "repetition", "n-gram repetition rate of the generations"),
    ("kl_neutral", "KL drift", "mean KL(p_0 ‖ p_α) of next tokens on neutral prompts"),
)
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 1.5em;
       color: #1d1d1f; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .25em .6em; text-align: right;
       border-bottom: 1px solid #eee; vertical-align: top; } th { background: #f5f5f7; }
td.text, th.text { text-align: left; } .muted { color: #6e6e73; } .base { background: #fafae8; }
.tok { white-space: pre; border-radius: 3px; padding: 0 1px; font-family: ui-monospace, monospace; }
.ctx { margin: .2em 0; } .gen { white-space: pre-wrap; background: #f7f7f9; padding: .4em .6em;
       border-left: 3px solid #b34700; margin: .3em 0; } code { font-size: .95em; }
img { max-width: 100%; border: 1px solid #eee; } .ok { color: #1a7f37; } .no { color: #b3261e; }
"""


def fmt(value: Any) -> str:
    """A number with 4 significant digits; None → "–"."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _tokens(texts: list[str], values: list[float], centre: int | None = None) -> str:
    """Tokens as spans shaded by value (relative to the largest |value|), the centre underlined."""
    top = max((abs(v) for v in values), default=0.0) or 1.0
    spans = []
    for j, (text, value) in enumerate(zip(texts, values, strict=True)):
        hue = "179,71,0" if value >= 0 else "26,95,180"
        style = f"background: rgba({hue},{abs(value) / top * 0.6:.2f})"
        if j == centre:
            style += "; text-decoration: underline"
        title = escape(f"{value:.4g}", quote=True)
        spans.append(f'<span class="tok" style="{style}" title="{title}">{escape(text)}</span>')
    return "".join(spans)


def _sweep_table(sweep: list[dict[str, Any]]) -> str:
    head = "".join(f'<th title="{escape(t, quote=True)}">{escape(n)}</th>' for _, n, t in COLUMNS)
    head += "<th>‖h′‖ − ‖h‖ (steered)</th><th>‖h′ − h‖ (steered)</th><th>‖h′ − h‖ (later)</th>"
    rows = []
    for p in sweep:
        a = escape(fmt(p["alpha"]), quote=True)
        cells = [f'<td data-metric="alpha" data-alpha="{a}">{a}</td>']
        cells += [
            f'<td data-metric="{key}" data-alpha="{a}">{fmt(p[key])}</td>' for key, _, _ in COLUMNS
        ]
        later = p.get("later_layer", {})
        for key, value in (
            ("norm_change", p["steered_layer"]["norm_change"]),
            ("edit_norm", p["steered_layer"]["edit_norm"]),
            ("later_edit_norm", later.get("edit_norm")),
        ):
            cells.append(f'<td data-metric="{key}" data-alpha="{a}">{fmt(value)}</td>')
        base = ' class="base"' if p["alpha"] == 0 else ""
        rows.append(f"<tr{base}>{''.join(cells)}</tr>")
    return f'<table id="sweep"><tr><th>α</th>{head}</tr>{"".join(rows)}</table>'


def _latents(about: dict[str, Any]) -> str:
    weight = "value v_i" if about["kind"] == "latent" else "cosine"
    note = f"<p class='muted'>{escape(about['note'])}</p>" if about.get("note") else ""
    return note + _latent_table(about["latents"], weight, "id='latents'")


def _latent_table(cards: list[dict[str, Any]], weight: str, attributes: str) -> str:
    """Latent cards as a table: index (linked), weight, density, top contexts, logit lens."""
    rows = []
    for card in cards:
        index = escape(str(card["index"]))
        name = (
            f'<a href="{escape(card["link"], quote=True)}">{index}</a>' if card["link"] else index
        )
        contexts = (
            "".join(
                f'<div class="ctx">{_tokens(c["tokens"], c["values"], c["centre"])} '
                f'<span class="muted">max {fmt(c["max"])}</span></div>'
                for c in card.get("contexts", [])
            )
            or '<span class="muted">no feature-discovery data</span>'
        )
        rows.append(
            f'<tr data-latent="{index}"><td>{name}</td><td>{fmt(card["weight"])}</td>'
            f"<td>{fmt(card.get('density'))}</td><td class='text'>{contexts}</td>"
            f"<td class='text'>{_lens(card)}</td></tr>"
        )
    return (
        f"<table {attributes}><tr><th>latent</th><th>{escape(weight)}</th><th>density</th>"
        "<th class='text'>top contexts</th><th class='text'>logit lens</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _lens(card: dict[str, Any]) -> str:
    promoted = " ".join(f"<code>{escape(t)}</code>" for t in card["promoted"])
    suppressed = " ".join(f"<code>{escape(t)}</code>" for t in card["suppressed"])
    return f"↑ {promoted}<br>↓ {suppressed}"


def _value(value: Any) -> str:
    return escape(value) if isinstance(value, str) else fmt(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{escape(str(k))} = {_value(v)}" for k, v in params.items()) or "–"


def _gate(gate: dict[str, Any] | None) -> str:
    """A gate as "projection: open where û·h < τ = 0.5 (û: the operator's û)"."""
    if gate is None:
        return "<span class='muted'>none (every token)</span>"
    sign = "<" if gate.get("side") == "below" else ">"
    direction = str(gate.get("direction"))
    whose = "its own direction" if direction == "gate û" else f"the operator's {direction}"
    rest = {k: v for k, v in gate.items() if k not in ("kind", "threshold", "side", "direction")}
    extra = f"; {_params(rest)}" if rest else ""
    return (
        f"{escape(str(gate['kind']))}: open where û·h {sign} τ = {_value(gate.get('threshold'))} "
        f"(û: {escape(whose)}){extra}"
    )


def _edits_table(edits: list[dict[str, Any]]) -> str:
    rows = []
    for j, edit in enumerate(edits):
        site = escape(edit["site"], quote=True)
        operator = edit["operator"]
        rows.append(
            f'<tr data-edit="{j}" data-site="{site}"><td>{j}</td><td class="text"><code>{site}'
            f'</code></td><td class="text">{escape(operator["kind"])}</td><td class="text">'
            f'{_params(operator["params"])}</td><td class="text">{_gate(edit["gate"])}</td></tr>'
        )
    return (
        "<table id='edits'><tr><th>#</th><th class='text'>site</th><th class='text'>operator</th>"
        "<th class='text'>parameters</th><th class='text'>gate</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _directions(edit: dict[str, Any]) -> str:
    """One edit's directions (name, norm, logit lens, nearest latents) and latents, or ""."""
    parts, rows = [], []
    for card in edit["directions"]:
        latents = ", ".join(
            f'<a href="{escape(c["link"], quote=True)}">{c["index"]}</a> ({c["weight"]:+.3f})'
            if c["link"]
            else f"{c['index']} ({c['weight']:+.3f})"
            for c in card.get("latents", [])
        )
        name = escape(card["name"], quote=True)
        rows.append(
            f'<tr data-direction="{name}"><td class="text">{name}</td><td>{fmt(card["norm"])}</td>'
            f"<td class='text'>{_lens(card)}</td>"
            f"<td class='text'>{latents or '<span class=muted>no SAE of this site</span>'}</td></tr>"
        )
    if rows:
        parts.append(
            "<table class='directions'><tr><th class='text'>direction</th><th>norm</th>"
            "<th class='text'>logit lens</th><th class='text'>nearest SAE latents (cosine)</th>"
            f"</tr>{''.join(rows)}</table>"
        )
    if edit.get("latents"):
        parts.append(_latent_table(edit["latents"], "value v_i", "class='latents'"))
    return "".join(parts)


def _intervention(about: dict[str, Any]) -> str:
    """The edits table, then each edit's directions; norm-output sites share one note."""
    mask = about.get("layer_mask")
    hook = escape(about["steered_hook"])
    notes = "".join(f"<p class='muted'>{escape(note)}</p>" for note in about.get("notes", []))
    sites = ", ".join(f"<code>{escape(site)}</code>" for site in about["sites"])
    parts = [
        f"<p>Sites: {sites}."
        + (f" Layer mask: {escape(', '.join(map(str, mask)))}." if mask else "")
        + f" The steered layer is <code>{hook}</code>, the residual stream after the last edit.</p>",
        notes,
        _edits_table(about["edits"]),
    ]
    norm_sites = [e["site"] for e in about["edits"] if e["stream"] in ("attn_in", "mlp_in")]
    if norm_sites:
        listed = ", ".join(f"<code>{escape(site)}</code>" for site in dict.fromkeys(norm_sites))
        parts.append(
            f"<p class='muted'>The edits at norm-output sites ({listed}) change what attention "
            "or the MLP reads (γ ⊙ h / rms(h)) and write nothing to the residual stream, so their "
            f"directions have no logit lens or SAE latents; their effect is the residual change at "
            f"<code>{hook}</code>.</p>"
        )
    for j, edit in enumerate(about["edits"]):
        body = _directions(edit)
        if body:
            parts.append(
                f'<div class="edit" data-edit="{j}"><h4>edit {j}: <code>{escape(edit["site"])}'
                f"</code> {escape(edit['operator']['kind'])}</h4>{body}</div>"
            )
    return "".join(parts)


def _changes(sweep: list[dict[str, Any]]) -> str:
    parts = []
    for p in sweep:
        if p["alpha"] == 0:
            continue
        for key in ("steered_layer", "later_layer"):
            layer = p.get(key)
            if not layer or not layer.get("top_latents"):
                continue
            items = ", ".join(
                f"{escape(str(c['index']))} ({c['mean_delta']:+.3g})" for c in layer["top_latents"]
            )
            parts.append(
                f"<li>α = {fmt(p['alpha'])}, <code>{escape(layer['hook'])}</code>: {items}</li>"
            )
    return (
        f"<ul>{''.join(parts)}</ul>" if parts else "<p class='muted'>No SAE given: no latents.</p>"
    )


def _token_view(view: dict[str, Any]) -> str:
    rows = []
    for row in view["tokens"]:
        cells = [f"<td class='text'><span class='tok'>{escape(row['token'])}</span></td>"]
        for key in ("steered", "later"):
            changes = row.get(key)
            text = ", ".join(f"{i} ({d:+.3g})" for i, d in changes) if changes else "–"
            cells.append(f"<td class='text'>{escape(text)}</td>")
        cells.append(f"<td>{fmt(row.get('later_edit_norm'))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<p>Prompt <q>{escape(view['prompt'])}</q> at α = {fmt(view['alpha'])}: per token, the "
        "latents whose activation changed most (Δz), and the size of the residual change at the "
        "later layer.</p><table id='tokens'><tr><th class='text'>token</th>"
        "<th class='text'>Δz, steered layer</th><th class='text'>Δz, later layer</th>"
        f"<th>‖Δh‖ later</th></tr>{''.join(rows)}</table>"
    )


def _generations(sweep: list[dict[str, Any]], n: int) -> str:
    parts = []
    for p in sweep:
        items = []
        for g in p["generations"][:n]:
            mark = "<span class='ok'>✓</span>" if g["success"] else "<span class='no'>✗</span>"
            items.append(
                f"<div class='muted'>{escape(g['prompt'])}</div><div class='gen'>"
                f"{escape(g['text']) or '<span class=muted>(empty)</span>'}</div>"
                f"<div class='muted'>score {fmt(g['score'])} {mark}</div>"
            )
        parts.append(f"<h3>α = {fmt(p['alpha'])}</h3>{''.join(items)}")
    return "".join(parts)


def _summary(about: dict[str, Any]) -> str:
    """The page's first sentence: what is audited, where, and its size."""
    method, model = escape(about["method"]), escape(about["model_name"])
    if about["kind"] == "intervention":
        n_sites = len(about["sites"])
        return (
            f"<b>{method}</b> intervention of <code>{model}</code>: {about['n_edits']} edit"
            f"{'s' if about['n_edits'] != 1 else ''} at {n_sites} site{'s' if n_sites != 1 else ''}"
        )
    size = (
        f"{about['support_size']} latents (‖v‖₁ = {fmt(about['l1'])})"
        if about["kind"] == "latent"
        else f"dense vector, ‖v‖ = {fmt(about['norm'])}"
    )
    return (
        f"<b>{method}</b> code at <code>{escape(about['hook_name'])}</code> of\n"
        f"<code>{model}</code>: {size}"
    )


def _steered_hook(about: dict[str, Any]) -> str:
    """For an intervention, which hook "the steered layer" is (a code's is its own hook)."""
    if about["kind"] != "intervention":
        return ""
    return f" (<code>{escape(about['steered_hook'])}</code>, after the last edit)"


def render_html(report: dict[str, Any], curve_png: str) -> str:
    """The whole page for `report` (the dict written to report.json)."""
    about = report["what_it_is"]
    later = report["later_layer"]
    config = escape(json.dumps(report["config"], indent=2))
    versions = escape(json.dumps(report["versions"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:">
<title>Steering audit: {escape(about["method"])} · {escape(report["behaviour"])}</title>
<style>{STYLE}</style></head><body>
<h1>Steering audit</h1>
<p>{_summary(about)}. Behaviour <b>{escape(report["behaviour"])}</b>
({escape(report["behaviour_description"])}); {report["n_prompts"]} held-out prompts,
{report["n_pairs"]} validation pairs, {report["n_neutral"]} neutral prompts.
Code: <code>{escape(report["code_path"])}</code>.</p>
<h2>Strength sweep</h2>
<p class="muted">Did it work: success rate, log-odds, preference accuracy. What it cost: perplexity
(coherence), repetition, KL drift on neutral prompts. What it did: residual-stream norm change at
the steered layer{_steered_hook(about)} and the edit size at the later layer
({"blocks." + str(later) + ".hook_resid_post" if later is not None else "none"}).
The α = 0 row is the unsteered baseline.</p>
{_sweep_table(report["sweep"])}
<img src="{escape(curve_png, quote=True)}" alt="strength curve: success against coherence">
<h2>What it is</h2>
{_intervention(about) if about["kind"] == "intervention" else _latents(about)}
<h2>What it did</h2>
<h3>Latents that changed most (mean Δz over the prompts' tokens)</h3>
{_changes(report["sweep"])}
<h3>Per token</h3>
{_token_view(report["token_view"])}
<h2>Example generations</h2>
{_generations(report["sweep"], report["config"]["n_examples"])}
<h2>Provenance</h2>
<details><summary>config and versions</summary><pre>{config}</pre><pre>{versions}</pre></details>
</body></html>
"""
