"""Real processes: kill -9 mid-run then --resume, torchrun with 2 gloo ranks, the `saesteer cache` CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from activations_cache import open_cache, write_cache
from activations_cache.shards import finished_shards, partial_dir

pytestmark = pytest.mark.subprocess
ROOT = Path(__file__).resolve().parents[1]
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"]
LAYOUT = {"batch_size": 2, "chunk_rows": 16, "shard_tokens": 32}

SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from activations_cache import TransformerLensSource, write_cache
    from saesteer.models import load_model

    class Slow(TransformerLensSource):
        def __call__(self, tokens):
            time.sleep(0.4)
            return super().__call__(tokens)

    model = load_model("tiny-test", seed=0)[0]
    hooks = sys.argv[3:]
    write_cache(sys.argv[1], Slow(model, hooks), np.load(sys.argv[2]), hooks, progress=False,
                batch_size=2, chunk_rows=16, shard_tokens=32)
    """
)


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def assert_same_cache(a: Path, b: Path) -> None:
    with open_cache(a, verify=True) as x, open_cache(b, verify=True) as y:
        assert x.hooks == y.hooks and x.n_tokens == y.n_tokens
        assert np.array_equal(x.tokens, y.tokens)
        for hook in x.hooks:
            assert torch.equal(x.read(hook, range(x.n_tokens)), y.read(hook, range(y.n_tokens))), (
                hook
            )
            assert np.array_equal(x.file[f"checksums/{hook}"][()], y.file[f"checksums/{hook}"][()])
        for key in (
            "model_weights_sha256",
            "tokens_sha256",
            "d_model",
            "storage_dtype",
            "chunk_rows",
        ):
            assert x.attrs[key] == y.attrs[key], key


def test_kill_and_resume_equals_uninterrupted(tiny_model, tmp_path):
    tokens = np.random.default_rng(0).integers(0, 5000, (24, 16)).astype(np.int32)
    np.save(tmp_path / "tokens.npy", tokens)
    (tmp_path / "slow.py").write_text(SLOW_WRITER)
    killed = tmp_path / "killed.h5"
    process = subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "slow.py"),
            str(killed),
            str(tmp_path / "tokens.npy"),
            *HOOKS,
        ],
        env=env(),
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if partial_dir(killed).is_dir() and len(finished_shards(partial_dir(killed))) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, (
        f"writer ended before it could be killed: {process.stderr.read().decode()}"
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = finished_shards(partial_dir(killed))
    assert 3 <= len(done) < 12 and not killed.exists()

    write_cache(killed, tiny_model[0], tokens, HOOKS, resume=True, progress=False, **LAYOUT)
    whole = write_cache(
        tmp_path / "whole.h5", tiny_model[0], tokens, HOOKS, progress=False, **LAYOUT
    )
    assert_same_cache(killed, whole)
    assert not partial_dir(killed).exists()


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    docs = [
        f"Document {i} tells of {w} and of the river that ran past the mill. " * 12
        for i, w in enumerate(["ships", "kings", "cabbages", "sealing wax", "pigs", "wings"])
    ]
    path.write_text("\n\n".join(docs))
    return path


def cli_args(corpus: Path, out: Path) -> list[str]:
    return [
        "--model",
        "tiny-test",
        "--corpus",
        str(corpus),
        "--tokens",
        "384",
        "--context-len",
        "32",
        "--batch-size",
        "2",
        "--shard-tokens",
        "64",
        "--chunk-rows",
        "32",
        "--out",
        str(out),
        "--no-progress",
        *[a for h in HOOKS for a in ("--hook", h)],
    ]


def test_torchrun_two_ranks_reads_like_one_process(corpus_file, tmp_path):
    from saesteer.cache_job import CacheConfig, run_cache

    sharded = tmp_path / "sharded.h5"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "saesteer",
        "cache",
        *cli_args(corpus_file, sharded),
    ]
    result = subprocess.run(
        torchrun, env=env(), capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = CacheConfig(
        out=str(tmp_path / "single.h5"),
        model="tiny-test",
        corpus=str(corpus_file),
        tokens=384,
        context_len=32,
        batch_size=2,
        shard_tokens=64,
        chunk_rows=32,
        hook=HOOKS,
        progress=False,
    )
    with torch.inference_mode():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # torchrun gives each rank one thread; keep the same GEMM blocking
        try:
            single = run_cache(config)
        finally:
            torch.set_num_threads(threads)
    assert_same_cache(sharded, single)
    with open_cache(sharded) as reader:
        assert (
            reader.attrs["model_name"] == "tiny-test" and reader.attrs["corpus"]["n_tokens"] == 384
        )
        assert reader.metadata("special_mask").dtype == bool and reader.metadata(
            "doc_id"
        ).shape == (384,)


def test_cli_writes_then_refuses_to_rewrite(corpus_file, tmp_path, capsys):
    """In-process `saesteer cache` (the torchrun test runs it as real subprocesses)."""
    from saesteer.cli import main

    out = tmp_path / "cli.h5"
    argv = ["cache", *cli_args(corpus_file, out)]
    assert main(argv) == 0
    assert "bytes/token" in capsys.readouterr().out and out.is_file()
    assert main([*argv, "--resume"]) == 2
    assert "never opened for writing again" in capsys.readouterr().err
    assert main([*argv[:-1], "blocks.7.hook_resid_post", "--out", str(tmp_path / "x.h5")]) == 2
    assert "Valid hook names" in capsys.readouterr().err
    assert main([*argv, "--tokens", "0", "--out", str(tmp_path / "y.h5")]) == 2
    assert "--tokens must be" in capsys.readouterr().err
    assert main([*argv, "--context-len", "300", "--out", str(tmp_path / "z.h5")]) == 2
    assert "exceeds the model's n_ctx 256" in capsys.readouterr().err
