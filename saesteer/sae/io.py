"""Save and load SAEs in sae-lens's folder format, plus saesteer's own metadata.

A saved SAE folder:
    cfg.json                  sae-lens config (architecture standard | topk | jumprelu, d_in, d_sae,
                              k, metadata.model_name/hook_name, …); `sae_lens.SAE.load_from_disk` reads it
    sae_weights.safetensors   W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec (+ threshold)
    sparsity.safetensors      {"sparsity": log10 feature density [d_sae]} when known
    saesteer.json             our metadata: arch (BatchTopK is saved as sae-lens JumpReLU, its
                              inference form), k, checksum, training config, versions, seed, inputs

The recorded checksum is `sae_checksum` of the SAE that `load_sae` gives back (the stored weights
in float32, threshold 0 where the file has none), marked `"checksum_scope": "as_loaded"`;
`load_sae` verifies it. Older folders have no scope: their checksum was taken before a storage
cast, so it is verified only when every stored weight is float32 (the shipped float16 suite is
verified by the sha256 of every file instead, see `saesteer.sae.suite.pretrained_dir`).
`load_sae` also refuses non-finite weights, unreadable files and missing fields, naming the file.

Architectures map saesteer → sae-lens as relu → standard, topk → topk, batchtopk → jumprelu,
jumprelu → jumprelu. Every file is written atomically (temporary file, then rename); saesteer.json
is written last, so its presence marks a complete folder.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from saesteer.paths import atomic_write_bytes
from saesteer.sae.model import SAE, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
META_FILE = "saesteer.json"
TO_SAELENS_ARCH = {
    "relu": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
}
CHECKSUM_SCOPE = "as_loaded"  # saesteer.json's checksum is that of the SAE load_sae returns
SAELENS_WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")


class SAEFileError(ValueError):
    """An SAE folder whose files cannot be read as the SAE they describe (the message names the
    file and the fix)."""


def sae_checksum(sae: SAE) -> str:
    """sha256 (hex) of the architecture, k and every weight (name, dtype, shape, bytes), sorted.

    Steering codes record it to refer to the exact dictionary they were trained in.
    """
    return _state_checksum(sae.cfg.arch, sae.cfg.k, sae.state_dict())


def _state_checksum(arch: str, k: int | None, state: dict[str, torch.Tensor]) -> str:
    """`sae_checksum` of an SAE of `arch`, `k` whose state dict is `state`."""
    digest = hashlib.sha256(f"{arch}|{k}|".encode())
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _loaded_checksum(sae: SAE, stored: dict[str, torch.Tensor]) -> str:
    """The `sae_checksum` of the SAE that `load_sae` builds from the `stored` weights of `sae`:
    each in the dtype of a fresh SAE (float32), the threshold 0 when it is not stored."""
    dtype = torch.get_default_dtype()  # load_sae's fresh SAE holds its weights in this dtype
    state = {name: t.to(dtype) for name, t in stored.items()}
    state.setdefault("threshold", torch.zeros(sae.cfg.d_sae, dtype=dtype))
    return _state_checksum(sae.cfg.arch, sae.cfg.k, state)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a saved artefact."""
    out = {}
    for name in ("saesteer", "torch", "transformer-lens", "sae-lens", "safetensors"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def saelens_cfg(sae: SAE) -> dict[str, Any]:
    """The `cfg.json` dict sae-lens ≥ 6 reads for this SAE."""
    cfg = sae.cfg
    out: dict[str, Any] = {
        "architecture": TO_SAELENS_ARCH[cfg.arch],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": library_versions().get("sae-lens", "6.0.0"),
            "sae_lens_training_version": None,
            "model_name": cfg.model_name or None,
            "hook_name": cfg.hook_name or None,
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": cfg.extra.get("context_size"),
        },
    }
    if cfg.arch == "topk":
        out.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    return out


