"""`TrainSteerConfig`: one dataclass for `saesteer train-steer`, config files and `fit_steering`."""

from __future__ import annotations

from dataclasses import dataclass

from saesteer.config import option

CODE_METHODS = ("yapo", "bipo", "mean-diff")  # saesteer.steer.train: a vector or latent code
INTERVENTION_METHODS = (
    "selective",
    "swfc",
    "sttp",
    "stmp",
    "cdas",
    "grains",
    "steer2edit",
    "lqr",
    "controller",
)  # steer.methods
METHODS = CODE_METHODS + INTERVENTION_METHODS
SELECTIVE_MODES = ("standard", "adaptive")
PROBE_TARGETS = ("mean", "threshold")
PROBE_CONTRASTS = ("completions", "instructed")
CDAS_INITS = ("mean-diff", "random")
EDIT_APPLY = ("weights", "activations")
CONTROLLER_TIMINGS = ("prefill", "same-pass")  # saesteer.steer.controlled
CONTROLLER_SCALES = ("relu", "logit")
REDUCTIONS = ("pca", "mean")
YAPO_MODES = ("refit", "reference", "anneal", "l1")
SUPPORT_RULES = ("effect", "magnitude", "omp", "mean-diff")  # saesteer.steer.sparse_support, train


@dataclass
class TrainSteerConfig:
    """How to learn a steering code from preference pairs (see `saesteer.steer.train`)."""

    pairs: str = option(
        help="training pairs: a JSONL file, or a shipped data set name "
        "(sentiment, formality, topic-ocean, topic-food, style-enthusiastic)"
    )
    method: str = option(
        "yapo",
        "yapo (sparse SAE-latent code) | bipo (dense vector) | "
        "mean-diff (contrastive mean difference) | selective (norm-preserving rotation at "
        "discriminative layers) | swfc / sttp / stmp (probe direction: fixed addition / "
        "steer-to-target / mirror, gated per token) | cdas (rank-1 interchange trained by "
        "distribution matching) | grains (attribution-built vector, norm-rescaled) | steer2edit "
        "(sparse rank-1 edits of o_proj / down_proj weights; export with `saesteer export-edit`) | "
        "lqr (closed-loop feedback across layers from Jacobians and a Riccati recursion) | "
        "controller (Guiding Giants: an MLP sets per prompt the strength and layer weights)",
        choices=list(METHODS),
    )
    out: str | None = option(None, "output folder for the code (code.safetensors + code.json)")
    model: str = option("smollm2-135m-instruct", "model name or local folder")
    sae: str | None = option(None, "SAE folder (required for yapo; fixes the hook)")
    hook_name: str | None = option(
        None,
        "the site steered by bipo/mean-diff/swfc/sttp/stmp/cdas/grains, e.g. "
        "blocks.15.hook_resid_post (default: the SAE's, else the "
        "middle layer's resid_post)",
    )
    validation: str | None = option(
        None,
        "validation pairs JSONL (default: the shipped data set's "
        "validation split, else --val-fraction of the pairs)",
    )
    val_fraction: float = option(
        0.2, "fraction of the pairs held out when no validation set is given"
    )
    chat: bool | None = option(
        None,
        "wrap prompts in the model's chat template (default: the "
        "shipped data set's style, else off)",
    )
    epochs: int = option(4, "passes over the training pairs")
    batch_pairs: int = option(4, "pairs per micro-batch")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(
        0.05,
        "AdamW learning rate in activation units (cosine decay to 0): each step moves v_i by "
        "about lr × c, c = a typical active latent (yapo) or residual coordinate (bipo). "
        "YaPO's 5e-4 suits thousands of steps; the shipped data sets give 36–60 steps per run, "
        "and 0.05 × 60 steps lets a code reach ≈ c (‖Δh‖/‖h‖ ≈ 0.15–0.2 at α = 1 on the "
        "default model), where generations visibly change",
    )
    weight_decay: float = option(
        0.0, "AdamW decoupled weight decay (the YaPO reference declares 0.05 but never applies it)"
    )
    warmup_fraction: float = option(
        0.1, "fraction of each phase's steps with a linear learning-rate warm-up (then cosine)"
    )
    grad_clip: float = option(1.0, "clip the gradient's norm to this (0: off)")
    beta: float = option(0.1, "β of the preference loss −log σ(d·β·(r(y_w) − r(y_l)))")
    yapo_mode: str = option(
        "refit",
        "yapo: refit (choose --top-k latents by --support-by, train on them) | "
        "reference (the YaPO recipe: no cap, no L1; as sparse as the data makes it) | "
        "anneal (cap shrinking from d_sae to --top-k) | l1 (L1 ramped in, then --top-k kept)",
        choices=list(YAPO_MODES),
    )
    top_k: int = option(32, "yapo sparse modes: latents in the final code (ignored by reference)")
    support_by: str = option(
        "mean-diff",
        "yapo refit: which latents to keep: effect (how much each moves the residual) | "
        "magnitude (|v_i|) | omp (matching pursuit of the dense edit) | mean-diff (no dense "
        "phase: start from the k-latent matching-pursuit fit of the pairs' mean difference)",
        choices=list(SUPPORT_RULES),
    )
    refit_epochs: int = option(2, "yapo refit: epochs on the chosen support")
    anneal_fraction: float = option(
        0.5, "yapo anneal/l1: fraction of the steps over which the cap shrinks or λ grows"
    )
    l1: float = option(0.1, "yapo l1: L1 weight λ (a soft-threshold of lr·λ after each step)")
    layers: str = option(
        "",
        "selective: the layers whose norm outputs are candidate sites; lqr: the layers "
        "controlled (all | 3,5,9; default all)",
    )
    selective_mode: str = option(
        "standard",
        "selective: standard (rotate every token at masked layers) | adaptive (only tokens with "
        "h·b1 > 0)",
        choices=list(SELECTIVE_MODES),
    )
    selective_center: bool = option(
        False,
        "selective: centre each norm site by the pooled class mean before the layer-mask sign "
        "test (the paper's raw test is the default; on SmolLM2-135M it keeps 28–29 of 30 layers, "
        "on the random tiny model none)",
    )
    angle: float = option(
        30.0, "selective: rotation angle in degrees at α = 1 (the strength is α · angle)"
    )
    probe_percentile: float = option(
        20.0,
        "sttp/stmp: steer tokens whose probe projection is below this percentile of the chosen "
        "class's projections",
    )
    probe_target: str = option(
        "mean",
        "sttp: the projection steered to: mean (of the chosen class) | threshold (the percentile)",
        choices=list(PROBE_TARGETS),
    )
    probe_l2: float = option(1e-3, "swfc/sttp/stmp: L2 penalty of the logistic-regression probe")
    probe_contrast: str = option(
        "completions",
        "swfc/sttp/stmp: probe tokens from chosen vs rejected completions, or (instructed) each "
        "side read under the shipped behaviour's own system prompt (the paper's setup; needs a "
        "shipped --pairs name)",
        choices=list(PROBE_CONTRASTS),
    )
    probe_min_accuracy: float = option(
        0.6,
        "swfc/sttp/stmp: held-out balanced accuracy the probe must exceed, else the fit stops "
        "(chance is 0.5)",
    )
    grains_top_k: int = option(10, "grains: tokens ablated per ranking (top-k positive / negative)")
    ig_steps: int = option(20, "grains: Integrated-Gradients steps from the zero baseline")
    grains_reduce: str = option(
        "pca",
        "grains: how the activation differences become a vector: pca (PC1, sign of the mean) | "
        "mean",
        choices=list(REDUCTIONS),
    )
    grains_scale: float = option(
        0.2,
        "grains: the added vector's norm as a fraction of the site's median ‖h‖ (α = 1 turns a "
        "typical token by atan(0.2) ≈ 11° towards v)",
    )
    grains_ig_start: float = option(
        0.1,
        "grains: start of the Integrated-Gradients path as a fraction of the embeddings (0 is the "
        "paper's zero baseline, unstable in RMSNorm models: see steer/methods/grains.py)",
    )
    cdas_lr: float = option(
        0.04, "cdas: AdamW learning rate of the rank-1 direction (linear decay)"
    )
    cdas_init: str = option(
        "mean-diff",
        "cdas: starting direction: mean-diff (difference of the two instructions' last-prompt "
        "activations) | random (seeded Gaussian, the reference's choice)",
        choices=list(CDAS_INITS),
    )
    edit_rho_attn: float = option(
        0.2,
        "steer2edit: ρ of the attention heads: a head is edited when |cos| of its mean write to the "
        "direction exceeds ρ·softness (λ = 1 at |cos| = ρ); ≤ 0 leaves attention alone",
    )
    edit_rho_mlp: float = option(
        0.45,
        "steer2edit: ρ of the MLP neurons (as edit_rho_attn; higher, since neurons are many); ≤ 0 "
        "leaves the MLP alone",
    )
    edit_softness: float = option(
        0.8,
        "steer2edit: a in [0, 1) of the soft threshold λ = sign(g)·max(|g| − ρa, 0)/(ρ(1 − a)): "
        "the dead zone is |g| ≤ ρa",
    )
    edit_apply: str = option(
        "weights",
        "steer2edit: weights (the rank-1 edits) | activations (the same directions added at "
        "attn_out / mlp_out with the edit's mean-input size, for comparison)",
        choices=list(EDIT_APPLY),
    )
    lqr_q: float = option(0.1, "lqr: state cost q (Q = qI) of the tracking error per layer")
    lqr_r: float = option(3.0, "lqr: control cost r (R = rI); larger r, smaller gains")
    lqr_q_final: float = option(0.1, "lqr: terminal state cost (S_T = q_final·I)")
    lqr_lambda: float = option(
        1.0,
        "lqr: setpoint β_t = v̂·μ⁺ + (λ − 1)‖μ⁺ − μ⁻‖ (1: the chosen completions' mean level, "
        "0: the rejected ones')",
    )
    lqr_prompts: int = option(
        30,
        "lqr: distinct training prompts whose last-position Jacobians are averaged (at most as "
        "many as the pairs have; the shipped sets have 12–20)",
    )
    lqr_jacobians: str = option(
        "",
        "lqr: Jacobian cache file (resumed, refused if made for another model; default: one "
        "under the cache folder named by model, layers and prompts)",
    )
    controller_input_layers: str = option(
        "", "controller: layers whose last-prompt-token resid_post the MLP reads (default: last 4)"
    )
    controller_layers: str = option(
        "", "controller: layers patched (resid_post), 'all' or e.g. 3,5,-1 (default: all)"
    )
    controller_hidden: int = option(256, "controller: hidden units of the MLP")
    controller_timing: str = option(
        "prefill",
        "controller: prefill (read the prompt's last token in an unpatched pre-pass, then patch "
        "every layer from that token on) | same-pass (the reference: read and patch in one pass, "
        "so only the layers from the last input layer up are ever patched)",
        choices=list(CONTROLLER_TIMINGS),
    )
    controller_scale: str = option(
        "relu",
        "controller: the patch's scale from s: relu (max(s, 0): label-0 prompts left alone) | "
        "logit (the paper's raw s)",
        choices=list(CONTROLLER_SCALES),
    )
    controller_direction: str = option(
        "mean-diff",
        "controller: per-layer directions: mean-diff (chosen − rejected response-span means at "
        "each patched layer) | a saved code folder (its vector at every patched layer)",
    )
    controller_split: bool = option(
        True, "controller: divide the directions by the number of patched layers"
    )
    controller_plain_label: bool = option(
        True, "controller: the plain prompt counts as label 1 (needs steering) in the BCE"
    )
    controller_lr: float = option(1e-3, "controller: AdamW learning rate of the MLP")
    controller_bce_weight: float = option(1.0, "controller: weight of the BCE on s (the paper's)")
    controller_pref_weight: float = option(
        1.0, "controller: weight of the preference loss through the patched frozen model"
    )
    controller_reg_weight: float = option(
        0.1, "controller: weight of mean|σ(w) − 0.5| + controller_sparsity · mean σ(w) (paper: 0.1)"
    )
    controller_sparsity: float = option(0.01, "controller: ρ of the regulariser (paper: 0.01)")
    controller_train_alpha: float = option(
        1.0, "controller: steering strength α of the patch during training"
    )
    max_pairs: int = option(0, "training pairs used, from the start of the train split (0: all)")
    max_length: int = option(128, "tokens per prompt + completion (prompts are cut from the left)")
    seed: int = option(0, "seed of shuffling, directions and the held-out split")
    device: str = option("cpu", "torch device")
    resume: bool = option(
        False, "continue the unfinished run whose checkpoints are in OUT.partial (same options)"
    )
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.max_pairs < 0:
            raise ValueError(f"max_pairs must be ≥ 0, got {self.max_pairs}.")
        for name in ("epochs", "batch_pairs", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}.")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        if self.top_k < 1:
            raise ValueError(f"top_k must be ≥ 1, got {self.top_k}.")
        if not 0 < self.probe_percentile < 100:
            raise ValueError(f"probe_percentile must be in (0, 100), got {self.probe_percentile}.")
        if not 0 <= self.probe_min_accuracy < 1:
            raise ValueError(
                f"probe_min_accuracy must be in [0, 1), got {self.probe_min_accuracy}."
            )
        if self.grains_top_k < 1 or self.ig_steps < 1:
            raise ValueError("grains_top_k and ig_steps must be ≥ 1.")
        if not 0 <= self.grains_ig_start < 1 or self.grains_scale <= 0:
            raise ValueError(
                f"grains_ig_start must be in [0, 1) and grains_scale > 0, got "
                f"{self.grains_ig_start} and {self.grains_scale}."
            )
        for name, allowed in (
            ("yapo_mode", YAPO_MODES),
            ("support_by", SUPPORT_RULES),
            ("selective_mode", SELECTIVE_MODES),
            ("probe_target", PROBE_TARGETS),
            ("probe_contrast", PROBE_CONTRASTS),
            ("cdas_init", CDAS_INITS),
            ("edit_apply", EDIT_APPLY),
            ("grains_reduce", REDUCTIONS),
            ("controller_timing", CONTROLLER_TIMINGS),
            ("controller_scale", CONTROLLER_SCALES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if not 0 <= self.warmup_fraction < 1 or not 0 < self.anneal_fraction <= 1:
            raise ValueError(
                "warmup_fraction must be in [0, 1) and anneal_fraction in (0, 1], got "
                f"{self.warmup_fraction} and {self.anneal_fraction}."
            )
        if not 0 <= self.edit_softness < 1:
            raise ValueError(f"edit_softness must be in [0, 1), got {self.edit_softness}.")
        if self.controller_hidden < 1:
            raise ValueError(f"controller_hidden must be ≥ 1, got {self.controller_hidden}.")
        if self.refit_epochs < 1 or self.grad_clip < 0:
            raise ValueError("refit_epochs must be ≥ 1 and grad_clip ≥ 0.")
