"""`WeightEdit`: sparse rank-1 edits of o_proj and down_proj columns (what Steer2Edit returns).

An edit is kept as its factors, never as a whole model. Per layer l (notation of
`saesteer.steer.methods.steer2edit`; W_O,j [d_model, d_head] is head j's block of o_proj, W_down
[d_model, d_mlp] the MLP's down projection, v̂ unit directions, α the steering strength):

    heads    j ∈ H_l:   W_O,j   ← W_O,j   + α λ_j v̂_attn k̂_jᵀ          (k̂_j [d_head] unit)
    neurons  i ∈ N_l:   W_down[:, i] ← W_down[:, i] + α λ_i σ_i v̂_mlp    (σ_i = ±1)

α = 0 is the identity, α = 1 the method's edit, α < 0 the opposite edit. In a TransformerLens model
the same numbers sit transposed: W_O,j = `blocks[l].attn.W_O[j]`ᵀ ([d_head, d_model]) and
W_down[:, i] = `blocks[l].mlp.W_out[i]`; in a Hugging Face (Llama-style) model W_O,j =
`layers[l].self_attn.o_proj.weight[:, j·d_head:(j+1)·d_head]` and W_down = `layers[l].mlp
.down_proj.weight`. Both get bit-identical edited weights from the same edit.

Apply / revert. `apply_weight_edit(model, edit, α)` (and `steer(model, edit, α)`, which dispatches
here) is a context manager: it copies every column it is about to touch, adds the edit in place,
and on exit (normal or by an exception) writes the copies back, so the model's weights are restored
bit for bit (no subtraction, no rounding drift). The edit must match the model's architecture
(layers, d_model, heads, d_head, d_mlp) and, when both are known, its name: otherwise a
`CodeMismatchError` (a ValueError) naming both, raised before any weight changes.

Folder (same file names as every steering code, so `load_code` tells them apart by `format`):
    code.safetensors   per edited layer l: layers.{l}.attn.{v [d_model], heads [h] int64,
                       lambdas [h], keys [h, d_head]} and/or layers.{l}.mlp.{v [d_model],
                       neurons [m] int64, lambdas [m], signs [m]} (float32)
    code.json          format "saesteer-weight-edit/1", method, model_name, architecture
                       {n_layers, d_model, n_heads, d_head, d_mlp}, per-layer counts, checksum
                       (sha256 of the architecture and every factor), meta

Export. `export_edited_model(edit, out, α)` writes a Hugging Face folder (config.json, safetensors
weights, tokenizer files) of the edited model, through `saesteer.outputs.Output` (kind
"edited-model": a foreign non-empty folder is refused before anything is written). The base model
is the edit's Hugging Face folder when it has one (the default model, a local folder), else its
TransformerLens model converted to a `LlamaForCausalLM` (`hf_model_from_tl`, e.g. `tiny-test`).
Plain `transformers.AutoModelForCausalLM.from_pretrained(out)` loads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from saesteer.steer.hooks import is_hooked_transformer
from saesteer.steer.sites import Site

FORMAT = "saesteer-weight-edit/1"
EXPORT_KIND = "edited-model"
EXPORT_RECORD = "saesteer-edit.json"
ARCH_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp")


@dataclass(frozen=True)
class Architecture:
    """The widths a weight edit depends on."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in asdict(self).items())


def architecture_of(model) -> Architecture:
    """The `Architecture` of a TransformerLens `HookedTransformer` or a Hugging Face causal LM."""
    if is_hooked_transformer(model):
        c = model.cfg
        return Architecture(c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp)
    c = model.config
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return Architecture(
        c.num_hidden_layers, c.hidden_size, c.num_attention_heads, d_head, c.intermediate_size
    )


def _empty(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype)


