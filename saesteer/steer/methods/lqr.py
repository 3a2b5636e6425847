"""A-LQR: closed-loop steering by linear-quadratic control of the residual stream across layers.

"Local Linearity of LLMs Enables Activation Steering via Model-Based Linear Optimal Control"
(trustworthyrobotics/lqr-activation-steering; notes in /work/shared/research/seed_methods.md §3).
Nothing is trained: Jacobians, a Riccati recursion and two means.

State and dynamics. x_t [d] is the residual entering block t (resid_pre) at a token; the block maps
it to x_{t+1} = f_t(x_t) + u_t, where the control u_t is added to the block's output (resid_post),
so the input matrix is B = I. Linearised around typical prompts, x_{t+1} ≈ Ā_t x_t + c_t + u_t with

    Ā_t = mean over Jacobian prompts of ∂f_t/∂x_t at the last position     (`saesteer.steer.jacobians`)

Setpoints, from the preference pairs (response-span means at each controlled layer's resid_pre,
⁺ chosen, ⁻ rejected completions, `pair_contrasts`):

    E_t = μ⁺_t − μ⁻_t,   v̂_t = E_t / ‖E_t‖,   β_t = v̂_t·μ⁺_t + (λ − 1)‖E_t‖

β_t is a level of the projection s_t = v̂_t·x_t: λ = 1 is the chosen completions' mean level, λ = 0
the rejected ones', λ > 1 beyond. (The reference writes β_t = λ‖E_t‖, a level measured from the
origin; the residual stream's projections on v̂_t carry a large offset shared by both classes, so
we measure λ from the rejected class's mean instead: λ keeps its meaning of "gaps of ‖E_t‖".)

Gains. Cost Σ_t e_tᵀ Q e_t + u_tᵀ R u_t + terminal x_Tᵀ S_T x_T with Q = qI, R = rI, S_T = q_f I, over
the controlled layers t = t₀ … t₁ (T = t₁ + 1). The backward Riccati recursion with B = I:

    S_T = q_f I
    K_t = (S_{t+1} + R)⁻¹ S_{t+1} Ā_t
    S_t = Q + Ā_tᵀ S_{t+1} Ā_t − (S_{t+1} Ā_t)ᵀ (S_{t+1} + R)⁻¹ (S_{t+1} Ā_t)

(float64, S symmetrised each step). Layers between controlled ones that are not controlled count as
uncontrolled steps (S_t = Q + ĀᵀSĀ, no K).

Feedback, at every controlled layer and every token (operator `feedback`, site blocks.t.resid_post):

    e_t = (β_t − v̂_t·x_t) v̂_t,   u_t = α K_t e_t = α (β_t − v̂_t·x_t) k_t,   k_t = K_t v̂_t [d]

α scales the LQR law (α = 1 the law itself, α = 0 the identity, continuous in α): the benchmark's
strength search moves α. x_t is read from the block's input as the block ran (after the earlier
layers' controls): that is the loop being closed. The reference steers the last position only;
we steer every position, so the generated text is the same with and without a KV cache (a token's
keys and values are computed once, when it is the last position, and a full re-run must agree).

What it costs. Jacobians: per prompt and block one token's forward and d = 576 one-token backward
passes (batched); cached on disk (`--lqr-jacobians`, default under the cache folder), resumable.
Riccati: T d×d solves, under a second. Per token and controlled layer: one dot and one axpy.

`tracking_errors` measures the loop: mean |v̂_t·x_t − β_t| per controlled layer over the positions
of given texts, under this intervention or under open-loop addition of the same mean edit size
(`open_loop`: h_t += c_t v̂_t, c_t = the closed loop's mean ‖u_t‖ at that layer).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from saesteer.steer.batching import prompt_ids, tokenize_pairs
from saesteer.steer.contrast import pair_contrasts
from saesteer.steer.hooks import record, steer
from saesteer.steer.intervention import Edit, Intervention
from saesteer.steer.jacobians import mean_jacobians
from saesteer.steer.operators import Add, Feedback, unit
from saesteer.steer.pairs import PreferencePair
from saesteer.steer.sites import Site, parse_layers


def riccati_gains(
    jacobians: torch.Tensor, q: float, r: float, q_final: float, controlled: Sequence[bool]
) -> list[torch.Tensor | None]:
    """K_t [d, d] for each step t of `jacobians` [T, d, d] (None where not `controlled`), by the
    backward recursion of the module docstring (B = I, Q = qI, R = rI, S_T = q_final·I)."""
    if r <= 0 or q < 0 or q_final < 0:
        raise ValueError(f"A-LQR needs r > 0, q ≥ 0 and q_final ≥ 0, got {r}, {q}, {q_final}.")
    steps, d, _ = jacobians.shape
    eye = torch.eye(d, dtype=torch.float64)
    s_next = q_final * eye
    gains: list[torch.Tensor | None] = [None] * steps
    for t in reversed(range(steps)):
        a = jacobians[t].double()
        sa = s_next @ a
        if controlled[t]:
            k = torch.linalg.solve(s_next + r * eye, sa)
            s_now = q * eye + a.T @ sa - sa.T @ k
            gains[t] = k
        else:
            s_now = q * eye + a.T @ sa
        s_next = 0.5 * (s_now + s_now.T)
    return gains


def check_options(config) -> None:
    if config.lqr_r <= 0:
        raise ValueError(f"lqr_r must be > 0, got {config.lqr_r}.")
    for name in ("lqr_q", "lqr_q_final"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be ≥ 0, got {getattr(config, name)}.")
    if config.lqr_prompts < 1:
        raise ValueError(f"lqr_prompts must be ≥ 1, got {config.lqr_prompts}.")


def jacobian_prompts(tokenizer, pairs: Sequence[PreferencePair], chat: bool, n: int) -> list:
    """Token ids of the first `n` distinct prompts of the pairs (no completion: neither side)."""
    seen: dict[tuple[int, ...], None] = {}
    for pair in pairs:
        ids = tuple(prompt_ids(tokenizer, pair, chat))
        if len(ids) >= 2:
            seen.setdefault(ids, None)
        if len(seen) == n:
            break
    if not seen:
        raise ValueError("A-LQR found no prompt of at least 2 tokens among the pairs.")
    return [list(ids) for ids in seen]


def setpoints(model, tokenizer, pairs, layers: Sequence[int], config) -> dict[int, dict]:
    """v̂_t, β_t and ‖E_t‖ at each layer's resid_pre (module docstring)."""
    tokens = tokenize_pairs(tokenizer, pairs, bool(config.chat), config.max_length)
    sites = {t: Site(t, "resid_pre") for t in layers}
    contrasts = pair_contrasts(model, tokens, list(sites.values()))
    out = {}
    for t, site in sites.items():
        c = contrasts[site]
        mu_plus, mu_minus = c.positive.mean(0), c.negative.mean(0)
        gap = mu_plus - mu_minus
        direction = unit(gap, f"chosen − rejected mean at {site.name}")
        out[t] = {
            "direction": direction,
            "gap": float(gap.norm()),
            "setpoint": float(direction @ mu_plus + (config.lqr_lambda - 1) * gap.norm()),
            "level_minus": float(direction @ mu_minus),
        }
    return out


