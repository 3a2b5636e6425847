"""Steer2Edit: a steering direction compiled into sparse rank-1 weight edits (no hooks at run time).

After Trustworthy-ML-Lab/Steer2Edit (/work/shared/research/seed_methods.md §5), written from the
paper's formulas. Training-free: one no-grad forward pass over the preference pairs, then closed-form
scores per attention head and MLP neuron. Returns a `saesteer.steer.weight_edit.WeightEdit`.

Data. Row 2i is prompt + chosen (⁺), row 2i + 1 prompt + rejected (⁻) (`tokenize_pairs`). For an
activation a, its response-span mean m(a) is the mean over a row's completion tokens, and μ^± the
mean of m(a) over the ⁺ / ⁻ rows. Per layer l, read in TransformerLens:

    attn_out  = blocks.l.hook_attn_out   (o_proj's output, [d_model])
    mlp_out   = blocks.l.hook_mlp_out    (down_proj's output, [d_model])
    z         = blocks.l.attn.hook_z     (o_proj's input per head, [n_heads, d_head])
    post      = blocks.l.mlp.hook_post   (down_proj's input, [d_mlp])

Directions and inputs:
    v_attn = μ⁺(attn_out) − μ⁻(attn_out),  v_mlp = μ⁺(mlp_out) − μ⁻(mlp_out),  v̂ = v/‖v‖
    x̄_j = ½(μ⁺(z_j) + μ⁻(z_j))  [d_head],   x̄_i = ½(μ⁺(post_i) + μ⁻(post_i))  (scalar)

Scores: how well each component's mean write agrees with the direction (W_O,j = head j's
[d_model, d_head] block of o_proj, W_down[:, i] neuron i's column):
    g_j = cos(v̂_attn, W_O,j x̄_j),     g_i = cos(v̂_mlp, W_down[:, i] x̄_i)      (0 for a zero write)

Soft threshold (the closed form of an elastic-net penalty ρ(a|λ| + ½(1 − a)λ²) on a linear gain g·λ):
    λ = sign(g) · max(|g| − ρa, 0) / (ρ(1 − a))
zero for |g| ≤ ρa (the component is left alone), λ = ±1 at |g| = ρ, growing linearly beyond, with the
sign of g. ρ = `edit_rho_attn` / `edit_rho_mlp` (ρ ≤ 0 turns that part off, as the reference's −1),
a = `edit_softness` ∈ [0, 1).

Edits (k̂_j = unit(W_O,jᵀ v̂_attn) [d_head], σ_i = sign(W_down[:, i] · v̂_mlp)):
    W_O,j        += λ_j v̂_attn k̂_jᵀ          (rank 1 per head)
    W_down[:, i] += λ_i σ_i v̂_mlp
Both push the component's write at x̄ towards +v̂: the head's changes by λ_j (k̂_j·x̄_j) v̂ and
sign(k̂_j·x̄_j) = sign(g_j); the neuron's by x̄_i λ_i σ_i v̂ and sign(λ_i σ_i) = sign(x̄_i). The
steering strength α of saesteer multiplies the whole edit: α = 0 is the model, α = 1 this edit,
α = −1 the opposite edit (`saesteer.steer.weight_edit`).

Defaults for SmolLM2-135M (d_model 576, 30 layers × 9 heads, 1536 neurons per layer):
ρ_attn = 0.2, ρ_mlp = 0.45, a = 0.8, the centre of the reference's Llama-2-7B grid (ρ_a 0.16–0.24,
ρ_m 0.35–0.55, a 0.7–0.9). The thresholds ρa are 0.16 (heads) and 0.36 (neurons). A cosine between
a direction and an unrelated vector in d = 576 dimensions has spread 1/√576 ≈ 0.042, so 0.16 is
≈ 3.8σ above chance: among the 270 heads essentially none passes by accident, only heads whose mean
write really aligns with the contrast. Neurons are many (46 080), each a single column whose cosine
is that of a fixed vector, so the bar is higher (0.36 ≈ 8.6σ) to keep the edit sparse and leave the
MLP mostly intact; the paper's trade-off curves show utility falling when too many neurons move.
a = 0.8 puts the dead zone at 80 % of ρ: components just over the threshold get small λ, so the edit
grows smoothly as ρ is lowered instead of switching whole heads on at full strength. Those values
are not tuned on SmolLM2 here; sweep ρ and α with `bench-steer` (the paper's edits are model-specific
grid picks). The fit refuses an empty edit and reports the largest |g| so ρ can be chosen below it.

Costs. One forward pass over the pairs with four hooks per layer (response-span sums only), then
O(n_heads·d_head·d_model + d_mlp·d_model) per layer: seconds. At run time the edit costs nothing
(it is in the weights); applying or reverting it touches only the edited columns.

Activation twin (`edit_apply activations`, to compare the edit with activation steering from the
same direction, as the paper does): the edit's change of each part's write *at the mean input*,

    c_attn,l = Σ_j λ_j (k̂_j·x̄_j)        c_mlp,l = Σ_i λ_i σ_i x̄_i

is added as a constant, h ← h + α·c·v̂, at blocks.l.attn_out / blocks.l.mlp_out of every edited
layer and every position: same directions, same size at the mean input; what differs is that the
weight edit's write follows each token's own head and neuron activations.

Meta: rho_attn, rho_mlp, softness, heads/neurons edited (total and per layer), max |g| per part,
max |λ|, direction norms and mean-input write changes c per layer, fit_seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from saesteer.steer.batching import TokenizedPairs, tokenize_pairs
from saesteer.steer.intervention import Edit, Intervention
from saesteer.steer.operators import Add
from saesteer.steer.pairs import PreferencePair
from saesteer.steer.sites import Site
from saesteer.steer.weight_edit import LayerEdit, WeightEdit, architecture_of

CHUNK_ROWS = 16
STREAMS = ("hook_attn_out", "hook_mlp_out", "attn.hook_z", "mlp.hook_post")


def soft_threshold(g: torch.Tensor, rho: float, softness: float) -> torch.Tensor:
    """λ = sign(g)·max(|g| − ρa, 0)/(ρ(1 − a)); all zeros when ρ ≤ 0 (that part is off)."""
    if not 0 <= softness < 1:
        raise ValueError(f"edit_softness must be in [0, 1), got {softness}.")
    if rho <= 0:
        return torch.zeros_like(g)
    return torch.sign(g) * (g.abs() - rho * softness).clamp_min(0) / (rho * (1 - softness))


@torch.no_grad()
def class_means(
    model, tokens: TokenizedPairs, chunk_rows: int = CHUNK_ROWS
) -> dict[str, torch.Tensor]:
    """{hook name: [2, width]} the ⁺ and ⁻ means of the response-span means (module docstring) of
    every layer's attn_out, mlp_out, z (flattened heads) and MLP post activation; float64."""
    names = [f"blocks.{layer}.{s}" for layer in range(model.cfg.n_layers) for s in STREAMS]
    sums: dict[str, torch.Tensor] = {}
    device = model.cfg.device
    rows = tokens.input_ids.shape[0]
    for lo in range(0, rows, chunk_rows):
        ids = tokens.input_ids[lo : lo + chunk_rows].to(device)
        mask = tokens.target_mask[lo : lo + chunk_rows].to(device).double()
        weights = mask / mask.sum(1, keepdim=True).clamp_min(1)  # [r, T]
        side = torch.nn.functional.one_hot(torch.arange(lo, lo + ids.shape[0]) % 2, 2)
        side = side.to(device).double()  # [r, 2]: column 0 chosen, 1 rejected
        hook = _span_sums(sums, weights, side)
        model.run_with_hooks(ids, return_type=None, fwd_hooks=[(n, hook) for n in names])
    n_pairs = rows // 2
    return {name: (total / n_pairs).cpu() for name, total in sums.items()}


