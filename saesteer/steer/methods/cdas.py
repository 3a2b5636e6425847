"""CDAS: a rank-1 distributed interchange, trained by distribution matching, used as a clamp.

After Concept Distributed Alignment Search (colored-dye/concept_das;
/work/shared/research/seed_methods.md §4). Written from the method's description and the reference's
behaviour; no code is shared. Notation: h [d] one token's activation at the site, v [d] the learned
direction, v̂ = v/‖v‖, s(h) = v̂·h its projection.

Data. Every training pair (x, y⁺ = chosen, y⁻ = rejected) is asked under the behaviour's two
instructions (`Behaviour.instructed`): x⁺ asks for the chosen side, x⁻ for the rejected side (a
system message in chat, a bracketed preface for continuations). Each pair gives two interchanges:

    direction  base       source     matched
    "+"        x⁻ + y⁺    x⁺ + y⁺    p(· | x⁺, y⁺<t)   the rejected-side prompt, told the chosen side
    "−"        x⁺ + y⁻    x⁻ + y⁻    p(· | x⁻, y⁻<t)   and the reverse

so the four sequences x^± + y^± are each read once, as a base or as a source. x⁻ is the rejected
side's instruction, not the bare prompt x: our pairs name their rejected side (casual, inland,
negative, …), and f⁻ below should be where the model sits when asked for it, so that α = −1 steers to
that side, not to "no instruction". Pairs of a JSONL file that is not a shipped behaviour carry the
contrast in their metadata: {"metadata": {"instructions": ["<asks for chosen>", "<asks for
rejected>"]}} on every pair; without it `fit` stops with a ValueError saying so. The instruction
replaces a pair's own system message; pairs whose two prompts tokenize identically (the instruction
cut off by `max_length`) are refused.

Interchange (training). h_src [d] = the source's activation at its last prompt token (in chat, the
"\\n" that ends the template's "<|im_start|>assistant\\n" prefix; for continuations the prompt's last
token). At every base position after BOS (the first position is skipped when it is the tokenizer's
BOS token, as the reference's prefix_length = 1; otherwise every position is written):

    h ← h + (v̂·h_src − v̂·h) v̂           (the base's coordinate on v̂ replaced by the source's)

Objective. Over the positions t whose next token is a y token (y's own tokens, as the reference's
labels), with p_t = p(· | base, intervened) and q_t = p(· | source) at the aligned position:

    JSD(p ‖ q) = ½ KL(p ‖ m) + ½ KL(q ‖ m),   m = ½ (p + q),   in nats, 0 ≤ JSD ≤ log 2
    loss       = mean over the batch's matched tokens of JSD(p_t ‖ q_t)

The model is frozen; the q_t are computed once without gradients and kept; v is the only parameter.
AdamW (no weight decay: it cannot act on a renormalised vector), learning rate `cdas_lr` decayed
linearly to 0 with no warm-up (lr_t = lr·(1 − t/T) for step t of T), gradient norm clipped to
`grad_clip`, `batch_pairs` pairs (2·batch_pairs interchanges) per step, `epochs` passes, pairs
shuffled with `seed`. Unit norm: the forward uses v̂ = v/‖v‖ (so the gradient is tangent to the
sphere), and v is renormalised after each step (so the step size keeps its meaning); a direction
that stops being finite is a FloatingPointError, as is a non-finite loss.
Initialisation (`cdas_init`, read with getattr): "mean-diff" (default) v₀ = mean over pairs of
h_src(x⁺) − h_src(x⁻), the difference of the two instructions' last-prompt activations (what the
interchange moves); "random": a Gaussian direction from `seed` (the reference's choice, a random
orthogonal row).

Strength. After training, f⁺ = mean v̂·h_src over the "+" sources (x⁺: asked for the chosen side),
f⁻ = the same over the "−" sources (x⁻). v̂'s sign is arbitrary (the interchange is the same for v̂
and −v̂); it is fixed so that f⁺ ≥ f⁻ (then cos(v̂, v_mean-diff) ≥ 0 too). The inference edit, on
every position, is `SetProjection(v̂, target=f⁺, reverse_target=f⁻)`:

    α > 0   h' = h + α (f⁺ − s) v̂      α = 1 clamps s to f⁺, α = 0 is the identity,
    α < 0   h' = h + |α| (f⁻ − s) v̂    α = −1 clamps s to f⁻; |α| > 1 overshoots the target

The paper's clamp with multiplier m is h' = h + (m·f − s) v̂, i.e. s' = m·f whatever s was; ours is
s' = (1 − |α|) s + |α| f. They agree at m = |α| = 1; elsewhere α interpolates between the token's own
projection and f, and m rescales the target. Where s ≈ 0 (no concept component) α ≈ m.
`with_multiplier(intervention, m)` returns the paper's edit exactly (targets m·f⁺, m·f⁻, used at
α = ±1).

Meta: f_plus, f_minus, cos_mean_diff (cos(v̂, v_mean-diff)), cos_init (|cos(v̂, v₀)|), jsd_unsteered
(the objective with no interchange: the distance between the two prompts' distributions),
jsd_init, jsd_final (before and after training, over all interchanges), loss_curve (mean step
loss per epoch), step_losses, history (per epoch: epoch, loss, lr at its end, seconds), fit_seconds,
contrast, init, site, n_interchanges, n_matched_tokens.

Deviations from the reference:
  - y comes from the data set's pairs, not from the model's own answers to x^±; the matched
    distributions are still the model's own under the source prompt, y only fixes which prefixes
    are compared;
  - x⁻ is the rejected side's instruction, not the bare prompt (above);
  - the forward normalises v as well (the reference only renormalises after each step);
  - the default initialisation is the mean difference, not a random direction;
  - inference edits every position, BOS included (the reference restores the first position):
    `steer` has no "all but the first position" choice, so the first token's projection is clamped
    too (in chat it is the template's <|im_start|>, which all later tokens attend to). Measured on
    SmolLM2-135M, topic-ocean, 12 pairs: the objective at the trained v is 0.0151 with the first
    position skipped and 0.0158 with it written, so the mismatch costs little;
  - strength: α as above rather than the multiplier m (`with_multiplier` gives m);
  - only residual-stream sites (resid_pre/resid_post), where the activation can be cached.

Costs. Caching: one no-grad forward of the 4·n_pairs sequences up to the site, then the layers
above for the source rows (their distributions at the y tokens: n_y × vocab floats, ~0.3 GB for 36
pairs of SmolLM2-135M), three more no-grad passes of the layers above for jsd_unsteered, jsd_init
and jsd_final. Each step runs only the layers above the site (`start_at_layer`) on the
2·batch_pairs cached base rows, forward and backward (input gradients only, the weights are
frozen), and unembeds only the matched positions. Measured on a shared 2-core CPU, SmolLM2-135M at
blocks.15.hook_resid_post, 12 pairs, 2 epochs: ~200 s per fit, about half of it the caching and
the three JSD passes (36 pairs: ~170 s per epoch there). Steering: one dot and one axpy per token.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from saesteer.hook_names import resid_post
from saesteer.steer.batching import tokenize_pairs
from saesteer.steer.behaviours import BEHAVIOURS, Behaviour
from saesteer.steer.intervention import Edit, Intervention
from saesteer.steer.operators import EPS, SetProjection, unit
from saesteer.steer.pairs import PreferencePair
from saesteer.steer.sites import Site
from saesteer.steer.train import frozen

INITS = ("mean-diff", "random")
RESIDUAL_STREAMS = ("resid_pre", "resid_post")
CHUNK_ROWS = 16  # rows per no-grad forward
LOG2 = math.log(2.0)


# --------------------------------------------------------------------------- options and site


def check_options(config) -> tuple[float, str]:
    """(cdas_lr, cdas_init), refused up front when they cannot train."""
    lr = config.cdas_lr
    init = config.cdas_init
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"cdas_lr must be a number, got {lr!r}.") from None
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(
            f"cdas_lr must be a finite number ≥ 0, got {lr!r}: an infinite or NaN step turns the "
            "direction into NaN. Use e.g. 0.04 (the default)."
        )
    if init not in INITS:
        raise ValueError(f"cdas_init must be one of {INITS}, got {init!r}.")
    return lr, init


def cdas_site(model, config) -> tuple[Site, int]:
    """The site (`config.hook_name`, default the middle layer's resid_post) and the first block
    above it: l for resid_pre, l + 1 for resid_post."""
    site = Site.parse(config.hook_name or resid_post(model.cfg.n_layers // 2))
    if site.stream not in RESIDUAL_STREAMS:
        raise ValueError(
            f"cdas trains at a residual-stream site (the activation is cached there and only the "
            f"layers above are run), not {site.name}; use e.g. "
            f"blocks.{site.layer}.hook_resid_post or blocks.{site.layer}.hook_resid_pre."
        )
    if site.layer >= model.cfg.n_layers:
        raise ValueError(
            f"{site.name} is beyond the model's {model.cfg.n_layers} layers "
            f"(0..{model.cfg.n_layers - 1})."
        )
    return site, site.layer + (site.stream == "resid_post")


# --------------------------------------------------------------------------- the contrast


def _chat(config) -> bool:
    """config.chat, or (None) the shipped behaviour's own style."""
    if config.chat is not None:
        return bool(config.chat)
    shipped = BEHAVIOURS.get(getattr(config, "pairs", None))
    return bool(shipped.chat) if shipped is not None else False


def _pair_instructions(pair: PreferencePair) -> tuple[str, str] | None:
    """A file pair's own contrast, metadata {"instructions": [chosen side, rejected side]}."""
    given = (pair.metadata or {}).get("instructions")
    if (
        isinstance(given, (list, tuple))
        and len(given) == 2
        and all(isinstance(text, str) and text.strip() for text in given)
    ):
        return given[0], given[1]
    return None


def instructed_pairs(
    pairs: Sequence[PreferencePair], config, chat: bool
) -> tuple[list[PreferencePair], list[PreferencePair], str]:
    """(x⁺ pairs, x⁻ pairs, where the contrast came from): each pair asked under the instruction
    for the chosen side and for the rejected side (module docstring, "Data")."""
    name = getattr(config, "pairs", None)
    shipped = BEHAVIOURS.get(name)
    if shipped is not None and all(shipped.instructions):
        asker = dataclasses.replace(shipped, chat=chat)
        return (
            [asker.instructed(p, 0) for p in pairs],
            [asker.instructed(p, 1) for p in pairs],
            f"behaviour:{shipped.name}",
        )
    own = [_pair_instructions(p) for p in pairs]
    missing = [i for i, found in enumerate(own) if found is None]
    if missing:
        raise ValueError(
            f"cdas needs a system-prompt contrast (an instruction asking for the chosen side and "
            f"one asking for the rejected side), but --pairs {name!r} is not a shipped behaviour "
            f"with one ({sorted(BEHAVIOURS)}) and {len(missing)} of {len(pairs)} pairs (first: "
            f"pair {missing[0]}) carry none. Use a shipped data set name as --pairs, or give every "
            'JSONL pair "metadata": {"instructions": ["<asks for the chosen side>", "<asks for '
            'the rejected side>"]}.'
        )
    plus, minus = [], []
    for pair, texts in zip(pairs, own, strict=True):
        asker = Behaviour("file", "", chat, lambda _text: 0.0, 0.0, texts)
        plus.append(asker.instructed(pair, 0))
        minus.append(asker.instructed(pair, 1))
    return plus, minus, "metadata"


# --------------------------------------------------------------------------- cached data


@dataclass
class ContrastData:
    """The interchanges (module docstring, "Data"): row 2i is pair i's "+", 2i + 1 its "−".

    R = 2·n_pairs rows, T positions, N matched tokens in all, V the vocabulary.
    """

    base_ids: torch.Tensor  # [R, T] long, right-padded
    base_resid: torch.Tensor  # [R, T, d] the base's activation at the site (cached once)
    edit_mask: torch.Tensor  # [R, T] bool: positions the interchange writes (after BOS)
    match_mask: torch.Tensor  # [R, T] bool: positions whose next token is a y token
    source_h: torch.Tensor  # [R, d] the source's activation at its last prompt token
    source_logp: torch.Tensor  # [N, V] log q_t at the matched positions, rows in order
    offsets: torch.Tensor  # [R + 1] long: row r's matched tokens are [offsets[r], offsets[r + 1])

    @property
    def n_pairs(self) -> int:
        return self.base_ids.shape[0] // 2

    def rows(self, pair_indices: torch.Tensor) -> torch.Tensor:
        """Rows [2·len(pair_indices)] of the given pairs ("+" and "−" interleaved)."""
        return torch.stack([2 * pair_indices, 2 * pair_indices + 1], dim=1).reshape(-1)

    def targets(self, rows: torch.Tensor) -> torch.Tensor:
        """log q_t [n, V] of `rows`' matched tokens, in the order `gather_matched` reads them."""
        return torch.cat(
            [self.source_logp[self.offsets[r] : self.offsets[r + 1]] for r in rows.tolist()]
        )


def interchange_rows(n_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(base rows, source rows) [2·n_pairs] into tokenize_pairs(x⁺ pairs + x⁻ pairs).

    Rows there: 2i = x⁺y⁺, 2i + 1 = x⁺y⁻, 2(n + i) = x⁻y⁺, 2(n + i) + 1 = x⁻y⁻; interchange 2i ("+")
    has base x⁻y⁺ and source x⁺y⁺, interchange 2i + 1 ("−") base x⁺y⁻ and source x⁻y⁻.
    """
    i = torch.arange(n_pairs)
    base = torch.stack([2 * (n_pairs + i), 2 * i + 1], dim=1).reshape(-1)
    source = torch.stack([2 * i, 2 * (n_pairs + i) + 1], dim=1).reshape(-1)
    return base, source


def check_contrast(ids: torch.Tensor, starts: torch.Tensor, n_pairs: int, max_length: int) -> None:
    """Refuse pairs whose x⁺ and x⁻ prompts tokenize identically (no contrast to learn)."""
    for i in range(n_pairs):
        plus, minus = 2 * i, 2 * (n_pairs + i)
        if torch.equal(ids[plus, : starts[plus]], ids[minus, : starts[minus]]):
            raise ValueError(
                f"pair {i}: its chosen-side and rejected-side prompts tokenize identically, so "
                "there is no contrast to learn. The instruction was lost: it is a system message "
                "but chat is off (set chat on), or max_length "
                f"({max_length}) cut it from the left (raise max_length)."
            )


@torch.no_grad()
def residual_at(model, ids: torch.Tensor, layer: int, device) -> torch.Tensor:
    """The residual entering block `layer` [rows, T, d] (stop_at_layer; 0: the embeddings)."""
    parts = []
    for lo in range(0, ids.shape[0], CHUNK_ROWS):
        parts.append(model(ids[lo : lo + CHUNK_ROWS].to(device), stop_at_layer=layer))
    return torch.cat(parts)


def matched_logp(model, h: torch.Tensor, layer: int, match_mask: torch.Tensor) -> torch.Tensor:
    """log p_t [n, V] at the matched positions, h [rows, T, d] fed to the blocks from `layer` up.

    Only the matched positions go through the final norm and the unembedding.
    """
    resid = model(h, start_at_layer=layer, stop_at_layer=model.cfg.n_layers)
    picked = resid[match_mask.to(resid.device)][None]  # [1, n, d]
    if model.cfg.normalization_type is not None:
        picked = model.ln_final(picked)
    logits = model.unembed(picked)[0].float()
    cap = getattr(model.cfg, "output_logits_soft_cap", None)
    if cap is not None and cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return torch.log_softmax(logits, dim=-1)


def build_data(
    model, tokenizer, plus: list, minus: list, layer: int, chat: bool, max_length: int, device
) -> ContrastData:
    """Tokenize the four sequences of every pair, cache the site's activation, the source
    activations and the source distributions (module docstring, "Costs")."""
    n = len(plus)
    tokens = tokenize_pairs(tokenizer, plus + minus, chat, max_length)
    ids, target = tokens.input_ids, tokens.target_mask.bool()
    starts = target.float().argmax(dim=1)  # first completion position of every row
    check_contrast(ids, starts, n, max_length)
    base, source = interchange_rows(n)
    resid = residual_at(model, ids, layer, device)  # [4n, T, d]
    match = torch.zeros_like(target)
    match[:, :-1] = target[:, 1:]  # position t predicts token t + 1
    counts = match.sum(dim=1)
    if not torch.equal(counts[base], counts[source]):
        raise ValueError("A base row and its source row have different completion lengths.")
    edit = torch.ones_like(target)
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        edit[:, 0] = ids[:, 0] != bos
    last_prompt = (starts - 1).clamp_min(0)
    offsets = torch.zeros(2 * n + 1, dtype=torch.long)
    offsets[1:] = counts[source].cumsum(0)
    source_logp = torch.empty(int(offsets[-1]), model.cfg.d_vocab, device=resid.device)
    with torch.no_grad():
        for chunk in torch.arange(2 * n).split(CHUNK_ROWS):
            rows = source[chunk]
            lo, hi = offsets[chunk[0]], offsets[chunk[-1] + 1]
            source_logp[lo:hi] = matched_logp(model, resid[rows], layer, match[rows])
    if not torch.isfinite(source_logp).all():
        raise FloatingPointError(
            "The model's next-token distributions on the source sequences are not finite (NaN or "
            "inf logits): check the model's weights and dtype before training cdas."
        )
    return ContrastData(
        base_ids=ids[base],
        base_resid=resid[base],
        edit_mask=edit[base],
        match_mask=match[base],
        source_h=resid[source, last_prompt[source]],
        source_logp=source_logp,
        offsets=offsets,
    )


# --------------------------------------------------------------------------- objective


def interchange(
    h: torch.Tensor, u: torch.Tensor, h_src: torch.Tensor, edit_mask: torch.Tensor
) -> torch.Tensor:
    """h + (û·h_src − û·h) û at the positions of `edit_mask`; h [B, T, d], u [d] unit,
    h_src [B, d], edit_mask [B, T] bool."""
    delta = (h_src @ u)[:, None] - h @ u  # [B, T]
    return h + (delta * edit_mask.to(h.dtype))[..., None] * u


def jsd(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """JSD(p ‖ q) = ½ Σ p (log p − log m) + ½ Σ q (log q − log m), m = ½(p + q), per row [n]
    from log-probabilities [n, V] (nats; terms with p = 0 or q = 0 count 0)."""
    log_m = torch.logaddexp(logp, logq) - LOG2
    p, q = logp.exp(), logq.exp()
    left = torch.where(p > 0, p * (logp - log_m), torch.zeros_like(p))
    right = torch.where(q > 0, q * (logq - log_m), torch.zeros_like(q))
    return 0.5 * (left + right).sum(dim=-1)


def batch_loss(model, data: ContrastData, rows: torch.Tensor, layer: int, u) -> torch.Tensor:
    """Mean JSD over the matched tokens of `rows` with the interchange along u (None: none)."""
    h = data.base_resid[rows]
    if u is not None:
        h = interchange(h, u, data.source_h[rows], data.edit_mask[rows].to(h.device))
    logp = matched_logp(model, h, layer, data.match_mask[rows])
    return jsd(logp, data.targets(rows).to(logp.device)).mean()


@torch.no_grad()
def mean_jsd(model, data: ContrastData, layer: int, u: torch.Tensor | None) -> float:
    """The objective over every interchange (token-weighted), without gradients."""
    total, count = 0.0, 0
    for rows in torch.arange(data.base_ids.shape[0]).split(CHUNK_ROWS):
        n = int(data.offsets[rows[-1] + 1] - data.offsets[rows[0]])
        total += float(batch_loss(model, data, rows, layer, u)) * n
        count += n
    return total / max(count, 1)


def initial_direction(data: ContrastData, init: str, seed: int) -> torch.Tensor:
    """v₀ [d] unit: mean over pairs of h_src(x⁺) − h_src(x⁻), or a seeded Gaussian direction."""
    if init == "random":
        generator = torch.Generator().manual_seed(seed)
        v = torch.randn(data.source_h.shape[1], generator=generator)
        v = v.to(data.source_h.device, data.source_h.dtype)
    else:
        v = mean_difference(data)
    norm = v.norm()
    if not torch.isfinite(norm) or norm <= EPS:
        raise ValueError(
            "The mean difference of the two instructions' activations is zero: x⁺ and x⁻ give "
            "the same activation at the site. Use another site, or cdas_init='random'."
        )
    return v / norm


def mean_difference(data: ContrastData) -> torch.Tensor:
    """mean over pairs of h_src(x⁺) − h_src(x⁻) [d] (sources of the "+" and "−" rows)."""
    return data.source_h[0::2].mean(0) - data.source_h[1::2].mean(0)


# --------------------------------------------------------------------------- training


def _renormalise_(v: torch.Tensor, step: int) -> None:
    """v ← v/‖v‖ in place; a zero or non-finite v is a FloatingPointError."""
    norm = v.norm()
    if not torch.isfinite(norm) or norm <= EPS:
        raise FloatingPointError(
            f"The cdas direction became {'zero' if torch.isfinite(norm) else 'non-finite'} after "
            f"step {step}: lower cdas_lr."
        )
    v.div_(norm)


def train_direction(
    model, data: ContrastData, layer: int, v0: torch.Tensor, config, lr: float
) -> tuple[torch.Tensor, list[dict[str, float]], list[float]]:
    """AdamW on v (module docstring, "Objective"); returns (v̂, per-epoch history, step losses)."""
    v = v0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([v], lr=lr, weight_decay=0.0)
    per_epoch = math.ceil(data.n_pairs / config.batch_pairs)
    total = per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: max(0.0, 1 - t / total))
    generator = torch.Generator().manual_seed(config.seed)
    clip = float(config.grad_clip)
    history: list[dict[str, float]] = []
    step_losses: list[float] = []
    started = time.time()
    bar = tqdm(total=total, desc="train-steer cdas", disable=not config.progress)
    try:
        for epoch in range(config.epochs):
            order = torch.randperm(data.n_pairs, generator=generator)
            losses = []
            for pairs in order.split(config.batch_pairs):
                loss = batch_loss(model, data, data.rows(pairs), layer, v / v.norm())
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"Non-finite cdas loss at epoch {epoch + 1}, step {len(step_losses) + 1} "
                        "(NaN or inf logits under the interchange): lower cdas_lr, or check "
                        "the model's dtype."
                    )
                loss.backward()
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_([v], clip)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    _renormalise_(v, len(step_losses) + 1)
                losses.append(float(loss.detach()))
                step_losses.append(losses[-1])
                bar.update(1)
                bar.set_postfix(jsd=f"{losses[-1]:.4f}")
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": sum(losses) / len(losses),
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": round(time.time() - started, 2),
                }
            )
    finally:
        bar.close()
    return v.detach(), history, step_losses


def strengths(data: ContrastData, u: torch.Tensor) -> tuple[float, float]:
    """(f⁺, f⁻): mean û·h_src over the "+" sources (x⁺) and over the "−" sources (x⁻)."""
    s = data.source_h @ u
    return float(s[0::2].mean()), float(s[1::2].mean())


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def fit(model, tokenizer, train_pairs: Sequence[PreferencePair], config) -> Intervention:
    """Train the rank-1 interchange on `train_pairs` (module docstring) and return its clamp."""
    started = time.time()
    lr, init = check_options(config)
    site, layer = cdas_site(model, config)
    pairs = list(train_pairs)
    if not pairs:
        raise ValueError("cdas needs at least one training pair; the data set is empty.")
    chat = _chat(config)
    plus, minus, contrast = instructed_pairs(pairs, config, chat)
    with frozen(model):
        data = build_data(
            model, tokenizer, plus, minus, layer, chat, config.max_length, config.device
        )
        v0 = initial_direction(data, init, config.seed)
        jsd_unsteered = mean_jsd(model, data, layer, None)
        jsd_init = mean_jsd(model, data, layer, v0)
        v, history, step_losses = train_direction(model, data, layer, v0, config, lr)
        jsd_final = mean_jsd(model, data, layer, v)
    f_plus, f_minus = strengths(data, v)
    if f_plus < f_minus:  # orient v̂ so that the chosen side's level is the higher one
        v, f_plus, f_minus = -v, -f_plus, -f_minus
    mean_diff = mean_difference(data)
    meta: dict[str, Any] = {
        "site": site.name,
        "contrast": contrast,
        "init": init,
        "cdas_lr": lr,
        "f_plus": f_plus,
        "f_minus": f_minus,
        "cos_mean_diff": _cos(v, mean_diff),
        "cos_init": abs(_cos(v, v0)),
        "jsd_unsteered": jsd_unsteered,
        "jsd_init": jsd_init,
        "jsd_final": jsd_final,
        "loss_curve": [row["loss"] for row in history],
        "step_losses": step_losses,
        "history": history,
        "n_interchanges": int(data.base_ids.shape[0]),
        "n_matched_tokens": int(data.offsets[-1]),
        "fit_seconds": round(time.time() - started, 2),
    }
    edit = Edit(site, SetProjection(unit(v.cpu().float()), f_plus, f_minus))
    return Intervention([edit], "cdas", model.cfg.model_name, meta)


def with_multiplier(intervention: Intervention, m: float) -> Intervention:
    """The paper's clamp h' = h + (m·f − v̂·h) v̂: targets m·f⁺ and m·f⁻, to use at α = ±1."""
    if not math.isfinite(float(m)):
        raise ValueError(f"The multiplier m must be a finite number, got {m!r}.")
    edits = []
    for edit in intervention.edits:
        op = edit.operator
        if not isinstance(op, SetProjection) or op.reverse_target is None:
            raise ValueError("with_multiplier takes a cdas intervention (bidirectional clamps).")
        scaled = SetProjection(op.direction, m * op.target, m * op.reverse_target)
        edits.append(Edit(edit.site, scaled, edit.gate))
    meta = {**intervention.meta, "multiplier": float(m)}
    return Intervention(edits, intervention.method, intervention.model_name, meta)
