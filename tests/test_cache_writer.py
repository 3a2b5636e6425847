"""activations_cache writing on the tiny model: equality with run_with_cache, crash safety, bad input."""

from __future__ import annotations

import errno

import h5py
import numpy as np
import pytest
import torch

import activations_cache.writer as writer_module
from activations_cache import (
    CacheExistsError,
    CacheWriteError,
    CorruptCacheError,
    IncompleteCacheError,
    ResumeMismatchError,
    UnknownHookError,
    open_cache,
    write_cache,
)
from activations_cache.shards import partial_dir

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"]
SMALL = {"batch_size": 4, "chunk_rows": 32, "shard_tokens": 64, "progress": False}


def make_tokens(n_contexts: int = 12, context_len: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5000, (n_contexts, context_len)).astype(np.int32)


def reference(
    model, tokens: np.ndarray, hooks: list[str], batch_size: int
) -> dict[str, torch.Tensor]:
    """run_with_cache on the same batches, flattened to [n_tokens, d]."""
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for b0 in range(0, len(tokens), batch_size):
        _, cache = model.run_with_cache(
            torch.as_tensor(tokens[b0 : b0 + batch_size], dtype=torch.long), names_filter=hooks
        )
        for h in hooks:
            out[h].append(cache[h].reshape(-1, cache[h][0, 0].numel()))
    return {h: torch.cat(v) for h, v in out.items()}


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    return make_tokens()


@pytest.fixture(scope="module")
def fp32_cache(tiny_model, tokens, tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "acts.h5"
    meta = {
        "doc_id": np.arange(tokens.size, dtype=np.int32).reshape(tokens.shape) // 7,
        "special_mask": tokens % 11 == 0,
    }
    return write_cache(
        path,
        tiny_model[0],
        tokens,
        HOOKS,
        attrs={"model_name": "tiny-test", "seed": 0},
        token_metadata=meta,
        **SMALL,
    )


def test_float32_cache_equals_run_with_cache_bitwise(tiny_model, tokens, fp32_cache):
    expected = reference(tiny_model[0], tokens, HOOKS, SMALL["batch_size"])
    with open_cache(fp32_cache, verify=True) as reader:
        assert reader.n_tokens == tokens.size and reader.hooks == HOOKS
        assert np.array_equal(reader.tokens, tokens.reshape(-1))
        for hook in HOOKS:
            assert torch.equal(reader.read(hook, np.arange(tokens.size)), expected[hook]), hook
            assert torch.equal(torch.cat(list(reader.sequential_batches(hook, 50))), expected[hook])


def test_file_is_self_describing_with_plain_h5py(fp32_cache, tokens):
    with h5py.File(fp32_cache, "r") as file:
        attrs = dict(file.attrs)
        assert attrs["complete"] and attrs["format"] == "saesteer-activations-cache"
        for key in (
            "model_name",
            "model_weights_sha256",
            "hooks",
            "d_model",
            "storage_dtype",
            "context_len",
            "library_versions",
            "seed",
            "created_at",
            "tokens_sha256",
            "chunk_rows",
        ):
            assert key in attrs, key
        assert file["acts/blocks.0.hook_resid_post"].chunks == (32, 64)
        assert file["meta/position"][:20].tolist() == [*range(16), 0, 1, 2, 3]
        assert (
            file["meta/doc_id"].shape == (tokens.size,) and file["meta/special_mask"].dtype == bool
        )
        assert len(file["checksums/blocks.0.hook_resid_post"]) == tokens.size // 32
        assert attrs["format_version"] == 2 and "norms" not in file  # norms come from the acts
        for name in ("tokens", "meta/position", "meta/doc_id", "meta/special_mask"):
            assert (file[name].compression, file[name].shuffle) == ("gzip", True), name
            assert file[name].chunks == (tokens.size,)  # min(n_tokens, max(chunk_rows, 65536))
        assert file["acts/blocks.0.hook_resid_post"].compression is None
    assert not partial_dir(fp32_cache).exists()


@pytest.mark.parametrize(("dtype", "atol"), [("float16", 5e-3), ("bfloat16", 4e-2)])
def test_16bit_storage_within_dtype_tolerance(tiny_model, tokens, tmp_path, dtype, atol):
    path = write_cache(tmp_path / "acts.h5", tiny_model[0], tokens, HOOKS[:2], dtype=dtype, **SMALL)
    expected = reference(tiny_model[0], tokens, HOOKS[:2], SMALL["batch_size"])
    with open_cache(path, verify=True) as reader:
        for hook in HOOKS[:2]:
            got = reader.read(hook, np.arange(tokens.size))
            torch.testing.assert_close(got, expected[hook], atol=atol, rtol=1e-2)
            assert torch.equal(got, expected[hook].to(getattr(torch, dtype)).float())
        stored = reader.read(HOOKS[0], np.arange(tokens.size))
        torch.testing.assert_close(reader.stats(HOOKS[0])["mean"], stored.double().mean(0).float())
        shuffled = torch.cat(list(reader.shuffled_batches(HOOKS[0], 50, seed=0, window_chunks=2)))
        assert shuffled.dtype == torch.float32 and torch.equal(
            sorted_rows(shuffled), sorted_rows(stored)
        )
        assert np.array_equal(reader.norms(HOOKS[0]), np.linalg.norm(stored.numpy(), axis=1))


def sorted_rows(rows: torch.Tensor) -> torch.Tensor:
    """Rows in lexicographic order (equal multisets of rows give equal results)."""
    return rows[np.lexsort(rows.numpy().T[::-1])]


def test_complete_cache_is_never_rewritten(tiny_model, tokens, fp32_cache):
    for resume in (False, True):
        with pytest.raises(CacheExistsError, match="never opened for writing"):
            write_cache(fp32_cache, tiny_model[0], tokens, HOOKS, resume=resume, **SMALL)


def test_disk_full_is_a_clean_error_and_resumable(
    tiny_model, tokens, tmp_path, monkeypatch, fp32_cache
):
    real_write = writer_module.write_shard

    def failing(folder, shard, *args):
        if shard == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(folder, shard, *args)

    monkeypatch.setattr(writer_module, "write_shard", failing)
    path = tmp_path / "acts.h5"
    with pytest.raises(CacheWriteError, match=r"disk is full.*--resume"):
        write_cache(path, tiny_model[0], tokens, HOOKS, **SMALL)
    monkeypatch.setattr(writer_module, "write_shard", real_write)
    with pytest.raises(IncompleteCacheError, match="--resume"):
        open_cache(path)
    with pytest.raises(CacheExistsError, match="--resume"):
        write_cache(path, tiny_model[0], tokens, HOOKS, **SMALL)
    write_cache(path, tiny_model[0], tokens, HOOKS, resume=True, **SMALL)
    with open_cache(path, verify=True) as resumed, open_cache(fp32_cache) as whole:
        for hook in HOOKS:
            assert torch.equal(
                resumed.read(hook, range(whole.n_tokens)), whole.read(hook, range(whole.n_tokens))
            )


def test_resume_refuses_other_model_or_corpus(tiny_model, tokens, tmp_path, monkeypatch):
    from saesteer.models import load_model

    monkeypatch.setattr(
        writer_module, "_compute_shards", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    path = tmp_path / "acts.h5"
    with pytest.raises(KeyboardInterrupt):
        write_cache(path, tiny_model[0], tokens, HOOKS, **SMALL)
    other_model = load_model("tiny-test", seed=1)[0]
    with pytest.raises(ResumeMismatchError, match="model_weights_sha256"):
        write_cache(path, other_model, tokens, HOOKS, resume=True, **SMALL)
    with pytest.raises(ResumeMismatchError, match="tokens_sha256"):
        write_cache(path, tiny_model[0], make_tokens(seed=1), HOOKS, resume=True, **SMALL)
    with pytest.raises(ResumeMismatchError, match="storage_dtype"):
        write_cache(path, tiny_model[0], tokens, HOOKS, resume=True, dtype="float16", **SMALL)


def test_corrupt_and_truncated_files_are_refused(fp32_cache, tmp_path):
    data = bytearray(fp32_cache.read_bytes())
    with h5py.File(fp32_cache, "r") as file:
        offset = file["acts/blocks.1.hook_mlp_out"].id.get_chunk_info(0).byte_offset + 100
    damaged = tmp_path / "damaged.h5"
    data[offset] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptCacheError, match=r"chunk 0 of acts/blocks.1.hook_mlp_out.*rebuild"):
        open_cache(damaged, verify=True)
    with pytest.raises(CorruptCacheError, match="checksum"):
        open_cache(damaged).read("blocks.1.hook_mlp_out", [3])
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CorruptCacheError, match="truncated or damaged"):
        open_cache(truncated)
    with pytest.raises(FileNotFoundError, match="saesteer cache"):
        open_cache(tmp_path / "missing.h5")