@dataclass
class LayerEdit:
    """One layer's factors: edited heads (attention part) and neurons (MLP part); either may be
    empty (then its v̂ is unused)."""

    layer: int
    v_attn: torch.Tensor  # [d_model] unit
    heads: torch.Tensor  # [h] int64
    head_lambdas: torch.Tensor  # [h]
    head_keys: torch.Tensor  # [h, d_head] unit rows
    v_mlp: torch.Tensor  # [d_model] unit
    neurons: torch.Tensor  # [m] int64
    neuron_lambdas: torch.Tensor  # [m]
    neuron_signs: torch.Tensor  # [m] ±1

    @property
    def n_heads(self) -> int:
        return int(self.heads.numel())

    @property
    def n_neurons(self) -> int:
        return int(self.neurons.numel())

    def tensors(self) -> dict[str, torch.Tensor]:
        """The non-empty parts, named as in code.safetensors."""
        out: dict[str, torch.Tensor] = {}
        if self.n_heads:
            out.update(
                {
                    "attn.v": self.v_attn,
                    "attn.heads": self.heads,
                    "attn.lambdas": self.head_lambdas,
                    "attn.keys": self.head_keys,
                }
            )
        if self.n_neurons:
            out.update(
                {
                    "mlp.v": self.v_mlp,
                    "mlp.neurons": self.neurons,
                    "mlp.lambdas": self.neuron_lambdas,
                    "mlp.signs": self.neuron_signs,
                }
            )
        return {f"layers.{self.layer}.{k}": v for k, v in out.items()}


@dataclass
class WeightEdit:
    """A Steer2Edit weight edit of one model (module docstring); `meta` records how it was made."""

    layers: list[LayerEdit]
    model_name: str
    architecture: Architecture
    method: str = "steer2edit"
    meta: dict[str, Any] = field(default_factory=dict)

    weight_edit = True  # `steer(...)` dispatches on this

    def __post_init__(self) -> None:
        self.layers = [layer for layer in self.layers if layer.n_heads or layer.n_neurons]
        self.layers.sort(key=lambda layer: layer.layer)
        numbers = [layer.layer for layer in self.layers]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"A weight edit has one entry per layer; got layers {numbers}.")
        for layer in self.layers:
            check_layer_edit(layer, self.architecture)

    @property
    def d_model(self) -> int:
        return self.architecture.d_model

    @property
    def n_heads_edited(self) -> int:
        return sum(layer.n_heads for layer in self.layers)

    @property
    def n_neurons_edited(self) -> int:
        return sum(layer.n_neurons for layer in self.layers)

    @property
    def sites(self) -> list[Site]:
        """Where the edit changes activations: attn_out of layers with edited heads, mlp_out of
        layers with edited neurons (later sites change too, through the residual stream)."""
        sites = [Site(x.layer, "attn_out") for x in self.layers if x.n_heads]
        sites += [Site(x.layer, "mlp_out") for x in self.layers if x.n_neurons]
        return sorted(sites)

    @property
    def hook_name(self) -> str:
        return ", ".join(site.name for site in self.sites) or "(no weights)"

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            out.update(layer.tensors())
        return out

    def checksum(self) -> str:
        """sha256 of the model name, architecture and every factor (names, dtypes, shapes, bytes)."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.model_name, asdict(self.architecture)]).encode())
        for name, tensor in sorted(self.tensors().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()

    def applied(
        self, model, alpha: float = 1.0, positions: str = "all", model_name: str | None = None
    ):
        """`apply_weight_edit` for `steer(model, edit, α, positions)`: weights act at every
        position, so `positions` must be "all"."""
        if positions != "all":
            raise ValueError(
                f"A weight edit ({self.method}) changes the model's weights, so it acts at every "
                f"position; positions={positions!r} is not possible (use 'all')."
            )
        return apply_weight_edit(model, self, alpha, model_name)


def check_layer_edit(layer: LayerEdit, arch: Architecture) -> None:
    """A layer's factors have the architecture's shapes and in-range indices (else ValueError)."""
    where = f"layer {layer.layer}"
    if not 0 <= layer.layer < arch.n_layers:
        raise ValueError(f"The edit's {where} is outside the model's {arch.n_layers} layers.")
    h, m = layer.n_heads, layer.n_neurons
    shapes = {
        "v_attn": (layer.v_attn, (arch.d_model,) if h else None),
        "head_lambdas": (layer.head_lambdas, (h,)),
        "head_keys": (layer.head_keys, (h, arch.d_head)),
        "v_mlp": (layer.v_mlp, (arch.d_model,) if m else None),
        "neuron_lambdas": (layer.neuron_lambdas, (m,)),
        "neuron_signs": (layer.neuron_signs, (m,)),
    }
    for name, (tensor, shape) in shapes.items():
        if shape is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{where}: {name} has shape {tuple(tensor.shape)}, expected {shape}.")
    for name, index, size in (
        ("heads", layer.heads, arch.n_heads),
        ("neurons", layer.neurons, arch.d_mlp),
    ):
        if index.ndim != 1 or index.dtype != torch.int64:
            raise ValueError(f"{where}: {name} must be a 1-D int64 tensor.")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
            raise ValueError(f"{where}: {name} indices must lie in [0, {size}).")
        if index.unique().numel() != index.numel():
            raise ValueError(f"{where}: {name} indices repeat.")
    if m and not bool(((layer.neuron_signs == 1) | (layer.neuron_signs == -1)).all()):
        raise ValueError(f"{where}: neuron signs must be ±1.")


# --------------------------------------------------------------------------- apply / revert


def check_architecture(edit: WeightEdit, model, model_name: str | None = None) -> None:
    """Raise `CodeMismatchError` (a ValueError) unless `model` is the edit's architecture (and name,
    when both are known; pass `model_name` for a Hugging Face model)."""
    from saesteer.steer.io import CodeMismatchError

    actual = architecture_of(model)
    name = model_name or (model.cfg.model_name if is_hooked_transformer(model) else "")
    if actual != edit.architecture:
        raise CodeMismatchError(
            f"This {edit.method} weight edit was made for {edit.model_name!r} "
            f"({edit.architecture.describe()}), but the model{f' {name!r}' if name else ''} has "
            f"{actual.describe()}; compute the edit on this model."
        )
    if name and edit.model_name and name != edit.model_name:
        raise CodeMismatchError(
            f"This {edit.method} weight edit was made for model {edit.model_name!r}, not "
            f"{name!r}; compute the edit on this model."
        )


def _layer_targets(model, layer: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(o_proj weight, down_proj weight, is_tl) of `layer`: TL W_O [n_heads, d_head, d_model] and
    W_out [d_mlp, d_model]; HF o_proj.weight [d_model, n_heads·d_head], down_proj.weight
    [d_model, d_mlp]."""
    if is_hooked_transformer(model):
        block = model.blocks[layer]
        return block.attn.W_O, block.mlp.W_out, True
    from saesteer.steer.hooks import hf_decoder_layers

    decoder = hf_decoder_layers(model)[layer]
    return decoder.self_attn.o_proj.weight, decoder.mlp.down_proj.weight, False


