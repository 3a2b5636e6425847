"""The benchmark's output folder: ownership, one writer at a time, and finished cells kept on disk.

    OUT/bench-steer.json                          format, settings fingerprint, config
    OUT/cells/BEHAVIOUR/METHOD/seedS/alpha=A.json one finished cell, written atomically
    OUT/codes/BEHAVIOUR/METHOD/seedS/             the fitted code (`saesteer.steer.io` folder)
    OUT/results.json, report.html, *.png          written at the end of every run

The folder is claimed and locked by `saesteer.outputs.Output` (kind "bench-steer": a foreign
folder or a file is refused before any work, a second writer fails fast). It is reused only when
its `bench-steer.json` has the same settings fingerprint
(model, SAE, hook, prompts, tokens, epochs, capability set): then every finished cell and code is
read back instead of recomputed, so a killed run continues where it stopped and a larger grid
(more methods, seeds or strengths) computes only what is new.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from saesteer.paths import atomic_write_bytes

FORMAT = "saesteer-bench-steer/1"
MARKER = "bench-steer.json"
SETTINGS = (
    "model",
    "sae",
    "hook_name",
    "n_prompts",
    "max_new_tokens",
    "epochs",
    "n_capability",
    "brown_tokens",
)


def fingerprint(config: Any) -> dict[str, Any]:
    """The config values every stored cell depends on."""
    return {name: getattr(config, name) for name in SETTINGS}


def weights_digest(model: Any) -> str:
    """sha256 of a HookedTransformer's token embedding and unembedding (float32 bytes)."""
    digest = hashlib.sha256()
    for weight in (model.W_E, model.W_U):
        digest.update(weight.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def slug(name: str) -> str:
    """A file-name-safe form of a method spec (a short hash keeps distinct specs distinct)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class BenchStore:
    """Reads and writes the files of one benchmark folder (module docstring)."""

    def __init__(self, out: str | Path) -> None:
        self.root = Path(out)

    def claim(self, config: Any) -> None:
        """`check` again (now under the lock), then write the marker."""
        from saesteer.config import config_to_dict

        self.check(config)
        record = {
            "format": FORMAT,
            "settings": fingerprint(config),
            "config": config_to_dict(config),
        }
        atomic_write_bytes(self.root / MARKER, json.dumps(record, indent=2).encode())

    def check(self, config: Any) -> None:
        """Refuse a benchmark folder of other settings (or a damaged marker); writes nothing.
        Files and foreign folders are refused by `saesteer.outputs.Output` before this."""
        marker = self.root / MARKER
        if not marker.is_file():
            return
        try:
            previous = json.loads(marker.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{marker} is damaged ({error}); delete the folder to start over."
            ) from None
        mine = fingerprint(config)
        if previous.get("format") != FORMAT or previous.get("settings") != mine:
            theirs = previous.get("settings", {})
            changed = ", ".join(sorted(k for k in mine if theirs.get(k) != mine[k]))
            raise ValueError(
                f"--out {self.root} holds a benchmark run with other settings "
                f"({changed or previous.get('format')}); its cells cannot be reused: choose "
                "another --out, or delete that folder."
            )

    def check_weights(self, digest: str) -> None:
        """Refuse cells made with other weights under the same model name; record `digest`."""
        marker = self.root / MARKER
        record = json.loads(marker.read_text())
        if record.get("weights_sha256", digest) != digest:
            raise ValueError(
                f"--out {self.root} was filled by a model with other weights (sha256 of the "
                "embeddings differs) under the same name; choose another --out."
            )
        record["weights_sha256"] = digest
        atomic_write_bytes(marker, json.dumps(record, indent=2).encode())

    def cell_path(self, behaviour: str, method: str, seed: int, alpha: float) -> Path:
        return (
            self.root / "cells" / behaviour / slug(method) / f"seed{seed}" / f"alpha={alpha!r}.json"
        )

    def code_dir(self, behaviour: str, method: str, seed: int) -> Path:
        return self.root / "codes" / behaviour / slug(method) / f"seed{seed}"

    def read_cell(self, behaviour: str, method: str, seed: int, alpha: float) -> dict | None:
        """A finished cell, or None when it is missing or unreadable (it is then recomputed)."""
        path = self.cell_path(behaviour, method, seed, alpha)
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def write_cell(self, behaviour: str, method: str, seed: int, alpha: float, cell: dict) -> None:
        path = self.cell_path(behaviour, method, seed, alpha)
        atomic_write_bytes(path, json.dumps(cell, default=float).encode())

    def write_json(self, name: str, data: Any) -> Path:
        path = self.root / name
        atomic_write_bytes(path, json.dumps(data, indent=1, default=float).encode())
        return path
