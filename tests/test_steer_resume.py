"""train-steer resumes after kill -9 and ends with the same bytes as an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import train_steer_argv
from safetensors.torch import load_file

from saesteer.cli import main

EPOCHS = 6


def _argv(out, *extra: str) -> list[str]:
    return train_steer_argv(out, "bipo", "--epochs", str(EPOCHS), *extra)


def _code(folder) -> tuple[dict, dict]:
    tensors = load_file(folder / "code.safetensors")
    meta = json.loads((folder / "code.json").read_text())["meta"]
    return tensors, {k: meta[k] for k in ("loss_curve", "val_accuracy", "hyper_parameters")}


def test_kill_then_resume_equals_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    assert main(_argv(reference)) == 0

    out = tmp_path / "killed"
    partial = tmp_path / "killed.partial"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "saesteer", *_argv(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while not (partial / "phase0.json").is_file():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = json.loads((partial / "phase0.json").read_text())["epochs_done"]
    assert 1 <= done < EPOCHS and not out.exists()  # killed mid-run, nothing half-written

    assert main(_argv(out)) == 2  # an unfinished run is not silently restarted
    assert main(_argv(out, "--resume")) == 0
    assert not partial.exists()
    ours, our_meta = _code(out)
    theirs, their_meta = _code(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].equal(theirs[name]), name  # bit for bit
    assert our_meta == their_meta


def test_resume_with_other_options_is_refused(tmp_path, capsys):
    from saesteer.steer.checkpoint import SteerCheckpoints

    partial = tmp_path / "code.partial"
    with SteerCheckpoints(partial, {"lr": 0.05, "epochs": 4}, resume=False):
        pass
    with pytest.raises(ValueError, match="lr differ"):
        SteerCheckpoints(partial, {"lr": 0.1, "epochs": 4}, resume=True)
    with pytest.raises(FileNotFoundError, match="no unfinished run"):
        SteerCheckpoints(tmp_path / "other.partial", {}, resume=True)


def test_a_run_cut_between_phases_resumes_to_the_same_code(tiny_model, tmp_path):
    """YaPO refit has two phases (dense, then the refit on the chosen support): a kill after the
    dense phase resumes without rerunning it, and the support chosen from the restored v is the
    same, so the code is the same bytes."""
    from helpers import make_sae, synthetic_pairs

    from saesteer.steer.checkpoint import SteerCheckpoints
    from saesteer.steer.config import TrainSteerConfig
    from saesteer.steer.train import fit_steering

    model, tokenizer = tiny_model
    sae = make_sae("relu").requires_grad_(False)
    config = TrainSteerConfig(
        pairs="synthetic",
        method="yapo",
        support_by="effect",
        epochs=2,
        refit_epochs=2,
        top_k=8,
        progress=False,
    )
    pairs = synthetic_pairs(12, 0)

    def fit(resume: bool):
        checkpoints = SteerCheckpoints(tmp_path / "code.partial", {"run": 1}, resume)
        with checkpoints:
            return fit_steering(model, tokenizer, pairs, config, sae=sae, checkpoints=checkpoints)

    whole = fit(resume=False)
    for name in ("phase1.json", "phase1.safetensors"):  # as if killed before the refit began
        (tmp_path / "code.partial" / name).unlink()
    resumed = fit(resume=True)
    assert resumed.code.support.equal(whole.code.support)
    assert resumed.code.values.equal(whole.code.values)
    assert resumed.code.meta["loss_curve"] == whole.code.meta["loss_curve"]

    # not a silent rerun: the resumed run starts from the checkpoint's v (a changed v changes it)
    from safetensors.torch import save_file

    path = tmp_path / "code.partial" / "phase0.safetensors"
    tensors = load_file(path)
    tensors["v"] = tensors["v"] * 3
    save_file(tensors, path)
    for name in ("phase1.json", "phase1.safetensors"):
        (tmp_path / "code.partial" / name).unlink()
    assert not fit(resume=True).code.values.equal(whole.code.values)
