"""Training checkpoints: one file per step under `<out>/checkpoints/`, each written atomically.

    step_00000120.pt = {"step", "module", "optimizer", "scheduler", "rng", "trainer", "config"}

`rng` holds torch, numpy and python generator states; `trainer` the input scale, dead-latent
counters and the data position (global batches consumed = step). The newest `keep` files are kept;
a checkpoint is never rewritten in place, so a crash while writing leaves the previous one intact.
"""

from __future__ import annotations

import io
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saesteer.paths import atomic_write_bytes

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"step_(\d{8})\.pt$")


def checkpoint_files(out: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def rng_state() -> dict[str, Any]:
    """Generator states as tensors, tuples and numbers only, so `torch.load(weights_only=True)`
    reads them back (numpy's key array travels as a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


def save_checkpoint(out: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write `payload` (plus RNG states) as the checkpoint of `step`; prune to the newest `keep`."""
    buffer = io.BytesIO()
    torch.save({"step": step, "rng": rng_state(), **payload}, buffer)
    path = Path(out) / CHECKPOINT_DIR / f"step_{step:08d}.pt"
    atomic_write_bytes(path, buffer.getvalue())
    for old in checkpoint_files(out)[: -max(keep, 1)]:  # the newest always stays
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(out: Path) -> dict[str, Any]:
    """The newest checkpoint that loads (a damaged newer file is skipped with a note)."""
    files = checkpoint_files(out)
    if not files:
        raise FileNotFoundError(
            f"No checkpoint in {Path(out) / CHECKPOINT_DIR}; run without --resume."
        )
    for path in reversed(files):
        try:  # weights_only: a pickle placed in checkpoints/ is refused, never executed
            return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
            print(f"Skipping unreadable checkpoint {path}: {str(error).splitlines()[0]}")
    raise RuntimeError(f"No readable checkpoint in {Path(out) / CHECKPOINT_DIR}.")
