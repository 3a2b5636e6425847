"""Activation sources: run a model on a token batch and return the requested hooks' activations.

A source is called as `source(tokens [B, L] int64) -> {hook: acts [B, L, d] float}` and never runs
the model past the last requested hook.

- `TransformerLensSource` (any `HookedTransformer` hook name with per-token activations):
  `run_with_hooks(..., stop_at_layer = 1 + last block index)` under `torch.inference_mode`, so it
  runs exactly the computation of `run_with_cache` up to that block and matches it bitwise.
- `HFResidualSource` (a Hugging Face decoder-only model with `.model.layers`, e.g. Llama/SmolLM2):
  only `blocks.{l}.hook_resid_pre` (input of decoder layer l) and `blocks.{l}.hook_resid_post`
  (output of decoder layer l) — the same tensors TransformerLens names, computed by the HF modules
  (equal to TransformerLens up to float rounding, ~1e-5 relative on SmolLM2). It runs a truncated
  view of the HF model (the first n layers, no final norm, no LM head) and reads its
  `hidden_states`: resid_pre l = hidden_states[l], resid_post l = hidden_states[l + 1]. It is faster
  than TransformerLens 3.9 on CPU, whose gated MLP copies its weights on every forward; on a CPU its
  float32 linears run through oneDNN on pre-packed weights (`packed_linear`, ~1.1×), and
  `compile_for(batch, length)` runs it through `torch.compile` (inductor): 3–7 % faster again
  after a one-time compile of ~10–25 s (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import copy
import re
import warnings
from collections import defaultdict
from typing import Any

import torch

from activations_cache import packed_linear as packed
from activations_cache.fingerprint import weights_sha256

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


SOURCE_ATTRIBUTES = ("hooks", "backend", "max_context", "weights_sha256", "describe")


class UnknownHookError(ValueError):
    """A requested hook does not exist on the model (the message lists the valid names)."""


def summarize_hook_names(names: list[str]) -> str:
    """Collapse `blocks.0.x … blocks.29.x` into `blocks.{0..29}.x` so a valid-name list stays short."""
    layers: dict[str, list[int]] = defaultdict(list)
    others = []
    for name in names:
        match = _BLOCK.match(name)
        if match:
            layers[name[match.end() :]].append(int(match.group(1)))
        else:
            others.append(name)
    collapsed = [f"blocks.{{{min(v)}..{max(v)}}}.{suffix}" for suffix, v in layers.items()]
    return ", ".join(others + collapsed)


def _check_hooks(hooks: list[str], valid: list[str], extra_hint: str = "") -> None:
    if not hooks:
        raise ValueError(
            "No hooks requested; pass at least one hook name (e.g. blocks.0.hook_resid_post)."
        )
    if len(set(hooks)) != len(hooks):
        raise ValueError(f"Duplicate hook names in {hooks}; list each hook once.")
    unknown = [h for h in hooks if h not in set(valid)]
    if unknown:
        raise UnknownHookError(
            f"Unknown hook(s) {unknown}. Valid hook names: {summarize_hook_names(valid)}.{extra_hint}"
        )


class _ModelSource:
    """What every model-backed source shares: its weights' checksum and a description for job.json."""

    backend: str
    model: Any
    max_context: int
    weights_module: torch.nn.Module  # whose state dict (under weight_prefixes) shapes the cache
    weight_prefixes: list[str] | None = None

    def extent(self) -> dict[str, Any]:
        """How far the forward runs (backend-specific)."""
        raise NotImplementedError

    def weights_sha256(self) -> str:
        return weights_sha256(self.weights_module, self.weight_prefixes)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model_class": type(self.model).__name__,
            **self.extent(),
            "n_ctx": self.max_context,
        }