def fit(model, tokenizer, train_pairs: Sequence[PreferencePair], config) -> Intervention:
    """Jacobians, gains and setpoints on `train_pairs`; the feedback intervention (module doc)."""
    check_options(config)
    pairs = list(train_pairs)
    if not pairs:
        raise ValueError("lqr needs at least one training pair; the data set is empty.")
    layers = parse_layers(config.layers, model.cfg.n_layers)
    chat = bool(config.chat)
    prompts = jacobian_prompts(tokenizer, pairs, chat, config.lqr_prompts)
    span = list(range(layers[0], layers[-1] + 1))  # every block between, controlled or not
    with torch.no_grad():
        targets = setpoints(model, tokenizer, pairs, layers, config)
    started = time.time()
    jacobians, where = mean_jacobians(model, prompts, span, config.lqr_jacobians or None)
    jacobian_seconds = time.time() - started
    gains = riccati_gains(
        jacobians, config.lqr_q, config.lqr_r, config.lqr_q_final, [t in layers for t in span]
    )
    edits, per_layer = [], []
    for t, gain in zip(span, gains, strict=True):
        if gain is None:
            continue
        target = targets[t]
        k = (gain @ target["direction"].double()).float()
        edits.append(
            Edit(Site(t, "resid_post"), Feedback(target["direction"], k, target["setpoint"]))
        )
        per_layer.append(
            {
                "layer": t,
                "setpoint": target["setpoint"],
                "level_rejected": target["level_minus"],
                "gap": target["gap"],
                "gain_norm": float(k.norm()),
                "gain_along_direction": float(k @ target["direction"]),
                "jacobian_spectral_norm": float(
                    torch.linalg.matrix_norm(jacobians[t - span[0]], 2)
                ),
            }
        )
    meta: dict[str, Any] = {
        "layers": layers,
        "q": config.lqr_q,
        "r": config.lqr_r,
        "q_final": config.lqr_q_final,
        "lambda": config.lqr_lambda,
        "n_jacobian_prompts": len(prompts),
        "jacobian_file": str(where),
        "jacobian_seconds": round(jacobian_seconds, 2),  # a cache hit: the file read + digest
        "per_layer": per_layer,
    }
    return Intervention(edits, "lqr", model.cfg.model_name, meta)


