"""Save and load SAEs in sae-lens's folder format, plus saesteer's own metadata.

A saved SAE folder:
    cfg.json                  sae-lens config (architecture standard | topk | jumprelu, d_in, d_sae,
                              k, metadata.model_name/hook_name, …); `sae_lens.SAE.load_from_disk` reads it
    sae_weights.safetensors   W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec (+ threshold)
    sparsity.safetensors      {"sparsity": log10 feature density [d_sae]} when known
    saesteer.json             our metadata: arch (BatchTopK is saved as sae-lens JumpReLU, its
                              inference form), k, checksum, training config, versions, seed, inputs

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


def sae_checksum(sae: SAE) -> str:
    """sha256 (hex) of the architecture, k and every weight (name, dtype, shape, bytes), sorted.

    Steering codes record it to refer to the exact dictionary they were trained in.
    """
    digest = hashlib.sha256(f"{sae.cfg.arch}|{sae.cfg.k}|".encode())
    for name, tensor in sorted(sae.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


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
    in the SAE's own dtype, and the recorded checksum is that of the SAE as given).
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
        "checksum": sae_checksum(sae),
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
    """
    path = sae_dir(path)
    if not (path / CFG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{path} is not an SAE folder (needs {CFG_FILE} and {WEIGHTS_FILE})."
        )
    cfg = json.loads((path / CFG_FILE).read_text())
    weights = load_file(path / WEIGHTS_FILE, device="cpu")
    meta_file = path / META_FILE
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        sae = SAE(
            SAEConfig(
                d_in=meta["d_in"],
                d_sae=meta["d_sae"],
                arch=meta["arch"],
                k=meta["k"],
                model_name=meta.get("model_name", ""),
                hook_name=meta.get("hook_name", ""),
                extra=meta.get("extra", {}),
            )
        )
        weights.setdefault("threshold", torch.zeros(sae.cfg.d_sae))
        sae.load_state_dict(weights)
        return sae.to(device)
    return sae_from_saelens_parts(cfg, weights).to(device)


def sae_from_saelens_parts(cfg: dict[str, Any], weights: dict[str, torch.Tensor]) -> SAE:
    """Build a saesteer SAE from a sae-lens config dict and state dict (folding its conventions)."""
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
