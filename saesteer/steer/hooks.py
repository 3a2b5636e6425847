"""`steer(model, code, alpha, positions)`: apply a steering code while a model runs.

Works on a TransformerLens `HookedTransformer` (hook at `code.hook_name`) and on the Hugging Face
model with the same weights (a hook on decoder layer l, which is much faster to generate with):

    blocks.{l}.hook_resid_pre   ↔  input of HF `layers[l]`    (forward pre-hook)
    blocks.{l}.hook_resid_post  ↔  output of HF `layers[l]`   (forward hook)

`positions` picks which token positions are edited: "all", "prompt" (the positions of the first
forward pass of a sequence, i.e. the padded prompt) or "generated" (every later position). Each
forward pass covers the absolute positions [offset, offset + n): offset is the KV cache's length
(TransformerLens: `past_kv_cache`; Hugging Face: the layer's `cache`), 0 without a cache. A pass with
offset 0 starts a new sequence whose prompt length is n, except that without a KV cache a pass
exactly one token longer than the previous one re-runs the same sequence (generation without cache).

The edit runs in the activations' dtype on their device (the code is moved once per dtype/device).
α must be finite: NaN or ±inf would make every steered activation NaN (garbage text, no error).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from saesteer.hook_names import parse_hook_name
from saesteer.steer.codes import SteeringCode
from saesteer.steer.io import check_model
from saesteer.steer.options import POSITIONS


class PositionTracker:
    """Turns (offset, n) of each forward pass into the slice of positions to edit (see module doc)."""

    def __init__(self, positions: str) -> None:
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}.")
        self.positions = positions
        self.prompt_length: int | None = None
        self.last_length = 0
        self.continued_with_cache = False

    def select(self, offset: int, n: int) -> slice:
        """Local slice [start, stop) of this pass's n positions that the code edits."""
        if self.positions == "all":
            return slice(0, n)
        if offset > 0:
            self.continued_with_cache = True
            if self.prompt_length is None:  # entered mid-sequence: what came before was prompt
                self.prompt_length = offset
        elif self.prompt_length is None or self.continued_with_cache or n != self.last_length + 1:
            self.prompt_length, self.continued_with_cache = n, False
        self.last_length = offset + n
        boundary = min(max(self.prompt_length - offset, 0), n)
        return slice(0, boundary) if self.positions == "prompt" else slice(boundary, n)


class _Editor:
    """Applies `code` at strength `alpha` to the selected positions of h [batch, pos, d]."""

    def __init__(self, code: SteeringCode, alpha: float, positions: str) -> None:
        self.code, self.alpha = code, float(alpha)
        self.tracker = PositionTracker(positions)
        self._placed: dict[tuple[torch.device, torch.dtype], SteeringCode] = {}
        self.offset = 0

    def placed(self, h: torch.Tensor) -> SteeringCode:
        key = (h.device, h.dtype)
        if key not in self._placed:
            self._placed[key] = self.code.to(h.device, h.dtype)
        return self._placed[key]

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if h.ndim != 3 or h.shape[-1] != self.code.d_model:
            raise ValueError(
                f"Steering expects activations [batch, pos, {self.code.d_model}] at "
                f"{self.code.hook_name}; got {tuple(h.shape)}."
            )
        chosen = self.tracker.select(self.offset, h.shape[1])
        if chosen.start == chosen.stop:
            return h
        code = self.placed(h)
        if chosen == slice(0, h.shape[1]):
            return code.apply(h, self.alpha)
        out = h.clone()
        out[:, chosen] = code.apply(h[:, chosen], self.alpha)
        return out


def check_alpha(alpha: Any, name: str = "alpha") -> float:
    """α as a float, refusing what is not a finite number (`name`: how the caller spells it)."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {alpha!r}.") from None
    if not math.isfinite(value):
        raise ValueError(
            f"{name} must be a finite number, got {alpha!r}: NaN or infinite strength turns every "
            "steered activation into NaN. Use e.g. 2.0 (sign = direction, 0 = off)."
        )
    return value


def is_hooked_transformer(model) -> bool:
    return hasattr(model, "hook_dict") and hasattr(model, "cfg")


@contextlib.contextmanager
def steer(
    model, code: SteeringCode, alpha: float, positions: str = "all", model_name: str | None = None
) -> Iterator[None]:
    """Inside the block, `model` (TransformerLens or Hugging Face) runs with `code` applied.

    h' = code.apply(h, alpha) at `code.hook_name` on the chosen `positions`. Checks first that alpha
    is finite and the code fits the model (width, layer, and name; pass `model_name` to check a
    Hugging Face model's name).
    """
    alpha = check_alpha(alpha)
    check_model(code, model, model_name)
    editor = _Editor(code, alpha, positions)
    if is_hooked_transformer(model):
        with _tl_hooks(model, editor, positions != "all"):
            yield
    else:
        with _hf_hooks(model, editor):
            yield


@contextlib.contextmanager
def _tl_hooks(model, editor: _Editor, track_offsets: bool) -> Iterator[None]:
    """A torch forward hook on the HookPoint (TL's reset_hooks leaves it alone; we remove it).

    To know positions under a KV cache, `model.forward` is wrapped for the duration of the block.
    """
    hook_point = model.hook_dict[editor.code.hook_name]
    handle = hook_point.register_forward_hook(lambda module, args, output: editor(output))
    if track_offsets:
        forward = model.forward

        def forward_with_offset(*args, **kwargs):
            cache = kwargs.get("past_kv_cache")
            editor.offset = cache[0].past_keys.shape[1] if cache is not None else 0
            return forward(*args, **kwargs)

        model.forward = forward_with_offset
    try:
        yield
    finally:
        handle.remove()
        if track_offsets:
            del model.forward  # the instance attribute; the class's forward is back


def hf_decoder_layers(model):
    """The decoder layers (`nn.ModuleList`) of a Hugging Face causal LM."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(
            f"Cannot find the decoder layers of {type(model).__name__}; steering of "
            "Hugging Face models supports Llama-style models (model.model.layers)."
        )
    return layers


@contextlib.contextmanager
def _hf_hooks(model, editor: _Editor) -> Iterator[None]:
    """Pre-hook on layer l (reads the cache offset; edits the input for hook_resid_pre) and, for
    hook_resid_post, a forward hook that edits the layer's output."""
    layer_index, where = parse_hook_name(editor.code.hook_name)
    layer = hf_decoder_layers(model)[layer_index]

    def pre_hook(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        editor.offset = cache.get_seq_length(layer_index) if cache is not None else 0
        if where == "post":
            return None
        if args:
            return (editor(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": editor(kwargs["hidden_states"])}

    def post_hook(module, args, output):
        if isinstance(output, tuple):
            return (editor(output[0]), *output[1:])
        return editor(output)

    handles = [layer.register_forward_pre_hook(pre_hook, with_kwargs=True)]
    if where == "post":
        handles.append(layer.register_forward_hook(post_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
