"""Write the static feature dashboard: a folder that opens from disk (file://) with no server.

    dashboard/
      index.html  style.css  app.js          (from `saesteer.features.assets`)
      data/meta.js        SAESTEER = {meta, chunks: {}}: sizes, title, histogram bins, label key
      data/index.js       SAESTEER.index: per latent density, max, mean, top-activating token ids,
                          promoted token ids (what the list shows and searches)
      data/vocab.js       SAESTEER.vocab: token id → text, for every id the pages show
      data/prompts.js     SAESTEER.prompts: [{text, tokens, latents: per token [[latent, value]]}]
      data/features_<c>.js  SAESTEER.chunks[c]: details of latents c·chunk_size … (c+1)·chunk_size−1:
                          count, histogram [first bin, counts], up/down [[token, logit]], co
                          [[latent, fraction]], top/quantiles [[token index, ids, values, centre]]

Data files are JSON assigned to globals (JSON is valid JavaScript); floats keep 4 significant digits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saesteer.features.assets import APP_JS, INDEX_HTML, STYLE_CSS
from saesteer.features.discovery import (
    HIST_BINS_PER_DECADE,
    HIST_LOG10_MIN,
    FeatureStats,
)
from saesteer.features.prompts import PromptLatents

CHUNK_SIZE = 256
LIST_TOKENS = 5


def _round(values: Any) -> Any:
    """Floats (or nested lists of them) to 4 significant digits, for compact JSON."""
    if isinstance(values, list | tuple):
        return [_round(v) for v in values]
    return float(f"{float(values):.4g}")


def _write_js(path: Path, target: str, data: Any) -> None:
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    path.write_text(f"{target} = {text};\n")


def _examples(
    tokens: np.ndarray,
    window_tokens: np.ndarray,
    window_values: np.ndarray,
    before: int,
) -> list[list[Any]]:
    """[[token index, window ids, window values, centre offset]] for one latent's filled slots,
    with the window trimmed to the tokens inside the example's context."""
    out = []
    for t, ids, vals in zip(tokens, window_tokens, window_values, strict=True):
        if t < 0:
            continue
        inside = np.nonzero(ids >= 0)[0]
        first, last = inside[0], inside[-1] + 1
        out.append(
            [
                int(t),
                ids[first:last].tolist(),
                _round(vals[first:last].tolist()),
                int(before - first),
            ]
        )
    return out


def _list_tokens(stats: FeatureStats, i: int) -> list[int]:
    """Distinct token ids at the centre of latent i's top examples, strongest first."""
    centre = stats.top_window_tokens[i, :, stats.window_before]
    seen: dict[int, None] = {}
    for token, slot in zip(centre, stats.top_tokens[i], strict=True):
        if slot >= 0:
            seen.setdefault(int(token), None)
    return list(seen)[:LIST_TOKENS]


def _feature(stats: FeatureStats, i: int) -> dict[str, Any]:
    counts = stats.hist_counts[i]
    nonzero = np.nonzero(counts)[0]
    hist = (
        [int(nonzero[0]), counts[nonzero[0] : nonzero[-1] + 1].tolist()]
        if len(nonzero)
        else [0, []]
    )
    b = stats.window_before
    return {
        "count": int(stats.fire_count[i]),
        "hist": hist,
        "up": [
            [int(t), _round(v)] for t, v in zip(stats.up_ids[i], stats.up_values[i], strict=True)
        ],
        "down": [
            [int(t), _round(v)]
            for t, v in zip(stats.down_ids[i], stats.down_values[i], strict=True)
        ],
        "co": [
            [int(j), _round(f)]
            for j, f in zip(stats.cofire_ids[i], stats.cofire_frac[i], strict=True)
            if j >= 0
        ],
        "top": _examples(
            stats.top_tokens[i],
            stats.top_window_tokens[i],
            stats.top_window_values[i],
            b,
        ),
        "quantiles": _examples(
            stats.sample_tokens[i],
            stats.sample_window_tokens[i],
            stats.sample_window_values[i],
            b,
        ),
    }


def token_texts(tokenizer: Any, ids: set[int]) -> dict[str, str]:
    """{id: decoded text} for each token id (a lone byte of a multi-byte character shows as �)."""
    ordered = sorted(i for i in ids if i >= 0)
    texts = tokenizer.batch_decode([[i] for i in ordered], clean_up_tokenization_spaces=False)
    return {str(i): text for i, text in zip(ordered, texts, strict=True)}


def write_dashboard(
    stats: FeatureStats,
    tokenizer: Any,
    folder: str | Path,
    prompts: Sequence[PromptLatents] = (),
    title: str = "saesteer features",
    about: str = "",
    label_key: str = "",
) -> Path:
    """Write the dashboard folder (module docstring); returns the path of its index.html.

    label_key: names the browser storage of user labels (use the SAE's checksum, so labels stay
    with the SAE they were written for); defaults to the title.
    """
    folder = Path(folder)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for stale in data.glob("features_*.js"):
        stale.unlink()
    d_sae = stats.d_sae
    meta = {
        "title": title,
        "about": about or f"{d_sae} latents · {stats.n_tokens:,} tokens",
        "key": label_key or title,
        "d_sae": d_sae,
        "n_tokens": stats.n_tokens,
        "context_length": stats.context_length,
        "chunk_size": CHUNK_SIZE,
        "hist_log10_min": HIST_LOG10_MIN,
        "hist_bins_per_decade": HIST_BINS_PER_DECADE,
    }
    _write_js(data / "meta.js", "window.SAESTEER", {"meta": meta, "chunks": {}})
    index = {
        "density": _round(stats.density.tolist()),
        "max": _round(stats.top_values[:, 0].tolist()),
        "mean": _round(stats.mean_active.tolist()),
        "tokens": [_list_tokens(stats, i) for i in range(d_sae)],
        "up": stats.up_ids[:, :LIST_TOKENS].tolist(),
    }
    _write_js(data / "index.js", "SAESTEER.index", index)
    used: set[int] = set(stats.up_ids.ravel().tolist()) | set(stats.down_ids.ravel().tolist())
    for chunk_start in range(0, d_sae, CHUNK_SIZE):
        chunk = [
            _feature(stats, i) for i in range(chunk_start, min(chunk_start + CHUNK_SIZE, d_sae))
        ]
        for feature in chunk:
            for example in feature["top"] + feature["quantiles"]:
                used.update(example[1])
        name = f"features_{chunk_start // CHUNK_SIZE:04d}.js"
        _write_js(data / name, f"SAESTEER.chunks[{chunk_start // CHUNK_SIZE}]", chunk)
    prompt_data = []
    for p in prompts:
        latents = [
            [[j, _round(v)] for j, v in zip(ids, vals, strict=True) if j >= 0]
            for ids, vals in zip(p.latent_ids, p.values, strict=True)
        ]
        prompt_data.append({"text": p.text, "tokens": p.token_ids, "latents": latents})
        used.update(p.token_ids)
    _write_js(data / "prompts.js", "SAESTEER.prompts", prompt_data)
    _write_js(data / "vocab.js", "SAESTEER.vocab", token_texts(tokenizer, used))
    (folder / "style.css").write_text(STYLE_CSS)
    (folder / "app.js").write_text(APP_JS)
    (folder / "index.html").write_text(INDEX_HTML)
    return folder / "index.html"