def _span_sums(sums: dict[str, torch.Tensor], weights: torch.Tensor, side: torch.Tensor):
    """A TL hook adding one chunk's per-class sums of response-span means to `sums[name]`."""

    def hook(act, hook):
        spans = torch.einsum("rt,rtd->rd", weights, act.double().flatten(2))  # [r, width]
        total = side.T @ spans  # [2, width]
        sums[hook.name] = sums[hook.name] + total if hook.name in sums else total

    return hook


def unit(v: torch.Tensor) -> torch.Tensor:
    norm = v.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, v / norm.clamp_min(1e-300), torch.zeros_like(v))


def head_scores(w_o: torch.Tensor, z_mean: torch.Tensor, v_hat: torch.Tensor) -> torch.Tensor:
    """g_j = cos(v̂, W_O,j x̄_j) for TL `W_O` [n_heads, d_head, d_model], x̄ [n_heads, d_head]."""
    writes = torch.einsum("hd,hdm->hm", z_mean, w_o)  # W_O,j x̄_j  [n_heads, d_model]
    return unit(writes) @ v_hat


def neuron_scores(
    w_out: torch.Tensor, post_mean: torch.Tensor, v_hat: torch.Tensor
) -> torch.Tensor:
    """g_i = cos(v̂, W_down[:, i] x̄_i) for TL `W_out` [d_mlp, d_model], x̄ [d_mlp]."""
    return unit(post_mean[:, None] * w_out) @ v_hat


