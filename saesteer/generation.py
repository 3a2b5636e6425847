"""Text generation with a HookedTransformer: prompt formatting (plain or chat) and decoding."""

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


@torch.inference_mode()
def generate_ids(
    model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    use_past_kv_cache: bool = True,
    stop_at_eos: bool = True,
) -> torch.Tensor:
    """Continue `input_ids` [batch, n_prompt] with TransformerLens `generate`; returns new tokens only."""
    torch.manual_seed(seed)
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None else None
    out = model.generate(
        input_ids.to(model.cfg.device),
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=max(temperature, 1e-5),
        use_past_kv_cache=use_past_kv_cache,
        stop_at_eos=stop_at_eos and eos is not None,
        eos_token_id=eos,
        verbose=False,
    )
    return out[:, input_ids.shape[1] :]


def generate_text(
    model: Any, tokenizer: Any, prompt: str, chat: bool = False, **kwargs: Any
) -> str:
    """Generate a continuation (or chat reply) of `prompt` and return only the new text."""
    new_ids = generate_ids(model, prompt_token_ids(tokenizer, prompt, chat=chat), **kwargs)
    return tokenizer.decode(new_ids[0], skip_special_tokens=True).strip()
