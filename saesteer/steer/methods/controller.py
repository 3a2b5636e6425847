"""Guiding Giants controller: a small MLP, trained on a frozen model, that sets per prompt how hard and
where to steer.

After "Guiding Giants" (Amr-Hegazy1/GuidingGiantsWAS; /work/shared/research/seed_methods.md §8).
Written from the method's description; no code is shared. The runtime (reading, patch, timing,
saving) is `saesteer.steer.controlled`; this module fits it. Notation as there: x(p) the input
layers' outputs at prompt p's last token (concatenated, [|L_in|·d]), (s, w) = MLP(x) with s a scalar
logit and w [|P|] per-layer logits, scale = relu(s) (or s), d_l the direction of patched layer l.

Directions (`controller_direction`). "mean-diff" (default): d_l = (μ⁺_l − μ⁻_l) / |P|, μ^± the mean
over the training pairs of the chosen (⁺) / rejected (⁻) response-span means of h_l
(`saesteer.steer.contrast`). Divided by |P| (`controller_split`, on by default): added at every
layer the patches pile up along the residual stream, so with the split α·scale·σ(w_l) = 1 at every
patched layer moves the top of the stream by about one class gap, not |P| gaps (30 on SmolLM2-135M,
which wrecks the text); `controller_split=False` keeps the unnormalised per-layer gap. Or a saved
code's folder: its vector (a DenseVector from mean-diff/BiPO, or an add-mode LatentCode decoded to
d_model, v_S · W_dec[S]) is used at every patched layer (also split).

Data. Each training pair (x, y_w, y_l) gives three prompts for the controller's label: x⁻ = x under
the behaviour's rejected-side instruction (label 1: needs steering toward the chosen side), x⁺ = x
under the chosen-side instruction (label 0: already there, don't push) and the plain x (label 1
when `controller_plain_label`, the default: the benchmark asks plain prompts and wants them pushed).
The instructions come from the shipped behaviour, or from each JSONL pair's metadata
{"instructions": [chosen side, rejected side]} (as cdas: `saesteer.steer.methods.cdas`).

Objective, per step over a batch B of pairs (rows of the plain prompt with y_w and y_l):

    L = λ_bce · BCE(s(x), label)                                        over the 3|B| prompts
      + λ_pref · mean_i −log σ(β [(log π(y_w|x_i) − log π₀(y_w|x_i)) − (log π(y_l|x_i) − log π₀(y_l|x_i))])
      + λ_reg · (mean |σ(w) − 0.5| + ρ · mean σ(w))                     over every w of the step

π₀ the frozen model, π the same model with the controller's prefill patch at training strength
α_train (h_l ← h_l + α_train · scale(s(x)) · σ(w_l(x)) · d_l at every patched layer l, on the prompt's
last token and the response positions, as at generation) and x read from the unpatched prompt.

  - the paper's: the BCE on s with a prompt label, and the regulariser with λ_reg = 0.1, ρ = 0.01
    (its w get no other signal). Note that mean|σ(w) − 0.5| pulls every σ(w) toward 0.5.
  - ours: the preference term (BiPO/DPO-style, β = `beta`), so the w learn where patching moves the
    pairs' completions and s how far (the paper's labels say nothing about layers); the labels from
    the instructed contrast instead of harmful/benign prompts; scale = relu(s) instead of the raw
    logit (`controller_scale="logit"` is the paper's), so a label-0 prompt (s < 0) is left alone
    rather than pushed the other way; the prefill timing (the reference reads the layers it patches
    in the same pass, so only its last layer is ever patched; "same-pass" keeps that behaviour).

Training. The model is frozen (`saesteer.steer.train.frozen`); only the MLP learns. Computed once,
without gradients: the readings x of every prompt (one pass up to the top input layer), the
directions, the reference log-probs log π₀, and the residual stream after the lowest patched layer
on the pair rows; each step runs only the blocks above it, with the patch, forward and backward
(gradients reach the MLP through the patch). AdamW at `controller_lr`, no weight decay, gradient norm
clipped to `grad_clip`, `batch_pairs` pairs per step, `epochs` passes, pairs shuffled with `seed`.
Initialisation: PyTorch's for the hidden layer, zero output weights with bias s = 1, w = 0 (every
prompt starts at scale 1, σ(w) = 0.5 everywhere), features standardised by the training prompts'
mean and std (stored with the MLP).

Meta: loss_init / loss_final (the objective over all the data before and after training) and their
parts, margin_init / margin_final (mean preference margin under the patch), s_by_label (mean s per
label after training), layer_weights (mean σ(w_l) over the plain prompts), loss_curve (per epoch),
step_losses, history, directions_norm, n_prompts, fit_seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from saesteer.steer.batching import tokenize_pairs
from saesteer.steer.contrast import pair_contrasts
from saesteer.steer.controlled import SCALES, TIMINGS, Controller, ControllerNet
from saesteer.steer.methods.cdas import _chat, instructed_pairs
from saesteer.steer.pairs import PreferencePair
from saesteer.steer.sites import Site
from saesteer.steer.train import frozen

CHUNK_ROWS = 16
N_INPUT_DEFAULT = 4


# --------------------------------------------------------------------------- options


def parse_layers(spec: Any, n_layers: int, default: list[int], what: str) -> list[int]:
    """ "" → `default`; "all" → every layer; "24,25,-1" → those (negative counts from the top)."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return default
    if isinstance(spec, str) and spec.strip() == "all":
        return list(range(n_layers))
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        try:
            layer = int(str(item).strip())
        except ValueError:
            raise ValueError(
                f"{what} must be 'all' or comma-separated layer numbers, got {spec!r}."
            ) from None
        layer = layer + n_layers if layer < 0 else layer
        if not 0 <= layer < n_layers:
            raise ValueError(
                f"{what}: layer {item} is outside the model's {n_layers} layers (0..{n_layers - 1})."
            )
        out.append(layer)
    return sorted(set(out))