def layer_edit(model, layer: int, means: dict[str, torch.Tensor], config) -> tuple[LayerEdit, dict]:
    """The factors of one layer (module docstring) and its diagnostics."""
    block = model.blocks[layer]
    arch = architecture_of(model)
    prefix = f"blocks.{layer}."
    v_attn = means[prefix + "hook_attn_out"][0] - means[prefix + "hook_attn_out"][1]
    v_mlp = means[prefix + "hook_mlp_out"][0] - means[prefix + "hook_mlp_out"][1]
    v_attn_hat, v_mlp_hat = unit(v_attn), unit(v_mlp)
    z_mean = means[prefix + "attn.hook_z"].mean(0).reshape(arch.n_heads, arch.d_head)
    post_mean = means[prefix + "mlp.hook_post"].mean(0)
    w_o = block.attn.W_O.detach().to("cpu", torch.float64)
    w_out = block.mlp.W_out.detach().to("cpu", torch.float64)

    g_heads = head_scores(w_o, z_mean, v_attn_hat)
    lam_heads = soft_threshold(g_heads, config.edit_rho_attn, config.edit_softness)
    k = torch.einsum("hdm,m->hd", w_o, v_attn_hat)  # W_O,jᵀ v̂
    heads = torch.nonzero((lam_heads != 0) & (k.norm(dim=1) > 0)).flatten()

    g_neurons = neuron_scores(w_out, post_mean, v_mlp_hat)
    lam_neurons = soft_threshold(g_neurons, config.edit_rho_mlp, config.edit_softness)
    dots = w_out @ v_mlp_hat  # W_down[:, i]·v̂
    neurons = torch.nonzero((lam_neurons != 0) & (dots != 0)).flatten()

    edit = LayerEdit(
        layer,
        v_attn_hat.float(),
        heads,
        lam_heads[heads].float(),
        unit(k[heads]).float(),
        v_mlp_hat.float(),
        neurons,
        lam_neurons[neurons].float(),
        torch.sign(dots[neurons]).float(),
    )
    info = {
        "layer": layer,
        "heads": heads.tolist(),
        "neurons": int(neurons.numel()),
        "max_abs_g_attn": float(g_heads.abs().max()),
        "max_abs_g_mlp": float(g_neurons.abs().max()),
        "norm_v_attn": float(v_attn.norm()),
        "norm_v_mlp": float(v_mlp.norm()),
        "write_attn": float((lam_heads[heads] * (unit(k[heads]) * z_mean[heads]).sum(1)).sum()),
        "write_mlp": float((lam_neurons * torch.sign(dots) * post_mean)[neurons].sum()),
    }
    return edit, info


