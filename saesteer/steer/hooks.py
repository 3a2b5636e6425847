"""`steer(model, code, alpha, positions)`: apply an intervention (or steering code) while a model runs.

Works on a TransformerLens `HookedTransformer` and on the Hugging Face model with the same weights
(hooks on decoder layer modules, which is much faster to generate with). Each edit's site is hooked
where `saesteer.steer.sites` says: a HookPoint or norm module (TL), a decoder layer or one of its
submodules (HF), e.g.

    blocks.{l}.hook_resid_pre   ↔  input of HF `layers[l]`    (forward pre-hook)
    blocks.{l}.hook_resid_post  ↔  output of HF `layers[l]`   (forward hook)

`positions` picks which token positions are edited: "all", "prompt" (the positions of the first
forward pass of a sequence, i.e. the padded prompt) or "generated" (every later position). Each
forward pass covers the absolute positions [offset, offset + n): offset is the KV cache's length
(TransformerLens: `past_kv_cache`; Hugging Face: the layer's `cache`), 0 without a cache. A pass with
offset 0 starts a new sequence whose prompt length is n, except that without a KV cache a pass
exactly one token longer than the previous one re-runs the same sequence (generation without cache).

An edit whose operator `observes` the block input (A-LQR's feedback at blocks.l.resid_post) also
gets the input of block l as the block read it (after any edits at blocks.l.resid_pre): TL stashes
it from `blocks.l.hook_resid_pre`, HF from the pre-hook on `layers[l]`.

Edits run in the activations' dtype on their device (each is moved once per dtype/device).
α must be finite: NaN or ±inf would make every steered activation NaN (garbage text, no error).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from saesteer.steer.codes import SteeringCode
from saesteer.steer.intervention import Edit, Intervention, as_intervention
from saesteer.steer.io import check_model
from saesteer.steer.options import POSITIONS
from saesteer.steer.sites import HF_MODULES, TL_MODULES, Site


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
    """Applies one `edit` at strength `alpha` to the selected positions of h [batch, pos, d]."""

    def __init__(self, edit: Edit, alpha: float, positions: str) -> None:
        self.edit, self.alpha = edit, float(alpha)
        self.tracker = PositionTracker(positions)
        self._placed: dict[tuple[torch.device, torch.dtype], Edit] = {}
        self.offset = 0
        self.observed: torch.Tensor | None = None  # the block input, for an observing operator

    @property
    def site(self) -> Site:
        return self.edit.site

    def placed(self, h: torch.Tensor) -> Edit:
        key = (h.device, h.dtype)
        if key not in self._placed:
            self._placed[key] = self.edit.to(h.device, h.dtype)
        return self._placed[key]

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        d_model = self.edit.operator.d_model
        if h.ndim != 3 or h.shape[-1] != d_model:
            raise ValueError(
                f"Steering expects activations [batch, pos, {d_model}] at "
                f"{self.edit.site.name}; got {tuple(h.shape)}."
            )
        chosen = self.tracker.select(self.offset, h.shape[1])
        if chosen.start == chosen.stop or self.alpha == 0:
            return h
        edit = self.placed(h)
        observed, self.observed = self.observed, None
        if edit.operator.observes is not None and (observed is None or observed.shape != h.shape):
            raise RuntimeError(
                f"The {edit.operator.kind} edit at {edit.site.name} did not see its block's input "
                "in this forward pass (was the block run from its output, e.g. start_at_layer "
                "past it?)."
            )
        if chosen == slice(0, h.shape[1]):
            return edit.apply(h, self.alpha, observed)
        out = h.clone()
        part = None if observed is None else observed[:, chosen]
        out[:, chosen] = edit.apply(h[:, chosen], self.alpha, part)
        return out

    def observe(self, x: torch.Tensor) -> None:
        self.observed = x


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
    model,
    code: SteeringCode | Intervention,
    alpha: float,
    positions: str = "all",
    model_name: str | None = None,
) -> Iterator[None]:
    """Inside the block, `model` (TransformerLens or Hugging Face) runs with `code` applied.

    `code` is an `Intervention` or a steering code (its one-edit intervention): at each edit's site,
    h' = edit(h, alpha) on the chosen `positions`. Checks first that alpha is finite and the
    intervention fits the model (width, layers, and name; pass `model_name` to check a Hugging Face
    model's name).
    """
    alpha = check_alpha(alpha)
    if getattr(code, "weight_edit", False):  # a WeightEdit (Steer2Edit): in the weights, not hooks
        with code.applied(model, alpha, positions, model_name):
            yield
        return
    if getattr(code, "controller", False):  # a Guiding Giants controller: steer.controlled
        with code.attached(model, alpha, positions, model_name):
            yield
        return
    check_model(code, model, model_name)
    editors = [_Editor(edit, alpha, positions) for edit in as_intervention(code).edits]
    if is_hooked_transformer(model):
        with _tl_hooks(model, editors, positions != "all"):
            yield
    else:
        with _hf_hooks(model, editors):
            yield


class _Recorder:
    """Keeps a detached copy of every activation h [batch, pos, d] seen at `site`; edits nothing."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.offset = 0
        self.seen: list[torch.Tensor] = []

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        self.seen.append(h.detach())
        return h


@contextlib.contextmanager
def record(model, sites: list[Site]) -> Iterator[dict[Site, list[torch.Tensor]]]:
    """Inside the block, each forward pass appends the activation at every site to `seen[site]`
    (TransformerLens or Hugging Face, hooked exactly where `steer` edits). Entered inside a
    `steer(...)` block it records the activations after that block's edits at the same site."""
    recorders = [_Recorder(site) for site in sites]
    hooks = (
        _tl_hooks(model, recorders, False)
        if is_hooked_transformer(model)
        else _hf_hooks(model, recorders)
    )
    with hooks:
        yield {r.site: r.seen for r in recorders}


def _observers(editors: list) -> list:
    """The editors whose operator reads the block input (none for recorders)."""
    return [e for e in editors if getattr(e, "edit", None) and e.edit.operator.observes]


def _stash_output(editor):
    """A forward hook handing a module's output (the block input) to an observing editor."""

    def hook(module, args, output):
        editor.observe(output)

    return hook


def _edit_output(editor):
    """A forward hook that edits a module's output (the first element of a tuple output)."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (editor(output[0]), *output[1:])
        return editor(output)

    return hook


@contextlib.contextmanager
def _tl_hooks(model, editors: list, track_offsets: bool) -> Iterator[None]:
    """Torch forward hooks on the HookPoints, or on the ln1/ln2 modules for norm sites (TL's
    reset_hooks leaves them alone; we remove them).

    To know positions under a KV cache, `model.forward` is wrapped for the duration of the block.
    """
    handles = []
    for editor in editors:
        site = editor.site
        module = (
            model.hook_dict[site.tl_hook]
            if site.tl_hook is not None
            else getattr(model.blocks[site.layer], TL_MODULES[site.stream])
        )
        handles.append(module.register_forward_hook(_edit_output(editor)))
    for editor in _observers(editors):
        stash = model.hook_dict[f"blocks.{editor.site.layer}.hook_resid_pre"]
        handles.append(stash.register_forward_hook(_stash_output(editor)))
    if track_offsets:
        forward = model.forward

        def forward_with_offset(*args, **kwargs):
            cache = kwargs.get("past_kv_cache")
            offset = cache[0].past_keys.shape[1] if cache is not None else 0
            for editor in editors:
                editor.offset = offset
            return forward(*args, **kwargs)

        model.forward = forward_with_offset
    try:
        yield
    finally:
        for handle in handles:
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
def _hf_hooks(model, editors: list) -> Iterator[None]:
    """Per steered layer l, a pre-hook on `layers[l]` that reads the KV cache's length (and edits
    the input for resid_pre sites); a forward hook on `layers[l]` (resid_post) or on its norm,
    attention or MLP module edits that output."""
    layers = hf_decoder_layers(model)
    by_layer: dict[int, list] = {}
    for editor in editors:
        by_layer.setdefault(editor.site.layer, []).append(editor)
    handles = []
    for index, here in by_layer.items():
        handles.append(
            layers[index].register_forward_pre_hook(_hf_pre_hook(index, here), with_kwargs=True)
        )
        for editor in here:
            stream = editor.site.stream
            if stream == "resid_pre":
                continue
            module = (
                layers[index]
                if stream == "resid_post"
                else getattr(layers[index], HF_MODULES[stream])
            )
            handles.append(module.register_forward_hook(_edit_output(editor)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hf_pre_hook(layer_index: int, editors: list):
    """Sets the editors' offset from the layer's KV cache; edits the layer input (resid_pre) and
    hands it to the editors that observe it."""
    inputs = [e for e in editors if e.site.stream == "resid_pre"]
    observers = _observers(editors)

    def pre_hook(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        offset = cache.get_seq_length(layer_index) if cache is not None else 0
        for editor in editors:
            editor.offset = offset
        if not inputs and not observers:
            return None
        h = args[0] if args else kwargs["hidden_states"]
        for editor in inputs:
            h = editor(h)
        for editor in observers:
            editor.observe(h)
        if not inputs:
            return None
        if args:
            return (h, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}

    return pre_hook