@dataclass
class Options:
    input_layers: list[int]
    patched_layers: list[int]
    hidden: int
    timing: str
    scale: str
    direction: str
    split: bool
    plain_label: bool
    lr: float
    bce_weight: float
    pref_weight: float
    reg_weight: float
    sparsity: float
    train_alpha: float


def check_options(config, n_layers: int) -> Options:
    """The controller_* fields of `config`, refused up front when they cannot train."""
    get = lambda name, default: getattr(config, f"controller_{name}", default)  # noqa: E731
    top = list(range(max(0, n_layers - N_INPUT_DEFAULT), n_layers))
    inputs = parse_layers(get("input_layers", ""), n_layers, top, "controller_input_layers")
    patched = parse_layers(get("layers", ""), n_layers, list(range(n_layers)), "controller_layers")
    hidden = get("hidden", 256)
    if not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"controller_hidden must be an integer ≥ 1, got {hidden!r}.")
    timing, scale = get("timing", "prefill"), get("scale", "relu")
    if timing not in TIMINGS:
        raise ValueError(f"controller_timing must be one of {TIMINGS}, got {timing!r}.")
    if scale not in SCALES:
        raise ValueError(f"controller_scale must be one of {SCALES}, got {scale!r}.")
    numbers = {}
    for name, default, positive in (
        ("lr", 1e-3, True),
        ("bce_weight", 1.0, False),
        ("pref_weight", 1.0, False),
        ("reg_weight", 0.1, False),
        ("sparsity", 0.01, False),
        ("train_alpha", 1.0, True),
    ):
        value = get(name, default)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"controller_{name} must be a number, got {value!r}.") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(
                f"controller_{name} must be a finite number {'> 0' if positive else '≥ 0'}, "
                f"got {value!r}."
            )
        numbers[name] = value
    if numbers["bce_weight"] == 0 and numbers["pref_weight"] == 0:
        raise ValueError("controller_bce_weight and controller_pref_weight cannot both be 0.")
    direction = get("direction", "mean-diff")
    if not isinstance(direction, str) or not direction.strip():
        raise ValueError(
            f"controller_direction must be 'mean-diff' or a code folder, got {direction!r}."
        )
    return Options(
        inputs,
        patched,
        hidden,
        timing,
        scale,
        direction,
        bool(get("split", True)),
        bool(get("plain_label", True)),
        **numbers,
    )


# --------------------------------------------------------------------------- cached data


@dataclass
class Data:
    """Everything computed once (module docstring, "Training"). n pairs; rows of `ids` are the
    plain prompt with y_w (2i) and y_l (2i + 1)."""

    features: torch.Tensor  # [3n, |L_in|·d] readings: plain (i), x⁺ (n + i), x⁻ (2n + i)
    labels: torch.Tensor  # [3n] float
    bce_mask: torch.Tensor  # [3n] bool (plain prompts off when not labelled)
    row_features: torch.Tensor  # [2n, |L_in|·d] each pair row's own reading
    ids: torch.Tensor  # [2n, T]
    target: torch.Tensor  # [2n, T] float
    starts: torch.Tensor  # [2n] first completion position
    resid: torch.Tensor  # [2n, T, d] after the lowest patched layer (before its patch)
    ref_logp: torch.Tensor  # [2n]

    @property
    def n_pairs(self) -> int:
        return self.ids.shape[0] // 2


