"""What a steering code or intervention is, in terms of SAE latents and tokens a reader can look up.

A sparse (latent) code v [d_sae] is its support: the latents i with v_i ≠ 0, listed by |v_i|.
A dense vector u [d_model] is described by its nearest SAE latents, the decoder rows closest in angle:

    cos_i = (u · W_dec[i]) / (‖u‖ · ‖W_dec[i]‖)          listed by |cos_i| (sign kept)

Each latent gets its logit lens (tokens its decoder row promotes and suppresses through the
unembedding, `saesteer.features.logit_lens`), and, when a feature-discovery folder is given, its
density and top-activating contexts; with a dashboard, a relative link to its page
(`<dashboard>/index.html#/feature/<i>`).

An intervention (`describe_intervention`) is listed edit by edit: its site, the operator's kind and
parameters (angle θ₀ per unit α, target, boundary, ‖v‖…), its gate (kind, threshold τ, side), and
each direction it uses (add: v; set-projection, reflect: û; rotate-2d: the plane's b1, b2; a gate:
its û), with

    logit lens   u · W_U through the final norm (as for a latent), for directions in the residual
                 basis: sites resid_pre, resid_post, attn_out, mlp_out (what is added to or read from
                 the residual stream). A norm-output site (attn_in, mlp_in) is skipped: its vector is
                 γ ⊙ h / rms(h), what attention or the MLP reads, and an edit there writes nothing
                 to the residual stream; its effect is the residual change measured at the steered
                 hook (`saesteer.audit.measure`).
    nearest SAE latents   as for a dense vector, when the SAE reads that site's residual
                 (`reads_site`: the same hook, or resid_pre l+1 ≡ resid_post l).

A latent (sae-latent) edit lists its latents as a latent code does. The layer mask of a method that
keeps only some layers (`meta["layer_mask"]`, Selective Steering) is shown with the sites.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from saesteer.audit.measure import steered_hook
from saesteer.features.logit_lens import logit_lens
from saesteer.hook_names import is_resid_hook, start_layer
from saesteer.steer.codes import DenseVector, LatentCode, SteeringCode
from saesteer.steer.intervention import Edit, Intervention
from saesteer.steer.operators import LatentEdit
from saesteer.steer.sites import TL_MODULES, Site

N_LENS_TOKENS = 8
N_CONTEXTS = 3
DIRECTION_NAMES = {"vector": ("v",), "direction": ("û",), "plane": ("b1", "b2")}
SAME_DIRECTION_COS = 0.9999
NORM_SITE_NOTE = (
    "{site} is block {layer}'s RMSNorm output read by {reader} (γ ⊙ h / rms(h)): an edit there "
    "changes what {reader} reads and writes nothing to the residual stream, so its directions have "
    "no logit lens or SAE latents; their effect is the residual change at {hook}."
)


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
    code: SteeringCode | Intervention,
    model: Any,
    tokenizer: Any,
    sae: Any = None,
    stats: Any = None,
    dashboard: str | Path | None = None,
    out: str | Path = ".",
    n: int = 10,
) -> dict[str, Any]:
    """The "what it is" section: the code's kind, size and latents (module docstring); an
    intervention is described by `describe_intervention`."""
    if isinstance(code, Intervention):
        return describe_intervention(code, model, tokenizer, sae, stats, dashboard, out, n)
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


def reads_site(sae_hook: str, site: Site) -> bool:
    """Whether an SAE at `sae_hook` reads the vector space of `site`: the same TL hook, or two
    residual hooks of one residual (blocks.l.hook_resid_post ≡ blocks.{l+1}.hook_resid_pre)."""
    hook = site.tl_hook
    if hook is None:
        return False
    if hook == sae_hook:
        return True
    return (
        is_resid_hook(hook)
        and is_resid_hook(sae_hook)
        and start_layer(hook) == start_layer(sae_hook)
    )


def edit_directions(edit: Edit) -> list[tuple[str, torch.Tensor]]:
    """(name, unit-or-raw vector [d_model]) of every direction an edit uses: the operator's 1-D
    tensors and a plane's columns (`DIRECTION_NAMES`), then the gate's û unless it is one of them."""
    found: list[tuple[str, torch.Tensor]] = []
    for key, tensor in edit.operator.tensors().items():
        names = DIRECTION_NAMES.get(key, (key,))
        columns = [tensor] if tensor.ndim == 1 else list(tensor.T) if tensor.ndim == 2 else []
        if len(names) != len(columns):
            names = tuple(f"{key}[{j}]" for j in range(len(columns)))
        found += [
            (name, column.detach().cpu()) for name, column in zip(names, columns, strict=True)
        ]
    if edit.gate is not None and _same_as(edit.gate.direction.cpu(), found) is None:
        found.append(("gate û", edit.gate.direction.detach().cpu()))
    return found


def _same_as(direction: torch.Tensor, others: list[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first of `others` parallel to `direction` (|cos| ≥ SAME_DIRECTION_COS)."""
    for name, other in others:
        cos = torch.nn.functional.cosine_similarity(direction.double(), other.double(), dim=0)
        if cos.abs() >= SAME_DIRECTION_COS:
            return name
    return None


