"""Steered generation for batches of prompts, and the `--steer DIR --alpha A` CLI options.

`generate_steered` left-pads a batch of prompts (plain or chat-templated) and decodes with either
model kind under `steer(...)`:
  - a Hugging Face causal LM: `model.generate(input_ids, attention_mask=...)` (fast; same weights);
  - a TransformerLens `HookedTransformer`: `model.generate(tokens, padding_side="left")`.
Both use the KV cache unless `use_cache=False`. Greedy at temperature 0, else sampled with `seed`.

Checked first: temperature finite and ≥ 0, max_new_tokens ≥ 1, and
prompt length + max_new_tokens ≤ the model's context (TransformerLens `cfg.n_ctx`, Hugging Face
`config.max_position_embeddings`); `check_device` vets a `--device` before a model is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from saesteer.generation import prompt_token_ids
from saesteer.steer.codes import SteeringCode
from saesteer.steer.hooks import is_hooked_transformer, steer
from saesteer.steer.intervention import Intervention


def batch_prompt_ids(
    tokenizer: Any, prompts: Sequence[str], chat: bool = False, system: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids [batch, T], attention_mask [batch, T]) of `prompts`."""
    if not prompts:
        raise ValueError("Give at least one prompt.")
    rows = [prompt_token_ids(tokenizer, p, chat=chat, system=system)[0].tolist() for p in prompts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask


def check_temperature(temperature: Any, name: str = "temperature") -> float:
    """The sampling temperature as a float: finite and ≥ 0 (0 = greedy)."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {temperature!r}.") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{name} must be a finite number ≥ 0, got {temperature!r}; use 0 for greedy "
            "decoding or e.g. 0.7 to sample."
        )
    return value


def check_max_new_tokens(max_new_tokens: Any, name: str = "max_new_tokens") -> int:
    """The number of tokens to generate: an integer ≥ 1."""
    try:
        count = operator.index(max_new_tokens)
    except TypeError:
        count = None
    if count is None or isinstance(max_new_tokens, bool):
        raise ValueError(f"{name} must be an integer, got {max_new_tokens!r}.")
    if count < 1:
        raise ValueError(f"{name} must be ≥ 1, got {count}; ask for at least one token.")
    return count


def context_length(model) -> int | None:
    """Positions the model can attend over: TL `cfg.n_ctx`, HF `config.max_position_embeddings`
    (or `n_positions`); None when the model does not say."""
    if is_hooked_transformer(model):
        return model.cfg.n_ctx
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def check_fits_context(model, prompt_length: int, max_new_tokens: int) -> None:
    """Refuse prompt_length + max_new_tokens > the model's context (past it, positions break)."""
    n_ctx = context_length(model)
    total = prompt_length + max_new_tokens
    if n_ctx is None or total <= n_ctx:
        return
    room = n_ctx - prompt_length
    fix = (
        f"ask for at most {room} new tokens (or shorten the prompt)"
        if room >= 1
        else "shorten the prompt"
    )
    raise ValueError(
        f"prompt + max_new_tokens = {prompt_length} + {max_new_tokens} = {total} tokens, more "
        f"than the model's context of {n_ctx} tokens; {fix}."
    )


def check_device(device: str, name: str = "--device") -> torch.device:
    """`device` as a torch device that exists here (CUDA asked for on a machine without it: the fix)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name} {device!r} is not a torch device; use cpu, cuda or cuda:N."
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        why = (
            f"this torch build ({torch.__version__}) has no CUDA support"
            if torch.version.cuda is None
            else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
        )
        raise ValueError(
            f"{name} {device} asks for a CUDA GPU, but {why}; use --device cpu, or install a "
            "CUDA build of torch (https://pytorch.org/get-started/locally/)."
        )
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"{name} {device}: there are only {torch.cuda.device_count()} CUDA device(s) "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})."
        )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} {device}: MPS is not available here; use --device cpu.")
    return parsed


@torch.inference_mode()
def generate_ids_steered(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    code: SteeringCode | Intervention | None = None,
    alpha: float = 0.0,
    positions: str = "all",
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    use_cache: bool = True,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """New token ids [batch, ≤ max_new_tokens] for left-padded prompts; no code = plain generation.

    Rows that finish early are padded with `eos_token_id` (None: run all `max_new_tokens`).
    Bad options (see the module docstring) are a `ValueError` before anything runs.
    """
    temperature = check_temperature(temperature)
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    check_fits_context(model, input_ids.shape[1], max_new_tokens)
    torch.manual_seed(seed)
    context = steer(model, code, alpha, positions) if code is not None else contextlib.nullcontext()
    with context:
        if is_hooked_transformer(model):
            device = model.cfg.device
            out = model.generate(
                input_ids.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=max(temperature, 1e-5),
                use_past_kv_cache=use_cache,
                stop_at_eos=eos_token_id is not None,
                eos_token_id=eos_token_id,
                padding_side="left",
                verbose=False,
            )
        else:
            device = model.device
            sampling = (
                {"do_sample": True, "temperature": temperature}
                if temperature > 0
                else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            )
            out = model.generate(
                input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                use_cache=use_cache,
                eos_token_id=eos_token_id,
                pad_token_id=eos_token_id if eos_token_id is not None else 0,
                min_new_tokens=0 if eos_token_id is not None else max_new_tokens,
                **sampling,
            )
    return out[:, input_ids.shape[1] :].cpu()


def generate_steered(
    model,
    tokenizer: Any,
    prompts: Sequence[str],
    code: SteeringCode | Intervention | None = None,
    alpha: float = 0.0,
    positions: str = "all",
    chat: bool = False,
    system: str | None = None,
    stop_at_eos: bool = True,
    **kwargs: Any,
) -> list[str]:
    """Generate a continuation (or chat reply) of each prompt under `code` at `alpha`; new text only.

    kwargs: max_new_tokens, temperature, seed, use_cache (see `generate_ids_steered`).
    """
    ids, mask = batch_prompt_ids(tokenizer, prompts, chat=chat, system=system)
    eos = tokenizer.eos_token_id if stop_at_eos else None
    new = generate_ids_steered(model, ids, mask, code, alpha, positions, eos_token_id=eos, **kwargs)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]


# --------------------------------------------------------------------------- CLI options


@contextlib.contextmanager
def apply_steering_from_args(model, args: argparse.Namespace) -> Iterator[SteeringCode | None]:
    """Steer `model` as the parsed `add_steering_arguments` options say (no `--steer`: no-op)."""
    if not getattr(args, "steer", None):
        yield None
        return
    from saesteer.steer.io import load_code

    sae = None
    if getattr(args, "sae", None):
        from saesteer.sae.io import load_sae

        sae = load_sae(args.sae)
    code = load_code(args.steer, sae=sae)
    with steer(model, code, args.alpha, args.steer_positions):
        yield code
