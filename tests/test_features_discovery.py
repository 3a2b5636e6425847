"""Feature discovery on the tiny model equals a brute-force computation over the dense z matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import features_sae

from activations_cache import open_cache, write_cache
from saesteer.features.config import FeaturesConfig
from saesteer.features.discovery import FeatureStats, discover_features, hist_edges
from saesteer.features.source import ArrayActivations, CachedActivations
from saesteer.features.sparse_cache import SparseLatentCache, SparseLatentWriter
from saesteer.features.topk import StreamingTopK, segment_topk

HOOK = "blocks.1.hook_resid_post"
N_CTX, CTX_LEN, D_SAE = 8, 16, 48
SMALL = FeaturesConfig(
    n_top=5,
    n_samples=3,
    window_before=3,
    window_after=2,
    n_logit=4,
    n_cofire=3,
    sparse_k=6,
    batch_contexts=3,
)


@pytest.fixture(scope="module")
def cache_path(tiny_model, tmp_path_factory):
    tokens = np.random.default_rng(0).integers(0, 5000, (N_CTX, CTX_LEN)).astype(np.int32)
    path = tmp_path_factory.mktemp("features") / "acts.h5"
    return write_cache(
        path,
        tiny_model[0],
        tokens,
        [HOOK],
        batch_size=4,
        chunk_rows=32,
        shard_tokens=64,
        progress=False,
    )


@pytest.fixture(scope="module")
def dense(cache_path):
    """(acts [n_tokens, d], tokens [n_tokens]) read back from the cache."""
    reader = open_cache(cache_path)
    return reader.read(HOOK, np.arange(reader.n_tokens)), reader.tokens


def brute_windows(z_col: torch.Tensor, tokens: np.ndarray, t: int) -> tuple[list[float], list[int]]:
    """Activation and token ids at t + o, o ∈ [−before, after], inside t's context (0 / −1 outside)."""
    values, ids = [], []
    for o in range(-SMALL.window_before, SMALL.window_after + 1):
        u = t + o
        same = 0 <= u < len(tokens) and u // CTX_LEN == t // CTX_LEN
        values.append(float(z_col[u]) if same else 0.0)
        ids.append(int(tokens[u]) if same else -1)
    return values, ids


def test_streaming_topk_equals_topk_of_everything():
    torch.manual_seed(0)
    scores = torch.randn(7, 50)
    keeper = StreamingTopK(7, 4, {"where": ((), torch.int64)})
    for start in range(0, 50, 9):
        part = scores[:, start : start + 9]
        keeper.update(part, {"where": torch.arange(start, start + part.shape[1]).expand(7, -1)})
    expected = scores.topk(4, dim=1)
    torch.testing.assert_close(keeper.scores, expected.values)
    assert torch.equal(keeper.payloads["where"], expected.indices)


def test_segment_topk_equals_a_dense_topk_per_group():
    torch.manual_seed(0)
    dense_scores = torch.where(torch.rand(6, 30) < 0.3, torch.randn(6, 30), -torch.inf)
    dense_scores[5] = -torch.inf  # a group with no entries
    groups, columns = torch.isfinite(dense_scores).nonzero(as_tuple=True)
    scores = dense_scores[groups, columns]
    top, entry = segment_topk(groups, scores, 6, 4)
    expected = dense_scores.topk(4, dim=1)
    torch.testing.assert_close(top, expected.values)
    filled = torch.isfinite(top)
    assert torch.equal(columns[entry][filled], expected.indices[filled])


@pytest.fixture(scope="module")
def stats(tiny_model, cache_path, tmp_path_factory) -> tuple[FeatureStats, SparseLatentCache]:
    sae = features_sae()
    table = CachedActivations(cache_path, HOOK)
    sparse_path = tmp_path_factory.mktemp("sparse") / "latents.h5"
    writer = SparseLatentWriter(
        sparse_path, table.n_tokens, SMALL.sparse_k, {"d_sae": D_SAE, "context_length": CTX_LEN}
    )
    result = discover_features(sae, table, tiny_model[0], SMALL, sparse_writer=writer)
    writer.close(table.tokens)
    return result, SparseLatentCache(sparse_path)