def save_sae(
    sae: SAE,
    path: str | Path,
    log10_density: torch.Tensor | None = None,
    metadata: dict[str, Any] | None = None,
    storage_dtype: torch.dtype | None = None,
) -> Path:
    """Write `sae` to folder `path` (see module docstring); returns the folder.

    log10_density: [d_sae] log10 of each latent's firing frequency (sae-lens's sparsity file).
    metadata: extra JSON-able fields for saesteer.json (training config, seed, input checksums, …).
    storage_dtype: write the weights in this dtype (e.g. float16 to halve the bytes; they load back
    as float32). The recorded checksum is that of the SAE as `load_sae` gives it back (the stored,
    possibly rounded weights), so the loaded SAE always matches it.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = {
        name: t.detach().cpu().to(storage_dtype or t.dtype).contiguous()
        for name, t in sae.state_dict().items()
    }
    if sae.cfg.arch not in ("jumprelu", "batchtopk"):
        weights.pop("threshold")
    atomic_write_bytes(path / WEIGHTS_FILE, save(weights))
    atomic_write_bytes(path / CFG_FILE, json.dumps(saelens_cfg(sae), indent=2).encode())
    if log10_density is not None:
        sparsity = {"sparsity": log10_density.detach().cpu().float().contiguous()}
        atomic_write_bytes(path / SPARSITY_FILE, save(sparsity))
    meta = {
        "format": "saesteer-sae/1",
        "arch": sae.cfg.arch,
        "k": sae.cfg.k,
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "model_name": sae.cfg.model_name,
        "hook_name": sae.cfg.hook_name,
        "extra": sae.cfg.extra,
        "checksum": _loaded_checksum(sae, weights),
        "checksum_scope": CHECKSUM_SCOPE,
        "versions": library_versions(),
        **(metadata or {}),
    }
    atomic_write_bytes(path / META_FILE, json.dumps(meta, indent=2, default=str).encode())
    return path


def sae_dir(spec: str | Path) -> Path:
    """The folder of an SAE given as a folder or as "pretrained:NAME" (verified, read-only)."""
    if str(spec).startswith("pretrained:"):
        from saesteer.sae.suite import pretrained_dir

        return pretrained_dir(str(spec))
    return Path(spec)


def output_beside_sae(spec: str | Path, out: str, default_name: str) -> Path:
    """`out`, or `default_name` inside the SAE's folder; a shipped SAE's folder is not writable
    (it is part of the installed package), so there `out` is required."""
    if out:
        return Path(out)
    if str(spec).startswith("pretrained:"):
        raise ValueError(f"{spec} is a shipped SAE: pass --out DIR for the results.")
    return Path(spec) / default_name if default_name else Path(spec)


def load_sae(path: str | Path, device: str = "cpu") -> SAE:
    """Load an SAE folder written by `save_sae` or by sae-lens (`save_model`/`save_inference_model`),
    or a shipped one by name: "pretrained:NAME" (`saesteer.sae.suite`, checked against its sha256).

    Folders without saesteer.json are read as sae-lens SAEs (standard, topk, jumprelu); their
    conventions (apply_b_dec_to_input=False, rescale_acts_by_decoder_norm) are folded into weights.
    Raises `SAEFileError` (a ValueError naming the file) for a file that is not UTF-8 JSON or not
    safetensors (truncated, a pickle), a missing field or tensor, a wrong shape, NaN/inf weights,
    or weights that no longer match the checksum in saesteer.json (see the module docstring).
    """
    path = sae_dir(path)
    if not (path / CFG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{path} is not an SAE folder (needs {CFG_FILE} and {WEIGHTS_FILE})."
        )
    cfg = read_json_object(path / CFG_FILE)
    weights = read_weights(path / WEIGHTS_FILE)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        return sae_from_saelens_parts(cfg, weights, where=str(path / WEIGHTS_FILE)).to(device)
    meta = read_json_object(meta_file)
    sae = SAE(_config_from_meta(meta, meta_file))
    stored_dtypes = {t.dtype for t in weights.values()}
    weights.setdefault("threshold", torch.zeros(sae.cfg.d_sae))
    _check_state(sae, weights, path / WEIGHTS_FILE)
    sae.load_state_dict(weights)
    _check_checksum(sae, meta, meta_file, stored_dtypes)
    return sae.to(device)


def read_json_object(file: Path) -> dict[str, Any]:
    """The JSON object (dict) in `file`; `SAEFileError` naming the file if it is not UTF-8 JSON."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise SAEFileError(
            f"{file} is not UTF-8 text ({error.reason} at byte {error.start}); it is damaged: "
            "restore the SAE folder from its source or save the SAE again."
        ) from None
    except json.JSONDecodeError as error:
        raise SAEFileError(
            f"{file} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
            "it is damaged or truncated: restore the SAE folder from its source or save it again."
        ) from None
    if not isinstance(data, dict):
        raise SAEFileError(
            f"{file} must hold a JSON object, not {type(data).__name__}; restore the SAE folder."
        )
    return data


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors `file` (CPU), checked finite; `SAEFileError` naming the file
    when it is not safetensors (truncated, a PyTorch pickle, …) or holds NaN/inf."""
    try:
        weights = load_file(file, device="cpu")
    except SafetensorError as error:
        with open(file, "rb") as handle:
            head = handle.read(4)
        pickled = head.startswith((b"PK\x03\x04", b"\x80"))  # torch.save: zip or raw pickle
        hint = (
            "it looks like a PyTorch pickle (torch.save), which is never loaded (it can run code); "
            "convert it in trusted Python: safetensors.torch.save_file(state_dict, PATH)"
            if pickled
            else "it is truncated or damaged: restore the SAE folder from its source or save it again"
        )
        raise SAEFileError(
            f"{file} is not a readable safetensors file ({error}); {hint}."
        ) from None
    bad = {
        name: int((~torch.isfinite(t)).sum())
        for name, t in weights.items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    }
    if bad:
        listed = ", ".join(f"{name} ({n} of {weights[name].numel()})" for name, n in bad.items())
        raise SAEFileError(
            f"{file} holds NaN/inf weights in {listed}; the SAE diverged in training or the file "
            "is damaged. Retrain it (or resume from an earlier checkpoint) rather than use it."
        )
    return weights


def _config_from_meta(meta: dict[str, Any], meta_file: Path) -> SAEConfig:
    """The `SAEConfig` recorded in saesteer.json; `SAEFileError` naming a missing or bad field."""
    missing = [key for key in ("d_in", "d_sae", "arch") if key not in meta]
    if missing:
        raise SAEFileError(
            f"{meta_file} lacks the field(s) {', '.join(missing)}; it is damaged or not written by "
            f"saesteer: restore the SAE folder, or delete {META_FILE} to load it as a sae-lens SAE."
        )
    try:
        return SAEConfig(
            d_in=int(meta["d_in"]),
            d_sae=int(meta["d_sae"]),
            arch=meta["arch"],
            k=None if meta.get("k") is None else int(meta["k"]),
            model_name=meta.get("model_name") or "",
            hook_name=meta.get("hook_name") or "",
            extra=meta.get("extra") or {},
        )
    except (TypeError, ValueError) as error:
        raise SAEFileError(f"{meta_file} describes no valid SAE: {error}") from None


def _check_state(
    sae: SAE, weights: dict[str, torch.Tensor], where: str | Path, *, complete: bool = True
) -> None:
    """`SAEFileError` naming `where` unless each tensor of `weights` has the shape of the SAE's
    tensor of that name and (`complete`) `weights` has exactly the SAE's tensors."""
    expected = {name: tuple(t.shape) for name, t in sae.state_dict().items()}
    expected["log_threshold"] = expected["threshold"]  # sae-lens's JumpReLU stores log θ
    problems = [
        f"{name} has shape {tuple(t.shape)}, expected {expected[name]}"
        for name, t in weights.items()
        if name in expected and tuple(t.shape) != expected[name]
    ]
    if complete:
        missing = sorted(set(sae.state_dict()) - set(weights))
        unexpected = sorted(set(weights) - set(sae.state_dict()))
        problems += [f"missing {missing}"] if missing else []
        problems += [f"unexpected {unexpected}"] if unexpected else []
    if problems:
        raise SAEFileError(
            f"{where} does not fit the SAE described beside it ({'; '.join(problems)}); "
            "the folder mixes files of different SAEs or is damaged: save the SAE again."
        )


