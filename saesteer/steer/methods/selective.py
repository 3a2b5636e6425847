"""Selective Steering (knoveleng/steering): turn the RMSNorm outputs of the discriminative layers in
one global 2-D plane; nothing is trained, one no-grad pass over the pairs calibrates it.

Calibration. Sites: the norm outputs attn_in and mlp_in of each layer l in `config.layers` (K = 2·L
candidate sites). For pair i at site s, h_i,s [d] is the mean of the activation over row i's
completion tokens (⁺ = the chosen row, ⁻ = the rejected row; `pair_contrasts`):

    candidate   d_s = unit(μ⁺_s − μ⁻_s),   μ^±_s = mean_i h^±_i,s                    D [K, d]
    b1          d_s*,  s* = argmax_s (1/K) Σ_k cos(d_s, d_k)           (one global direction)
    b2          PC1 of the centred candidates D − mean_k d_k, Gram–Schmidt'd against b1,
                signed so that α = +1 favours the chosen completions (orientation, below)
    sign test   site s on  ⇔  m⁺_s · m⁻_s < 0,   m^±_s = mean_i(ĥ^±_i,s · b1),   ĥ = h / ‖h‖
                (centred variant: ĥ = (h − c_s) / ‖h − c_s‖, c_s = (μ⁺_s + μ⁻_s) / 2)
    layer mask  layer l kept  ⇔  both its sites (attn_in, mlp_in) are on

Steering. At both norm sites of every kept layer, on every token (every position):

    h' = h + B (R(α·θ₀) − I) Bᵀ h,    B = [b1 b2] [d, 2],   θ₀ = `config.angle` degrees

the component of h in the plane turns by α·θ₀ from b1 towards b2; the rest of h and ‖h‖ are kept.
`selective_mode="adaptive"` edits only the tokens with h·b1 > 0 (`ProjectionGate(b1, 0, "above")`):
those already on the chosen side of the origin (the reference's ⁺ was "harmful", rotated away).

Positions. The reference reads the last prompt token. Our pairs share the prompt, so in a causal
model the last prompt token's activation is the same in both rows of a pair and μ⁺ − μ⁻ = 0 there;
the completion-span mean is the position summary here (as for mean-diff and CAA).

Deviations from the reference (knoveleng/steering, `SelectiveSteeringOperator`):
  - position summary: the completion-span mean, not the last prompt token (above);
  - the layer mask needs both norm sites of a layer to pass; the reference's current code tests each
    site on its own (its by-layer filter is commented out). The method notes ask for both;
  - orientation: PCA's sign of b2 is arbitrary, and flipping b2 is negating α. We fix it so that
    α > 0 steers towards the chosen side, like the other methods: with
    M(α) = mean_i[log π_α(y⁺_i|x_i) − log π_α(y⁻_i|x_i)] on the training pairs, b2 → −b2 when
    M(−1) > M(+1) (two steered forwards of the training rows). A per-site first-order rule (the
    sign of h·b2, as d(h·b1)/dθ = −h·b2) picked the wrong side on SmolLM2: the edits at earlier
    layers change what later sites see;
  - strength: α scales the angle (θ = α·θ₀), α = 0 is the identity; the reference sweeps θ itself;
  - `selective_center` (default off; read with getattr): centre each site by the pooled class mean
    c_s before the sign test. The raw test compares the classes' projections of ĥ on b1; a large
    component that both classes share can give them the same sign. Centring removes it: the
    test asks "does this site separate the classes along b1?". Measured with all 30 layers of
    SmolLM2-135M-Instruct, the raw test keeps 29 layers (sentiment), 28 (formality) and 28
    (topic-ocean), the centred one all 30, so the paper's raw test is the default; on the random
    tiny-test model the raw test keeps no layer for these data sets, the centred one both;
  - the rotation is applied low-rank (two dots and two axpys per token), not as a dense d×d matrix.
  The b1 rule averages cosines over all K candidates, the self-similarity included, as the reference
  does (a constant 1/K for every candidate, so the argmax is unchanged).

Costs. Calibration: one forward of the 2·n_pairs rows without gradients, keeping a [2·n_pairs, d]
span mean at each of the 2L sites; then a K×K cosine matrix and one SVD of [K, d]; orientation: two
more forwards of the rows under steering, with logits. For 60 pairs on SmolLM2-135M (30 layers, one
busy CPU thread) that was ≈ 15 s of calibration and 80–115 s in all. Steering: per token at each of
the 2·|mask| edited sites, two dot products and two axpys (O(d)); the adaptive gate adds one dot.
The saved intervention holds one [d, 2] plane (and gate direction) per edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from saesteer.steer.batching import TokenizedPairs, completion_logprobs, tokenize_pairs
from saesteer.steer.contrast import SiteContrast, pair_contrasts
from saesteer.steer.gates import ProjectionGate
from saesteer.steer.hooks import steer
from saesteer.steer.intervention import Edit, Intervention
from saesteer.steer.operators import EPS, Rotation2D, orthonormal_plane
from saesteer.steer.pairs import PreferencePair
from saesteer.steer.sites import Site, parse_layers

NORM_STREAMS = ("attn_in", "mlp_in")
SPREAD_TOLERANCE = 1e-3  # below this top singular value the centred candidates have no spread
CHUNK_ROWS = 16


def candidate_sites(layers: Sequence[int]) -> list[Site]:
    """The norm sites of `layers`: attn_in and mlp_in of each, in layer order [2·L]."""
    return [Site(layer, stream) for layer in layers for stream in NORM_STREAMS]


def candidate_directions(
    contrasts: dict[Site, SiteContrast], sites: Sequence[Site]
) -> torch.Tensor:
    """D [K, d]: row s = unit(μ⁺_s − μ⁻_s); a site where the classes' means coincide is an error."""
    diffs = torch.stack([contrasts[site].diff_in_means().double() for site in sites])
    norms = diffs.norm(dim=1)
    scale = torch.stack([contrasts[s].span_means.double().norm(dim=1).mean() for s in sites])
    flat = [site.name for site, n, s in zip(sites, norms, scale, strict=True) if n <= EPS * s]
    if flat:
        raise ValueError(
            f"The chosen and rejected completions give the same mean activation at {flat} "
            "(μ⁺ = μ⁻), so there is no direction to steer along: are the pairs' chosen and "
            "rejected texts identical? Give pairs whose completions differ in the behaviour."
        )
    return diffs / norms[:, None]


