"""The Guiding Giants controller at run time: a small MLP decides how much, and at which layers, to steer.

After "Guiding Giants" (Amr-Hegazy1/GuidingGiantsWAS; /work/shared/research/seed_methods.md §8),
written from the method's description; no code is shared. The fit is in
`saesteer.steer.methods.controller`. Notation: L_in the input layers, P the patched layers (sorted),
d_l [d_model] the steering direction of patched layer l, h_l the residual stream after block l
(blocks.l.hook_resid_post, HF output of layers[l]).

Reading. x = concat_{l ∈ L_in} h_l(t*) [|L_in|·d], the input layers' outputs at one token t*,
standardised by the training features' mean and std (stored), then

    (s, w) = W₂ · relu(W₁ · (x − μ)/σ + b₁) + b₂,        s a scalar, w [|P|] per-layer logits
    scale  = max(s, 0)  (controller_scale "relu", ours)  |  s  ("logit", the paper's raw logit)

Patch, at every patched layer l ∈ P and every patched position t:

    h_l(t) ← h_l(t) + α · scale · σ(w_l) · d_l              α = 0 or scale = 0: the identity

Timing (`Controller.timing`):
  - "prefill" (default, ours): t* = the prompt's last token, read by an unpatched pre-pass of the
    prompt (run without KV cache just before the sequence's first forward pass), and the same
    (s, w) patch, at every patched layer, the prompt's last token (whose output is the first
    generated token) and every later position. A pass that continues a sequence without KV cache
    (one token longer than the last) re-uses the stored values, so greedy text is the same with and
    without cache. The pre-pass costs one extra prompt forward per sequence.
  - "same-pass" (the reference, for comparison): each patched position t reads its own
    t* = t in the same forward pass. (s, w) only exist once the last input layer has run, so the
    patched layers below it are never patched: with the default input layers (the last four) only
    the final block is. That is the reference's flaw, kept to measure it.

Positions. A controller always patches the prompt's last token and the positions after it (`steer`'s
"generated" or "all" mean that; "prompt" is refused: the reading is only known at the prompt's end). Prompt and
generated positions are told apart as `saesteer.steer.hooks.PositionTracker` does (the first pass
of a sequence is the prompt, left padding assumed in a batch). To score whole sequences (prompt +
completion in one pass, right-padded), enter `controller.scoring(prompt_lengths)` inside the
`steer(...)` block: row b's prompt is its first prompt_lengths[b] tokens; in "prefill" timing each
forward then runs twice, once unpatched to read (s, w) at prompt_lengths[b] − 1 and once patched
from that position on.

Saved as a folder (`save_controller`, reached through `saesteer.steer.io.save_code`):
    code.safetensors   net.* (the MLP and the feature mean/std), directions [|P|, d_model]
    code.json          format, method, model_name, d_model, n_layers, input_layers, patched_layers,
                       hidden, timing, scale, meta
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from saesteer.steer.sites import Site

FORMAT = "saesteer-controller/1"
METHOD = "controller"
TIMINGS = ("prefill", "same-pass")
SCALES = ("relu", "logit")


class ControllerNet(nn.Module):
    """x [..., n_in] → [..., 1 + n_patched]: standardise, Linear, ReLU, Linear."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1((x - self.mean) / self.std)))


def _layer_list(layers: Sequence[int], what: str) -> tuple[int, ...]:
    out = tuple(sorted({int(layer) for layer in layers}))
    if not out or out[0] < 0:
        raise ValueError(
            f"The controller's {what} must be a non-empty set of layers ≥ 0, got {layers}."
        )
    return out


