"""GrAInS (duykhuongnguyen/GrAInS, Nguyen et al. 2025): attribute a preference to the input
tokens with Integrated Gradients, ablate the most influential ones, and steer along the activation
shift that the ablation undoes; the edit keeps each token's norm.

Sequences. Pair i = (x, y⁺, y⁻) gives s⁺ = x·y⁺ and s⁻ = x·y⁻ (`tokenize_pairs` rows 2i and
2i + 1), with token embeddings e⁺, e⁻ [T, d] (TransformerLens `hook_embed`).

Objective (per pair), each completion token scored with the logits of the position before it:

    f(e⁺, e⁻) = log π(y⁺ | x; e⁺) − log π(y⁻ | x; e⁻)
    log π(y | x) = Σ_{t ∈ y} log softmax(z_{t−1})[s_t]          z_t: the logits at position t

Integrated Gradients along the path α·e, α from a = `grains_ig_start` to 1, m = `ig_steps` midpoint
nodes α_j = a + (1 − a)(j − ½)/m:

    A_t = Σ_dims (1 − a)·e_t ⊙ (1/m) Σ_j ∂f/∂e_t |_{α_j·e}        token t's score       [rows, T]
    completeness  Σ_t A_t ≈ f(e) − f(a·e)                        (error O(1/m²); in meta)

f separates (e⁺ enters only the first term), so the joint straight path over (e⁺, e⁻) that the
reference integrates gives each sequence its own IG: of log π(y⁺|x) on s⁺ and of −log π(y⁻|x) on s⁻.
The (sequence, step) items run as one batch dimension. On a model with learned position embeddings
only the token embeddings are scaled.

Why a = 0.1, not the paper's zero baseline (a = 0). In a pre-norm (RMSNorm) model the zero point is
singular: with α‖e‖ below √ε the first norms are linear with gain 1/√ε and the blocks amplify (on
SmolLM2 at α = 1e-9 the residual norm grows 8e-8 → 60 over three layers), so f(α·e) jumps and swings
chaotically as α → 0 (sentiment pair 0, chosen row: f(0) = −162, f(0.025·e) = −137, f(e) = −40, and
swings of up to 100 nats between α = 1e-9 and 1e-3). No practical grid resolves it: from the zero
baseline the completeness error was 0.49 at 8 steps and 5.1 at 32, the top-5 tokens of 8 and 32
steps overlapped 30% (positive) and 50% (negative), and near-zero gradients dominated the scores
(' the': +943). From a = 0.1 the error fell 0.38 → 0.066 and the overlap rose to 70% / 80%.
a = 0 (the paper's baseline) can still be chosen.

Which tokens. Every token of both sequences is attributed, prompt and completion, as the reference's
contrastive mode does. Our pairs share the prompt and differ in the completion (a story ending, a
reply), so the contrast lives in the completion's tokens ("joy" vs "dread"); the shared prompt can
only matter through how it conditions each completion. A_t > 0 pushes towards y⁺ (on s⁺ it raises
log π(y⁺|x); on s⁻ it lowers log π(y⁻|x)); A_t < 0 pushes towards y⁻. The whole completion is scored
(the reference scores one token per answer); the last token alone is often the "." both endings
share.

What it picks. A sequence's log-likelihood also rewards the tokens that make its completion
predictable, on either side, so on SmolLM2 sentiment the most often ablated tokens were function
words (',', ' and', ' was', ' the') on both sides and cos(v_pos, v_neg) = 0.74; v = v_pos − v_neg
cancels that shared part: held-out preference accuracy 0.94 at α = +1, 0.0 at α = −1 (r = 0.1). On
formality (chat) 53–61% of the ablated tokens were in the prompt, mostly the template's and the
default system prompt's (newlines, ' named', ' helpful', 'ass'); accuracy 0.83 (pca), 1.0 (mean).

Ablation. Per sequence s, P(s) = the k = `grains_top_k` largest A_t > 0 and N(s) = the k smallest
A_t < 0 among the ablatable tokens: not a special token (the chat template's markers), not already
the ablation token, and not the last token (where Δ is read; no scored logit depends on it, so its
A_t is 0 anyway). Ablating replaces a token with the tokenizer's pad id (else unk, else eos), as the
paper does (SmolLM2: <|im_end|>). A sequence with fewer than k candidates has all of them ablated
(counted in meta; a k beyond every sequence's candidates also warns). At the site ℓ, last token:

    Δ⁺(s) = h_ℓ(s) − h_ℓ(s with P(s) ablated),   Δ⁻(s) = h_ℓ(s) − h_ℓ(s with N(s) ablated)

for both s⁺ and s⁻ of every pair (sequences with an empty P or N give no Δ⁺ or Δ⁻).

Reduction (`grains_reduce`), then the vector:

    pca    v_pos = PC1 of the centred {Δ⁺} (the reference's sklearn PCA), a unit vector signed so
           that v_pos · mean(Δ⁺) ≥ 0; v_neg likewise from {Δ⁻}
    mean   v_pos = mean(Δ⁺), v_neg = mean(Δ⁻)
    v = v_pos − v_neg                 the shift the y⁺-pushing tokens make, less the y⁻-pushing ones

Strength. The reference adds 10·α·v; with unit PCs what α means depends on the model's ‖h‖ at the
site. Here the added vector is w = r · M · v/‖v‖, M = the median ‖h‖ over the training tokens at the
site, r = `grains_scale` (default 0.2). At every token of the site (an `AddRescale` edit):

    g = h + α·w,   h' = g · ‖h‖ / ‖g‖                         (per token; α = 0 is the identity)

so a token of typical norm orthogonal to v turns by atan(α·r) towards v: 11° at α = 1, 22° at α = 2,
39° at α = 4. On SmolLM2 (sentiment, blocks.15.resid_post, greedy) α·r = 0.1 kept the text and
nudged it; 0.2 kept it fluent and made 4/4 validation continuations positive (2/4 unsteered); 0.4
drifted off topic; 0.5 and more gave gibberish. So α = 1 is the project's usual "visible change"
step (‖Δh‖/‖h‖ ≈ 0.2) and α = 2 is about the most that stays fluent. The reference α that gives the
same w is recorded (`paper_alpha_at_alpha_1`: ≈ 4.8 there, the paper's Llama setting used 4).

Fixes and choices against the reference code:
  - off-by-one: it scores the last token with the logits at the last position (which predict the
    token after it); here token t is scored with the logits at t − 1;
  - rescale: its norm is over dim 1 of [batch, seq, d], the sequence axis; here per token;
  - PC1's sign is arbitrary there; here it agrees with the mean Δ, so v_pos − v_neg cannot flip;
  - the whole completion is scored, not its last token; the IG path starts at a·e (both above); the
    rule is the midpoint rule (captum's default is Gauss–Legendre), checked by completeness;
  - special tokens and the read-out token are never ablated; the strength is normalised (above).

Costs. IG: m forward + backward passes per sequence (2m per pair), batched under a token budget, and
the unembedding only at completion positions: on SmolLM2 with 2 CPU cores shared with other jobs, 12
sentiment pairs at m = 10 (240 items of ~27 tokens) took 280–400 s, about 1.2–1.7 s per item; the
default m = 20 doubles it. Ablation: three no-grad forwards per sequence through layer ℓ only.
Reduction: two SVDs of at most [2·n_pairs, d]. Steering: per token one axpy and two norms at one
site; the saved intervention holds one [d] vector.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformer_lens.utilities.activation_functions import apply_softcap

from saesteer.hook_names import resid_post
from saesteer.steer.batching import TokenizedPairs, tokenize_pairs
from saesteer.steer.hooks import record
from saesteer.steer.intervention import Edit, Intervention
from saesteer.steer.operators import AddRescale
from saesteer.steer.pairs import PreferencePair
from saesteer.steer.sites import Site, check_sites_fit

IG_CHUNK_TOKENS = 1024  # (sequence, step) rows × width per forward + backward pass
FORWARD_CHUNK_TOKENS = 4096  # rows × width per no-grad forward pass
TOP_TOKENS_SHOWN = 12
COINCIDE_TOLERANCE = 1e-6  # ‖v_pos − v_neg‖ below this × (‖v_pos‖ + ‖v_neg‖): no direction


# --------------------------------------------------------------------------- scoring


@contextlib.contextmanager
def scaled_embeddings(
    model, scales: torch.Tensor
) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Inside, `hook_embed`'s output e [rows, T, d] is replaced by scales[:, None, None]·e, a leaf
    that requires grad when grad is on; yields a list that receives (e, scaled e) per forward."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(module, args, output):
        embed = output.detach()
        scaled = embed * scales.to(embed.device, embed.dtype)[:, None, None]
        scaled.requires_grad_(torch.is_grad_enabled())
        seen.append((embed, scaled))
        return scaled

    handle = model.hook_dict["hook_embed"].register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def completion_scores(model, ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """log π(y | x) per row [rows] for ids [rows, T] (the `completion_logprobs` formula),
    unembedding only the positions t − 1 whose next token t is in the completion."""
    resid = model(ids, stop_at_layer=model.cfg.n_layers)  # [rows, T, d], before ln_final
    rows, before = (target_mask[:, 1:] > 0).nonzero(as_tuple=True)  # scored token t = before + 1
    logits = model.unembed(model.ln_final(resid[rows, before][None]))[0]  # [N, vocab]
    logits = apply_softcap(logits.float(), model.cfg.output_logits_soft_cap)
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[rows, before + 1, None])[:, 0]
    return torch.zeros(ids.shape[0], device=ids.device).index_add_(0, rows, token_logp)


def token_chunks(widths: torch.Tensor, budget: int) -> Iterator[slice]:
    """Consecutive slices of items whose count × largest width stays ≤ budget (≥ one item each)."""
    start, widest = 0, 0
    for index, width in enumerate(widths.tolist()):
        if index > start and (index - start + 1) * max(widest, width) > budget:
            yield slice(start, index)
            start, widest = index, 0
        widest = max(widest, width)
    if start < len(widths):
        yield slice(start, len(widths))


def sequence_lengths(target_mask: torch.Tensor) -> torch.Tensor:
    """Real length per row [rows]: the completion runs to the end of the (right-padded) sequence."""
    positions = torch.arange(target_mask.shape[1])
    return ((target_mask > 0) * (positions + 1)).amax(dim=1)


@dataclass
class Attribution:
    """IG token scores of every row and the completeness check (module docstring)."""

    scores: torch.Tensor  # [rows, T] float32, 0 past each row's length
    f_input: torch.Tensor  # [rows] sign · log π(y|x) at the input
    f_baseline: torch.Tensor  # [rows] the same at the baseline a·e

    @property
    def completeness_gap(self) -> torch.Tensor:
        """Σ_t A_t − (f(e) − f(a·e)) per row [rows]."""
        return self.scores.sum(dim=1) - (self.f_input - self.f_baseline)


def row_signs(rows: int) -> torch.Tensor:
    """+1 on the chosen rows (2i), −1 on the rejected rows (2i + 1): f's sign per sequence."""
    return torch.tensor([1.0, -1.0]).repeat(rows // 2)


def signed_scores(
    model,
    tokens: TokenizedPairs,
    rows: torch.Tensor,
    scales: torch.Tensor,
    width: int,
) -> tuple[torch.Tensor, list]:
    """sign · log π(y|x) [items] of `rows` with the embeddings scaled by `scales` [items]."""
    device = model.cfg.device
    ids = tokens.input_ids[rows, :width].to(device)
    mask = tokens.target_mask[rows, :width].to(device)
    with scaled_embeddings(model, scales) as seen:
        scores = completion_scores(model, ids, mask)
    return scores * row_signs(tokens.input_ids.shape[0])[rows].to(scores.device), seen


def path_grid(steps: int, start: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint nodes α_j = a + (1 − a)(j − ½)/m and weights (1 − a)/m [m] each, a = `start`."""
    u = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    alphas = start + (1 - start) * u
    return alphas.float(), torch.full((steps,), (1 - start) / steps)


def integrated_gradients(
    model,
    tokens: TokenizedPairs,
    steps: int,
    start: float = 0.0,
) -> Attribution:
    """A [rows, T] on the `path_grid` of `steps` nodes: (row, α_j) items, batched (module doc)."""
    n_rows, width = tokens.input_ids.shape
    lengths = sequence_lengths(tokens.target_mask)
    alphas, weights = path_grid(steps, start)
    item_rows = torch.arange(n_rows).repeat_interleave(steps)  # [rows · m]
    item_alphas, item_weights = alphas.repeat(n_rows), weights.repeat(n_rows)
    scores = torch.zeros(n_rows, width)
    with torch.enable_grad():
        for chunk in token_chunks(lengths[item_rows], IG_CHUNK_TOKENS):
            rows = item_rows[chunk]
            wide = int(lengths[rows].max())
            f, seen = signed_scores(model, tokens, rows, item_alphas[chunk], wide)
            embed, scaled = seen[0]
            (grad,) = torch.autograd.grad(f.sum(), scaled)
            per_token = (embed.float() * grad.float()).sum(-1).cpu()  # [items, wide]
            per_token *= item_weights[chunk, None]
            scores[:, :wide].index_add_(0, rows, per_token)
    f_input, f_baseline = endpoint_scores(model, tokens, lengths, start)
    return Attribution(scores, f_input, f_baseline)


@torch.no_grad()
def endpoint_scores(
    model,
    tokens: TokenizedPairs,
    lengths: torch.Tensor,
    start: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """f at the input (scale 1) and at the baseline (scale `start`) per row, for completeness."""
    out = []
    for scale in (1.0, start):
        parts = []
        for chunk in token_chunks(lengths, FORWARD_CHUNK_TOKENS):
            rows = torch.arange(chunk.start, chunk.stop)
            scales = torch.full((len(rows),), scale)
            width = int(lengths[rows].max())
            f, _ = signed_scores(model, tokens, rows, scales, width)
            parts.append(f.cpu())
        out.append(torch.cat(parts))
    return out[0], out[1]


# --------------------------------------------------------------------------- ablation


def ablation_token(tokenizer) -> int:
    """The id ablated tokens become: pad, else unk, else eos (module docstring)."""
    for name in ("pad_token_id", "unk_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError(
        "The tokenizer has no pad, unk or eos token to ablate tokens with; set "
        "tokenizer.pad_token before fitting grains."
    )


def ablatable(
    ids: torch.Tensor, lengths: torch.Tensor, special_ids: Sequence[int], ablate_id: int
) -> torch.Tensor:
    """[rows, T] bool: a real token before the last, not special, not already the ablation id."""
    positions = torch.arange(ids.shape[1])
    inside = positions[None, :] < (lengths[:, None] - 1)
    special = torch.isin(ids, torch.tensor(sorted({*special_ids, ablate_id}), dtype=ids.dtype))
    return inside & ~special


def top_positions(scores: torch.Tensor, allowed: torch.Tensor, k: int, sign: float) -> torch.Tensor:
    """[rows, T] bool: per row the ≤ k allowed positions with the largest sign·A_t > 0."""
    signed = sign * scores
    keyed = signed.masked_fill(~(allowed & (signed > 0)), float("-inf"))
    values, index = keyed.topk(min(k, scores.shape[1]), dim=1)
    return torch.zeros_like(allowed).scatter_(1, index, values > float("-inf"))


@torch.no_grad()
def last_token_activations(
    model, site: Site, ids: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """h at `site` of each row's last real token [rows, d] (float32, cpu), and ‖h‖ of every real
    token [Σ lengths]; runs the blocks up to the site's only."""
    last, norms = [], []
    for chunk in token_chunks(lengths, FORWARD_CHUNK_TOKENS):
        length = lengths[chunk]
        batch = ids[chunk, : int(length.max())].to(model.cfg.device)
        with record(model, [site]) as seen:
            model(batch, stop_at_layer=site.layer + 1)
        h = seen[site][0].float().cpu()  # [rows, width, d]
        last.append(h[torch.arange(len(length)), length - 1])
        real = torch.arange(h.shape[1])[None, :] < length[:, None]
        norms.append(h.norm(dim=-1)[real])
    return torch.cat(last), torch.cat(norms)


# --------------------------------------------------------------------------- reduction


@dataclass
class Reduced:
    """One side's vector (v_pos or v_neg) and how it was made."""

    vector: torch.Tensor  # [d] float64
    mean: torch.Tensor  # [d] mean Δ
    explained: float | None  # PC1's share of the centred variance (pca)
    count: int


def reduce_deltas(deltas: torch.Tensor, how: str, side: str) -> Reduced:
    """PC1 of the centred Δs signed by their mean (pca), or their mean (mean): module docstring."""
    deltas = deltas.double()
    mean = deltas.mean(dim=0)
    if how == "mean":
        return Reduced(mean, mean, None, len(deltas))
    if how != "pca":
        raise ValueError(f"grains_reduce must be 'pca' or 'mean', got {how!r}.")
    centred = deltas - mean
    if len(deltas) < 2:
        raise ValueError(
            f"PCA of the {side} ablation differences needs at least 2 of them, got "
            f"{len(deltas)}; give more pairs or use grains_reduce='mean'."
        )
    _, singular, right = torch.linalg.svd(centred, full_matrices=False)
    if singular[0] <= COINCIDE_TOLERANCE * max(1.0, float(mean.norm())):
        raise ValueError(
            f"The {side} ablation differences are all equal (no spread), so PC1 is undefined; "
            "use grains_reduce='mean'."
        )
    pc1 = right[0] if right[0] @ mean >= 0 else -right[0]
    explained = float(singular[0] ** 2 / (singular**2).sum())
    return Reduced(pc1, mean, explained, len(deltas))


def contrast_vector(pos: Reduced, neg: Reduced) -> torch.Tensor:
    """v = v_pos − v_neg [d]; refused when the two sides coincide (no contrast at this site)."""
    vector = pos.vector - neg.vector
    if vector.norm() <= COINCIDE_TOLERANCE * (pos.vector.norm() + neg.vector.norm()):
        raise ValueError(
            "v_pos and v_neg coincide, so v = v_pos − v_neg is zero: ablating the tokens that "
            "push towards the chosen completion moves the activation the same way as ablating "
            "those that push towards the rejected one. Check that chosen and rejected differ in "
            "the behaviour, or try another site (hook_name)."
        )
    return vector


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()).clamp_min(1e-30))