def operator_record(edit: Edit) -> dict[str, Any]:
    """The operator's kind and parameters (as saved), plus ‖v‖ of an added vector."""
    operator = edit.operator
    if isinstance(operator, LatentEdit):
        code = operator.code
        params = {"mode": code.mode, "arch": code.arch, "hook_name": code.hook_name}
        params.update(support_size=int(code.support.numel()), sae_checksum=code.sae_checksum)
        return {"kind": operator.kind, "params": params}
    params = dict(operator.params())
    vector = operator.tensors().get("vector")
    if vector is not None:
        params["norm"] = float(vector.norm())
    if operator.kind == "rotate-2d":
        params["unit"] = "degrees per unit α"
    return {"kind": operator.kind, "params": params}


def gate_record(edit: Edit) -> dict[str, Any] | None:
    """The gate's kind, threshold τ and side (open where û·h < τ: below, > τ: above)."""
    gate = edit.gate
    if gate is None:
        return None
    record: dict[str, Any] = {"kind": gate.kind, **gate.params()}
    operator_directions = edit_directions(Edit(edit.site, edit.operator))
    record["direction"] = _same_as(gate.direction.cpu(), operator_directions) or "gate û"
    return record


def direction_cards(
    edit: Edit,
    model: Any,
    tokenizer: Any,
    sae: Any,
    n: int,
    context: tuple[Any, str | Path | None, str | Path],
) -> list[dict[str, Any]]:
    """Per direction of a residual-basis edit: name, norm, logit lens, and its nearest SAE latents
    when `sae` reads the site (`context`: feature stats, dashboard, report folder)."""
    directions = edit_directions(edit)
    if not directions:
        return []
    rows = torch.stack([vector.float() for _, vector in directions])
    lens = logit_lens(model, rows.to(model.W_U.device), N_LENS_TOKENS)
    fits = sae is not None and reads_site(sae.cfg.hook_name, edit.site)
    W_dec = sae.W_dec.detach().cpu() if fits else None
    cards = []
    for j, (name, vector) in enumerate(directions):
        card: dict[str, Any] = {
            "name": name,
            "norm": float(vector.norm()),
            "promoted": _token_text(tokenizer, lens.up_ids[j].tolist()),
            "suppressed": _token_text(tokenizer, lens.down_ids[j].tolist()),
        }
        if W_dec is not None:
            indices, cosines = nearest_latents(vector, W_dec, n)
            card["latents"] = latent_cards(
                indices, cosines, W_dec[indices], model, tokenizer, *context
            )
        cards.append(card)
    return cards


def edit_record(
    edit: Edit,
    model: Any,
    tokenizer: Any,
    sae: Any,
    n: int,
    context: tuple[Any, str | Path | None, str | Path],
    steered_hook: str,
) -> dict[str, Any]:
    """One edit of an intervention, for report.json (module docstring)."""
    site = edit.site
    record: dict[str, Any] = {
        "site": site.name,
        "layer": site.layer,
        "stream": site.stream,
        "operator": operator_record(edit),
        "gate": gate_record(edit),
        "directions": [],
    }
    if isinstance(edit.operator, LatentEdit):
        indices, values, rows = code_latents(edit.operator.code)
        record["latents"] = latent_cards(indices, values, rows, model, tokenizer, *context)
    elif site.stream in TL_MODULES:
        reader = "attention" if site.stream == "attn_in" else "the MLP"
        record["note"] = NORM_SITE_NOTE.format(
            site=site.name, layer=site.layer, reader=reader, hook=steered_hook
        )
    else:
        record["directions"] = direction_cards(edit, model, tokenizer, sae, n, context)
    return record


def describe_intervention(
    intervention: Intervention,
    model: Any,
    tokenizer: Any,
    sae: Any = None,
    stats: Any = None,
    dashboard: str | Path | None = None,
    out: str | Path = ".",
    n: int = 10,
) -> dict[str, Any]:
    """The "what it is" section of an intervention: method, sites, layer mask, and per edit its
    operator, gate and directions (module docstring)."""
    hook = steered_hook(intervention)
    sites = [site.name for site in intervention.sites]
    about: dict[str, Any] = {
        "kind": "intervention",
        "method": intervention.method,
        "hook_name": intervention.hook_name,
        "model_name": intervention.model_name,
        "sites": sites,
        "n_edits": len(intervention.edits),
        "layer_mask": intervention.meta.get("layer_mask"),
        "steered_hook": hook,
        "edits": [
            edit_record(edit, model, tokenizer, sae, n, (stats, dashboard, out), hook)
            for edit in intervention.edits
        ],
        "latents": [],
        "notes": [],
    }
    if sae is None:
        about["notes"].append(
            f"Pass --sae DIR (an SAE of {hook}, or of a residual site) for the SAE latents of the "
            "directions and the latent changes at the steered layer."
        )
    return about
