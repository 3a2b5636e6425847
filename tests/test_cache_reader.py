"""Readers: shuffled epochs (each token once, seeded), mid-epoch resume, DDP slices, loader, stats."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from activations_cache import ActivationDataset, CorruptCacheError, open_cache, write_cache

HOOK = "blocks.0.hook_resid_post"


def small_cache(tiny_model, folder, n_contexts: int, seed: int):
    """A cache of `n_contexts` contexts × 10 tokens in chunks of 20 rows, shards of 160 tokens."""
    tokens = np.random.default_rng(seed).integers(0, 5000, (n_contexts, 10)).astype(np.int32)
    return write_cache(
        folder / "acts.h5",
        tiny_model[0],
        tokens,
        [HOOK],
        batch_size=8,
        chunk_rows=20,
        shard_tokens=160,
        progress=False,
    )


@pytest.fixture(scope="module")
def reader(tiny_model, tmp_path_factory):
    """40 contexts: the last chunk of every shard whole."""
    with open_cache(small_cache(tiny_model, tmp_path_factory.mktemp("reader"), 40, 3)) as opened:
        yield opened


@pytest.fixture(scope="module")
def ragged(tiny_model, tmp_path_factory):
    """41 contexts: the last chunk holds 10 rows."""
    with open_cache(small_cache(tiny_model, tmp_path_factory.mktemp("ragged"), 41, 4)) as opened:
        yield opened


def row_ids(reader, batches) -> np.ndarray:
    """Which stored row each batch row is (rows are unique vectors), in order."""
    everything = reader.read(HOOK, np.arange(reader.n_tokens))
    lookup = {tuple(row.tolist()): i for i, row in enumerate(everything)}
    assert len(lookup) == reader.n_tokens
    return np.array([lookup[tuple(row.tolist())] for batch in batches for row in batch])


def test_shuffled_epoch_has_every_token_once_and_depends_on_seed(reader):
    epoch = list(reader.shuffled_batches(HOOK, 64, seed=0, window_chunks=3))
    assert [len(b) for b in epoch] == [64] * 6 + [16]
    ids = row_ids(reader, epoch)
    assert sorted(ids) == list(range(reader.n_tokens))
    assert not np.array_equal(ids, np.arange(reader.n_tokens))
    same = row_ids(reader, reader.shuffled_batches(HOOK, 64, seed=0, window_chunks=3))
    other_seed = row_ids(reader, reader.shuffled_batches(HOOK, 64, seed=1, window_chunks=3))
    other_epoch = row_ids(
        reader, reader.shuffled_batches(HOOK, 64, seed=0, epoch=1, window_chunks=3)
    )
    assert np.array_equal(ids, same)
    assert not np.array_equal(ids, other_seed) and sorted(other_seed) == list(
        range(reader.n_tokens)
    )
    assert not np.array_equal(ids, other_epoch)


@pytest.mark.parametrize("seed", [1, 3, 8])
def test_short_last_chunk_in_any_window(ragged, seed):
    """21 chunks, windows of 4: the short chunk is in window 0 (seed 1), 1 (seed 3) or 5 (seed 8)."""
    batches = list(ragged.shuffled_batches(HOOK, 48, seed=seed, window_chunks=4))
    assert [len(b) for b in batches] == [48] * 8 + [26]
    assert sorted(row_ids(ragged, batches)) == list(range(ragged.n_tokens))


@pytest.mark.parametrize("start_batch", [1, 4, 6, 7])
def test_start_batch_resumes_the_same_stream(reader, start_batch):
    full = list(reader.shuffled_batches(HOOK, 64, seed=5, window_chunks=3))
    resumed = list(
        reader.shuffled_batches(HOOK, 64, seed=5, window_chunks=3, start_batch=start_batch)
    )
    assert len(resumed) == len(full) - start_batch
    for a, b in zip(full[start_batch:], resumed, strict=True):
        assert torch.equal(a, b)


def test_rank_slices_partition_each_global_batch(reader):
    full = list(reader.shuffled_batches(HOOK, 64, seed=2))
    ranks = [
        list(reader.shuffled_batches(HOOK, 64, seed=2, rank=r, world_size=3)) for r in range(3)
    ]
    assert all(len(r) == len(full) for r in ranks)
    for b, batch in enumerate(full):
        assert torch.equal(torch.cat([ranks[r][b] for r in range(3)]), batch)
    with pytest.raises(ValueError, match="rank"):
        reader.shuffled_batches(HOOK, 64, seed=2, rank=3, world_size=3)


def test_rows_mask_reads_each_kept_row_once(reader):
    """Leaving out position 0 (the attention sink): every other row once per epoch, resumable."""
    keep = reader.metadata("position") > 0
    batches = list(reader.shuffled_batches(HOOK, 64, seed=4, window_chunks=3, rows=keep))
    assert [len(b) for b in batches] == [64] * 5 + [40]
    assert sorted(row_ids(reader, batches)) == list(np.flatnonzero(keep))
    resumed = reader.shuffled_batches(HOOK, 64, seed=4, window_chunks=3, start_batch=2, rows=keep)
    for a, b in zip(batches[2:], resumed, strict=True):
        assert torch.equal(a, b)
    everything = np.ones(reader.n_tokens, dtype=bool)  # a mask that keeps all: the unmasked order
    assert torch.equal(
        torch.cat(
            list(reader.shuffled_batches(HOOK, 64, seed=4, window_chunks=3, rows=everything))
        ),
        torch.cat(list(reader.shuffled_batches(HOOK, 64, seed=4, window_chunks=3))),
    )
    with pytest.raises(ValueError, match="boolean mask"):
        reader.shuffled_batches(HOOK, 64, seed=4, rows=keep[:-1])


def test_random_access_and_sequential(reader):
    everything = torch.cat(list(reader.sequential_batches(HOOK, 33)))
    assert everything.shape == (reader.n_tokens, reader.d_model(HOOK))
    index = np.array([399, 0, 21, 21, 250, 19, 20])
    assert torch.equal(reader.read(HOOK, index), everything[index])
    with pytest.raises(IndexError):
        reader.read(HOOK, [400])
    with pytest.raises(KeyError, match="holds"):
        reader.read("blocks.1.hook_resid_post", [0])


def test_stats_match_numpy(reader):
    acts = reader.read(HOOK, np.arange(reader.n_tokens)).double()
    stats = reader.stats(HOOK)
    norms = acts.norm(dim=1)
    torch.testing.assert_close(stats["mean"], acts.mean(0).float())
    assert stats["mean_norm"] == pytest.approx(norms.mean().item(), rel=1e-5)
    assert stats["mean_sq_norm"] == pytest.approx((norms**2).mean().item(), rel=1e-5)
    assert stats["norm_quantiles"][0.5] == pytest.approx(np.quantile(norms.numpy(), 0.5), rel=1e-5)
    assert stats["norm_quantiles"][1.0] == pytest.approx(norms.max().item(), rel=1e-5)


def test_norms_are_computed_from_the_acts(reader):
    expected = reader.read(HOOK, np.arange(reader.n_tokens)).numpy()
    norms = reader.norms(HOOK)
    assert norms.dtype == np.float32 and norms.shape == (reader.n_tokens,)
    assert np.array_equal(norms, np.linalg.norm(expected, axis=1))
    assert reader.stats(HOOK)["mean_norm"] == pytest.approx(norms.mean(dtype=np.float64), rel=1e-6)


def test_format_1_file_is_read_with_its_stored_norms(reader, tmp_path):
    """Format 1 stored norms/<hook>; such a file stays readable. Unknown versions are refused."""
    old = tmp_path / "v1.h5"
    shutil.copy(reader.path, old)
    with h5py.File(old, "r+") as file:
        file.attrs["format_version"] = 1
        file.create_dataset(f"norms/{HOOK}", data=np.arange(reader.n_tokens, dtype=np.float32))
    with open_cache(old, verify=True) as opened:
        assert np.array_equal(opened.norms(HOOK), np.arange(reader.n_tokens, dtype=np.float32))
        assert torch.equal(opened.read(HOOK, [7, 3]), reader.read(HOOK, [7, 3]))
    with h5py.File(old, "r+") as file:
        file.attrs["format_version"] = 3
    with pytest.raises(CorruptCacheError, match=r"format version 3.*newer saesteer"):
        open_cache(old)


def test_dataloader_prefetches_the_same_batches(reader):
    expected = list(reader.shuffled_batches(HOOK, 50, seed=7, start_batch=2))
    loader = reader.dataloader(HOOK, 50, seed=7, start_batch=2, prefetch=2)
    assert len(loader) == len(expected)
    for a, b in zip(loader, expected, strict=True):
        assert torch.equal(a, b)
    sequential = torch.cat(list(reader.dataloader(HOOK, 64, shuffle=False)))
    assert torch.equal(sequential, reader.read(HOOK, np.arange(reader.n_tokens)))


def test_dataloader_skips_positions_like_a_rows_mask(reader):
    keep = reader.rows_from_position(2)
    assert np.array_equal(keep, reader.metadata("position") >= 2)
    expected = list(reader.shuffled_batches(HOOK, 50, seed=7, rows=keep))
    loader = reader.dataloader(HOOK, 50, seed=7, skip_positions=2)
    assert len(loader) == len(expected) == 7  # ceil(320 / 50)
    for a, b in zip(loader, expected, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="shuffled reading"):
        reader.dataloader(HOOK, 50, shuffle=False, skip_positions=1)


def test_torch_dataloader_with_two_workers_keeps_order(reader):
    dataset = ActivationDataset(reader.path, HOOK, 50, seed=7)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    for a, b in zip(loader, reader.shuffled_batches(HOOK, 50, seed=7), strict=True):
        assert torch.equal(a, b)