class TransformerLensSource(_ModelSource):
    """Activations of any per-token hook of a TransformerLens `HookedTransformer`."""

    backend = "transformer_lens"

    def __init__(self, model: Any, hooks: list[str]):
        _check_hooks(hooks, list(model.hook_dict))
        self.model = model
        self.hooks = list(hooks)
        blocks = [int(m.group(1)) for h in hooks if (m := _BLOCK.match(h))]
        outside = [h for h in hooks if not _BLOCK.match(h)]
        embed_only = all(
            h.startswith("hook_embed") or h.startswith("hook_pos_embed") for h in outside
        )
        # stop_at_layer is exclusive: k runs blocks 0..k-1; 0 runs only the embedding.
        self.stop_at_layer = (max(blocks) + 1 if blocks else 0) if embed_only else None
        self.max_context = int(model.cfg.n_ctx)
        self.device = model.cfg.device
        self.weights_module = model
        if self.stop_at_layer is not None:  # only what the truncated forward runs shapes the cache
            blocks = (f"blocks.{i}." for i in range(self.stop_at_layer))
            self.weight_prefixes = ["embed.", "pos_embed.", *blocks]

    def __call__(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        store: dict[str, torch.Tensor] = {}

        def save(act: torch.Tensor, hook: Any) -> None:
            store[hook.name] = act

        with torch.inference_mode():
            self.model.run_with_hooks(
                tokens.to(self.device),
                fwd_hooks=[(h, save) for h in self.hooks],
                stop_at_layer=self.stop_at_layer,
            )
        return store

    def extent(self) -> dict[str, Any]:
        return {"stop_at_layer": self.stop_at_layer}


class HFResidualSource(_ModelSource):
    """`blocks.{l}.hook_resid_pre|post` of a Hugging Face decoder (`model.model.layers`), stopped early."""

    backend = "hf_residual"

    def __init__(self, model: Any, hooks: list[str], *, packed_linears: bool | None = None):
        """`packed_linears`: run float32 linears through oneDNN on pre-packed weights (see
        `packed_linear`); None = where it helps: a float32 model on the CPU with oneDNN."""
        base = getattr(model, "model", None)
        if base is None or not hasattr(base, "layers"):
            raise ValueError(
                f"{type(model).__name__} has no `.model.layers`; the HF fast path supports decoder "
                "models like Llama/SmolLM2. Pass a TransformerLens HookedTransformer instead."
            )
        n_layers = len(base.layers)
        valid = [f"blocks.{i}.hook_resid_{w}" for i in range(n_layers) for w in ("pre", "post")]
        _check_hooks(
            hooks,
            valid,
            " The Hugging Face fast path caches only the residual stream; "
            "use the TransformerLens backend for other hooks.",
        )
        self.model = model
        self.hooks = list(hooks)
        # hidden_states index of each hook: resid_pre l = input of layer l, resid_post l = its output
        self.index = {
            h: int(m.group(1)) + (m.group(2) == "post") for h in hooks if (m := _RESID.match(h))
        }
        self.n_run = max(self.index.values())
        self.view = _truncated_view(base, self.n_run)
        self.weights_module = self.view
        self.max_context = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        first = next(model.parameters())
        self.device = first.device
        if packed_linears is None:
            packed_linears = (
                first.device.type == "cpu" and first.dtype == torch.float32 and packed.available()
            )
        self.packed_linears = packed_linears
        self.runner = packed.with_packed_linears(self.view) if packed_linears else self.view
        self.compiled: Any = None
        self.static_shape: tuple[int, int] = (0, 0)
        self.compile_fallback = False

    def _run(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.runner(input_ids=tokens, use_cache=False, output_hidden_states=True)
        # inputs of the n_run layers, then the output of the last (the final norm is the identity)
        states = (*out.hidden_states[: self.n_run], out.last_hidden_state)
        return tuple(states[self.index[h]] for h in self.hooks)

    def compile_for(self, batch_size: int, context_len: int, *, fallback: bool = False) -> None:
        """Run batches of ≤ `batch_size` × `context_len` tokens through `torch.compile` (padded to
        one static shape, so it compiles once, at the first batch); other shapes (the width probe)
        stay eager. `fallback`: if compiling fails, warn and stay eager instead of raising."""
        self.compile_fallback = fallback
        if self.compiled is not None and self.static_shape == (batch_size, context_len):
            return  # already compiled for this shape (a source reused across caches)
        self.compiled = torch.compile(self._run, dynamic=False)
        self.static_shape = (batch_size, context_len)

    def _run_compiled(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = tokens.shape[0]
        padded = tokens.new_zeros(self.static_shape)  # the last, short batch: rows are independent
        padded[:n] = tokens
        try:
            return tuple(a[:n] for a in self.compiled(padded))
        except Exception as error:  # inductor needs a C++ compiler; any failure is at first use
            if not self.compile_fallback:
                raise
            warnings.warn(
                f"torch.compile of the forward failed ({type(error).__name__}: {error}); "
                "continuing with the eager forward (same values up to float rounding).",
                stacklevel=2,
            )
            self.compiled = None
            return self._run(tokens)

    def __call__(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = tokens.to(self.device)
        n, length = tokens.shape
        with torch.inference_mode():
            if self.compiled is None or n > self.static_shape[0] or length != self.static_shape[1]:
                acts = self._run(tokens)
            else:
                acts = self._run_compiled(tokens)
        return dict(zip(self.hooks, acts, strict=True))

    def extent(self) -> dict[str, Any]:
        return {
            "layers_run": self.n_run,
            "compiled": self.compiled is not None,
            "packed_linears": self.packed_linears,
        }


def _truncated_view(base: Any, n_layers: int) -> Any:
    """A shallow copy of the HF decoder `base` that shares its weights but runs only its first
    `n_layers` layers, with the final norm replaced by the identity (so the last hidden state is
    the residual stream after layer n_layers − 1)."""
    # Recent transformers record hidden_states by hooks it installs on the layers once per model, on
    # first use; install them on `base` now, so the view (a copy, flag included) never adds twins.
    with torch.inference_mode():
        first = next(base.parameters())
        base(
            input_ids=torch.zeros(1, 1, dtype=torch.long, device=first.device),
            output_hidden_states=True,
        )
    view = copy.copy(base)
    view._modules = dict(base._modules)
    view._modules["layers"] = base.layers[:n_layers]
    view._modules["norm"] = torch.nn.Identity()
    view.config = copy.deepcopy(base.config)
    view.config.num_hidden_layers = n_layers
    return view


def make_source(model: Any, hooks: list[str]) -> Any:
    """The source for `model`: itself if it is a source, else by type (HookedTransformer or HF decoder).

    A custom source is any object with the attributes in `SOURCE_ATTRIBUTES`: `hooks`, `backend`
    (str), `max_context` (int), `__call__(tokens [B, L]) -> {hook: [B, L, d]}`, `weights_sha256()`
    and `describe() -> dict`.
    """
    if all(hasattr(model, a) for a in SOURCE_ATTRIBUTES):  # a ready source (built-in or custom)
        if list(model.hooks) != list(hooks):
            raise ValueError(f"The source was built for hooks {model.hooks}, not {hooks}.")
        return model
    if hasattr(model, "hook_dict"):
        return TransformerLensSource(model, hooks)
    if hasattr(model, "config") and hasattr(getattr(model, "model", None), "layers"):
        return HFResidualSource(model, hooks)
    raise TypeError(
        f"Cannot cache activations of a {type(model).__name__}: pass a TransformerLens "
        "HookedTransformer, a Hugging Face decoder model (Llama-like), or an activation source."
    )
