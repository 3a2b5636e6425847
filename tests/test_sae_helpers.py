"""Shared helpers of the SAE tests (no tests here): small data, a tiny-model cache, quick configs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

HOOK = "blocks.1.hook_resid_post"
_MEMO: dict[str, object] = {}


def sparse_data(
    n: int = 4096, d: int = 32, n_features: int = 96, active: float = 4.0, seed: int = 0
) -> torch.Tensor:
    """x = Σ_j a_j·f_j + offset with ~`active` random unit features f_j per row: [n, d]."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(n_features, d, generator=gen), dim=1)
    on = torch.rand(n, n_features, generator=gen) < active / n_features
    coeffs = on * (0.5 + torch.rand(n, n_features, generator=gen) * 2.5)
    return coeffs @ features + 0.3


def tiny_tokens(n_ctx: int = 96, length: int = 48, vocab: int = 400, seed: int = 0) -> np.ndarray:
    """Token contexts [n_ctx, length] drawn from a small vocabulary (gives activations structure)."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, vocab, size=(n_ctx, length)).astype(np.int32)


def tiny_cache(model) -> Path:
    """A float32 cache of the tiny model's layer-1 residual stream (written once per process)."""
    if "cache" not in _MEMO:
        from activations_cache import write_cache

        folder = Path(tempfile.mkdtemp(prefix="sae-tests-"))
        path = write_cache(
            folder / "acts.h5",
            model,
            tiny_tokens(),
            [HOOK],
            progress=False,
            chunk_rows=512,
            shard_tokens=2048,
        )
        _MEMO["cache"] = Path(path)
    return _MEMO["cache"]  # type: ignore[return-value]


def quick_config(out: Path, **overrides):
    """A TrainSAEConfig for seconds-long runs on small data."""
    from saesteer.sae.configs import TrainSAEConfig

    values = dict(
        out=str(out),
        arch="topk",
        k=8,
        d_sae=128,
        tokens=256 * 60,
        batch_size=256,
        lr=3e-3,
        warmup_steps=5,
        progress=False,
        checkpoint_every=0,
        dead_tokens=4096,
        init_tokens=1024,
        l1_coefficient=1.0,
        l0_coefficient=0.05,
    )
    values.update(overrides)
    return TrainSAEConfig(**values)


@pytest.fixture(autouse=True)
def one_thread():
    """Small SAE tests run faster on one thread (two threads spin against each other on a busy box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
