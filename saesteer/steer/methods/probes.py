"""SwFC, StTP and StMP: three edits along one logistic-regression probe direction (arXiv 2604.08169).

Herbster et al., "Activation Steering for Aligned Open-ended Generation without Sacrificing
Coherence", publish no code; this is derived from the paper's description (a logistic-regression
decision boundary; "selectively intervene only on tokens whose activations fall below
distributional thresholds"; fixed-coefficient addition as the baseline) and
/work/shared/research/seed_methods.md §2. Notation: h [d] one token's activation at the site.

Data. Every completion token of the training pairs, read at the site in one forward pass
(`saesteer.steer.contrast.pair_contrasts`): label y = 1 for a token of a chosen completion, 0 for a
rejected one, group = its pair. Completion tokens whose whole prefix (prompt + completion so far) is
the same in both rows of a pair (e.g. " filled me with" before "joy" / "dread") have identical
activations in a causal model, so they carry no label: they are dropped from both classes.
With `probe_contrast = "instructed"` the chosen completion is instead read under the behaviour's
chosen-side system prompt and the rejected one under the rejected-side prompt (the paper's setup:
the same user prompts under a benign and a malicious system prompt); no token is dropped then.

Probe. With μ the token mean and σ̄ = (mean_j Var h_j)^½ one global scale, z = (h − μ)/σ̄ and

    minimise  L(u, b) = Σ_i a_i [log(1 + e^{f_i}) − y_i f_i] + (λ/2)‖u‖²,   f_i = u·z_i + b,

a_i = 1 / (2 n_{y_i}) (class-balanced: each class weighs ½, so unequal completion lengths do not
tilt the boundary), λ = `probe_l2`, intercept unpenalised. L is strictly convex; it is solved by
Newton's method with backtracking (gradient Zᵀa(p − y) + λu, Hessian Zᵀ diag(a p(1−p)) Z + λI over
[z 1]), in float64. One scalar σ̄ (not per-coordinate standardisation) keeps the penalty isotropic
in activation space, so v̂ is not tilted away from high-variance coordinates, while λ stays
unit-free. Back in activation space w = u/σ̄, c = b − w·μ (w·h + c = f), and

    v̂ = w/‖w‖,   s(h) = v̂·h,   s_b = −c/‖w‖   (w·h + c = ‖w‖ (s(h) − s_b): boundary at s = s_b).

The probe's verdict depends on h only through s, so an edit along v̂ is the smallest edit that
changes it: all three methods move h along v̂ only. Separability is checked on held-out tokens:
k-fold cross-validation over pairs (k = min(5, pairs), tokens of a pair never straddle train and
test; each fold warm-starts Newton from the full fit) gives a balanced accuracy; at or below
`probe_min_accuracy` (0.6; chance is 0.5) the fit stops with a ValueError: the site does not encode
the contrast linearly (try another layer or site, more or more contrastive pairs). With a single
pair there is nothing to hold out and the training accuracy is checked instead.

Statistics (over the kept tokens, s⁺ of chosen and s⁻ of rejected tokens):
    τ  = the `probe_percentile`-th percentile of s⁺ (the "distributional threshold", linear
         interpolation), s̄⁺ = mean s⁺, s̄⁻ = mean s⁻, Δ = s̄⁺ − s̄⁻ (> 0 by orientation).

Edits (α = 0 is the identity for all three; the gate is ProjectionGate(v̂, τ, "below"), i.e.
h' = h wherever s(h) ≥ τ: tokens already as "chosen" as the chosen class's low tail are untouched):

    swfc   h' = h + α Δ v̂                 every token; α = 1 moves s by the class-mean gap
                                          (the rejected class's mean lands on the chosen one's)
    sttp   h' = h + α (t − s) v̂   s < τ   t = s̄⁺ ("mean") or τ ("threshold"); α = 1 puts s' = t
                                          exactly. t is raised to τ if s̄⁺ < τ (a heavy lower tail),
                                          so no gated token is pushed back.
    stmp   h' = h + 2α (m − s) v̂  s < τ   m = max(s_b, τ); α = 1 mirrors, s' = 2m − s; α = ½ lands
                                          on m; α in (0, 1) interpolates.

Why StMP mirrors across m = max(s_b, τ). The paper's mirror is the probe's decision boundary
("use a logistic regression decision boundary"; the threshold only selects *which* tokens are
steered): a token the probe calls rejected with margin s_b − s becomes chosen with the same margin,
so the correction is as large as the token was wrong, instead of StTP's collapse of every gated
token onto one value. Our gate is the threshold τ, though, and when the classes separate well
τ > s_b: mirroring a gated token in (s_b, τ) across s_b would give s' = 2s_b − s < s, pushing it
*back* over the boundary, the opposite of the paper's purpose. m ≥ τ is exactly the condition for
every gated token to move forward (s' − s = 2(m − s) > 0 for all s < τ), and it lands every one on
the open side of its own gate (s' > 2m − τ ≥ τ), so the edit does not re-trigger: at α = 1 applying
it twice equals applying it once (likewise StTP, since t ≥ τ). m = max(s_b, τ) is the smallest such
mirror that also keeps the paper's boundary crossing (s' > s_b): it *is* s_b whenever τ ≤ s_b (the
gate lies within the probe's rejected side) and the threshold otherwise. Both are in the meta.

α < 0: swfc steers towards the rejected side; sttp/stmp push the gated (low) tokens further away
from the target/mirror, while the gate still only opens below τ, so the reverse is deliberately
weak: these two are one-sided corrections.

Costs. Fitting: one forward pass over the pairs, then Newton at O(n d²) per step for n tokens of
width d (SmolLM2: d = 576, n ≈ 3·10³: ~10⁹ flops a step, ~10–20 steps, plus warm-started folds):
seconds on a CPU. Steering, per token: the dot s = v̂·h (the gate and the operator each take one)
and a gated axpy h + k v̂: O(d), negligible next to the model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from saesteer.hook_names import resid_post
from saesteer.steer.batching import TokenizedPairs, tokenize_pairs
from saesteer.steer.contrast import pair_contrasts
from saesteer.steer.gates import ProjectionGate
from saesteer.steer.intervention import Edit, Intervention
from saesteer.steer.operators import Add, Reflect, SetProjection
from saesteer.steer.sites import Site

METHODS = ("swfc", "sttp", "stmp")
CONTRASTS = ("completions", "instructed")
FOLDS = 5
NEWTON_STEPS = 100
NEWTON_TOLERANCE = 1e-10  # stop when the Newton decrement ½ gᵀH⁻¹g falls below this


# --------------------------------------------------------------------------- contrast tokens


@dataclass
class ContrastTokens:
    """The probe's training data: activations h [n, d], labels y [n] (1 chosen), pair ids [n]."""

    h: torch.Tensor
    y: torch.Tensor
    pairs: torch.Tensor
    dropped: int = 0  # completion tokens with a prefix shared by both rows of their pair


