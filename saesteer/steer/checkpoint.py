"""Resumable steering-code training: the optimiser's whole state after every epoch, no pickle.

    OUT.partial/                         (owner kind "steering-checkpoints", next to --out)
      job.json                           the run's hyper-parameters and data checksum
      phase{i}.safetensors               v, Adam's exp_avg / exp_avg_sq / step, the RNG state
      phase{i}.json                      epochs done, the scheduler state, lr groups, curves

Every `optimise` call of a run is one phase, numbered in call order (BiPO: 1; YaPO refit: dense,
then refit). A phase whose checkpoint says all its epochs are done is not rerun: v and the curves
are restored, and whatever the trainer computes between phases (the support selection) is
recomputed from that v, deterministically. A phase cut mid-way continues after its last finished
epoch with the same optimiser moments, learning-rate schedule and shuffling generator, so on a CPU
a killed and resumed run ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from saesteer.paths import atomic_write_bytes

JOB_FILE = "job.json"
KIND = "steering-checkpoints"


def partial_folder(out: str | Path) -> Path:
    """Where the checkpoints of the run writing `out` live: the sibling `OUT.partial`."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


class SteerCheckpoints:
    """Reads and writes one run's phase checkpoints (module docstring)."""

    def __init__(self, folder: Path, job: dict[str, Any], resume: bool) -> None:
        from saesteer.outputs import Output

        self.folder = Path(folder)
        self.output = Output(self.folder, KIND)
        exists = (self.folder / JOB_FILE).is_file()
        if exists and not resume:
            raise FileExistsError(
                f"An unfinished run of this code is at {self.folder}; pass --resume to continue "
                "it, or delete that folder to start over."
            )
        if resume and not exists:
            raise FileNotFoundError(f"--resume: no unfinished run at {self.folder} to continue.")
        if exists:
            saved = json.loads((self.folder / JOB_FILE).read_text())
            changed = sorted(k for k in set(saved) | set(job) if saved.get(k) != job.get(k))
            if changed:
                raise ValueError(
                    f"Cannot resume {self.folder}: {', '.join(changed)} differ from the run that "
                    "wrote it; use the original options (or delete the folder)."
                )
        self.job = job
        self.phase = -1

    def __enter__(self) -> SteerCheckpoints:
        self.output.__enter__()
        self.output.in_place()
        atomic_write_bytes(self.folder / JOB_FILE, json.dumps(self.job, indent=2).encode())
        return self

    def __exit__(self, *exc: object) -> None:
        self.output.__exit__(*exc)

    def finish(self) -> None:
        """Delete the checkpoints once the code is saved."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def next_phase(self) -> int:
        self.phase += 1
        return self.phase

    def save(self, index: int, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Tensors first, the JSON (whose presence marks the checkpoint) last."""
        flat = {k: t.detach().cpu().contiguous() for k, t in tensors.items()}
        atomic_write_bytes(self.folder / f"phase{index}.safetensors", save(flat))
        atomic_write_bytes(self.folder / f"phase{index}.json", json.dumps(state).encode())

    def load(self, index: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        meta = self.folder / f"phase{index}.json"
        if not meta.is_file():
            return None
        return json.loads(meta.read_text()), load_file(self.folder / f"phase{index}.safetensors")


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON part, tensors) of a one-parameter optimizer's state_dict."""
    state = optimizer.state_dict()
    tensors = {f"adam.{k}": v for k, v in state["state"].get(0, {}).items()}
    return {"param_groups": state["param_groups"]}, tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, meta: dict, tensors: dict) -> None:
    moments = {k[len("adam.") :]: v for k, v in tensors.items() if k.startswith("adam.")}
    groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": {0: moments} if moments else {}, "param_groups": groups})
