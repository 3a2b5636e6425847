"""Tokenize preference pairs into one right-padded tensor and score completions.

Row layout: pair i gives row 2i (prompt + chosen) and row 2i + 1 (prompt + rejected).

    input_ids:   [2 · n_pairs, T]   right-padded with the tokenizer's pad id
    target_mask: [2 · n_pairs, T]   1 where the token belongs to the completion (the scored part)

The log-probability of a completion y given prompt x under the model's logits [rows, T, vocab]:

    log π(y | x) = Σ_t target_mask[t] · log softmax(logits[t − 1])[input_ids[t]]

Right padding leaves every real position's logits unchanged in a causal model, so no attention mask
is needed. With `chat=True` the prompt (plus the pair's system message and history) is wrapped in the
tokenizer's chat template with the assistant generation prompt, and the completion is the reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from saesteer.steer.pairs import PairsFormatError, PreferencePair


@dataclass
class TokenizedPairs:
    """Pairs as tensors (see module docstring for the row layout)."""

    input_ids: torch.Tensor  # [2·n_pairs, T] long
    target_mask: torch.Tensor  # [2·n_pairs, T] float, 1 on completion tokens

    @property
    def n_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    def rows(self, pair_indices: torch.Tensor) -> torch.Tensor:
        """Row indices [2·len(pair_indices)] (chosen, rejected interleaved) of the given pairs."""
        return torch.stack([2 * pair_indices, 2 * pair_indices + 1], dim=1).reshape(-1)


def prompt_ids(tokenizer: Any, pair: PreferencePair, chat: bool) -> list[int]:
    """Token ids of the pair's prompt, chat-templated (with generation prompt) when `chat`."""
    if chat:
        text = tokenizer.apply_chat_template(
            pair.messages(), tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False).input_ids
    return tokenizer(pair.prompt).input_ids


def tokenize_pairs(
    tokenizer: Any, pairs: Sequence[PreferencePair], chat: bool = False, max_length: int = 128
) -> TokenizedPairs:
    """Tokenize `pairs`; prompts longer than fits are cut from the left (the start is dropped)."""
    if not pairs:
        raise PairsFormatError("No preference pairs to tokenize; the data set is empty.")
    sequences: list[tuple[list[int], int]] = []  # (ids, index where the completion starts)
    for index, pair in enumerate(pairs):
        head = prompt_ids(tokenizer, pair, chat)
        for completion in (pair.chosen, pair.rejected):
            tail = tokenizer(completion, add_special_tokens=False).input_ids
            if not tail:
                raise PairsFormatError(f"pair {index}: a completion is empty after tokenization.")
            if len(tail) >= max_length:
                raise PairsFormatError(
                    f"pair {index}: a completion has {len(tail)} tokens, more than "
                    f"max_length={max_length} allows; raise max_length."
                )
            keep = head[-(max_length - len(tail)) :]
            if not keep:
                raise PairsFormatError(f"pair {index}: the prompt is empty after tokenization.")
            sequences.append((keep + tail, len(keep)))
    width = max(len(ids) for ids, _ in sequences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    target_mask = torch.zeros(len(sequences), width)
    for row, (ids, start) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        target_mask[row, start : len(ids)] = 1.0
    return TokenizedPairs(input_ids, target_mask)


def completion_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor
) -> torch.Tensor:
    """log π(y | x) per row [rows] from logits [rows, T, vocab] (formula in the module docstring)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logp = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (token_logp * target_mask[:, 1:].to(token_logp.dtype)).sum(-1)


def preference_margins(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """r(y_w) − r(y_l) per pair [n_pairs], with r(y) = log π(y|x) − log π_0(y|x); rows interleaved."""
    reward = (logp - logp_ref).view(-1, 2)
    return reward[:, 0] - reward[:, 1]


def left_padded(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D id rows → (ids, attention mask, position ids) [len(rows), max length], left-padded with
    0, positions counted from each row's first real token (what a Hugging Face model needs to give
    every row the activations it has alone). Row i's tokens are ids[i, width − len_i:]."""
    width = max(r.numel() for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - r.numel() :] = r
        mask[i, width - r.numel() :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp_min(0)
