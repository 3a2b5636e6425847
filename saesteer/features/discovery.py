"""Feature discovery: one streaming pass over cached activations → per-latent statistics.

For each batch of whole contexts x [B, d_in], z = sae.encode(x) [B, d_sae] and, per latent i:

    fire_count_i  += Σ_t 1[z_ti > 0]                  density_i = fire_count_i / n_tokens
    act_sum_i     += Σ_t z_ti                         mean_active_i = act_sum_i / fire_count_i
    hist_i[b]     += #{t : z_ti > 0, log10 z_ti ∈ bin b}   (fixed log10 bins, ends clamped)
    top examples: the n_top tokens with the largest z_ti (a `StreamingTopK` over z_ti, z_ti > 0;
                  each batch's candidates come from `segment_topk` over its nonzero entries),
                  each with z_{t+o, i} for o ∈ [−window_before, window_after] inside its context
    weak examples: a uniform sample of 4·n_samples firing tokens (the ones with the largest random
                  keys u_ti ~ U(0,1), a bottom-k sample), reduced at the end to n_samples picked at
                  evenly spaced ranks of their activations: a sample across the quantiles
    co-firing:    each top example keeps its token's sparse_k strongest latents; at the end
                  cofire_ij = #{top examples of i where j is among them} / #top examples of i

Memory is O(d_sae · (n_top + n_samples) · (window + sparse_k)) plus one batch of z; the dense
[n_tokens, d_sae] matrix is never held. Every token's sparse_k strongest latents can be streamed to
a `SparseLatentWriter` in the same pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saesteer.features.config import FeaturesConfig
from saesteer.features.logit_lens import logit_lens
from saesteer.features.source import ActivationTable
from saesteer.features.sparse_cache import SparseLatentWriter, token_topk
from saesteer.features.topk import StreamingTopK, segment_topk

HIST_LOG10_MIN = -3.0
HIST_LOG10_MAX = 4.0
HIST_BINS_PER_DECADE = 8
COFIRE_CHUNK = 256
STATS_FILE = "features.npz"
META_FILE = "features.json"


def hist_edges() -> np.ndarray:
    """Histogram bin edges [n_bins + 1] (activation values, log-spaced 10^-3 … 10^4)."""
    n_bins = int((HIST_LOG10_MAX - HIST_LOG10_MIN) * HIST_BINS_PER_DECADE)
    return np.logspace(HIST_LOG10_MIN, HIST_LOG10_MAX, n_bins + 1)


def hist_bin(values: torch.Tensor) -> torch.Tensor:
    """Bin of each positive activation: ⌊(log10 v − min) · bins_per_decade⌋, clamped to the range."""
    n_bins = len(hist_edges()) - 1
    position = (values.log10() - HIST_LOG10_MIN) * HIST_BINS_PER_DECADE
    return position.floor().clamp(0, n_bins - 1).long()


@dataclass
class FeatureStats:
    """Everything discovery found, as numpy arrays; shapes in the comments (K = n_top, S =
    n_samples, W = window_before + 1 + window_after, C = n_cofire, n = n_logit). Empty slots:
    value 0 and token −1."""

    n_tokens: int
    context_length: int
    window_before: int
    fire_count: np.ndarray  # [d_sae] int64
    act_sum: np.ndarray  # [d_sae] float64
    hist_counts: np.ndarray  # [d_sae, n_bins] int64 over `hist_edges()`
    top_values: np.ndarray  # [d_sae, K] float32, descending
    top_tokens: np.ndarray  # [d_sae, K] int64 token index in the cache
    top_window_values: np.ndarray  # [d_sae, K, W] float32 activation of this latent
    top_window_tokens: np.ndarray  # [d_sae, K, W] int32 token ids (−1 outside the context)
    sample_values: np.ndarray  # [d_sae, S] float32, descending
    sample_tokens: np.ndarray  # [d_sae, S] int64
    sample_window_values: np.ndarray  # [d_sae, S, W] float32
    sample_window_tokens: np.ndarray  # [d_sae, S, W] int32
    cofire_ids: np.ndarray  # [d_sae, C] int64 (−1 empty)
    cofire_frac: np.ndarray  # [d_sae, C] float32
    up_ids: np.ndarray  # [d_sae, n] int64 promoted token ids (logit lens)
    up_values: np.ndarray  # [d_sae, n] float32
    down_ids: np.ndarray  # [d_sae, n] int64 suppressed token ids
    down_values: np.ndarray  # [d_sae, n] float32
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def d_sae(self) -> int:
        return len(self.fire_count)

    @property
    def density(self) -> np.ndarray:
        """Firing fraction [d_sae]: fire_count / n_tokens."""
        return self.fire_count / max(self.n_tokens, 1)

    @property
    def mean_active(self) -> np.ndarray:
        """Mean activation where it fires [d_sae] (0 for dead latents)."""
        return self.act_sum / np.maximum(self.fire_count, 1)

    def save(self, folder: str | Path) -> Path:
        """Write features.npz (arrays) and features.json (sizes, config, provenance) to `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "meta"}
        scalars = {k: int(v) for k, v in arrays.items() if np.ndim(v) == 0}
        partial = folder / (STATS_FILE + ".partial.npz")
        np.savez(partial, **{k: v for k, v in arrays.items() if k not in scalars})
        partial.replace(folder / STATS_FILE)
        meta = {"format": "saesteer-features/1", **scalars, "d_sae": self.d_sae, **self.meta}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FeatureStats:
        """Read what `save` wrote."""
        folder = Path(folder)
        if not (folder / STATS_FILE).is_file():
            raise FileNotFoundError(f"No {STATS_FILE} in {folder}; run `saesteer features` first.")
        meta = json.loads((folder / META_FILE).read_text())
        scalar_names = ("n_tokens", "context_length", "window_before")
        with np.load(folder / STATS_FILE) as data:
            arrays = {name: data[name] for name in data.files}
        extra = {k: v for k, v in meta.items() if k not in (*scalar_names, "format", "d_sae")}
        return cls(**{k: meta[k] for k in scalar_names}, **arrays, meta=extra)


def _windows(
    z: torch.Tensor, pos: torch.Tensor, before: int, after: int, context_length: int
) -> torch.Tensor:
    """z[pos_ij + o, i] for o ∈ [−before, after] inside pos_ij's context, else 0: z [B, d_sae],
    pos [d_sae, m] token rows of latent i's candidates → [d_sae, m, W]."""
    offsets = torch.arange(-before, after + 1, device=pos.device)
    where = pos[..., None] + offsets
    inside = (where >= 0) & (where < z.shape[0])
    inside &= where // context_length == pos[..., None] // context_length
    latent = torch.arange(z.shape[1], device=pos.device)[:, None, None]
    values = z.view(-1)[where.clamp(0, z.shape[0] - 1) * z.shape[1] + latent]
    return torch.where(inside, values, 0.0)


def _window_tokens(
    tokens: np.ndarray, index: np.ndarray, before: int, after: int, L: int
) -> np.ndarray:
    """Token ids around each cached token index [...] → [..., W] (−1 outside its context)."""
    where = index[..., None] + np.arange(-before, after + 1)
    inside = (index[..., None] >= 0) & (where >= 0) & (where < len(tokens))
    inside &= where // L == index[..., None] // L
    return np.where(inside, tokens[np.clip(where, 0, len(tokens) - 1)], -1).astype(np.int32)


def _quantile_pick(keeper: StreamingTopK, n: int) -> dict[str, torch.Tensor]:
    """From a reservoir of firings, n per latent at evenly spaced ranks of activation (descending)."""
    values = torch.where(keeper.filled(), keeper.payloads["value"], -torch.inf)
    values, order = values.sort(dim=1, descending=True)
    have = keeper.filled().sum(1, keepdim=True)
    j = torch.arange(n)
    ranks = torch.where(have >= n, ((j + 0.5) * have / n).floor().long(), j)
    ranks = ranks.clamp(max=values.shape[1] - 1)
    picked = order.gather(1, ranks)
    valid = j < have
    out = {}
    for name, kept in keeper.payloads.items():
        index = picked.view(*picked.shape, *([1] * (kept.ndim - 2))).expand(-1, -1, *kept.shape[2:])
        out[name] = kept.gather(1, index)
    out["valid"] = valid
    return out


def _cofire(ids: torch.Tensor, filled: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """ids [d_sae, K, k_s] latent ids of each top example's token, filled [d_sae, K] → top-n
    co-firing ids and fractions [d_sae, n] (see module docstring)."""
    d_sae = ids.shape[0]
    n = min(n, d_sae - 1)
    out_ids, out_frac = [], []
    for start in range(0, d_sae, COFIRE_CHUNK):
        rows = torch.arange(start, min(start + COFIRE_CHUNK, d_sae))
        chunk = ids[rows].long()
        keep = (chunk >= 0) & (chunk != rows[:, None, None]) & filled[rows][..., None]
        keys = ((rows - start)[:, None, None] * d_sae + chunk)[keep]
        counts = torch.bincount(keys, minlength=len(rows) * d_sae).view(len(rows), d_sae)
        top = counts.topk(n, dim=1)
        examples = filled[rows].sum(1, keepdim=True).clamp(min=1)
        out_ids.append(torch.where(top.values > 0, top.indices, -1))
        out_frac.append(top.values / examples)
    return torch.cat(out_ids).numpy(), torch.cat(out_frac).float().numpy()


@torch.no_grad()
def discover_features(
    sae: Any,
    table: ActivationTable,
    model: Any,
    cfg: FeaturesConfig | None = None,
    sparse_writer: SparseLatentWriter | None = None,
    progress: bool = False,
) -> FeatureStats:
    """Run the streaming pass (module docstring) and the logit lens; returns `FeatureStats`.

    sae: an `SAE`; table: token-ordered activations at the SAE's hook; model: the
    HookedTransformer for the logit lens; sparse_writer: optional sink for the sparse latent cache.
    """
    cfg = cfg or FeaturesConfig()
    if table.d_model != sae.cfg.d_in:
        raise ValueError(
            f"Activations at {table.hook!r} have width {table.d_model} but the SAE expects "
            f"{sae.cfg.d_in}: use the cache of the SAE's hook ({sae.cfg.hook_name!r})."
        )
    device = torch.device(cfg.device)
    d_sae, L = sae.cfg.d_sae, table.context_length
    W = cfg.window_before + 1 + cfg.window_after
    n_bins = len(hist_edges()) - 1
    fire_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
    act_sum = torch.zeros(d_sae, dtype=torch.float64, device=device)
    hist = torch.zeros(d_sae * n_bins, dtype=torch.int64, device=device)
    example = {"token": ((), torch.int64), "window": ((W,), torch.float32)}
    top = StreamingTopK(
        d_sae, cfg.n_top, {**example, "latents": ((cfg.sparse_k,), torch.int32)}, device
    )
    reservoir = StreamingTopK(
        d_sae, 4 * cfg.n_samples, {**example, "value": ((), torch.float32)}, device
    )
    generator = torch.Generator(device).manual_seed(cfg.seed)
    offset = 0
    n_batches = -(-table.n_tokens // (cfg.batch_contexts * L))
    for x in tqdm(
        table.batches(cfg.batch_contexts),
        total=n_batches,
        disable=not progress,
        desc="features",
        unit="batch",
    ):
        z = sae.encode(x.to(device, sae.W_enc.dtype)).float().contiguous()  # [B, d_sae]
        rows, cols = (z > 0).nonzero(as_tuple=True)  # firing entries: token row, latent
        values = z[rows, cols]
        fire_count += torch.bincount(cols, minlength=d_sae)
        act_sum += torch.bincount(cols, weights=values.double(), minlength=d_sae)
        hist += torch.bincount(cols * n_bins + hist_bin(values), minlength=d_sae * n_bins)
        token_ids, token_values = token_topk(z, cfg.sparse_k)
        if sparse_writer is not None:
            sparse_writer.write(token_ids, token_values)
        if len(values):
            scores, entry = segment_topk(cols, values, d_sae, cfg.n_top)
            pos = rows[entry]  # [d_sae, n_top] token rows in the batch
            window = _windows(z, pos, cfg.window_before, cfg.window_after, L)
            top.update(scores, {"token": pos + offset, "window": window, "latents": token_ids[pos]})
            keys = torch.rand(len(values), generator=generator, device=device)
            scores, entry = segment_topk(cols, keys, d_sae, reservoir.k)
            pos = rows[entry]
            window = _windows(z, pos, cfg.window_before, cfg.window_after, L)
            reservoir.update(
                scores, {"token": pos + offset, "window": window, "value": values[entry]}
            )
        offset += len(z)
    if offset != table.n_tokens:
        raise RuntimeError(f"Read {offset} activations but the table has {table.n_tokens}.")

    tokens = np.asarray(table.tokens)
    filled = top.filled()
    top_tokens = torch.where(filled, top.payloads["token"], -1).cpu().numpy()
    samples = _quantile_pick(reservoir, cfg.n_samples)
    sample_tokens = torch.where(samples["valid"], samples["token"], -1).cpu().numpy()
    cofire_ids, cofire_frac = _cofire(top.payloads["latents"].cpu(), filled.cpu(), cfg.n_cofire)
    lens = logit_lens(model, sae.W_dec.detach(), cfg.n_logit)
    b, a = cfg.window_before, cfg.window_after
    return FeatureStats(
        n_tokens=table.n_tokens,
        context_length=L,
        window_before=b,
        fire_count=fire_count.cpu().numpy(),
        act_sum=act_sum.cpu().numpy(),
        hist_counts=hist.view(d_sae, n_bins).cpu().numpy(),
        top_values=torch.where(filled, top.scores, 0.0).cpu().numpy(),
        top_tokens=top_tokens,
        top_window_values=top.payloads["window"].cpu().numpy(),
        top_window_tokens=_window_tokens(tokens, top_tokens, b, a, L),
        sample_values=torch.where(samples["valid"], samples["value"], 0.0).cpu().numpy(),
        sample_tokens=sample_tokens,
        sample_window_values=samples["window"].cpu().numpy(),
        sample_window_tokens=_window_tokens(tokens, sample_tokens, b, a, L),
        cofire_ids=cofire_ids,
        cofire_frac=cofire_frac,
        up_ids=lens.up_ids.numpy(),
        up_values=lens.up_values.numpy(),
        down_ids=lens.down_ids.numpy(),
        down_values=lens.down_values.numpy(),
        meta={"hook": table.hook, "source": table.describe(), "sparse_k": cfg.sparse_k},
    )