def _deltas(layer: LayerEdit, alpha: float, weight: torch.Tensor, is_tl: bool, d_head: int):
    """[(index, old_columns, delta)] for the two parts of one layer, in the weight's layout."""
    device, dtype = weight.device, weight.dtype
    out = []
    if layer.n_heads:
        v = layer.v_attn.to(device, torch.float32)
        keys = layer.head_keys.to(device, torch.float32)
        scale = alpha * layer.head_lambdas.to(device, torch.float32)
        blocks = scale[:, None, None] * keys[:, :, None] * v[None, None, :]  # [h, d_head, d_model]
        if is_tl:
            out.append(("attn", layer.heads.to(device), blocks.to(dtype)))
        else:
            columns = (
                layer.heads.to(device)[:, None] * d_head + torch.arange(d_head, device=device)
            ).reshape(-1)
            out.append(("attn", columns, blocks.reshape(-1, v.numel()).T.to(dtype)))
    if layer.n_neurons:
        v = layer.v_mlp.to(device, torch.float32)
        scale = alpha * (layer.neuron_lambdas * layer.neuron_signs).to(device, torch.float32)
        rows = scale[:, None] * v[None, :]  # [m, d_model]
        if is_tl:
            out.append(("mlp", layer.neurons.to(device), rows.to(dtype)))
        else:
            out.append(("mlp", layer.neurons.to(device), rows.T.to(dtype)))
    return out


@contextlib.contextmanager
def apply_weight_edit(
    model, edit: WeightEdit, alpha: float = 1.0, model_name: str | None = None
) -> Iterator[Any]:
    """Inside the block `model` (TransformerLens or Hugging Face) has the edit at strength `alpha`
    in its weights; on exit, also by an exception, every touched column is written back from a copy
    (bit-for-bit restore). The architecture is checked first (nothing changes if it does not fit)."""
    from saesteer.steer.hooks import check_alpha

    alpha = check_alpha(alpha)
    check_architecture(edit, model, model_name)
    saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]] = []
    try:
        with torch.no_grad():
            if alpha != 0:
                for layer in edit.layers:
                    w_o, w_down, is_tl = _layer_targets(model, layer.layer)
                    for part, index, delta in _deltas(
                        layer, alpha, w_o, is_tl, edit.architecture.d_head
                    ):
                        weight = w_o if part == "attn" else w_down
                        if is_tl:  # rows of W_O (heads) / W_out (neurons)
                            saved.append((weight, index, weight[index].clone(), True))
                            weight[index] += delta
                        else:  # columns of o_proj / down_proj
                            saved.append((weight, index, weight[:, index].clone(), False))
                            weight[:, index] += delta
        yield model
    finally:
        with torch.no_grad():
            for weight, index, old, is_tl in reversed(saved):
                if is_tl:
                    weight[index] = old
                else:
                    weight[:, index] = old