def _readings(model, ids, starts, layers: list[int], keep: int | None, device):
    """(features [rows, |layers|·d] at position starts − 1, resid_post of `keep` [rows, T, d])."""
    names = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    keep_name = f"blocks.{keep}.hook_resid_post" if keep is not None else None
    wanted = set(names) | ({keep_name} if keep_name else set())
    top = max(layers + ([keep] if keep is not None else []))
    feats, kept = [], []
    with torch.no_grad():
        for lo in range(0, ids.shape[0], CHUNK_ROWS):
            chunk = ids[lo : lo + CHUNK_ROWS].to(device)
            _, cache = model.run_with_cache(
                chunk, names_filter=lambda name: name in wanted, stop_at_layer=top + 1
            )
            at = (starts[lo : lo + CHUNK_ROWS] - 1).to(device)
            rows = torch.arange(chunk.shape[0], device=device)
            feats.append(torch.cat([cache[n][rows, at].float() for n in names], dim=-1))
            if keep_name:
                kept.append(cache[keep_name].float())
    return torch.cat(feats), (torch.cat(kept) if keep_name else None)


def target_logprobs(model, resid: torch.Tensor, ids: torch.Tensor, target: torch.Tensor):
    """log π(y | x) per row [rows] from the final residual [rows, T, d] (only y's positions are
    unembedded: position t − 1 predicts token t)."""
    predict = torch.zeros_like(target, dtype=torch.bool)
    predict[:, :-1] = target[:, 1:].bool()
    picked = resid[predict.to(resid.device)][None]
    if model.cfg.normalization_type is not None:
        picked = model.ln_final(picked)
    logp = torch.log_softmax(model.unembed(picked)[0].float(), dim=-1)
    next_ids = ids[:, 1:][predict[:, :-1]].to(logp.device)
    token = logp.gather(-1, next_ids[:, None]).squeeze(-1)
    row_of = torch.arange(ids.shape[0], device=logp.device)[:, None].expand_as(predict)
    row_of = row_of[predict.to(logp.device)]
    return torch.zeros(ids.shape[0], device=logp.device).index_add(0, row_of, token)


def run_above(model, h: torch.Tensor, start: int, hooks) -> torch.Tensor:
    """The final residual [rows, T, d] from h entering block `start` (with TL `hooks`)."""
    n = model.cfg.n_layers
    if start >= n:
        return h
    with model.hooks(fwd_hooks=hooks):
        return model(h, start_at_layer=start, stop_at_layer=n)


def code_direction(path: str, d_model: int) -> torch.Tensor:
    """A saved code's residual-space vector [d_model] (module docstring, "Directions")."""
    from saesteer.steer.codes import DenseVector, LatentCode
    from saesteer.steer.io import load_code

    code = load_code(path)
    if isinstance(code, DenseVector):
        vector = code.vector
    elif isinstance(code, LatentCode) and code.mode == "add":
        w = code.weights
        w_dec = w["W_dec_S"] if "W_dec_S" in w else w["W_dec"][code.support]
        vector = code.values.float() @ w_dec.float()
    else:
        raise ValueError(
            f"controller_direction {path!r} is a {getattr(code, 'method', type(code).__name__)} "
            "code the controller cannot use as a direction: give a dense vector (mean-diff, bipo) "
            "or an add-mode latent code (yapo)."
        )
    if vector.shape != (d_model,):
        raise ValueError(
            f"controller_direction {path!r} has width {vector.shape[0]}, the model {d_model}."
        )
    return vector.float()


def build_data(model, tokenizer, pairs, config, opts: Options, chat: bool) -> Data:
    device = config.device
    plus, minus, _ = instructed_pairs(pairs, config, chat)
    n = len(pairs)
    plain = tokenize_pairs(tokenizer, pairs, chat, config.max_length)
    asked = tokenize_pairs(tokenizer, plus + minus, chat, config.max_length)
    starts = plain.target_mask.argmax(dim=1)
    asked_starts = asked.target_mask.argmax(dim=1)
    low = opts.patched_layers[0]
    row_features, resid = _readings(model, plain.input_ids, starts, opts.input_layers, low, device)
    asked_features, _ = _readings(
        model, asked.input_ids, asked_starts, opts.input_layers, None, device
    )
    features = torch.cat([row_features[0::2], asked_features[0::2]])  # plain, x⁺, x⁻
    labels = torch.cat([torch.ones(n), torch.zeros(n), torch.ones(n)]).to(features.device)
    bce_mask = torch.ones(3 * n, dtype=torch.bool, device=features.device)
    if not opts.plain_label:
        bce_mask[:n] = False
    with torch.no_grad():
        ref = [
            target_logprobs(
                model,
                run_above(model, resid[lo : lo + CHUNK_ROWS], low + 1, []),
                plain.input_ids[lo : lo + CHUNK_ROWS],
                plain.target_mask[lo : lo + CHUNK_ROWS],
            )
            for lo in range(0, resid.shape[0], CHUNK_ROWS)
        ]
    return Data(
        features,
        labels,
        bce_mask,
        row_features,
        plain.input_ids,
        plain.target_mask,
        starts,
        resid,
        torch.cat(ref),
    )