def contrastive_positions(tokens: TokenizedPairs) -> torch.Tensor:
    """Bool [rows, T]: completion positions t whose prefix ids[0..t] differs from the other row's.

    Both rows of pair i (2i, 2i + 1) are identical up to their common prefix length L_i, so the
    activations there are identical too (causal model): only positions t ≥ L_i are kept.
    """
    ids = tokens.input_ids
    same = (ids[0::2] == ids[1::2]).long()  # [pairs, T]
    common = same.cumprod(dim=1).sum(dim=1)  # L_i [pairs]
    positions = torch.arange(ids.shape[1])
    keep = positions[None, :] >= common.repeat_interleave(2)[:, None]  # [rows, T]
    return keep & tokens.target_mask.bool()


def completion_contrast(model, tokenizer, pairs, site: Site, config) -> ContrastTokens:
    """Every contrastive completion token (module docstring, "Data") at `site`."""
    tokens = tokenize_pairs(tokenizer, pairs, bool(config.chat), config.max_length)
    contrast = pair_contrasts(model, tokens, [site], keep_tokens=True)[site]
    keep = contrastive_positions(tokens)[tokens.target_mask.bool()]  # [n_tokens], same order
    rows = contrast.token_rows[keep]
    return ContrastTokens(
        contrast.tokens[keep], (rows % 2 == 0).long(), rows // 2, int((~keep).sum())
    )