def open_loop(intervention: Intervention, sizes: dict[int, float]) -> Intervention:
    """h_t += c_t v̂_t at each feedback edit's site, c_t = `sizes[t]` (the comparison's baseline:
    the same directions, a constant push instead of feedback)."""
    edits = [
        Edit(e.site, Add(sizes[e.site.layer] * e.operator.direction)) for e in intervention.edits
    ]
    return Intervention(edits, "lqr-open-loop", intervention.model_name, intervention.meta)


@torch.no_grad()
def tracking_errors(
    model,
    lqr: Intervention,
    texts: Sequence[torch.Tensor],
    alpha: float,
    applied: Intervention | None = None,
    first_position: int = 1,
) -> dict[int, dict[str, float]]:
    """Per controlled layer t of `lqr`: mean |v̂_t·x_t − β_t| and mean ‖u_t‖ over the positions
    from `first_position` on of `texts` (1-D id tensors), run under `applied` (default: `lqr`
    itself; e.g. `open_loop(...)`) at strength α.

    x_t is read at resid_pre of block t (as the block saw it); u_t is what the edit at blocks.t
    added: α(β_t − v̂_t·x_t)k_t for feedback, α·v for an addition. Position 0 is left out by
    default: on SmolLM2 it is the attention sink (‖x‖ ≈ 25,000 against ≈ 215 elsewhere at layer
    20), whose projection error (≈ 950 against ≈ 24) would otherwise dominate every mean."""
    reference = {e.site.layer: e.operator for e in lqr.edits}
    applied = applied or lqr
    operators = {e.site.layer: e.operator for e in applied.edits}
    sites = {t: Site(t, "resid_pre") for t in reference}
    errors: dict[int, list[torch.Tensor]] = {t: [] for t in reference}
    sizes: dict[int, list[torch.Tensor]] = {t: [] for t in reference}
    device = model.cfg.device
    for ids in texts:
        with steer(model, applied, alpha), record(model, list(sites.values())) as seen:
            model(ids[None].to(device), return_type=None)
        for t, ref in reference.items():
            x = seen[sites[t]][-1][0, first_position:].float()  # [T − first_position, d]
            s = x @ ref.direction.to(x)
            errors[t].append((s - ref.setpoint).abs().cpu())
            op = operators.get(t)
            if isinstance(op, Feedback):
                u = (alpha * (op.setpoint - x @ op.direction.to(x)))[:, None] * op.gain.to(x)
            elif isinstance(op, Add):
                u = (alpha * op.vector.to(x)).expand_as(x)
            else:
                u = torch.zeros_like(x)
            sizes[t].append(u.norm(dim=-1).cpu())
    return {
        t: {
            "tracking_error": float(torch.cat(errors[t]).mean()),
            "edit_norm": float(torch.cat(sizes[t]).mean()),
        }
        for t in reference
    }


@torch.no_grad()
def linearity_errors(
    model, lqr: Intervention, texts: Sequence[torch.Tensor], jacobians: torch.Tensor, sizes
) -> dict[int, float]:
    """The local-linearity check behind A-LQR, per controlled layer t: the median over `texts`
    (1-D ids; their last position) of ‖f_t(x + δ) − f_t(x) − Ā_t δ‖ / ‖f_t(x + δ) − f_t(x)‖ for
    δ = sizes[t]·v̂_t (a control's size), with Ā_t = `jacobians[t − first layer]`."""
    from saesteer.steer.jacobians import last_position_blocks

    layers = [e.site.layer for e in lqr.edits]
    directions = {e.site.layer: e.operator.direction for e in lqr.edits}
    errors: dict[int, list[float]] = {t: [] for t in layers}
    for ids in texts:
        for t, (x, block) in last_position_blocks(model, ids, layers).items():
            delta = (sizes[t] * directions[t]).to(x).view_as(x)
            moved = (block(x + delta) - block(x)).flatten().float()
            predicted = jacobians[t - layers[0]].to(moved) @ delta.flatten().float()
            errors[t].append(float((moved - predicted).norm() / moved.norm().clamp_min(1e-12)))
    return {t: float(torch.tensor(v).median()) for t, v in errors.items()}