def directions(model, tokenizer, pairs, config, opts: Options, chat: bool) -> torch.Tensor:
    """d_l [|P|, d] (module docstring, "Directions")."""
    d_model = model.cfg.d_model
    if opts.direction == "mean-diff":
        tokens = tokenize_pairs(tokenizer, pairs, chat, config.max_length)
        sites = [Site(layer, "resid_post") for layer in opts.patched_layers]
        contrasts = pair_contrasts(model, tokens, sites)
        out = torch.stack([contrasts[site].diff_in_means() for site in sites])
    else:
        out = code_direction(opts.direction, d_model)[None].expand(len(opts.patched_layers), -1)
    if not torch.isfinite(out).all() or float(out.norm()) == 0:
        raise ValueError(
            "The controller's directions are zero or not finite (the chosen and rejected "
            "completions give the same activations?): check the pairs or give a code folder."
        )
    return (out / len(opts.patched_layers) if opts.split else out).float().clone()


# --------------------------------------------------------------------------- objective


def patched_logprobs(model, ctl: Controller, data: Data, rows, alpha: float, s, w):
    """log π(y|x) [rows] under the prefill patch with the given raw (s [rows], w [rows, |P|])."""
    scale, gates = ctl.strength(s), torch.sigmoid(w)
    device = data.resid.device
    positions = torch.arange(data.ids.shape[1], device=device)
    # from the prompt's last token on: its output gives the first completion token
    after = (positions[None] >= data.starts[rows].to(device)[:, None] - 1).float()  # [rows, T]
    dirs = ctl.directions.to(device)
    low = ctl.patched_layers[0]

    def coef(j: int) -> torch.Tensor:
        return (scale * gates[:, j])[:, None] * after

    def hook_for(j: int):
        def hook(h, hook):
            return h + alpha * coef(j)[..., None].to(h.dtype) * dirs[j].to(h.dtype)

        return hook

    h = data.resid[rows]
    h = h + alpha * coef(0)[..., None] * dirs[0]
    hooks = [
        (f"blocks.{layer}.hook_resid_post", hook_for(j))
        for j, layer in enumerate(ctl.patched_layers)
        if j > 0
    ]
    final = run_above(model, h, low + 1, hooks)
    return target_logprobs(model, final, data.ids[rows], data.target[rows])


def step_loss(model, ctl: Controller, data: Data, pairs: torch.Tensor, opts: Options, beta: float):
    """(total, parts) of the objective on `pairs` (module docstring)."""
    n = data.n_pairs
    device = data.features.device
    pairs = pairs.to(device)
    prompts = torch.cat([pairs, n + pairs, 2 * n + pairs])
    prompts = prompts[data.bce_mask[prompts]]
    rows = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).reshape(-1)
    s_bce, w_bce = ctl.outputs(data.features[prompts])
    s_row, w_row = ctl.outputs(data.row_features[rows])
    zero = torch.zeros((), device=device)
    bce = F.binary_cross_entropy_with_logits(s_bce, data.labels[prompts]) if len(prompts) else zero
    pref = zero
    margin = zero
    if opts.pref_weight > 0:
        logp = patched_logprobs(model, ctl, data, rows, opts.train_alpha, s_row, w_row)
        reward = (logp - data.ref_logp[rows].to(logp.device)).view(-1, 2)
        margins = reward[:, 0] - reward[:, 1]
        pref = -F.logsigmoid(beta * margins).mean()
        margin = margins.mean()
    gates = torch.sigmoid(torch.cat([w_bce, w_row]))
    reg = (gates - 0.5).abs().mean() + opts.sparsity * gates.mean()
    total = opts.bce_weight * bce + opts.pref_weight * pref + opts.reg_weight * reg
    parts = {
        k: float(v.detach())
        for k, v in (("bce", bce), ("pref", pref), ("reg", reg), ("margin", margin))
    }
    return total, parts