class Controller:
    """A trained controller (module docstring): the MLP, its layers, directions and timing."""

    method = METHOD
    controller = True  # what `steer`, `save_code` dispatch on

    def __init__(
        self,
        net: ControllerNet,
        input_layers: Sequence[int],
        patched_layers: Sequence[int],
        directions: torch.Tensor,
        model_name: str,
        n_layers: int,
        timing: str = "prefill",
        scale: str = "relu",
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.input_layers = _layer_list(input_layers, "input layers")
        self.patched_layers = _layer_list(patched_layers, "patched layers")
        if timing not in TIMINGS:
            raise ValueError(f"controller timing must be one of {TIMINGS}, got {timing!r}.")
        if scale not in SCALES:
            raise ValueError(f"controller scale must be one of {SCALES}, got {scale!r}.")
        if directions.ndim != 2 or directions.shape[0] != len(self.patched_layers):
            raise ValueError(
                f"The controller needs one direction per patched layer ({len(self.patched_layers)}"
                f" × d_model), got shape {tuple(directions.shape)}."
            )
        d_model = int(directions.shape[1])
        n_in, n_out = net.fc1.in_features, net.fc2.out_features
        if n_in != len(self.input_layers) * d_model or n_out != 1 + len(self.patched_layers):
            raise ValueError(
                f"The controller's MLP maps {n_in} → {n_out}, but {len(self.input_layers)} input "
                f"layers of width {d_model} and {len(self.patched_layers)} patched layers need "
                f"{len(self.input_layers) * d_model} → {1 + len(self.patched_layers)}."
            )
        top = max(self.input_layers[-1], self.patched_layers[-1])
        if top >= n_layers:
            raise ValueError(
                f"The controller uses layer {top}, but its model has only {n_layers} layers."
            )
        self.net = net.eval()
        self.directions = directions.detach().float()
        self.model_name, self.n_layers, self.d_model = model_name, int(n_layers), d_model
        self.timing, self.scale = timing, scale
        self.meta = dict(meta or {})
        self.prompt_lengths: torch.Tensor | None = None

    # ------------------------------------------------------------------ facts

    @property
    def sites(self) -> list[Site]:
        """The resid_post sites it reads or patches."""
        layers = sorted(set(self.input_layers) | set(self.patched_layers))
        return [Site(layer, "resid_post") for layer in layers]

    @property
    def hook_name(self) -> str:
        return ", ".join(site.name for site in self.sites)

    @property
    def hidden(self) -> int:
        return self.net.fc1.out_features

    def describe(self) -> str:
        return (
            f"a controller for {self.model_name or 'an unnamed model'!r} ({self.n_layers} layers, "
            f"d_model {self.d_model}; reads layers {list(self.input_layers)}, patches "
            f"{list(self.patched_layers)})"
        )

    def check_model(self, model, model_name: str | None = None) -> None:
        """`CodeMismatchError` (a ValueError) naming both unless `model` has this controller's
        layer count, width and (when both are known) name."""
        from saesteer.steer.io import CodeMismatchError, model_facts

        name, d_model, n_layers = model_facts(model)
        name = model_name or name
        problems = []
        if name and self.model_name and name != self.model_name:
            problems.append(f"name {name!r}")
        if d_model != self.d_model:
            problems.append(f"d_model {d_model}")
        if n_layers != self.n_layers:
            problems.append(f"{n_layers} layers")
        if problems:
            raise CodeMismatchError(
                f"This is {self.describe()}, but the model has {', '.join(problems)}: it was made "
                "for another model; train a controller for this one."
            )

    # ------------------------------------------------------------------ the MLP

    def outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s [...], w [..., |P|]) raw outputs for features [..., |L_in|·d]."""
        out = self.net(features.float())
        return out[..., 0], out[..., 1:]

    def strength(self, s: torch.Tensor) -> torch.Tensor:
        return torch.relu(s) if self.scale == "relu" else s

    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale [...], σ(w) [..., |P|]) for features [..., |L_in|·d]."""
        s, w = self.outputs(features)
        return self.strength(s), torch.sigmoid(w)

    def features(self, readings: dict[int, torch.Tensor]) -> torch.Tensor:
        """concat over the input layers (ascending) of readings[l] [..., d] → [..., |L_in|·d]."""
        return torch.cat([readings[layer].float() for layer in self.input_layers], dim=-1)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Controller:
        """A copy on `device` (the MLP always runs in float32; patches are cast to h's dtype)."""
        moved = copy.copy(self)
        moved.net = copy.deepcopy(self.net).to(device)
        moved.directions = self.directions.to(device)
        return moved

    def attached(self, model, alpha: float, positions: str = "all", model_name: str | None = None):
        """`steer(model, self, α)`: see `attach`."""
        return attach(model, self, alpha, positions, model_name)

    @contextlib.contextmanager
    def scoring(self, prompt_lengths: torch.Tensor | Sequence[int]) -> Iterator[None]:
        """Whole-sequence passes inside this block: row b's prompt is its first prompt_lengths[b]
        tokens (module docstring, "Positions")."""
        lengths = torch.as_tensor(prompt_lengths, dtype=torch.long).reshape(-1)
        if lengths.numel() == 0 or int(lengths.min()) < 1:
            raise ValueError(f"prompt_lengths must be ≥ 1 per row, got {lengths.tolist()}.")
        before, self.prompt_lengths = self.prompt_lengths, lengths
        try:
            yield
        finally:
            self.prompt_lengths = before


