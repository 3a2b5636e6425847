"""Save and load steering codes; check a code against the model and SAE it is used with.

A code folder:
    code.safetensors   dense: {"vector" [d_model]}
                       latent: {"support" [s] int64, "values" [s], and the SAE weights the edit
                       reads: "W_enc_S" [d, s], "b_enc_S" [s], "W_dec_S" [s, d], "b_dec" [d],
                       "threshold_S" [s] (ReLU/JumpReLU/BatchTopK), or the full W_enc, b_enc,
                       W_dec, b_dec (TopK)}
    code.json          format, method, mode, model_name, d_model, hook_name, the SAE's checksum/arch/
                       k/d_sae (latent codes), and `meta`: hyper-parameters, data checksum, results

Latent codes are self-contained, so generation needs no SAE; when an SAE is given, it must be the one
the code was made with (same checksum and hook), else `CodeMismatchError`. A damaged folder (truncated
or foreign code.safetensors, code.json that is not JSON or lacks fields, NaN/inf tensors, latent
indices outside the SAE) is a `CodeFormatError` naming the file.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from saesteer.hook_names import parse_hook_name
from saesteer.paths import atomic_write_bytes
from saesteer.sae.configs import ARCHITECTURES
from saesteer.sae.io import sae_checksum
from saesteer.steer.codes import DenseVector, LatentCode, SteeringCode
from saesteer.steer.gates import restore_gate
from saesteer.steer.intervention import Edit, Intervention, as_intervention
from saesteer.steer.operators import LatentEdit, restore_operator
from saesteer.steer.sites import Site, check_sites_fit

FORMAT = "saesteer-steering-code/1"
INTERVENTION_FORMAT = "saesteer-intervention/1"
OTHER_FORMATS = {  # format → (module, loader); the module's FORMAT constant is the same string
    "saesteer-weight-edit/1": ("saesteer.steer.weight_edit", "load_weight_edit"),
    "saesteer-controller/1": ("saesteer.steer.controlled", "load_controller"),
}
WEIGHTS_FILE = "code.safetensors"
META_FILE = "code.json"


REQUIRED_FIELDS = ("method", "model_name", "hook_name", "meta")
LATENT_FIELDS = ("checksum", "arch", "d_sae")
DAMAGED = "the code folder is damaged or was edited: re-save or retrain the code"


class CodeMismatchError(ValueError):
    """A steering code is used with a model, SAE or layer it was not made for."""


class CodeFormatError(ValueError):
    """A steering-code folder's files are damaged or malformed; the message names the file."""


def save_code(code: SteeringCode | Intervention, path: str | os.PathLike) -> Path:
    """Write `code` to folder `path` (weights first, code.json last: its presence marks completeness).

    A steering code keeps its own format; an `Intervention` is saved by `save_intervention`.
    """
    path = Path(path)
    if isinstance(code, Intervention):
        return save_intervention(code, path)
    if getattr(code, "weight_edit", False):  # a Steer2Edit WeightEdit: saesteer.steer.weight_edit
        from saesteer.steer.weight_edit import save_weight_edit

        return save_weight_edit(code, path)
    if getattr(code, "controller", False):  # a Guiding Giants controller: steer.controlled
        from saesteer.steer.controlled import save_controller

        return save_controller(code, path)
    record: dict[str, Any] = {
        "format": FORMAT,
        "method": code.method,
        "model_name": code.model_name,
        "d_model": code.d_model,
        "hook_name": code.hook_name,
        "meta": code.meta,
    }
    if isinstance(code, DenseVector):
        tensors = {"vector": code.vector}
    else:
        assert isinstance(code, LatentCode)
        tensors = {"support": code.support, "values": code.values, **code.weights}
        record.update(
            mode=code.mode,
            sae={
                "checksum": code.sae_checksum,
                "arch": code.arch,
                "k": code.k,
                "d_sae": code.d_sae,
            },
            support_size=code.support_size,
        )
    return _write_folder(path, tensors, record)