def instructed_contrast(model, tokenizer, pairs, site: Site, config) -> ContrastTokens:
    """Chosen completions under the chosen-side instruction (label 1), rejected ones under the
    rejected-side instruction (label 0): the behaviour named by `config.pairs`."""
    from saesteer.steer.behaviours import BEHAVIOURS

    behaviour = BEHAVIOURS.get(getattr(config, "pairs", None))
    if behaviour is None or not all(behaviour.instructions):
        raise ValueError(
            f"probe_contrast='instructed' asks each pair under the behaviour's two system "
            f"prompts, but {getattr(config, 'pairs', None)!r} is not a shipped behaviour with "
            "them; use a shipped data set name as --pairs, or probe_contrast='completions'."
        )
    parts = []
    for side in (0, 1):  # 0: chosen rows under the chosen-side prompt; 1: rejected rows
        asked = [behaviour.instructed(pair, side) for pair in pairs]
        tokens = tokenize_pairs(tokenizer, asked, bool(config.chat), config.max_length)
        contrast = pair_contrasts(model, tokens, [site], keep_tokens=True)[site]
        mine = contrast.token_rows % 2 == side
        parts.append((contrast.tokens[mine], contrast.token_rows[mine] // 2))
    h = torch.cat([parts[0][0], parts[1][0]])
    y = torch.cat([torch.ones(len(parts[0][0])), torch.zeros(len(parts[1][0]))]).long()
    return ContrastTokens(h, y, torch.cat([parts[0][1], parts[1][1]]))


def check_classes(data: ContrastTokens) -> None:
    """Both classes have tokens; otherwise the chosen and rejected completions do not differ."""
    n_chosen, n_rejected = int(data.y.sum()), int((1 - data.y).sum())
    if n_chosen == 0 or n_rejected == 0:
        raise ValueError(
            f"No contrast to fit a probe on: {n_chosen} chosen and {n_rejected} rejected tokens "
            f"differ from their pair's other completion ({data.dropped} shared tokens dropped). "
            "Are the chosen and rejected completions identical? Give pairs whose completions "
            "differ."
        )


# --------------------------------------------------------------------------- logistic regression


def balanced_weights(y: torch.Tensor) -> torch.Tensor:
    """a_i = 1 / (2 n_{y_i}) [n]: each class sums to ½."""
    n_pos = y.sum()
    return torch.where(y == 1, 0.5 / n_pos, 0.5 / (len(y) - n_pos))


def logistic_loss(
    design: torch.Tensor, y: torch.Tensor, a: torch.Tensor, theta: torch.Tensor, l2: float
) -> torch.Tensor:
    """L(θ) = Σ a_i [softplus(f_i) − y_i f_i] + (λ/2)‖u‖², f = [z 1]·θ, θ = [u, b]."""
    f = design @ theta
    return (a * (torch.nn.functional.softplus(f) - y * f)).sum() + 0.5 * l2 * theta[
        :-1
    ].square().sum()


def newton_logistic(
    design: torch.Tensor, y: torch.Tensor, l2: float, theta: torch.Tensor | None = None
) -> torch.Tensor:
    """θ = [u, b] [d + 1] minimising `logistic_loss` over design [n, d + 1] (last column 1s).

    Damped Newton: Δ = −H⁻¹g, step t halved until L(θ + tΔ) ≤ L(θ) + 10⁻⁴ t gᵀΔ (Armijo).
    """
    y = y.to(design.dtype)
    a = balanced_weights(y)
    ridge = torch.full((design.shape[1],), l2, dtype=design.dtype)
    ridge[-1] = 1e-12  # the intercept is unpenalised (a whisker keeps H positive definite)
    theta = torch.zeros(design.shape[1], dtype=design.dtype) if theta is None else theta.clone()
    loss = logistic_loss(design, y, a, theta, l2)
    for _ in range(NEWTON_STEPS):
        p = torch.sigmoid(design @ theta)
        grad = design.T @ (a * (p - y)) + ridge * theta
        hessian = design.T @ (design * (a * p * (1 - p))[:, None]) + torch.diag(ridge)
        step = -torch.linalg.solve(hessian, grad)
        slope = float(grad @ step)
        if -slope / 2 < NEWTON_TOLERANCE:
            break
        t = 1.0
        while t > 1e-10:
            candidate = theta + t * step
            new_loss = logistic_loss(design, y, a, candidate, l2)
            if new_loss <= loss + 1e-4 * t * slope:
                break
            t /= 2
        else:  # no decrease left at float64 precision: θ is as good as it gets
            break
        theta, loss = candidate, new_loss
    return theta


def balanced_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """½ (TPR + TNR) of the verdict logit > 0."""
    said = logits > 0
    return 0.5 * float(said[y == 1].float().mean() + (~said[y == 0]).float().mean())


@dataclass
class Probe:
    """σ(w·h + c) in activation space, as direction v̂ = w/‖w‖, norm ‖w‖ and boundary s_b."""

    direction: torch.Tensor  # v̂ [d] float32
    weight_norm: float  # ‖w‖ (per activation unit)
    boundary: float  # s_b = −c/‖w‖
    train_accuracy: float
    heldout_accuracy: float | None  # pooled out-of-fold balanced accuracy (None: one pair)
    folds: int
    seconds: float

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """w·h + c = ‖w‖ (v̂·h − s_b) [n]."""
        return self.weight_norm * (h.double() @ self.direction.double() - self.boundary)

    @property
    def accuracy(self) -> float:
        """What separability is judged by: held-out when there was something to hold out."""
        return self.train_accuracy if self.heldout_accuracy is None else self.heldout_accuracy


def fold_of_pairs(pair_ids: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """Fold index [n] of each token: pairs shuffled with `seed`, dealt round-robin to folds."""
    unique = torch.unique(pair_ids)
    order = unique[torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed))]
    fold_of = torch.empty(int(unique.max()) + 1, dtype=torch.long)
    fold_of[order] = torch.arange(len(order)) % folds
    return fold_of[pair_ids]


def fit_probe(data: ContrastTokens, l2: float, seed: int) -> Probe:
    """The class-balanced L2 logistic probe of the module docstring, with its held-out accuracy."""
    started = time.time()
    h = data.h.double()
    mean = h.mean(0)
    scale = float(h.var(0, unbiased=False).mean().sqrt().clamp_min(1e-12))  # σ̄
    design = torch.cat([(h - mean) / scale, torch.ones(len(h), 1, dtype=h.dtype)], dim=1)
    theta = newton_logistic(design, data.y, l2)
    train_accuracy = balanced_accuracy(design @ theta, data.y)
    folds = min(FOLDS, len(torch.unique(data.pairs)))
    heldout = None
    if folds >= 2:
        fold = fold_of_pairs(data.pairs, folds, seed)
        out_of_fold = torch.empty(len(h), dtype=h.dtype)
        for k in range(folds):
            test = fold == k
            train = ~test
            if data.y[train].min() == data.y[train].max():  # one class left: nothing to learn
                out_of_fold[test] = 0.0
                continue
            fold_theta = newton_logistic(design[train], data.y[train], l2, theta)
            out_of_fold[test] = design[test] @ fold_theta
        heldout = balanced_accuracy(out_of_fold, data.y)
    w = theta[:-1] / scale  # activation space
    c = float(theta[-1] - w @ mean)
    norm = float(w.norm())
    if not math.isfinite(norm) or norm <= 0:
        raise ValueError(
            "The probe's weights are zero or not finite: the chosen and rejected tokens do not "
            "differ at this site; try another layer or site."
        )
    return Probe(
        (w / norm).float(),
        norm,
        -c / norm,
        train_accuracy,
        heldout,
        folds if heldout is not None else 0,
        time.time() - started,
    )


def check_separable(probe: Probe, floor: float, site: Site, n_pairs: int) -> None:
    """Refuse a probe whose (held-out) balanced accuracy is at or below `floor`."""
    if probe.accuracy > floor:
        return
    which = f"{probe.folds}-fold held-out" if probe.heldout_accuracy is not None else "training"
    raise ValueError(
        f"The logistic probe cannot separate chosen from rejected tokens at {site.name}: its "
        f"{which} balanced accuracy is {probe.accuracy:.3f} (training {probe.train_accuracy:.3f}; "
        f"chance 0.5, required > {floor}), so its direction would steer along noise. Try another "
        f"layer or site (--hook-name), more or more contrastive pairs (now {n_pairs}), or "
        "probe_contrast='instructed' for a shipped behaviour."
    )


# --------------------------------------------------------------------------- projection statistics


@dataclass
class ProjectionStats:
    """s = v̂·h of the training tokens, summarised (module docstring, "Statistics")."""

    threshold: float  # τ
    mean_chosen: float  # s̄⁺
    mean_rejected: float  # s̄⁻
    below_chosen: float  # share of chosen tokens with s < τ (≈ percentile / 100)
    below_rejected: float  # share of rejected tokens with s < τ

    @property
    def gap(self) -> float:
        return self.mean_chosen - self.mean_rejected


def projection_stats(probe: Probe, data: ContrastTokens, percentile: float) -> ProjectionStats:
    s = data.h.double() @ probe.direction.double()
    chosen, rejected = s[data.y == 1], s[data.y == 0]
    tau = float(torch.quantile(chosen, percentile / 100))
    stats = ProjectionStats(
        tau,
        float(chosen.mean()),
        float(rejected.mean()),
        float((chosen < tau).double().mean()),
        float((rejected < tau).double().mean()),
    )
    if stats.gap <= 0:
        raise ValueError(
            f"Along the probe direction the chosen tokens' mean projection ({stats.mean_chosen:.4g}) "
            f"is not above the rejected ones' ({stats.mean_rejected:.4g}): the probe does not "
            "separate the classes by their means. Try another layer or site, or more pairs."
        )
    return stats


# --------------------------------------------------------------------------- the three edits


def build_edit(
    method: str, site: Site, probe: Probe, stats: ProjectionStats, target_rule: str
) -> tuple[Edit, dict]:
    """The method's edit (module docstring, "Edits") and what it chose, for the meta.

    meta "scale" is the number α acts on: swfc's step Δ, sttp's target t, stmp's mirror m.
    """
    v = probe.direction
    if method == "swfc":
        edit = Edit(site, Add(stats.gap * v))
        return edit, {"scale": stats.gap, "gate_open_chosen": 1.0, "gate_open_rejected": 1.0}
    gate = ProjectionGate(v, stats.threshold, "below")
    opened = {"gate_open_chosen": stats.below_chosen, "gate_open_rejected": stats.below_rejected}
    if method == "sttp":
        wanted = stats.mean_chosen if target_rule == "mean" else stats.threshold
        target = max(wanted, stats.threshold)
        extra = {"target": target, "target_rule": target_rule, "target_raised": target != wanted}
        return Edit(site, SetProjection(v, target), gate), {"scale": target, **extra, **opened}
    if method == "stmp":
        mirror = max(probe.boundary, stats.threshold)
        across = "boundary" if mirror == probe.boundary else "threshold"
        extra = {"mirror": mirror, "mirror_across": across}
        return Edit(site, Reflect(v, mirror), gate), {"scale": mirror, **extra, **opened}
    raise ValueError(f"{method!r} is not a probe method; use one of {METHODS}.")


def probe_site(model, config) -> Site:
    """`config.hook_name` as a site, default the middle layer's resid_post."""
    return Site.parse(config.hook_name or resid_post(model.cfg.n_layers // 2))


def check_options(config) -> tuple[str, float]:
    contrast = config.probe_contrast
    floor = float(config.probe_min_accuracy)
    if contrast not in CONTRASTS:
        raise ValueError(f"probe_contrast must be one of {CONTRASTS}, got {contrast!r}.")
    if not config.probe_l2 > 0:
        raise ValueError(
            f"probe_l2 must be > 0, got {config.probe_l2}: on separable tokens the unpenalised "
            "logistic loss has no minimum (‖w‖ → ∞). Use e.g. 1e-3."
        )
    if not 0 <= floor < 1:
        raise ValueError(f"probe_min_accuracy must be in [0, 1), got {floor}.")
    return contrast, floor


def fit(model, tokenizer, train_pairs, config) -> Intervention:
    """Fit the probe on `train_pairs` at the site and return `config.method`'s intervention."""
    if config.method not in METHODS:
        raise ValueError(f"{config.method!r} is not a probe method; use one of {METHODS}.")
    contrast, floor = check_options(config)
    site = probe_site(model, config)
    read = instructed_contrast if contrast == "instructed" else completion_contrast
    data = read(model, tokenizer, list(train_pairs), site, config)
    check_classes(data)
    probe = fit_probe(data, float(config.probe_l2), int(config.seed))
    check_separable(probe, floor, site, len(train_pairs))
    stats = projection_stats(probe, data, float(config.probe_percentile))
    edit, chosen = build_edit(config.method, site, probe, stats, config.probe_target)
    chosen_h, rejected_h = data.h[data.y == 1], data.h[data.y == 0]
    mean_diff = chosen_h.mean(0) - rejected_h.mean(0)
    meta = {
        "probe_train_accuracy": probe.train_accuracy,
        "probe_heldout_accuracy": probe.heldout_accuracy,
        "probe_folds": probe.folds,
        "probe_weight_norm": probe.weight_norm,
        "probe_seconds": round(probe.seconds, 3),
        "probe_contrast": contrast,
        "probe_cos_mean_diff": float(
            torch.nn.functional.cosine_similarity(probe.direction, mean_diff, dim=0)
        ),
        "boundary": probe.boundary,
        "threshold": stats.threshold,
        "percentile": float(config.probe_percentile),
        "mean_chosen": stats.mean_chosen,
        "mean_rejected": stats.mean_rejected,
        "gap": stats.gap,
        "n_tokens_chosen": len(chosen_h),
        "n_tokens_rejected": len(rejected_h),
        "n_tokens_shared_dropped": data.dropped,
        **chosen,
    }
    return Intervention([edit], config.method, model.cfg.model_name, meta)