def activation_twin(edit: WeightEdit, infos: list[dict]) -> Intervention:
    """The edit's directions as activation additions of its mean-input size (module docstring)."""
    edits = []
    for part in edit.layers:
        info = infos[part.layer]
        for stream, v_hat, size, used in (
            ("attn_out", part.v_attn, info["write_attn"], part.n_heads),
            ("mlp_out", part.v_mlp, info["write_mlp"], part.n_neurons),
        ):
            if used and size != 0:
                edits.append(Edit(Site(part.layer, stream), Add(size * v_hat.float())))
    return Intervention(edits, "steer2edit", edit.model_name, dict(edit.meta, apply="activations"))


def check_options(config) -> None:
    if not 0 <= config.edit_softness < 1:
        raise ValueError(f"edit_softness must be in [0, 1), got {config.edit_softness}.")
    if config.edit_rho_attn <= 0 and config.edit_rho_mlp <= 0:
        raise ValueError(
            "steer2edit: both edit_rho_attn and edit_rho_mlp are ≤ 0, so nothing would be edited; "
            "give at least one a positive value (e.g. 0.2 / 0.45)."
        )


def fit(
    model, tokenizer, train_pairs: Sequence[PreferencePair], config
) -> WeightEdit | Intervention:
    """The Steer2Edit weight edit of TransformerLens `model` from `train_pairs`, or its activation
    twin with `edit_apply` "activations" (module docstring)."""
    if not (hasattr(model, "hook_dict") and hasattr(model, "cfg")):
        raise ValueError("steer2edit fits on a TransformerLens HookedTransformer (load_model).")
    check_options(config)
    if not train_pairs:
        raise ValueError("steer2edit needs at least one training pair.")
    started = time.time()
    tokens = tokenize_pairs(tokenizer, train_pairs, bool(config.chat), config.max_length)
    means = class_means(model, tokens)
    layers, infos = [], []
    for layer in range(model.cfg.n_layers):
        edit, info = layer_edit(model, layer, means, config)
        layers.append(edit)
        infos.append(info)
    thresholds = (
        config.edit_rho_attn * config.edit_softness,
        config.edit_rho_mlp * config.edit_softness,
    )
    best_attn = max(i["max_abs_g_attn"] for i in infos)
    best_mlp = max(i["max_abs_g_mlp"] for i in infos)
    result = WeightEdit(layers, model.cfg.model_name, architecture_of(model))
    if not result.layers:
        raise ValueError(
            f"steer2edit edits nothing: the largest head score |g| is {best_attn:.3f} and the "
            f"largest neuron score {best_mlp:.3f}, at or below the thresholds ρ·a = "
            f"{thresholds[0]:.3f} / {thresholds[1]:.3f}; lower edit_rho_attn / edit_rho_mlp or "
            "edit_softness."
        )
    lambdas = [x.head_lambdas.abs().max() for x in result.layers if x.n_heads]
    lambdas += [x.neuron_lambdas.abs().max() for x in result.layers if x.n_neurons]
    result.meta.update(
        rho_attn=config.edit_rho_attn,
        rho_mlp=config.edit_rho_mlp,
        softness=config.edit_softness,
        threshold_attn=thresholds[0],
        threshold_mlp=thresholds[1],
        heads_edited=result.n_heads_edited,
        neurons_edited=result.n_neurons_edited,
        max_abs_g_attn=best_attn,
        max_abs_g_mlp=best_mlp,
        max_abs_lambda=float(max(lambdas)),
        per_layer=infos,
        fit_seconds=round(time.time() - started, 3),
    )
    return activation_twin(result, infos) if config.edit_apply == "activations" else result
