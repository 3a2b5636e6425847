"""What a steering code is, in terms of SAE latents a reader can look up.

A sparse (latent) code v [d_sae] is its support: the latents i with v_i ≠ 0, listed by |v_i|.
A dense vector u [d_model] is described by its nearest SAE latents, the decoder rows closest in angle:

    cos_i = (u · W_dec[i]) / (‖u‖ · ‖W_dec[i]‖)          listed by |cos_i| (sign kept)

Each latent gets its logit lens (tokens its decoder row promotes and suppresses through the
unembedding, `saesteer.features.logit_lens`), and, when a feature-discovery folder is given, its
density and top-activating contexts; with a dashboard, a relative link to its page
(`<dashboard>/index.html#/feature/<i>`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from saesteer.features.logit_lens import logit_lens
from saesteer.steer.codes import DenseVector, LatentCode, SteeringCode

N_LENS_TOKENS = 8
N_CONTEXTS = 3


def code_latents(code: LatentCode) -> tuple[list[int], list[float], torch.Tensor]:
    """(indices, values, decoder rows [s, d_model]) of a latent code's support, by |value| desc."""
    support, values = code.support.cpu(), code.values.cpu().float()
    rows = code.weights["W_dec_S"] if "W_dec_S" in code.weights else code.weights["W_dec"][support]
    order = values.abs().argsort(descending=True)
    return support[order].tolist(), values[order].tolist(), rows.cpu()[order]


def nearest_latents(
    vector: torch.Tensor, W_dec: torch.Tensor, n: int
) -> tuple[list[int], list[float]]:
    """The n latents with the largest |cos(vector, W_dec[i])| and their signed cosines."""
    u = vector.double() / vector.double().norm().clamp_min(1e-12)
    rows = W_dec.double() / W_dec.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = rows @ u
    order = cos.abs().topk(min(n, cos.numel())).indices
    return order.tolist(), cos[order].tolist()


def _token_text(tokenizer: Any, ids: list[int]) -> list[str]:
    return tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)


def _contexts(stats: Any, tokenizer: Any, latent: int) -> list[dict[str, Any]]:
    """Up to N_CONTEXTS top-activating windows: tokens, activations and the centre position."""
    out = []
    for k in range(min(N_CONTEXTS, stats.top_values.shape[1])):
        if stats.top_values[latent, k] <= 0:
            break
        ids = stats.top_window_tokens[latent, k].tolist()
        keep = [j for j, t in enumerate(ids) if t >= 0]
        texts = _token_text(tokenizer, [ids[j] for j in keep])
        values = stats.top_window_values[latent, k]
        out.append(
            {
                "max": float(stats.top_values[latent, k]),
                "tokens": texts,
                "values": [round(float(values[j]), 4) for j in keep],
                "centre": keep.index(stats.window_before) if stats.window_before in keep else 0,
            }
        )
    return out


def dashboard_link(dashboard: str | Path | None, out: str | Path, latent: int) -> str | None:
    """Relative URL from the report folder `out` to latent's dashboard page (None: no dashboard)."""
    if not dashboard:
        return None
    index = Path(dashboard) / "index.html"
    if not index.is_file():
        return None
    relative = os.path.relpath(index.resolve(), Path(out).resolve())
    return f"{Path(relative).as_posix()}#/feature/{latent}"


def latent_cards(
    indices: list[int],
    weights: list[float],
    rows: torch.Tensor,
    model: Any,
    tokenizer: Any,
    stats: Any = None,
    dashboard: str | Path | None = None,
    out: str | Path = ".",
) -> list[dict[str, Any]]:
    """One record per latent: index, weight (code value or cosine), logit lens, and when known its
    density, top contexts and dashboard link."""
    if not indices:
        return []
    lens = logit_lens(model, rows.to(model.W_U.device), N_LENS_TOKENS)
    cards = []
    for j, (index, weight) in enumerate(zip(indices, weights, strict=True)):
        card: dict[str, Any] = {
            "index": index,
            "weight": float(weight),
            "promoted": _token_text(tokenizer, lens.up_ids[j].tolist()),
            "suppressed": _token_text(tokenizer, lens.down_ids[j].tolist()),
            "link": dashboard_link(dashboard, out, index),
        }
        if stats is not None:
            card["density"] = float(stats.density[index])
            card["contexts"] = _contexts(stats, tokenizer, index)
        cards.append(card)
    return cards


def describe_code(
    code: SteeringCode,
    model: Any,
    tokenizer: Any,
    sae: Any = None,
    stats: Any = None,
    dashboard: str | Path | None = None,
    out: str | Path = ".",
    n: int = 10,
) -> dict[str, Any]:
    """The "what it is" section: the code's kind, size and latents (module docstring)."""
    about: dict[str, Any] = {
        "method": code.method,
        "hook_name": code.hook_name,
        "model_name": code.model_name,
    }
    if isinstance(code, LatentCode):
        indices, values, rows = code_latents(code)
        about.update(kind="latent", mode=code.mode, arch=code.arch, support_size=len(indices))
        about["l1"] = float(sum(abs(v) for v in values))
        about["latents"] = latent_cards(
            indices, values, rows, model, tokenizer, stats, dashboard, out
        )
        return about
    assert isinstance(code, DenseVector)
    about.update(kind="dense", norm=float(code.vector.norm()))
    if sae is None:
        about["latents"] = []
        about["note"] = "Pass --sae DIR to list the SAE latents nearest to this vector."
        return about
    W_dec = sae.W_dec.detach().cpu()
    indices, cosines = nearest_latents(code.vector.cpu(), W_dec, n)
    about["latents"] = latent_cards(
        indices, cosines, W_dec[indices], model, tokenizer, stats, dashboard, out
    )
    return about