def central_candidate(directions: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(s*, mean cosines [K]): s* = argmax_s (1/K) Σ_k cos(d_s, d_k) over unit rows D [K, d]."""
    mean_cos = (directions @ directions.T).mean(dim=1)
    return int(mean_cos.argmax()), mean_cos


def principal_direction(directions: torch.Tensor) -> torch.Tensor:
    """PC1 [d] of the centred candidates D − mean_k d_k (D [K, d]); no spread is an error."""
    centred = directions - directions.mean(dim=0, keepdim=True)
    _, spread, right = torch.linalg.svd(centred, full_matrices=False)
    if spread[0] < SPREAD_TOLERANCE:
        raise ValueError(
            f"The rotation plane is degenerate: the {directions.shape[0]} candidate directions "
            f"are all the same (spread {spread[0].item():.2g}), so their first principal "
            "component is undefined and b2 would be parallel to b1. Use more layers "
            "(config.layers), or more or different pairs."
        )
    return right[0]


def unit_rows(h: torch.Tensor, center: torch.Tensor | None = None) -> torch.Tensor:
    """ĥ = (h − c) / ‖h − c‖ per row of h [n, d] (c = 0 when `center` is None)."""
    if center is not None:
        h = h - center
    return h / h.norm(dim=1, keepdim=True).clamp_min(EPS)


@dataclass
class SignTest:
    """One site's test: the classes' mean projections m⁺, m⁻ of ĥ on b1; on ⇔ m⁺·m⁻ < 0."""

    chosen: float
    rejected: float

    @property
    def on(self) -> bool:
        return self.chosen * self.rejected < 0


def sign_test(contrast: SiteContrast, b1: torch.Tensor, centered: bool) -> SignTest:
    """m^± = mean_i(ĥ^±_i · b1) at one site; centred by c = (μ⁺ + μ⁻)/2 when `centered`."""
    positive, negative = contrast.positive.double(), contrast.negative.double()
    center = (positive.mean(0) + negative.mean(0)) / 2 if centered else None
    return SignTest(
        float((unit_rows(positive, center) @ b1).mean()),
        float((unit_rows(negative, center) @ b1).mean()),
    )


def layer_mask(tests: dict[Site, SignTest], layers: Sequence[int]) -> list[int]:
    """The layers whose attn_in and mlp_in sites both pass the sign test."""
    return [
        layer for layer in layers if all(tests[Site(layer, stream)].on for stream in NORM_STREAMS)
    ]


def empty_mask_message(tests: dict[Site, SignTest], layers: Sequence[int], centered: bool) -> str:
    passing = [site.name for site, test in tests.items() if test.on]
    how = "centred" if centered else "raw (uncentred)"
    hint = (
        ""
        if centered
        else ", or the centred test (selective_center=True), which removes the "
        "shared component of the norm outputs that gives both classes the same sign"
    )
    return (
        f"Selective Steering kept no layer: among layers {list(layers)}, none has both norm sites "
        f"passing the {how} sign test mean(ĥ⁺·b1)·mean(ĥ⁻·b1) < 0 (sites that pass alone: "
        f"{passing or 'none'}). Try other layers (config.layers), more or cleaner pairs{hint}."
    )


def canonical_sign(vector: torch.Tensor) -> torch.Tensor:
    """±v [d] with its largest-magnitude coordinate positive (SVD's sign is arbitrary)."""
    return vector if vector[vector.abs().argmax()] >= 0 else -vector


def flipped(plane: torch.Tensor) -> torch.Tensor:
    """[b1, −b2] [d, 2]: turning by θ in it is turning by −θ in [b1, b2]."""
    return torch.stack([plane[:, 0], -plane[:, 1]], dim=1)


@torch.no_grad()
def mean_margin(model, tokens: TokenizedPairs, intervention: Intervention, alpha: float) -> float:
    """mean_i [log π_α(y⁺_i | x_i) − log π_α(y⁻_i | x_i)] over the pairs, π_α steered at α."""
    device = model.cfg.device
    logps = []
    for lo in range(0, tokens.input_ids.shape[0], CHUNK_ROWS):
        ids = tokens.input_ids[lo : lo + CHUNK_ROWS].to(device)
        mask = tokens.target_mask[lo : lo + CHUNK_ROWS].to(device)
        with steer(model, intervention, alpha):
            logps.append(completion_logprobs(model(ids), ids, mask).cpu())
    pairs = torch.cat(logps).view(-1, 2)
    return float((pairs[:, 0] - pairs[:, 1]).mean())


def fit(model, tokenizer, train_pairs: Sequence[PreferencePair], config) -> Intervention:
    """Calibrate Selective Steering on `train_pairs` (module docstring) → an Intervention.

    config: `layers`, `selective_mode`, `angle`, `chat`, `max_length` of `TrainSteerConfig`, and
    `selective_center` (bool, read with getattr; default False). Raises ValueError on bad layers,
    identical chosen/rejected activations, a degenerate plane or an empty layer mask.
    """
    layers = parse_layers(config.layers, model.cfg.n_layers)
    centered = bool(config.selective_center)
    sites = candidate_sites(layers)
    tokens = tokenize_pairs(tokenizer, list(train_pairs), bool(config.chat), config.max_length)
    contrasts = pair_contrasts(model, tokens, sites)
    directions = candidate_directions(contrasts, sites)  # [K, d] float64
    best, mean_cos = central_candidate(directions)
    b1 = directions[best]
    pc1 = canonical_sign(principal_direction(directions))
    plane = orthonormal_plane(b1, pc1)  # [d, 2]; raises when PC1 ∥ b1
    tests = {site: sign_test(contrasts[site], b1, centered) for site in sites}
    kept = layer_mask(tests, layers)
    if not kept:
        raise ValueError(empty_mask_message(tests, layers, centered))
    meta = {
        "layer_mask": kept,
        "candidate_layers": layers,
        "b1_site": sites[best].name,
        "mode": config.selective_mode,
        "sign_test": "centred" if centered else "raw",
        "position_summary": "completion-span mean",
        "strength_unit": "degrees per alpha",
        "degrees_per_alpha": float(config.angle),
        "pc1_cos_b1": round(float((pc1 @ b1).abs()), 6),
    }
    intervention = rotations(model, plane, kept, config, meta)
    plus, minus = (mean_margin(model, tokens, intervention, a) for a in (1.0, -1.0))
    if minus > plus:
        plane = flipped(plane)
        intervention = rotations(model, plane, kept, config, meta)
    intervention.meta.update(
        orientation={"margin_at_plus1": round(plus, 6), "margin_at_minus1": round(minus, 6)},
        b2_flipped=minus > plus,
        alignment=site_alignment(sites, tests, directions, mean_cos, plane),
    )
    return intervention


def rotations(model, plane: torch.Tensor, kept: Sequence[int], config, meta: dict) -> Intervention:
    """Rotation2D(plane, θ₀) at both norm sites of each kept layer, gated on h·b1 > 0 if adaptive.

    One operator (and gate) serves every site; `save_code` writes each edit's own copy."""
    rotation = Rotation2D(plane.float(), degrees=config.angle)
    gate = (
        ProjectionGate(plane[:, 0].float(), 0.0, "above")
        if config.selective_mode == "adaptive"
        else None
    )
    edits = [Edit(site, rotation, gate) for site in candidate_sites(kept)]
    return Intervention(edits, "selective", model.cfg.model_name, meta)


def site_alignment(
    sites: Sequence[Site],
    tests: dict[Site, SignTest],
    directions: torch.Tensor,
    mean_cos: torch.Tensor,
    plane: torch.Tensor,
) -> dict[str, dict[str, float | bool]]:
    """Per candidate site: its sign test (m⁺, m⁻, on), cos(d_s, b1), cos(d_s, b2), mean cosine."""
    in_plane = directions @ plane.double()  # [K, 2]
    return {
        site.name: {
            "chosen_proj": round(tests[site].chosen, 6),
            "rejected_proj": round(tests[site].rejected, 6),
            "on": tests[site].on,
            "cos_b1": round(float(in_plane[k, 0]), 6),
            "cos_b2": round(float(in_plane[k, 1]), 6),
            "mean_cos": round(float(mean_cos[k]), 6),
        }
        for k, site in enumerate(sites)
    }