@torch.no_grad()
def full_loss(model, ctl, data: Data, opts: Options, beta: float) -> dict[str, float]:
    """The objective and its parts over all the pairs (pair-weighted), without gradients."""
    totals: dict[str, float] = {}
    n = data.n_pairs
    for chunk in torch.arange(n).split(CHUNK_ROWS // 2 or 1):
        loss, parts = step_loss(model, ctl, data, chunk, opts, beta)
        for key, value in {"loss": float(loss), **parts}.items():
            totals[key] = totals.get(key, 0.0) + value * len(chunk) / n
    return totals


# --------------------------------------------------------------------------- fit


def fit(model, tokenizer, train_pairs: Sequence[PreferencePair], config) -> Controller:
    """Train a controller on `train_pairs` (module docstring) for the TransformerLens `model`."""
    started = time.time()
    n_layers = model.cfg.n_layers
    opts = check_options(config, n_layers)
    pairs = list(train_pairs)
    if not pairs:
        raise ValueError("The controller needs at least one training pair; the data set is empty.")
    chat = _chat(config)
    beta = float(config.beta)
    with frozen(model):
        dirs = directions(model, tokenizer, pairs, config, opts, chat)
        data = build_data(model, tokenizer, pairs, config, opts, chat)
        d_in = data.features.shape[1]
        torch.manual_seed(config.seed)
        net = ControllerNet(d_in, opts.hidden, 1 + len(opts.patched_layers))
        with torch.no_grad():
            prompts = data.features[data.bce_mask]
            net.mean.copy_(prompts.mean(0).cpu())
            std = prompts.std(0).cpu() if prompts.shape[0] > 1 else torch.ones(d_in)
            net.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
            net.fc2.weight.zero_()
            net.fc2.bias.zero_()
            net.fc2.bias[0] = 1.0
        net = net.to(data.features.device)
        ctl = Controller(
            net,
            opts.input_layers,
            opts.patched_layers,
            dirs.to(data.features.device),
            model.cfg.model_name,
            n_layers,
            opts.timing,
            opts.scale,
        )
        ctl.net.train()
        initial = full_loss(model, ctl, data, opts, beta)
        history, step_losses = train(model, ctl, data, opts, config, beta)
        ctl.net.eval()
        final = full_loss(model, ctl, data, opts, beta)
        with torch.no_grad():
            s, w = ctl.outputs(data.features)
    n = data.n_pairs
    meta: dict[str, Any] = {
        "input_layers": list(opts.input_layers),
        "patched_layers": list(opts.patched_layers),
        "hidden": opts.hidden,
        "timing": opts.timing,
        "scale": opts.scale,
        "direction": opts.direction,
        "split": opts.split,
        "loss_init": initial["loss"],
        "loss_final": final["loss"],
        "parts_init": initial,
        "parts_final": final,
        "margin_init": initial["margin"],
        "margin_final": final["margin"],
        "s_by_label": {
            "plain": float(s[:n].mean()),
            "chosen_side_0": float(s[n : 2 * n].mean()),
            "rejected_side_1": float(s[2 * n :].mean()),
        },
        "layer_weights": torch.sigmoid(w[:n]).mean(0).tolist(),
        "directions_norm": dirs.norm(dim=1).tolist(),
        "loss_curve": [row["loss"] for row in history],
        "step_losses": step_losses,
        "history": history,
        "n_prompts": int(data.bce_mask.sum()),
        "fit_seconds": round(time.time() - started, 2),
    }
    ctl.meta = meta
    return ctl.to("cpu")


def train(model, ctl: Controller, data: Data, opts: Options, config, beta: float):
    params = [p for p in ctl.net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    clip = float(config.grad_clip)
    per_epoch = math.ceil(data.n_pairs / config.batch_pairs)
    history: list[dict[str, float]] = []
    step_losses: list[float] = []
    started = time.time()
    bar = tqdm(
        total=per_epoch * config.epochs, desc="train-steer controller", disable=not config.progress
    )
    try:
        for epoch in range(config.epochs):
            losses = []
            for pairs in torch.randperm(data.n_pairs, generator=generator).split(
                config.batch_pairs
            ):
                loss, _ = step_loss(model, ctl, data, pairs, opts, beta)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"Non-finite controller loss at epoch {epoch + 1}, step "
                        f"{len(step_losses) + 1}: lower controller_lr or controller_train_alpha."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                optimizer.step()
                losses.append(float(loss.detach()))
                step_losses.append(losses[-1])
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": sum(losses) / len(losses),
                    "seconds": round(time.time() - started, 2),
                }
            )
    finally:
        bar.close()
    return history, step_losses
