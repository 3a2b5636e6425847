"""Prompt formatting shared by every generating command: plain text or one chat turn → token ids.

Decoding itself (plain or steered, TransformerLens or Hugging Face, batched, with or without the KV
cache) lives in `saesteer.steer.generate`; `generate_text` is its one-prompt convenience form.
"""

from __future__ import annotations

from typing import Any

import torch


def prompt_token_ids(
    tokenizer: Any, prompt: str, chat: bool = False, system: str | None = None
) -> torch.Tensor:
    """Token ids [1, n_prompt] of `prompt`, wrapped in the chat template when `chat` is set."""
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False).input_ids
    else:
        ids = tokenizer(prompt).input_ids
    if not ids:
        raise ValueError("The prompt is empty after tokenization; give at least one token of text.")
    return torch.tensor([ids], dtype=torch.long)


def generate_text(
    model: Any, tokenizer: Any, prompt: str, chat: bool = False, **kwargs: Any
) -> str:
    """Generate a continuation (or chat reply) of `prompt`, unsteered; returns only the new text.

    kwargs: max_new_tokens, temperature, seed, use_cache (see `generate_ids_steered`).
    """
    from saesteer.steer.generate import generate_steered

    return generate_steered(model, tokenizer, [prompt], chat=chat, **kwargs)[0]