def _write_folder(path: Path, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    # one copy each: edits may share a tensor (one operator at many sites), safetensors refuses that
    tensors = {k: t.detach().cpu().clone().contiguous() for k, t in tensors.items()}
    atomic_write_bytes(path / WEIGHTS_FILE, save(tensors))
    atomic_write_bytes(path / META_FILE, json.dumps(record, indent=2, default=str).encode())
    return path


def save_intervention(intervention: Intervention, path: str | os.PathLike) -> Path:
    """code.safetensors holds `edits.{i}.op.{name}` and `edits.{i}.gate.{name}`; code.json the
    sites, operator and gate kinds with their parameters, method, model and meta."""
    tensors: dict[str, torch.Tensor] = {}
    edits = []
    for i, edit in enumerate(intervention.edits):
        entry: dict[str, Any] = {
            "site": edit.site.name,
            "operator": {"kind": edit.operator.kind, "params": edit.operator.params()},
            "gate": None,
        }
        tensors.update({f"edits.{i}.op.{k}": t for k, t in edit.operator.tensors().items()})
        if edit.gate is not None:
            entry["gate"] = {"kind": edit.gate.kind, "params": edit.gate.params()}
            tensors.update({f"edits.{i}.gate.{k}": t for k, t in edit.gate.tensors().items()})
        edits.append(entry)
    record = {
        "format": INTERVENTION_FORMAT,
        "method": intervention.method,
        "model_name": intervention.model_name,
        "d_model": intervention.d_model,
        "edits": edits,
        "meta": intervention.meta,
    }
    return _write_folder(Path(path), tensors, record)


def _read_json_record(path: str | os.PathLike) -> dict[str, Any]:
    """code.json of a folder as a JSON object (clear errors when it is missing or not JSON)."""
    meta_file = Path(path) / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{path} is not a steering-code folder (no {META_FILE}); train one "
            "with `saesteer train-steer ... --out DIR`."
        )
    try:
        record = json.loads(meta_file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CodeFormatError(
            f"{meta_file} is not valid UTF-8 JSON ({error}); {DAMAGED}."
        ) from None
    if not isinstance(record, dict):
        raise CodeFormatError(
            f"{meta_file} holds a JSON {type(record).__name__}, not an object; {DAMAGED}."
        )
    return record


def read_code_record(path: str | os.PathLike) -> dict[str, Any]:
    """The code.json of a steering-code folder, its fields checked (see the module docstring)."""
    record = _read_json_record(path)
    meta_file = Path(path) / META_FILE
    if record.get("format") != FORMAT:
        raise CodeFormatError(
            f"{meta_file}: unknown format {record.get('format')!r}, expected {FORMAT!r} "
            f"or {INTERVENTION_FORMAT!r}."
        )
    _check_fields(record, meta_file)
    return record


def _check_fields(record: dict[str, Any], meta_file: Path) -> None:
    """code.json has every field `load_code` reads, of the right kind."""
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    info = record.get("sae")
    if info is not None:
        if not isinstance(info, dict):
            raise CodeFormatError(f"{meta_file}: 'sae' must be an object; {DAMAGED}.")
        missing += [f"sae.{key}" for key in LATENT_FIELDS if key not in info]
        missing += [] if "mode" in record else ["mode"]
    if missing:
        raise CodeFormatError(f"{meta_file} lacks the field(s) {missing}; {DAMAGED}.")
    if not isinstance(record["hook_name"], str) or not isinstance(record["meta"], dict):
        raise CodeFormatError(
            f"{meta_file}: 'hook_name' must be a string and 'meta' an object; {DAMAGED}."
        )
    try:
        parse_hook_name(record["hook_name"])
    except ValueError as error:
        raise CodeFormatError(f"{meta_file}: {error}") from None
    if info is None:
        return
    problem = _latent_field_problem(record, info)
    if problem:
        raise CodeFormatError(f"{meta_file}: {problem}; {DAMAGED}.")


def _latent_field_problem(record: dict[str, Any], info: dict[str, Any]) -> str | None:
    """What is wrong with a latent code's SAE facts and mode in code.json, or None."""
    d_sae, arch, k = info["d_sae"], info["arch"], info.get("k")
    if not (isinstance(d_sae, int) and d_sae > 0):
        return f"sae.d_sae must be a positive integer, got {d_sae!r}"
    if arch not in ARCHITECTURES:
        return f"sae.arch must be one of {ARCHITECTURES}, got {arch!r}"
    if arch == "topk" and not (isinstance(k, int) and 0 < k <= d_sae):
        return f"a TopK code needs 0 < sae.k ≤ d_sae ({d_sae}), got {k!r}"
    if record["mode"] not in ("add", "clamp"):
        return f"'mode' must be 'add' or 'clamp', got {record['mode']!r}"
    return None


def read_code_tensors(path: str | os.PathLike, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of code.safetensors, which must hold `names` and only finite floats."""
    weights_file = Path(path) / WEIGHTS_FILE
    if not weights_file.is_file():
        raise FileNotFoundError(f"{weights_file} is missing: {DAMAGED}.")
    try:
        # fresh (allocator-aligned) storage: the file's buffer can sit at any byte offset, and a
        # vectorised dot product over a misaligned vector rounds differently, so a loaded code
        # would not reproduce the fitted one bit for bit
        tensors = {name: t.clone() for name, t in load_file(weights_file).items()}
    except SafetensorError as error:
        raise CodeFormatError(
            f"{weights_file} is not a readable safetensors file ({error}): it is truncated or "
            f"not a steering code; {DAMAGED}."
        ) from None
    missing = [name for name in names if name not in tensors]
    if missing:
        raise CodeFormatError(f"{weights_file} has no tensor(s) {missing}; {DAMAGED}.")
    for name, tensor in tensors.items():
        bad = int((~torch.isfinite(tensor)).sum()) if tensor.is_floating_point() else 0
        if bad:
            raise CodeFormatError(
                f"{weights_file}: tensor {name!r} has {bad} non-finite (NaN/inf) value(s), so "
                "steering with it would give NaN activations (did its training diverge?); "
                "retrain the code."
            )
    return tensors


def load_code(path: str | os.PathLike, sae=None) -> SteeringCode | Intervention:
    """Load a code folder; a latent code is checked against `sae` when given (the code stores
    the encoder and decoder slices it needs, so no SAE is required).

    A damaged folder raises `CodeFormatError` (or `FileNotFoundError` for a missing file) naming the
    file; see the module docstring. An intervention folder loads as an `Intervention`.
    """
    found = _read_json_record(path).get("format")
    if found == INTERVENTION_FORMAT:
        return load_intervention(path, sae)
    if found in OTHER_FORMATS:  # a weight edit or a controller: their modules load them
        module, loader = OTHER_FORMATS[found]
        return getattr(importlib.import_module(module), loader)(path)
    record = read_code_record(path)
    info = record.get("sae")
    tensors = read_code_tensors(path, ("vector",) if info is None else ("values", "support"))
    common = {
        "hook_name": record["hook_name"],
        "model_name": record["model_name"],
        "meta": record["meta"],
    }
    try:
        if info is None:
            return DenseVector(tensors["vector"], method=record["method"], **common)
        values, support = tensors.pop("values"), tensors.pop("support")
        code = LatentCode.from_tensors(
            tensors,
            support,
            values,
            arch=info["arch"],
            k=info.get("k"),
            d_sae=info["d_sae"],
            sae_checksum=info["checksum"],
            method=record["method"],
            mode=record["mode"],
            **common,
        )
    except ValueError as error:
        raise CodeFormatError(f"{Path(path) / WEIGHTS_FILE}: {error} ({DAMAGED})") from None
    if sae is not None:
        check_sae(info["checksum"], record["hook_name"], sae, where=str(path))
    return code


def load_intervention(path: str | os.PathLike, sae=None) -> Intervention:
    """Rebuild an intervention saved by `save_intervention` (its latent edits checked against `sae`)."""
    record = _read_json_record(path)
    meta_file = Path(path) / META_FILE
    edits_record = record.get("edits")
    if not isinstance(edits_record, list) or not all(
        isinstance(e, dict) and {"site", "operator", "gate"} <= set(e) for e in edits_record
    ):
        raise CodeFormatError(f"{meta_file}: 'edits' must be a list of site/operator/gate objects.")
    tensors = read_code_tensors(path, ())
    edits = []
    try:
        for i, entry in enumerate(edits_record):
            edits.append(_restore_edit(i, entry, tensors))
        intervention = Intervention(
            edits,
            str(record.get("method", "")),
            str(record.get("model_name", "")),
            record.get("meta") or {},
        )
    except (ValueError, KeyError, TypeError) as error:
        raise CodeFormatError(f"{meta_file}: {error} ({DAMAGED})") from None
    if sae is not None:
        for edit in intervention.edits:
            if isinstance(edit.operator, LatentEdit):
                code = edit.operator.code
                check_sae(code.sae_checksum, code.hook_name, sae, where=str(path))
    return intervention


def _restore_edit(i: int, entry: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Edit:
    def part(prefix: str) -> dict[str, torch.Tensor]:
        start = f"edits.{i}.{prefix}."
        return {k[len(start) :]: t for k, t in tensors.items() if k.startswith(start)}

    operator = restore_operator(
        entry["operator"]["kind"], part("op"), entry["operator"].get("params") or {}
    )
    gate = entry["gate"]
    if gate is not None:
        gate = restore_gate(gate["kind"], part("gate"), gate.get("params") or {})
    return Edit(Site.parse(entry["site"]), operator, gate)


def check_sae(expected_checksum: str, hook_name: str, sae, where: str = "the code") -> None:
    """Raise `CodeMismatchError` unless `sae` is the dictionary the code was made in."""
    if sae.cfg.hook_name and sae.cfg.hook_name != hook_name:
        raise CodeMismatchError(
            f"{where} steers {hook_name}, but the SAE was trained on "
            f"{sae.cfg.hook_name}; pass the SAE of that layer."
        )
    actual = sae_checksum(sae)
    if actual != expected_checksum:
        raise CodeMismatchError(
            f"{where} was made with SAE checksum {expected_checksum[:16]}…, but "
            f"this SAE's is {actual[:16]}…: pass the SAE the code was trained "
            "with (or retrain the code on this SAE)."
        )


def model_facts(model) -> tuple[str, int, int]:
    """(name, d_model, n_layers) of a HookedTransformer or a Hugging Face causal LM."""
    if hasattr(model, "cfg") and hasattr(model.cfg, "d_model"):
        return model.cfg.model_name, model.cfg.d_model, model.cfg.n_layers
    config = model.config
    return "", config.hidden_size, config.num_hidden_layers


def check_model(code: SteeringCode | Intervention, model, model_name: str | None = None) -> None:
    """Raise `CodeMismatchError` unless `model` has the code's width, layers and (if known) name.

    Hugging Face models carry no TransformerLens name: pass `model_name` to check it too.
    """
    name, d_model, n_layers = model_facts(model)
    name = model_name or name
    if name and code.model_name and name != code.model_name:
        raise CodeMismatchError(
            f"This steering code was made for model {code.model_name!r}, not "
            f"{name!r}; train one for this model."
        )
    if d_model != code.d_model:
        raise CodeMismatchError(
            f"This steering code has d_model {code.d_model} but the model has "
            f"{d_model}: it was made for another model ({code.model_name!r})."
        )
    try:
        check_sites_fit(as_intervention(code).sites, n_layers)
    except ValueError as error:
        raise CodeMismatchError(str(error)) from None