def test_bad_inputs_have_clear_errors(tiny_model, tokens, tmp_path):
    model = tiny_model[0]
    with pytest.raises(
        UnknownHookError,
        match=r"blocks.9.hook_resid_post.*Valid hook names:.*blocks\.\{0\.\.1\}\.hook_resid_post",
    ):
        write_cache(tmp_path / "a.h5", model, tokens, ["blocks.9.hook_resid_post"], **SMALL)
    with pytest.raises(ValueError, match="No tokens"):
        write_cache(tmp_path / "a.h5", model, tokens[:0], HOOKS, **SMALL)
    with pytest.raises(ValueError, match="exceeds the model's n_ctx 256"):
        write_cache(tmp_path / "a.h5", model, make_tokens(2, 300), HOOKS, **SMALL)
    with pytest.raises(ValueError, match="not \\[batch, position"):
        write_cache(tmp_path / "a.h5", model, tokens, ["blocks.0.attn.hook_pattern"], **SMALL)
    with pytest.raises(ValueError, match="storage dtype"):
        write_cache(tmp_path / "a.h5", model, tokens, HOOKS, dtype="int8", **SMALL)
    with pytest.raises(ValueError, match="written by activations_cache"):
        write_cache(tmp_path / "a.h5", model, tokens, HOOKS, attrs={"hooks": "mine"}, **SMALL)
    with pytest.raises(ValueError, match="transformer_lens backend has no compiled forward"):
        write_cache(tmp_path / "a.h5", model, tokens, HOOKS, compile=True, **SMALL)
    with pytest.raises(ValueError, match="compile must be True, False or 'auto'"):
        write_cache(tmp_path / "a.h5", model, tokens, HOOKS, compile="yes", **SMALL)
    assert not list(tmp_path.iterdir())