def test_densities_histogram_and_top_examples_match_brute_force(stats, dense):
    result, _ = stats
    acts, tokens = dense
    z = features_sae().encode(acts)  # [n_tokens, d_sae]
    assert result.n_tokens == N_CTX * CTX_LEN and result.d_sae == D_SAE
    np.testing.assert_array_equal(result.fire_count, (z > 0).sum(0).numpy())
    np.testing.assert_allclose(result.density, (z > 0).float().mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(result.act_sum, z.sum(0).double().numpy(), rtol=1e-5)
    assert 0 < result.density.mean() < 0.6, "the test SAE should fire sparsely but not never"
    edges = hist_edges()
    for i in range(D_SAE):
        col = z[:, i]
        fired = col[col > 0].double().numpy()
        clipped = np.clip(fired, edges[0], edges[-1] * (1 - 1e-12))
        np.testing.assert_array_equal(result.hist_counts[i], np.histogram(clipped, edges)[0])
        n = min(SMALL.n_top, len(fired))
        top = col.topk(n)
        np.testing.assert_allclose(result.top_values[i, :n], top.values.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(result.top_tokens[i, :n], top.indices.numpy())
        assert (result.top_tokens[i, n:] == -1).all() and (result.top_values[i, n:] == 0).all()
        for j, t in enumerate(top.indices.tolist()):
            values, ids = brute_windows(col, tokens, t)
            np.testing.assert_allclose(result.top_window_values[i, j], values, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(result.top_window_tokens[i, j], ids)
            assert result.top_window_values[i, j, SMALL.window_before] == pytest.approx(
                float(col[t])
            )


def test_quantile_samples_are_real_firings_in_descending_order(stats, dense):
    result, _ = stats
    acts, tokens = dense
    z = features_sae().encode(acts)
    for i in range(D_SAE):
        n_fired = int((z[:, i] > 0).sum())
        valid = result.sample_tokens[i] >= 0
        assert valid.sum() == min(SMALL.n_samples, n_fired)
        picked = result.sample_tokens[i][valid]
        assert len(set(picked.tolist())) == len(picked)
        np.testing.assert_allclose(result.sample_values[i][valid], z[picked, i].numpy(), rtol=1e-6)
        assert (np.diff(result.sample_values[i][valid]) <= 0).all()
        for j in np.nonzero(valid)[0]:
            values, ids = brute_windows(z[:, i], tokens, int(result.sample_tokens[i, j]))
            np.testing.assert_allclose(
                result.sample_window_values[i, j], values, rtol=1e-6, atol=1e-7
            )
            np.testing.assert_array_equal(result.sample_window_tokens[i, j], ids)


def test_cofiring_counts_match_brute_force(stats, dense):
    result, _ = stats
    z = features_sae().encode(dense[0])
    values, indices = z.topk(SMALL.sparse_k, dim=1)
    strongest = [set(indices[t][values[t] > 0].tolist()) for t in range(len(z))]
    for i in range(D_SAE):
        tops = [t for t in result.top_tokens[i] if t >= 0]
        counts = np.zeros(D_SAE)
        for t in tops:
            for j in strongest[t] - {i}:
                counts[j] += 1
        frac = counts / max(len(tops), 1)
        reported = result.cofire_ids[i][result.cofire_ids[i] >= 0]
        np.testing.assert_allclose(
            result.cofire_frac[i][: len(reported)], frac[reported], rtol=1e-6
        )
        expected = np.sort(frac[frac > 0])[::-1][: SMALL.n_cofire]
        np.testing.assert_allclose(result.cofire_frac[i][: len(reported)], expected, rtol=1e-6)


def test_logit_lens_matches_the_models_own_unembedding(stats, tiny_model):
    result, _ = stats
    model = tiny_model[0]
    W_dec = features_sae().W_dec.detach()
    with torch.no_grad():
        logits = model.unembed(model.ln_final(W_dec[None]))[0]  # [d_sae, d_vocab]
    rms = W_dec.pow(2).mean(-1, keepdim=True).add(model.cfg.eps).sqrt()
    lens = (logits - model.b_U.detach()) * rms  # undo the norm's 1/rms(x) and the bias
    top = lens.topk(SMALL.n_logit, dim=1)
    bottom = lens.topk(SMALL.n_logit, dim=1, largest=False)
    np.testing.assert_array_equal(result.up_ids, top.indices.numpy())
    np.testing.assert_array_equal(result.down_ids, bottom.indices.numpy())
    np.testing.assert_allclose(result.up_values, top.values.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.down_values, bottom.values.numpy(), rtol=1e-4, atol=1e-5)


def test_in_memory_table_gives_the_same_stats_and_save_load_round_trips(
    stats, dense, tiny_model, tmp_path
):
    result, _ = stats
    acts, tokens = dense
    table = ArrayActivations(acts, tokens.reshape(N_CTX, CTX_LEN), hook=HOOK)
    again = discover_features(features_sae(), table, tiny_model[0], SMALL)
    for name in ("fire_count", "top_tokens", "top_window_tokens", "sample_tokens", "cofire_ids"):
        np.testing.assert_array_equal(getattr(again, name), getattr(result, name), err_msg=name)
    loaded = FeatureStats.load(result.save(tmp_path))
    for name in ("fire_count", "top_values", "hist_counts", "up_ids", "sample_window_values"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name), err_msg=name)
    assert loaded.meta["hook"] == HOOK and loaded.n_tokens == result.n_tokens


def test_sparse_latent_cache_matches_encoding(stats, dense):
    _, sparse = stats
    z = features_sae().encode(dense[0])
    np.testing.assert_array_equal(sparse.tokens, dense[1])
    for t in range(0, len(z), 7):
        indices, values = sparse.rows([t])
        top = z[t].topk(SMALL.sparse_k)
        n = int((top.values > 0).sum())
        np.testing.assert_array_equal(indices[0, :n], top.indices[:n].numpy())
        np.testing.assert_allclose(values[0, :n], top.values[:n].numpy(), rtol=1e-6)
        assert (indices[0, n:] == -1).all()


def test_where_fires_is_exact_for_a_topk_sae(tiny_model, dense, tmp_path):
    sae = features_sae("topk", k=SMALL.sparse_k, seed=1)
    acts, tokens = dense
    table = ArrayActivations(acts, tokens.reshape(N_CTX, CTX_LEN), hook=HOOK)
    writer = SparseLatentWriter(
        tmp_path / "latents.h5",
        table.n_tokens,
        SMALL.sparse_k,
        {"d_sae": D_SAE, "context_length": CTX_LEN},
    )
    discover_features(sae, table, tiny_model[0], SMALL, sparse_writer=writer)
    writer.close(table.tokens)
    z = sae.encode(acts)
    with SparseLatentCache(tmp_path / "latents.h5") as sparse:
        for i in range(D_SAE):
            where, values = sparse.where_fires(i)
            expected = torch.nonzero(z[:, i] > 0).flatten()
            np.testing.assert_array_equal(where, expected.numpy())
            np.testing.assert_allclose(values, z[expected, i].numpy(), rtol=1e-6)
        torch.testing.assert_close(sparse.dense(np.arange(20)), z[:20])
        with pytest.raises(IndexError, match="latent must be in"):
            sparse.where_fires(D_SAE)


def test_a_cache_of_another_model_is_refused(tiny_model, tmp_path):
    from saesteer.features.pipeline import run_features
    from saesteer.sae.io import save_sae

    tokens = np.random.default_rng(1).integers(0, 5000, (2, CTX_LEN)).astype(np.int32)
    other = write_cache(
        tmp_path / "other.h5",
        tiny_model[0],
        tokens,
        [HOOK],
        attrs={"model_name": "smollm2-135m-instruct"},
        progress=False,
    )
    sae_dir = save_sae(features_sae(), tmp_path / "sae")
    config = FeaturesConfig(sae=str(sae_dir), cache=str(other), out=str(tmp_path / "f"))
    with pytest.raises(ValueError, match="holds activations of 'smollm2-135m-instruct'"):
        run_features(config)