# --------------------------------------------------------------------------- save / load


def save_weight_edit(edit: WeightEdit, path: str | os.PathLike) -> Path:
    """Write code.safetensors (the factors) then code.json (format, model, architecture, checksum,
    meta); see the module docstring."""
    from saesteer.steer.io import _write_folder

    record = {
        "format": FORMAT,
        "method": edit.method,
        "model_name": edit.model_name,
        "d_model": edit.d_model,
        "hook_name": edit.hook_name,
        "architecture": asdict(edit.architecture),
        "layers": [
            {"layer": x.layer, "heads": x.n_heads, "neurons": x.n_neurons} for x in edit.layers
        ],
        "checksum": edit.checksum(),
        "meta": edit.meta,
    }
    tensors = edit.tensors()
    if not tensors:  # safetensors needs a tensor to write a valid file; an empty edit has none
        tensors = {"empty": torch.zeros(1)}
    return _write_folder(Path(path), tensors, record)


def load_weight_edit(path: str | os.PathLike) -> WeightEdit:
    """Rebuild a `WeightEdit` saved by `save_weight_edit`; a damaged or edited folder (missing
    fields or tensors, wrong shapes, a checksum that does not match) is a `CodeFormatError`."""
    from saesteer.steer.io import (
        DAMAGED,
        META_FILE,
        CodeFormatError,
        _read_json_record,
        read_code_tensors,
    )

    record = _read_json_record(path)
    meta_file = Path(path) / META_FILE
    missing = [
        k for k in ("model_name", "architecture", "layers", "checksum", "meta") if k not in record
    ]
    if missing:
        raise CodeFormatError(f"{meta_file} lacks the field(s) {missing}; {DAMAGED}.")
    try:
        arch_record = record["architecture"]
        values = [arch_record[k] for k in ARCH_FIELDS]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise ValueError(f"architecture fields must be positive integers, got {arch_record}")
        arch = Architecture(*values)
        tensors = read_code_tensors(path, ())
        layers = []
        for entry in record["layers"]:
            layers.append(_layer_from_tensors(int(entry["layer"]), tensors, arch))
        edit = WeightEdit(
            layers,
            str(record["model_name"]),
            arch,
            str(record.get("method", "steer2edit")),
            dict(record["meta"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise CodeFormatError(f"{meta_file}: {error} ({DAMAGED})") from None
    if edit.checksum() != record["checksum"]:
        raise CodeFormatError(
            f"{Path(path) / 'code.safetensors'} does not match the checksum in {meta_file}: "
            f"{DAMAGED}."
        )
    return edit


def _layer_from_tensors(layer: int, tensors: dict[str, torch.Tensor], arch: Architecture):
    def get(name: str, default: torch.Tensor) -> torch.Tensor:
        return tensors.get(f"layers.{layer}.{name}", default)

    return LayerEdit(
        layer,
        get("attn.v", _empty(arch.d_model)),
        get("attn.heads", _empty(0, dtype=torch.int64)),
        get("attn.lambdas", _empty(0)),
        get("attn.keys", _empty(0, arch.d_head)),
        get("mlp.v", _empty(arch.d_model)),
        get("mlp.neurons", _empty(0, dtype=torch.int64)),
        get("mlp.lambdas", _empty(0)),
        get("mlp.signs", _empty(0)),
    )


# --------------------------------------------------------------------------- export


def hf_model_from_tl(model, tokenizer=None):
    """A `LlamaForCausalLM` with the weights of a Llama-style TransformerLens model (RMSNorm,
    rotary, gated SiLU MLP, no biases), e.g. `tiny-test`; anything else is a ValueError."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    problems = []
    if cfg.normalization_type not in ("RMS", "RMSPre"):
        problems.append(f"normalization {cfg.normalization_type}")
    if cfg.positional_embedding_type != "rotary" or cfg.rotary_dim != cfg.d_head:
        problems.append("not full-width rotary positions")
    if getattr(cfg, "rotary_adjacent_pairs", False):
        problems.append("adjacent-pair rotary")
    if not cfg.gated_mlp or cfg.act_fn != "silu":
        problems.append(f"MLP {cfg.act_fn} (gated {cfg.gated_mlp})")
    if not cfg.use_attn_scale or not math.isclose(cfg.attn_scale, math.sqrt(cfg.d_head)):
        problems.append("attention scale other than √d_head")
    state = model.state_dict()
    for name, tensor in state.items():
        if name.split(".")[-1].startswith(("b_", "_b_")) and bool(tensor.any()):
            problems.append(f"non-zero bias {name}")
    if problems:
        raise ValueError(
            f"Cannot convert {cfg.model_name!r} to a Hugging Face Llama model: {'; '.join(problems)}."
        )
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    token_ids = {}
    if tokenizer is not None:
        token_ids = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    config = LlamaConfig(
        vocab_size=cfg.d_vocab,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=n_kv,
        head_dim=cfg.d_head,
        max_position_embeddings=cfg.n_ctx,
        rms_norm_eps=cfg.eps,
        rope_theta=float(cfg.rotary_base),
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        **token_ids,
    )
    hf = LlamaForCausalLM(config)

    def t(x: torch.Tensor) -> torch.Tensor:
        return x.detach().to("cpu", torch.float32).contiguous()

    weights = {
        "model.embed_tokens.weight": t(model.embed.W_E),
        "model.norm.weight": t(model.ln_final.w),
        "lm_head.weight": t(model.unembed.W_U.T),
    }
    for layer, block in enumerate(model.blocks):
        attn, prefix = block.attn, f"model.layers.{layer}."
        w_k = getattr(attn, "_W_K", None)
        w_k = attn.W_K if w_k is None else w_k
        w_v = getattr(attn, "_W_V", None)
        w_v = attn.W_V if w_v is None else w_v
        weights.update(
            {
                prefix + "input_layernorm.weight": t(block.ln1.w),
                prefix + "post_attention_layernorm.weight": t(block.ln2.w),
                prefix + "self_attn.q_proj.weight": t(attn.W_Q.permute(0, 2, 1).flatten(0, 1)),
                prefix + "self_attn.k_proj.weight": t(w_k.permute(0, 2, 1).flatten(0, 1)),
                prefix + "self_attn.v_proj.weight": t(w_v.permute(0, 2, 1).flatten(0, 1)),
                prefix + "self_attn.o_proj.weight": t(attn.W_O.flatten(0, 1).T),
                prefix + "mlp.gate_proj.weight": t(block.mlp.W_gate.T),
                prefix + "mlp.up_proj.weight": t(block.mlp.W_in.T),
                prefix + "mlp.down_proj.weight": t(block.mlp.W_out.T),
            }
        )
    hf.load_state_dict(weights, strict=True)
    return hf.to(dtype=cfg.dtype).eval()


def export_edited_model(
    edit: WeightEdit,
    out: str | os.PathLike,
    alpha: float = 1.0,
    model=None,
    tokenizer=None,
    dtype: str = "float32",
) -> Path:
    """Write the model with `edit` at strength `alpha` as a Hugging Face folder `out` (module doc).

    `model`: the base model, Hugging Face or TransformerLens (converted), with its `tokenizer`;
    None loads the edit's `model_name`. The folder is checked before any work: a non-empty folder
    that saesteer did not write as an edited model is refused, untouched.
    """
    from saesteer.outputs import Output
    from saesteer.steer.hooks import check_alpha

    alpha = check_alpha(alpha)
    output = Output(out, EXPORT_KIND)
    with output:
        hf, tokenizer = _export_base(edit, model, tokenizer, dtype)
        check_architecture(edit, hf, edit.model_name)
        record = {
            "edit_checksum": edit.checksum(),
            "method": edit.method,
            "base_model": edit.model_name,
            "alpha": alpha,
            "heads_edited": edit.n_heads_edited,
            "neurons_edited": edit.n_neurons_edited,
        }
        with output.replacing() as tmp, apply_weight_edit(hf, edit, alpha, edit.model_name):
            hf.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2))
    return output.path


def _export_base(edit: WeightEdit, model, tokenizer, dtype: str):
    """(Hugging Face model, tokenizer) to edit and save."""
    from saesteer.models import has_hf_weights, load_hf_model, load_model, load_tokenizer

    if model is None:
        if has_hf_weights(edit.model_name):
            return load_hf_model(edit.model_name, dtype=dtype), load_tokenizer(edit.model_name)
        model, tokenizer = load_model(edit.model_name, dtype=dtype)
    if is_hooked_transformer(model):
        return hf_model_from_tl(model, tokenizer), tokenizer or getattr(model, "tokenizer", None)
    return model, tokenizer
