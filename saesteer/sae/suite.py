"""The pretrained SAE suite of the default model: what it is, how it is built, how it is loaded.

    load_sae("pretrained:smollm2-l15-topk-8x-k64")      # shipped with the package, verified

Every member reads SmolLM2-135M-Instruct's residual stream, was trained on the whole Brown train
split (9,895 contexts × 128 tokens, several epochs, without position 0: the attention sink) and
evaluated on held-out Brown validation contexts. `build_suite` (the `saesteer sae-suite` command)
rebuilds it from nothing: cache → train each member → evaluate → export.

Distribution: the exported members are float16 copies (storage only: they load as float32) in
`saesteer/data/pretrained/NAME/`, sae-lens folders like any other, listed in `suite.json` with the
sha256 of every file, the training config and the held-out metrics. Shipping them in the package
is the only way that works offline (no PyPI/Debian/npm package ships SAE weights, and rebuilding
takes about an hour on 2 CPU cores); float16 halves the bytes (a relative rounding of ≤ 2⁻¹¹ per
weight; the slow suite test re-measures the shipped copies' held-out EV against the recorded one).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

PREFIX = "pretrained:"
MANIFEST = "suite.json"
CACHE_HOOKS = ("blocks.9.hook_resid_post", "blocks.15.hook_resid_post")
BROWN_TRAIN_TOKENS = 9_895 * 128  # the whole train split at context 128 (seed 0, 5 % held out)


@dataclass(frozen=True)
class SuiteMember:
    """One SAE of the suite and how it is trained (other options: `TrainSAEConfig` defaults)."""

    name: str
    hook: str
    arch: str
    k: int
    expansion: int
    epochs: int
    batch_size: int = 2048
    lr: float = 7e-4


MEMBERS = {
    m.name: m
    for m in (
        SuiteMember("smollm2-l15-topk-8x-k64", "blocks.15.hook_resid_post", "topk", 64, 8, 2),
        SuiteMember(
            "smollm2-l15-batchtopk-4x-k64", "blocks.15.hook_resid_post", "batchtopk", 64, 4, 2
        ),
        SuiteMember("smollm2-l9-topk-4x-k64", "blocks.9.hook_resid_post", "topk", 64, 4, 2),
    )
}


def shipped_dir() -> Path:
    """Where the package keeps the exported suite."""
    return Path(str(resources.files("saesteer") / "data" / "pretrained"))


def manifest(folder: Path | None = None) -> dict[str, Any]:
    """The suite's `suite.json` (name → files' sha256, config, metrics); {} when none is there."""
    path = (folder or shipped_dir()) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def pretrained_dir(name: str) -> Path:
    """The verified folder of a shipped member (`pretrained:` prefix optional)."""
    from saesteer.paths import sha256_file

    name = name.removeprefix(PREFIX)
    entries = manifest()
    if name not in entries:
        raise ValueError(
            f"No pretrained SAE {name!r}; shipped: {sorted(entries) or 'none'} "
            "(`saesteer sae-suite` builds the suite)."
        )
    folder = shipped_dir() / name
    for file, digest in entries[name]["sha256"].items():
        if not (folder / file).is_file() or sha256_file(folder / file) != digest:
            raise ValueError(
                f"{folder / file} is missing or does not match its recorded sha256; "
                "reinstall saesteer (or rebuild with `saesteer sae-suite --export`)."
            )
    return folder


def train_config(member: SuiteMember, cache: Path, out: Path, n_tokens: int):
    """The `TrainSAEConfig` of one member on a cache of `n_tokens` tokens."""
    from saesteer.sae.configs import TrainSAEConfig

    usable = n_tokens * 127 // 128  # position 0 of every 128-token context is left out
    return TrainSAEConfig(
        out=str(out),
        cache=str(cache),
        hook=member.hook,
        arch=member.arch,
        k=member.k,
        expansion=member.expansion,
        tokens=member.epochs * usable // member.batch_size * member.batch_size,
        batch_size=member.batch_size,
        lr=member.lr,
        warmup_steps=100,
        skip_positions=1,
        checkpoint_every=250,
        resume=(out / "checkpoints").is_dir(),
    )


def build_suite(
    out: Path,
    names: list[str] | None = None,
    cache: Path | None = None,
    export: Path | None = None,
    eval_tokens: int = 32_768,
) -> dict[str, Any]:
    """Cache (unless given), train, evaluate and (with `export`) export the members `names`.

    Resumable stage by stage: a finished cache, SAE or eval is reused, a killed one continued.
    Returns the manifest entries of the members built.
    """
    from saesteer.cache_job import CacheConfig, run_cache
    from saesteer.sae.configs import EvalSAEConfig
    from saesteer.sae.evals import EVAL_FILE, run_eval
    from saesteer.sae.io import META_FILE
    from saesteer.sae.trainer import train_sae

    members = [MEMBERS[n] for n in (names or MEMBERS)]
    out.mkdir(parents=True, exist_ok=True)
    if cache is None:
        cache = out / "brown_train.h5"
        if not cache.is_file():
            run_cache(
                CacheConfig(
                    out=str(cache),
                    hook=list(CACHE_HOOKS),
                    tokens=BROWN_TRAIN_TOKENS,
                    dtype="float16",
                    resume=Path(f"{cache}.partial").is_dir(),
                )
            )
    from activations_cache import open_cache

    n_tokens = open_cache(cache).n_tokens
    entries = {}
    for member in members:
        folder = out / member.name
        config = train_config(member, cache, folder, n_tokens)
        if not (folder / META_FILE).is_file():
            train_sae(config)
        if not (folder / EVAL_FILE).is_file():
            run_eval(EvalSAEConfig(sae=str(folder), n_tokens=eval_tokens))
        metrics = json.loads((folder / EVAL_FILE).read_text())
        entries[member.name] = {
            "member": vars(member),
            "training": {k: v for k, v in vars(config).items() if k not in ("out", "cache")},
            "metrics": {k: v for k, v in metrics.items() if k != "config"},
        }
        if export is not None:
            entries[member.name]["sha256"] = export_member(folder, export / member.name)
    if export is not None:
        from saesteer.paths import atomic_write_bytes

        merged = {**manifest(export), **entries}
        atomic_write_bytes(export / MANIFEST, json.dumps(merged, indent=2).encode())
    return entries


def export_member(folder: Path, dest: Path) -> dict[str, str]:
    """A float16-storage copy of the SAE in `folder` at `dest`; returns {file: sha256}.

    The copy's recorded checksum is that of the float32 SAE it loads as (the rounded weights).
    """
    import torch

    from saesteer.paths import sha256_file
    from saesteer.sae.evals import EVAL_FILE
    from saesteer.sae.io import CFG_FILE, META_FILE, SPARSITY_FILE, load_sae, save_sae

    sae = load_sae(folder)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(p.half().float())
    meta = json.loads((folder / META_FILE).read_text())
    kept = {k: v for k, v in meta.items() if k in ("training", "seed", "inputs")}
    kept["storage_dtype"] = "float16"
    if dest.exists():
        shutil.rmtree(dest)
    sparsity = None
    if (folder / SPARSITY_FILE).is_file():
        from safetensors.torch import load_file

        sparsity = load_file(folder / SPARSITY_FILE)["sparsity"]
    save_sae(sae, dest, log10_density=sparsity, metadata=kept, storage_dtype=torch.float16)
    shutil.copy(folder / EVAL_FILE, dest / EVAL_FILE)
    files = [CFG_FILE, "sae_weights.safetensors", META_FILE, EVAL_FILE]
    files += [SPARSITY_FILE] if sparsity is not None else []
    return {f: sha256_file(dest / f) for f in files}
