"""Activation sources: run a model on a token batch and return the requested hooks' activations.

A source is called as `source(tokens [B, L] int64) -> {hook: acts [B, L, d] float}` and never runs
the model past the last requested hook.

- `TransformerLensSource` (any `HookedTransformer` hook name with per-token activations):
  `run_with_hooks(..., stop_at_layer = 1 + last block index)` under `torch.inference_mode`, so it
  runs exactly the computation of `run_with_cache` up to that block and matches it bitwise.
- `HFResidualSource` (a Hugging Face decoder-only model with `.model.layers`, e.g. Llama/SmolLM2):
  only `blocks.{l}.hook_resid_pre` (input of decoder layer l) and `blocks.{l}.hook_resid_post`
  (output of decoder layer l) — the same tensors TransformerLens names, computed by the HF modules
  (equal to TransformerLens up to float rounding, ~1e-5 relative on SmolLM2). A forward hook on the
  last needed layer stops the forward by raising, so later layers and the LM head never run. It is
  faster than TransformerLens 3.9 on CPU, whose gated MLP copies its weights on every forward.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import torch

from activations_cache.format import weights_sha256

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

    def extent(self) -> dict[str, Any]:
        """How far the forward runs (backend-specific)."""
        raise NotImplementedError

    def weights_sha256(self) -> str:
        return weights_sha256(self.model)

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


class _StopForward(Exception):
    """Raised by the last needed layer's hook to end the forward early."""


class HFResidualSource(_ModelSource):
    """`blocks.{l}.hook_resid_pre|post` of a Hugging Face decoder (`model.model.layers`), stopped early."""

    backend = "hf_residual"

    def __init__(self, model: Any, hooks: list[str]):
        base = getattr(model, "model", None)
        if base is None or not hasattr(base, "layers"):
            raise ValueError(
                f"{type(model).__name__} has no `.model.layers`; the HF fast path supports decoder "
                "models like Llama/SmolLM2. Pass a TransformerLens HookedTransformer instead."
            )
        self.model = model
        self.base = base
        self.layers = base.layers
        n_layers = len(self.layers)
        valid = [f"blocks.{i}.hook_resid_{w}" for i in range(n_layers) for w in ("pre", "post")]
        _check_hooks(
            hooks,
            valid,
            " The Hugging Face fast path caches only the residual stream; "
            "use the TransformerLens backend for other hooks.",
        )
        self.hooks = list(hooks)
        self.targets = [(h, int(m.group(1)), m.group(2)) for h in hooks if (m := _RESID.match(h))]
        self.last_layer = max(layer for _, layer, _ in self.targets)
        self.max_context = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self.device = next(model.parameters()).device

    def __call__(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        store: dict[str, torch.Tensor] = {}
        handles = []
        stop_after_pre = all(
            not (layer == self.last_layer and where == "post") for _, layer, where in self.targets
        )
        for name, layer, where in self.targets:
            stop = layer == self.last_layer and (where == "post" or stop_after_pre)
            module = self.layers[layer]
            if where == "pre":
                handles.append(
                    module.register_forward_pre_hook(self._pre(name, store, stop), with_kwargs=True)
                )
            else:
                handles.append(module.register_forward_hook(self._post(name, store, stop)))
        try:
            with torch.inference_mode():
                self.base(input_ids=tokens.to(self.device), use_cache=False)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return store

    @staticmethod
    def _pre(name: str, store: dict, stop: bool):
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            store[name] = args[0] if args else kwargs["hidden_states"]
            if stop:
                raise _StopForward

        return hook

    @staticmethod
    def _post(name: str, store: dict, stop: bool):
        def hook(module: Any, args: tuple, output: Any) -> None:
            store[name] = output[0] if isinstance(output, tuple) else output
            if stop:
                raise _StopForward

        return hook

    def extent(self) -> dict[str, Any]:
        return {"last_layer": self.last_layer}


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
