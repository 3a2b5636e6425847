"""Steerability features of one (code, prompt, α): a short steered decode against its unsteered replay.

For a prompt x of P tokens, a code c at strength α (any saesteer code: `steer(model, c, α)` on all
positions) and K decoding steps (default 5):

    y_1..y_K      greedy tokens of the steered model (KV cache or not: same tokens, same features)
    s_{t,l}       steered hidden state (block l's resid_post) at the position that predicts y_{t+1},
                  i.e. position P − 1 + t of the sequence x ⧺ y, from one steered forward of x ⧺ y
    r_{t,l}       the same position and layer of one *unsteered* forward of the same tokens (replay)
    Δ             the edit at the steered site S (the code's first site, layer L):
                  Δ = mean_t (h^steered_{S,t} − h^replay_{S,t}) over the decoded positions. Every
                  activation upstream of S is identical in the two forwards (same tokens, causal
                  model), so Δ is exactly the injected vector αv for an additive code and the mean
                  edit at S for any other method (latent edits, interventions, weight edits).

Steps t ∈ {0, 1, 3, 5} ∩ [0, K] (position P − 1 + K is the state after reading y_K, so K = 5 still
has step 5), layers l = min(L + o, n_layers − 1) for offsets o ∈ {0, 1, 2, 3, 5, 10, 15} (a small
model repeats its last layer, so every model has the same feature names). Per (t, l):

    dist   ‖s − r‖                 rel    ‖s − r‖ / ‖r‖
    cos    cos(s, r)               align  cos(s − r, Δ)          inj    cos(s, Δ)

and for each of those five matrices M[t, l]: the raw entries, the global mean / std / min / max,
the mean over layers per step, the mean over steps per layer, and per step t > 0 the
step-0-relative ratio mean_l M[t] / mean_l M[0] and delta mean_l M[t] − mean_l M[0]; plus
‖Δ‖, ‖Δ‖ / mean‖r_L‖ and α. Cosines of a zero vector are 0, ratios divide by max(|·|, 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from saesteer.steer.batching import left_padded
from saesteer.steer.hooks import is_hooked_transformer, record, steer
from saesteer.steer.io import model_facts
from saesteer.steer.sites import Site

QUANTITIES = ("dist", "rel", "cos", "align", "inj")
CHUNK_ROWS = 16


@dataclass(frozen=True)
class FeatureSpec:
    """Which decode steps and layers the features read (module docstring)."""

    k_steps: int = 5
    steps: tuple[int, ...] = (0, 1, 3, 5)
    layer_offsets: tuple[int, ...] = (0, 1, 2, 3, 5, 10, 15)

    def __post_init__(self) -> None:
        if not isinstance(self.k_steps, int) or self.k_steps < 1:
            raise ValueError(f"k_steps must be an integer ≥ 1, got {self.k_steps!r}.")
        if not self.used_steps:
            raise ValueError(f"No step of {self.steps} lies in [0, k_steps={self.k_steps}].")
        if not self.layer_offsets or min(self.layer_offsets) < 0:
            raise ValueError(f"layer_offsets must be ≥ 0 and not empty, got {self.layer_offsets}.")

    @property
    def used_steps(self) -> tuple[int, ...]:
        return tuple(sorted({t for t in self.steps if 0 <= t <= self.k_steps}))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureSpec:
        return cls(
            int(values["k_steps"]),
            tuple(int(t) for t in values["steps"]),
            tuple(int(o) for o in values["layer_offsets"]),
        )


def feature_names(spec: FeatureSpec) -> list[str]:
    """Column names of `features` for `spec`, in order."""
    steps, offsets = spec.used_steps, spec.layer_offsets
    names = []
    for q in QUANTITIES:
        names += [f"{q}_t{t}_L+{o}" for t in steps for o in offsets]
        names += [f"{q}_mean", f"{q}_std", f"{q}_min", f"{q}_max"]
        names += [f"{q}_t{t}_mean" for t in steps]
        names += [f"{q}_L+{o}_mean" for o in offsets]
        for t in steps[1:]:
            names += [f"{q}_t{t}_ratio", f"{q}_t{t}_delta"]
    return [*names, "delta_norm", "delta_rel_norm", "alpha"]


def steered_site(code: Any) -> Site:
    """The site a code acts at first (lowest layer): an intervention's, a weight edit's or a
    controller's `sites`, else a steering code's `hook_name`."""
    sites = getattr(code, "sites", None)
    if sites:
        return min(sites)
    return Site.parse(code.hook_name)


def feature_layers(model: Any, code: Any, spec: FeatureSpec) -> list[int]:
    """min(L + o, n_layers − 1) per offset (repeats kept: fixed width for every model)."""
    last = model_facts(model)[2] - 1  # (name, d_model, n_layers)
    layer = min(steered_site(code).layer, last)
    return [min(layer + o, last) for o in spec.layer_offsets]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine along the last axis; 0 where either vector is zero."""
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    ok = (na > 0) & (nb > 0)
    return torch.where(ok, (a * b).sum(-1) / (na * nb).clamp_min(1e-30), torch.zeros_like(na))


