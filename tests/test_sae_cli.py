"""SAE training as real processes: resume after SIGKILL equals the uninterrupted run; torchrun DDP
with 2 CPU ranks equals one process with the same global batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quick_config,
    sparse_data,
)
from safetensors.torch import load_file, save_file

from saesteer.sae.checkpoint import checkpoint_files
from saesteer.sae.data import TensorSource
from saesteer.sae.trainer import train_sae

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
ARGS = [
    "--arch",
    "topk",
    "--k",
    "8",
    "--d-sae",
    "64",
    "--batch-size",
    "128",
    "--lr",
    "0.003",
    "--warmup-steps",
    "5",
    "--init-tokens",
    "512",
    "--dead-tokens",
    "2048",
    "--no-progress",
]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "sae_weights.safetensors")


def _reference(tmp_path: Path, acts: Path, tokens: int, **overrides) -> dict[str, torch.Tensor]:
    cfg = quick_config(
        tmp_path / "reference",
        arch="topk",
        k=8,
        d_sae=64,
        batch_size=128,
        lr=0.003,
        warmup_steps=5,
        init_tokens=512,
        dead_tokens=2048,
        tokens=tokens,
        **overrides,
    )
    train_sae(cfg, source=TensorSource(load_file(acts)["acts"], name=acts.name))
    return _weights(tmp_path / "reference")


def test_resume_after_sigkill_equals_uninterrupted(tmp_path: Path) -> None:
    acts = tmp_path / "acts.safetensors"
    save_file({"acts": sparse_data(n=4096)}, acts)
    tokens = 128 * 1500
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "saesteer",
        "train-sae",
        "--activations",
        str(acts),
        "--out",
        str(out),
        "--tokens",
        str(tokens),
        "--checkpoint-every",
        "100",
        *ARGS,
    ]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not checkpoint_files(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint_files(out) and not (out / "saesteer.json").exists(), (
        "killed too late to test resume"
    )
    done = subprocess.run([*cmd, "--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = _reference(tmp_path, acts, tokens)
    resumed = _weights(out)
    for name, value in reference.items():
        assert torch.equal(value, resumed[name]), name


def test_torchrun_two_cpu_ranks_equal_one_process(tmp_path: Path) -> None:
    acts = tmp_path / "acts.safetensors"
    save_file({"acts": sparse_data(n=2048)}, acts)
    tokens = 128 * 30
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "saesteer",
        "train-sae",
        "--activations",
        str(acts),
        "--out",
        str(out),
        "--tokens",
        str(tokens),
        *ARGS,
    ]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = _reference(tmp_path, acts, tokens)
    parallel = _weights(out)
    for name, value in reference.items():
        assert torch.allclose(value, parallel[name], atol=1e-5, rtol=1e-4), name