def patch(
    h: torch.Tensor, direction: torch.Tensor, alpha: float, coef: torch.Tensor
) -> torch.Tensor:
    """h + α · coef[..., None] · d: h [B, n, d], coef [B, n] (scale · σ(w_l), 0 where unpatched)."""
    delta = alpha * coef[..., None].float() * direction.float()
    return h + delta.to(h.dtype)


# --------------------------------------------------------------------------- the runtime


class _Run:
    """The state of one `steer(model, controller, α)` block (module docstring)."""

    def __init__(self, controller: Controller, alpha: float) -> None:
        from saesteer.steer.hooks import PositionTracker

        self.base = controller
        self.ctl = controller
        self.alpha = float(alpha)
        self.tracker = PositionTracker("generated")
        self.index = {layer: j for j, layer in enumerate(controller.patched_layers)}
        self.last_input = controller.input_layers[-1]
        self.nested = False  # inside the unpatched reading pass of `scoring`
        self.offset = 0
        self.ready = False
        self.values: tuple[torch.Tensor, torch.Tensor] | None = None  # prefill (scale, σ(w))
        self.pass_values: tuple[torch.Tensor, torch.Tensor] | None = None
        self.read_at: torch.Tensor | None = None  # [B, m] positions read in this pass
        self.coef_rows: torch.Tensor | None = None  # [B, n] bool, positions patched in this pass
        self.readings: dict[int, torch.Tensor] = {}

    def begin(self, offset: int, n: int, rerun=None) -> None:
        """A forward pass of `n` positions starts at absolute position `offset`; `rerun()` runs it
        again unpatched and without KV cache (the prefill pre-read)."""
        self.offset, self.ready, self.readings, self.pass_values = offset, False, {}, None
        if self.nested or self.base.timing != "prefill":
            return
        scoring = self.base.prompt_lengths is not None
        if scoring or (offset == 0 and self.starts_sequence(n)):
            if rerun is None:
                raise ValueError("This model kind cannot re-run a pass for the controller's read.")
            self.values = None
            self.nested = True
            try:
                with torch.no_grad():
                    rerun()
            finally:
                self.nested = False
            self.offset, self.ready, self.readings = offset, False, {}

    def starts_sequence(self, n: int) -> bool:
        """Whether a pass of n positions at offset 0 is a new prompt (not a cache-less re-run of
        the current sequence one token longer): the rule of `PositionTracker.select`."""
        t = self.tracker
        return t.prompt_length is None or t.continued_with_cache or n != t.last_length + 1

    def _setup(self, h: torch.Tensor) -> None:
        """At the pass's first hooked layer: which positions are read and which are patched."""
        batch, n = h.shape[0], h.shape[1]
        device = h.device
        if self.ctl.directions.device != device:
            self.ctl = self.base.to(device)
        positions = torch.arange(n, device=device)
        self.read_at, self.coef_rows = None, None
        lengths = self.base.prompt_lengths
        if lengths is not None:
            if self.offset != 0:
                raise ValueError(
                    "controller.scoring(prompt_lengths) scores whole sequences in one pass; it "
                    "cannot be used with a KV cache (generate outside the scoring block)."
                )
            if lengths.numel() != batch:
                raise ValueError(
                    f"controller.scoring got {lengths.numel()} prompt lengths for a batch of {batch}."
                )
            lengths = lengths.to(device)
            patched = positions[None] >= lengths[:, None] - 1
            if self.base.timing == "prefill":
                if self.nested:
                    self.read_at = (lengths.clamp(max=n) - 1)[:, None]
                else:
                    self.coef_rows = patched
            else:
                self.read_at = positions[None].expand(batch, n)
                self.coef_rows = patched
            return
        if self.nested:  # the prefill pre-read of a new prompt: read its last token, patch nothing
            self.read_at = torch.full((batch, 1), n - 1, device=device)
            return
        chosen = self.tracker.select(self.offset, n)
        rows = torch.zeros(batch, n, dtype=torch.bool, device=device)
        rows[:, chosen] = True
        if self.base.timing == "prefill":  # the prompt's last token too, when in this pass
            last = self.tracker.prompt_length - 1 - self.offset
            if 0 <= last < n:
                rows[:, last] = True
        if not rows.any():  # a same-pass prompt pass
            return
        self.coef_rows = rows
        if self.base.timing == "same-pass":
            self.read_at = positions[None].expand(batch, n)
        elif self.values is not None and self.values[0].shape[0] != batch:
            raise ValueError(
                f"The controller read {self.values[0].shape[0]} prompts at prefill but this pass "
                f"has {batch} rows (beam search or a changed batch is not supported)."
            )

    def __call__(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        if h.ndim != 3 or h.shape[-1] != self.base.d_model:
            raise ValueError(
                f"The controller expects activations [batch, pos, {self.base.d_model}] at "
                f"blocks.{layer}.resid_post; got {tuple(h.shape)}."
            )
        if not self.ready:
            self._setup(h)
            self.ready = True
        if self.read_at is not None and layer in self.base.input_layers:
            index = self.read_at[..., None].expand(-1, -1, h.shape[-1])
            self.readings[layer] = h.detach().gather(1, index)
            if layer == self.last_input:
                with torch.no_grad():
                    values = self.ctl.predict(self.ctl.features(self.readings))
                if self.base.timing == "prefill":
                    self.values = values
                else:
                    self.pass_values = values
        if self.nested or self.alpha == 0 or self.coef_rows is None or layer not in self.index:
            return h
        values = self.values if self.base.timing == "prefill" else self.pass_values
        if values is None:  # same-pass below the last input layer (the flaw), or no prefill seen
            return h
        scale, gates = values
        j = self.index[layer]
        coef = (scale * gates[..., j]).to(h.device)  # [B, 1] prefill, [B, n] same-pass
        if coef.shape[1] == 1:
            coef = coef.expand(-1, h.shape[1])
        coef = coef * self.coef_rows
        return patch(h, self.ctl.directions[j], self.alpha, coef)


def _output_hook(run: _Run, layer: int):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (run(layer, output[0]), *output[1:])
        return run(layer, output)

    return hook


@contextlib.contextmanager
def attach(
    model,
    controller: Controller,
    alpha: float,
    positions: str = "all",
    model_name: str | None = None,
) -> Iterator[None]:
    """`steer(model, controller, α)`: the controller's hooks on a TransformerLens or Hugging Face
    model for the duration of the block (module docstring)."""
    from saesteer.steer.hooks import check_alpha, hf_decoder_layers, is_hooked_transformer

    alpha = check_alpha(alpha)
    if positions == "prompt":
        raise ValueError(
            "A controller patches the generated positions (it reads the prompt's end first); "
            "use positions='generated' or 'all'."
        )
    if positions not in ("all", "generated"):
        raise ValueError(
            f"positions must be 'all' or 'generated' for a controller, got {positions!r}."
        )
    controller.check_model(model, model_name)
    run = _Run(controller, alpha)
    layers = sorted(set(controller.input_layers) | set(controller.patched_layers))
    handles = []
    if is_hooked_transformer(model):
        for layer in layers:
            point = model.hook_dict[f"blocks.{layer}.hook_resid_post"]
            handles.append(point.register_forward_hook(_output_hook(run, layer)))
        forward = model.forward

        def forward_with_offset(*args, **kwargs):
            cache = kwargs.get("past_kv_cache")
            offset = cache[0].past_keys.shape[1] if cache is not None else 0
            tokens = args[0] if args else kwargs.get("input")
            # tokens [B, n] or, from TL's generate (start_at_layer=0), embeddings [B, n, d]
            n = tokens.shape[1] if isinstance(tokens, torch.Tensor) and tokens.ndim >= 2 else 0
            plain = {k: v for k, v in kwargs.items() if k != "past_kv_cache"}
            run.begin(offset, n, lambda: forward(*args, **plain))
            return forward(*args, **kwargs)

        model.forward = forward_with_offset
    else:
        decoder_layers = hf_decoder_layers(model)
        for layer in layers:
            handles.append(decoder_layers[layer].register_forward_hook(_output_hook(run, layer)))

        def pre_hook(module, args, kwargs):
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            offset = cache.get_seq_length() if cache is not None else 0
            tokens = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
            n = tokens.shape[1] if isinstance(tokens, torch.Tensor) else 0
            plain = {
                **{k: v for k, v in kwargs.items() if k not in ("past_key_values", "cache")},
                "use_cache": False,
            }
            run.begin(offset, n, None if run.nested else lambda: module(*args, **plain))

        handles.append(model.register_forward_pre_hook(pre_hook, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        if is_hooked_transformer(model):
            del model.forward


# --------------------------------------------------------------------------- saving


def save_controller(controller: Controller, path: str | Path) -> Path:
    """Write the controller folder (module docstring); weights first, code.json last."""
    from saesteer.steer.io import _write_folder

    tensors = {f"net.{k}": t for k, t in controller.net.state_dict().items()}
    tensors["directions"] = controller.directions
    record = {
        "format": FORMAT,
        "method": METHOD,
        "model_name": controller.model_name,
        "d_model": controller.d_model,
        "n_layers": controller.n_layers,
        "input_layers": list(controller.input_layers),
        "patched_layers": list(controller.patched_layers),
        "hidden": controller.hidden,
        "timing": controller.timing,
        "scale": controller.scale,
        "meta": controller.meta,
    }
    return _write_folder(Path(path), tensors, record)


def load_controller(path: str | Path) -> Controller:
    """Rebuild a controller saved by `save_controller` (damage is a `CodeFormatError`)."""
    from saesteer.steer.io import (
        DAMAGED,
        META_FILE,
        CodeFormatError,
        _read_json_record,
        read_code_tensors,
    )

    record = _read_json_record(path)
    where = Path(path) / META_FILE
    fields = ("model_name", "d_model", "n_layers", "input_layers", "patched_layers", "hidden")
    missing = [key for key in (*fields, "timing", "scale") if key not in record]
    if missing:
        raise CodeFormatError(f"{where} lacks the field(s) {missing}; {DAMAGED}.")
    names = ("directions", "net.fc1.weight", "net.fc1.bias", "net.fc2.weight", "net.fc2.bias")
    tensors = read_code_tensors(path, (*names, "net.mean", "net.std"))
    try:
        d_model, hidden = int(record["d_model"]), int(record["hidden"])
        n_in = len(record["input_layers"]) * d_model
        net = ControllerNet(n_in, hidden, 1 + len(record["patched_layers"]))
        net.load_state_dict({k[4:]: t for k, t in tensors.items() if k.startswith("net.")})
        controller = Controller(
            net,
            record["input_layers"],
            record["patched_layers"],
            tensors["directions"],
            str(record["model_name"]),
            int(record["n_layers"]),
            record["timing"],
            record["scale"],
            record.get("meta") or {},
        )
    except (ValueError, TypeError, RuntimeError, KeyError) as error:
        raise CodeFormatError(f"{where}: {error} ({DAMAGED})") from None
    if controller.d_model != d_model:
        raise CodeFormatError(f"{where}: d_model {d_model} ≠ the directions' width; {DAMAGED}.")
    return controller


def with_timing(controller: Controller, timing: str) -> Controller:
    """The same controller with another timing ("prefill" | "same-pass"), e.g. to compare."""
    if timing not in TIMINGS:
        raise ValueError(f"controller timing must be one of {TIMINGS}, got {timing!r}.")
    changed = copy.copy(controller)
    changed.timing = timing
    return changed