def _ratio(a: float, b: float) -> float:
    return a / (b if abs(b) > 1e-6 else math.copysign(1e-6, b or 1.0))


def feature_vector(
    steered: torch.Tensor,
    replay: torch.Tensor,
    delta: torch.Tensor,
    alpha: float,
    spec: FeatureSpec,
) -> list[float]:
    """The feature row (module docstring) from s, r [steps, layers, d] and Δ [d] (float64)."""
    s, r, delta = steered.double(), replay.double(), delta.double()
    diff = s - r
    d = delta.expand_as(s)
    dist = diff.norm(dim=-1)
    mats = {
        "dist": dist,
        "rel": dist / r.norm(dim=-1).clamp_min(1e-12),
        "cos": _cos(s, r),
        "align": _cos(diff, d),
        "inj": _cos(s, d),
    }
    row: list[float] = []
    for q in QUANTITIES:
        m = mats[q]
        row += m.flatten().tolist()
        row += [m.mean().item(), m.std(unbiased=False).item(), m.min().item(), m.max().item()]
        per_step = m.mean(1).tolist()
        row += per_step
        row += m.mean(0).tolist()
        for value in per_step[1:]:
            row += [_ratio(value, per_step[0]), value - per_step[0]]
    norm = delta.norm().item()
    row += [norm, norm / max(r[:, 0].norm(dim=-1).mean().item(), 1e-12), float(alpha)]
    return row


def _forward_states(
    model: Any, rows: Sequence[torch.Tensor], sites: list[Site]
) -> list[dict[Site, torch.Tensor]]:
    """{site: [T, d] float64 on CPU} of each 1-D id row, from the model as it is now (steered or
    not): a Hugging Face model in left-padded chunks with positions counted from the first real
    token, a TransformerLens model one row at a time (its left-padding positions are not trusted)."""
    out: list[dict[Site, torch.Tensor]] = []
    with torch.inference_mode():
        if is_hooked_transformer(model):
            for row in rows:
                with record(model, sites) as seen:
                    model(row[None].to(model.cfg.device))
                out.append({site: seen[site][-1][0].double().cpu() for site in sites})
            return out
        for lo in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[lo : lo + CHUNK_ROWS]
            ids, mask, positions = left_padded(chunk)
            width = ids.shape[1]
            with record(model, sites) as seen:
                model(
                    ids.to(model.device),
                    attention_mask=mask.to(model.device),
                    position_ids=positions.to(model.device),
                )
            for i, r in enumerate(chunk):
                keep = slice(width - r.numel(), width)
                out.append({site: seen[site][-1][i, keep].double().cpu() for site in sites})
    return out


def check_alpha_grid(grid: Sequence[float]) -> list[float]:
    """The grid as finite floats, refusing an empty one."""
    from saesteer.steer.hooks import check_alpha

    values = [check_alpha(a, "an α of the grid") for a in grid]
    if not values:
        raise ValueError("The α grid is empty; give at least one strength, e.g. 1,2,4,8.")
    return values


def steer_features(
    model: Any,
    code: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    alpha: float,
    spec: FeatureSpec | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Feature rows [batch, len(feature_names(spec))] (float64) of left-padded prompts at (code, α).

    Costs per prompt: K steered decode steps, one steered and one unsteered forward of x ⧺ y."""
    from saesteer.steer.generate import generate_ids_steered
    from saesteer.steer.hooks import check_alpha

    spec = spec or FeatureSpec()
    alpha = check_alpha(alpha)
    new = generate_ids_steered(
        model,
        prompt_ids,
        prompt_mask,
        code,
        alpha,
        "all",
        max_new_tokens=spec.k_steps,
        use_cache=use_cache,
        eos_token_id=None,
    )
    prompts = [row[m.bool()] for row, m in zip(prompt_ids, prompt_mask, strict=True)]
    rows = [torch.cat([p, y]) for p, y in zip(prompts, new, strict=True)]
    layers = feature_layers(model, code, spec)
    site = steered_site(code)
    sites = sorted({site, *(Site(layer, "resid_post") for layer in layers)})
    with steer(model, code, alpha):
        steered = _forward_states(model, rows, sites)
    replay = _forward_states(model, rows, sites)
    out = []
    for prompt, s, r in zip(prompts, steered, replay, strict=True):
        start = prompt.numel() - 1
        at = [start + t for t in spec.used_steps]
        decoded = slice(start, start + spec.k_steps + 1)
        delta = (s[site][decoded] - r[site][decoded]).mean(0)
        s_m = torch.stack([s[Site(layer, "resid_post")][at] for layer in layers], 1)
        r_m = torch.stack([r[Site(layer, "resid_post")][at] for layer in layers], 1)
        out.append(feature_vector(s_m, r_m, delta, alpha, spec))
    return torch.tensor(out, dtype=torch.float64)
