"""Builders shared by the tests (no tests here): random SAEs, steering codes, preference pairs, small
data, a tiny-model cache, quick configs. Test modules import from here, never from each other."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from saesteer.sae import SAE, SAEConfig
from saesteer.steer.controlled import Controller, ControllerNet
from saesteer.steer.hooks import steer
from saesteer.steer.pairs import PreferencePair

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


STEER_HOOK = "blocks.0.hook_resid_post"


def make_sae(arch: str = "relu", seed: int = 0, hook: str = STEER_HOOK) -> SAE:
    """A random SAE on tiny-test's layer-0 residual (64 → 256), for steering tests."""
    torch.manual_seed(seed)
    sae = SAE(
        SAEConfig(
            d_in=64,
            d_sae=256,
            arch=arch,
            k=16 if arch == "topk" else None,
            hook_name=hook,
            model_name="tiny-test",
        )
    )
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
        sae.threshold.uniform_(0.0, 0.3) if arch == "jumprelu" else None
    return sae


def sparse_code(seed: int = 1, s: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(256)
    v[torch.randperm(256, generator=g)[:s]] = torch.randn(s, generator=g) * 2
    return v


def features_sae(arch: str = "relu", k: int | None = None, seed: int = 0, d_sae: int = 48) -> SAE:
    """A random SAE on the tiny model's residual (b_enc < 0 so that latents fire sparsely)."""
    torch.manual_seed(seed)
    sae = SAE(
        SAEConfig(d_in=64, d_sae=d_sae, arch=arch, k=k, model_name="tiny-test", hook_name=HOOK)
    )
    with torch.no_grad():
        sae.b_enc.fill_(-0.5)
    return sae.requires_grad_(False)


def interop_sae(arch: str, seed: int = 0) -> SAE:
    """A random 24 → 64 SAE with non-trivial biases and threshold (sae-lens round trips)."""
    torch.manual_seed(seed)
    sae = SAE(
        SAEConfig(
            d_in=24,
            d_sae=64,
            arch=arch,
            k=6 if arch in ("topk", "batchtopk") else None,
            model_name="tiny-test",
            hook_name="blocks.1.hook_resid_post",
        )
    )
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.5)
        sae.threshold.uniform_(0.0, 0.4)
    return sae


WORDS = [
    "river",
    "stone",
    "cloud",
    "lamp",
    "garden",
    "window",
    "music",
    "paper",
    "forest",
    "bridge",
    "candle",
    "winter",
    "road",
]


def synthetic_pairs(n: int, seed: int) -> list[PreferencePair]:
    """Prefer completions ending in ' yes' over the same text ending in ' no'."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, middle = " ".join(rng.sample(WORDS, 4)), " " + " ".join(rng.sample(WORDS, 2))
        out.append(PreferencePair(prompt, middle + " yes", middle + " no"))
    return out


def train_steer_argv(out, method: str = "mean-diff", *extra: str) -> list[str]:
    """`saesteer train-steer` on tiny-test and the shipped sentiment pairs, writing `out`."""
    base = ["train-steer", "--model", "tiny-test", "--pairs", "sentiment", "--method", method]
    return [*base, "--no-progress", "--out", str(out), *extra]


def direct_log_odds(model, tokenizer, pairs, code, alpha: float) -> list[float]:
    """Per pair, log π_α(chosen | prompt) − log π_α(rejected | prompt), each by one whole-model
    forward under `steer(model, code, α)` (the reference for the audit's preference numbers)."""

    out = []
    for pair in pairs:
        prompt = tokenizer(pair.prompt).input_ids
        scores = []
        for completion in (pair.chosen, pair.rejected):
            full = torch.tensor(
                [prompt + tokenizer(completion, add_special_tokens=False).input_ids]
            )
            with torch.no_grad(), steer(model, code, alpha):
                logp = model(full)[0].double().log_softmax(-1)
            scores.append(
                sum(logp[t - 1, full[0, t]].item() for t in range(len(prompt), full.shape[1]))
            )
        out.append(scores[0] - scores[1])
    return out


def steered_logit_shift(model, code, ids) -> torch.Tensor:
    """|logits under `code` at α = 1 − plain logits| of `ids`, after checking that α = 0 gives the
    plain logits exactly (every intervention test first proves it moves the output)."""

    with torch.no_grad():
        plain = model(ids)
        with steer(model, code, 0.0):
            assert torch.equal(model(ids), plain)
        with steer(model, code, 1.0):
            return (model(ids) - plain).abs()


def hand_controller(
    d_model: int,
    n_layers: int,
    model_name: str,
    inputs=(0, 1),
    patched=(0, 1),
    timing: str = "prefill",
    s_bias: float = 2.0,
    seed: int = 0,
    scale: str = "relu",
) -> Controller:
    """A Guiding Giants controller with random weights (s ≈ s_bias > 0) and random directions."""
    torch.manual_seed(seed)
    net = ControllerNet(len(inputs) * d_model, 8, 1 + len(patched))
    with torch.no_grad():
        net.fc2.bias[0] = s_bias
        net.fc2.weight[1:] *= 20  # spread the layer weights σ(w_l) away from 0.5
    directions = torch.randn(len(patched), d_model)
    return Controller(net, inputs, patched, directions, model_name, n_layers, timing, scale)


def assert_hf_steers_like_tl(tl_model, hf_model, intervention, alpha: float, ids, msg: str = ""):
    """`steer` on the HF model gives the TL model's logits (the intervention first shown to move
    them), on the same weights."""
    plain = tl_model(ids)
    with steer(tl_model, intervention, alpha):
        tl = tl_model(ids)
    with steer(hf_model, intervention, alpha):
        hf = hf_model(ids).logits
    assert (tl - plain).abs().max() > 0.05, msg
    torch.testing.assert_close(hf, tl, atol=2e-3, rtol=1e-3, msg=msg or None)
