"""The audit's numbers, as plain functions of tensors (no model inside), each checked by a test.

Off-target drift, per position t of a neutral prompt, between the unsteered next-token distribution
p_0 = softmax(logits_0[t]) and the steered one p_α = softmax(logits_α[t]):

    KL(p_0 ‖ p_α) = Σ_v p_0(v) · (log p_0(v) − log p_α(v))          mean over valid positions

Perplexity of generations g_1..g_N under the unsteered model (tokens pooled over all generations):

    ppl = exp( − Σ_i Σ_t log p_0(g_i,t | prompt_i, g_i,<t) / Σ_i |g_i| )

n-gram repetition of one generation with token ids w_1..w_m (n-grams w_j..w_{j+n−1}):

    rep_n = 1 − #distinct n-grams / #n-grams            0 when m < n; mean over generations

Latent changes at a layer, with z = encode(h) and z' = encode(h') per token [T, d_sae]:

    Δz = z' − z;   mean_delta_i = mean_t Δz_t,i   (the latents ranked by |mean_delta_i|)

Residual-stream norm change at a layer: mean_t (‖h'_t‖ − ‖h_t‖), and the edit size mean_t ‖h'_t − h_t‖.

Preference log-odds of a validation pair (x, y_w, y_l) at strength α:

    lo_α = log π_α(y_w | x) − log π_α(y_l | x);    its change lo_α − lo_0 = r(y_w) − r(y_l)
    preference accuracy = fraction of pairs with lo_α − lo_0 > 0 (DPO's reward accuracy)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def next_token_kl(
    logits_ref: torch.Tensor, logits_new: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """Mean KL(p_ref ‖ p_new) over positions; logits [..., vocab], mask [...] (1 = count it)."""
    logp_ref = torch.log_softmax(logits_ref.double(), dim=-1)
    logp_new = torch.log_softmax(logits_new.double(), dim=-1)
    kl = (logp_ref.exp() * (logp_ref - logp_new)).sum(-1)
    if mask is None:
        return kl.mean().item()
    mask = mask.to(kl.dtype)
    return ((kl * mask).sum() / mask.sum().clamp_min(1)).item()


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[t] | ids[<t]) [T − 1] from logits [T, vocab] of one sequence ids [T]."""
    logp = torch.log_softmax(logits[:-1].double(), dim=-1)
    return logp.gather(-1, ids[1:, None]).squeeze(-1)


def perplexity(logprobs: Sequence[torch.Tensor]) -> float:
    """exp(−mean log p) over all tokens of all sequences (pooled); nan when there are none."""
    flat = torch.cat([lp.double().flatten() for lp in logprobs]) if logprobs else torch.zeros(0)
    if flat.numel() == 0:
        return float("nan")
    return torch.exp(-flat.mean()).item()


def ngram_repetition(ids: Sequence[int], n: int = 3) -> float:
    """1 − distinct n-grams / n-grams of one token sequence (0 when shorter than n)."""
    if n < 1:
        raise ValueError(f"n-gram size must be ≥ 1, got {n}.")
    grams = [tuple(ids[j : j + n]) for j in range(len(ids) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def mean_ngram_repetition(sequences: Sequence[Sequence[int]], n: int = 3) -> float:
    """Mean of `ngram_repetition` over generations (0 for none)."""
    return sum(ngram_repetition(s, n) for s in sequences) / len(sequences) if sequences else 0.0


def latent_mean_deltas(z: torch.Tensor, z_new: torch.Tensor) -> torch.Tensor:
    """mean_t (z' − z) [d_sae] from codes [T, d_sae] (rows = the valid tokens only)."""
    return (z_new.double() - z.double()).mean(0)


def top_changes(mean_delta: torch.Tensor, n: int) -> list[dict[str, float]]:
    """The n latents with the largest |mean Δz|, as [{"index", "mean_delta"}], largest first."""
    n = min(n, mean_delta.numel())
    order = mean_delta.abs().topk(n).indices
    return [
        {"index": int(i), "mean_delta": float(mean_delta[i])} for i in order if mean_delta[i] != 0
    ]


def norm_change(h: torch.Tensor, h_new: torch.Tensor) -> dict[str, float]:
    """{"norm_change": mean(‖h'‖ − ‖h‖), "edit_norm": mean ‖h' − h‖, "norm": mean ‖h‖} over rows."""
    h, h_new = h.double(), h_new.double()
    return {
        "norm_change": (h_new.norm(dim=-1) - h.norm(dim=-1)).mean().item(),
        "edit_norm": (h_new - h).norm(dim=-1).mean().item(),
        "norm": h.norm(dim=-1).mean().item(),
    }


def log_odds(logp: torch.Tensor) -> torch.Tensor:
    """log π(y_w|x) − log π(y_l|x) per pair [n_pairs] from interleaved row log-probs [2·n_pairs]."""
    pairs = logp.view(-1, 2)
    return pairs[:, 0] - pairs[:, 1]


def preference_summary(logp: torch.Tensor, logp_ref: torch.Tensor) -> dict[str, float]:
    """Mean log-odds at α, its mean change from α = 0, and the preference accuracy (docstring)."""
    lo, lo_ref = log_odds(logp.double()), log_odds(logp_ref.double())
    change = lo - lo_ref
    return {
        "log_odds": lo.mean().item(),
        "log_odds_change": change.mean().item(),
        "preference_accuracy": (change > 0).double().mean().item(),
    }