# --------------------------------------------------------------------------- fit


def resolve_site(model, hook_name: str | None) -> Site:
    """config.hook_name as a Site (None: the middle layer's resid_post), checked against the
    model."""
    site = Site.parse(hook_name or resid_post(model.cfg.n_layers // 2))
    check_sites_fit([site], model.cfg.n_layers)
    return site


def check_distinct(tokens: TokenizedPairs) -> None:
    """Refuse pairs whose chosen and rejected rows are the same tokens (f ≡ 0, no contrast)."""
    ids = tokens.input_ids.view(-1, 2, tokens.input_ids.shape[1])
    same = (ids[:, 0] == ids[:, 1]).all(dim=1).nonzero()[:, 0].tolist()
    if same:
        shown = ", ".join(map(str, same[:10])) + (" …" if len(same) > 10 else "")
        raise ValueError(
            f"{len(same)} pair(s) have chosen == rejected after tokenization (pairs {shown}): "
            "their preference f = log π(y⁺|x) − log π(y⁻|x) is 0 for every input, so there is "
            "nothing to attribute; remove them from the training pairs."
        )


def top_tokens(tokenizer, ids: torch.Tensor, chosen: torch.Tensor) -> list[list[Any]]:
    """The most often ablated tokens, decoded, with their counts [[text, count], …]."""
    counts = Counter(ids[chosen].tolist())
    return [[tokenizer.decode([token]), n] for token, n in counts.most_common(TOP_TOKENS_SHOWN)]


def warn_if_k_too_large(k: int, allowed: torch.Tensor) -> None:
    most = int(allowed.sum(dim=1).max())
    if k > most:
        warnings.warn(
            f"grains_top_k={k} is more than the {most} ablatable tokens of the longest sequence: "
            "every positively (negatively) attributed token is ablated, so the top-k ranking "
            "selects nothing; lower grains_top_k.",
            stacklevel=3,
        )


def side_deltas(
    model, site: Site, ids: torch.Tensor, chosen: torch.Tensor, ablate_id: int, lengths, h
) -> torch.Tensor:
    """Δ = h − h(ablated) at the last token [n, d] of the rows with a non-empty ablation set."""
    keep = chosen.any(dim=1)
    ablated = torch.where(chosen, torch.full_like(ids, ablate_id), ids)[keep]
    h_ablated, _ = last_token_activations(model, site, ablated, lengths[keep])
    return h[keep] - h_ablated


def fit(model, tokenizer, train_pairs: Sequence[PreferencePair], config) -> Intervention:
    """Fit GrAInS on `train_pairs` (module docstring) → a one-edit `AddRescale` intervention.

    config (`TrainSteerConfig`): hook_name, grains_top_k, ig_steps, grains_reduce, chat,
    max_length, grains_scale (default 0.2) and grains_ig_start (in [0, 1), default 0.1). Raises
    ValueError on identical chosen/rejected pairs, when no token has a positive (or negative)
    attribution, and when v_pos and v_neg coincide.
    """
    site = resolve_site(model, config.hook_name)
    scale, ig_start = read_options(config)
    tokens = tokenize_pairs(tokenizer, list(train_pairs), bool(config.chat), config.max_length)
    check_distinct(tokens)
    ids, lengths = tokens.input_ids, sequence_lengths(tokens.target_mask)
    attribution = integrated_gradients(model, tokens, config.ig_steps, ig_start)
    ablate_id = ablation_token(tokenizer)
    chosen = choose_tokens(attribution.scores, ids, lengths, tokenizer, ablate_id, config)
    h, norms = last_token_activations(model, site, ids, lengths)
    reduced = {}
    for side, picked in chosen.items():
        deltas = side_deltas(model, site, ids, picked, ablate_id, lengths, h)
        reduced[side] = reduce_deltas(deltas, config.grains_reduce, side)
    direction = contrast_vector(reduced["positive"], reduced["negative"])
    median_norm = float(norms.median())
    vector = (scale * median_norm * direction / direction.norm()).float()
    meta = {
        "site": site.name,
        "objective": "log π(y⁺|x) − log π(y⁻|x), whole completion, logits at t − 1",
        "ig_steps": config.ig_steps,
        "ig_path": f"α·e, α from {ig_start} to 1 (midpoint rule)",
        "ig_start": ig_start,
        "ig_completeness_error": completeness_error(attribution),
        "top_k": config.grains_top_k,
        "reduce": config.grains_reduce,
        "ablation_token": [ablate_id, tokenizer.decode([ablate_id])],
        "n_sequences": int(ids.shape[0]),
        "strength_unit": "α · grains_scale · median ‖h‖ at the site, then per-token rescale",
        "grains_scale": scale,
        "median_norm": round(median_norm, 6),
        "vector_norm": round(float(vector.norm()), 6),
        "paper_alpha_at_alpha_1": round(float(vector.norm() / (10 * direction.norm())), 6),
        **vector_summary(reduced["positive"], reduced["negative"], direction, h),
        **{
            f"{side}_ablation": side_summary(tokenizer, tokens, picked, reduced[side], config)
            for side, picked in chosen.items()
        },
    }
    return Intervention([Edit(site, AddRescale(vector))], "grains", model.cfg.model_name, meta)


def read_options(config) -> tuple[float, float]:
    """(grains_scale r > 0, grains_ig_start a in [0, 1)), checked (module docstring)."""
    scale = float(config.grains_scale)
    ig_start = float(config.grains_ig_start)
    if not scale > 0:
        raise ValueError(f"grains_scale must be > 0 (a fraction of the median ‖h‖), got {scale}.")
    if not 0 <= ig_start < 1:
        raise ValueError(
            f"grains_ig_start must be in [0, 1) (where the IG path α·e starts), got {ig_start}."
        )
    return scale, ig_start


def choose_tokens(
    scores: torch.Tensor,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    tokenizer,
    ablate_id: int,
    config,
) -> dict[str, torch.Tensor]:
    """P and N [rows, T] bool: the top-k positive / negative ablatable tokens (module docstring)."""
    allowed = ablatable(ids, lengths, tokenizer.all_special_ids, ablate_id)
    k = config.grains_top_k
    warn_if_k_too_large(k, allowed)
    chosen = {
        "positive": top_positions(scores, allowed, k, 1.0),
        "negative": top_positions(scores, allowed, k, -1.0),
    }
    for side, picked in chosen.items():
        if not picked.any():
            raise ValueError(
                f"No token of any sequence has a {side} attribution, so there is nothing to "
                "ablate: the preference does not depend on the input tokens (are chosen and "
                "rejected the same?); check the pairs, or raise ig_steps."
            )
    return chosen


def vector_summary(pos: Reduced, neg: Reduced, direction: torch.Tensor, h: torch.Tensor) -> dict:
    """‖v_pos‖, ‖v_neg‖, cos(v_pos, v_neg) and cos(v, μ⁺ − μ⁻) of the last-token activations."""
    mean_diff = h[0::2].mean(dim=0) - h[1::2].mean(dim=0)
    return {
        "norm_v_pos": round(float(pos.vector.norm()), 6),
        "norm_v_neg": round(float(neg.vector.norm()), 6),
        "cos_v_pos_v_neg": round(cosine(pos.vector, neg.vector), 6),
        "cos_v_mean_diff": round(cosine(direction, mean_diff), 6),
    }


def completeness_error(attribution: Attribution) -> float:
    """mean |Σ_t A_t − (f(e) − f(a·e))| / mean |f(e) − f(a·e)| over the sequences."""
    change = (attribution.f_input - attribution.f_baseline).abs().mean().clamp_min(1e-12)
    return round(float(attribution.completeness_gap.abs().mean() / change), 6)


def side_summary(
    tokenizer, tokens: TokenizedPairs, picked: torch.Tensor, side: Reduced, config
) -> dict[str, Any]:
    """What one side's ablation did: its tokens, where they were, and its vector's statistics."""
    per_row = picked.sum(dim=1)
    in_completion = (picked & (tokens.target_mask > 0)).sum()
    return {
        "top_tokens": top_tokens(tokenizer, tokens.input_ids, picked),
        "mean_tokens_ablated": round(float(per_row.float().mean()), 3),
        "sequences_short_of_k": int((per_row < config.grains_top_k).sum()),
        "completion_share": round(float(in_completion / per_row.sum().clamp_min(1)), 4),
        "n_deltas": side.count,
        "norm_mean_delta": round(float(side.mean.norm()), 6),
        "explained_variance_pc1": None if side.explained is None else round(side.explained, 6),
        "cos_v_mean_delta": round(cosine(side.vector, side.mean), 6),
    }