def _check_checksum(
    sae: SAE, meta: dict[str, Any], meta_file: Path, stored_dtypes: set[torch.dtype]
) -> None:
    """`SAEFileError` when the loaded SAE does not match the checksum saesteer.json records.

    A folder without `checksum_scope` (older saesteer) recorded the checksum before a storage cast:
    it is checked only when every stored tensor is float32 (else it cannot be recomputed)."""
    recorded = meta.get("checksum")
    if not recorded:
        return
    if meta.get("checksum_scope") != CHECKSUM_SCOPE and stored_dtypes != {torch.float32}:
        return
    actual = sae_checksum(sae)
    if actual != recorded:
        raise SAEFileError(
            f"{meta_file.parent / WEIGHTS_FILE} does not match the checksum recorded in {meta_file} "
            f"(recorded {str(recorded)[:16]}…, the weights give {actual[:16]}…): the weights were "
            "changed or damaged after saving. Restore the folder from its source or retrain the SAE."
        )


def sae_from_saelens_parts(
    cfg: dict[str, Any], weights: dict[str, torch.Tensor], where: str = "the sae-lens state dict"
) -> SAE:
    """Build a saesteer SAE from a sae-lens config dict and state dict (folding its conventions).

    where: what `weights` came from, named in errors (a missing tensor or a wrong shape)."""
    missing = [name for name in SAELENS_WEIGHTS if name not in weights]
    if missing:
        raise SAEFileError(
            f"{where} lacks the tensor(s) {', '.join(missing)} (it has {sorted(weights)}); "
            f"a sae-lens SAE needs {', '.join(SAELENS_WEIGHTS)}."
        )
    arch = cfg.get("architecture", "standard")
    ours = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}
    if arch not in ours:
        raise ValueError(
            f"sae-lens architecture {arch!r} has no saesteer equivalent; supported: {list(ours)}."
        )
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(
            f"This sae-lens SAE normalises its inputs at run time ({cfg['normalize_activations']}); "
            "fold the scaling into its weights in sae-lens first (fold_activation_norm_scaling_factor)."
        )
    meta = cfg.get("metadata") or {}
    W_enc = weights["W_enc"].float()
    k = cfg.get("k")
    if W_enc.ndim != 2:
        raise SAEFileError(f"{where}: W_enc must be [d_in, d_sae]; got {tuple(W_enc.shape)}.")
    try:
        sae = SAE(
            SAEConfig(
                d_in=W_enc.shape[0],
                d_sae=W_enc.shape[1],
                arch=ours[arch],
                k=int(k) if k is not None else None,
                model_name=meta.get("model_name") or cfg.get("model_name") or "",
                hook_name=meta.get("hook_name") or cfg.get("hook_name") or "",
            )
        )
    except (TypeError, ValueError) as error:
        raise SAEFileError(
            f"The sae-lens config beside {where} describes no valid SAE: {error}"
        ) from None
    _check_state(sae, weights, where, complete=False)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(weights["b_enc"])
        sae.W_dec.copy_(weights["W_dec"])
        sae.b_dec.copy_(weights["b_dec"])
        if "threshold" in weights:
            sae.threshold.copy_(weights["threshold"])
        elif "log_threshold" in weights:
            sae.threshold.copy_(weights["log_threshold"].exp())
        if not cfg.get("apply_b_dec_to_input", True):
            # pre = x·W_enc + b_enc = (x − b_dec)·W_enc + (b_enc + b_dec·W_enc)
            sae.b_enc += sae.b_dec @ sae.W_enc
        if cfg.get("rescale_acts_by_decoder_norm"):
            # pre was already scaled by ‖W_dec[j]‖ before the threshold: keep θ as it is
            threshold = sae.threshold.clone()
            sae.fold_decoder_norms()
            sae.threshold.copy_(threshold)
    return sae
