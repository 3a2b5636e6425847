"""Per-block Jacobians at the last position, averaged over prompts, cached on disk (A-LQR's A_t).

For a prompt of n tokens and block t of a TransformerLens model, with x_t [n, d] the residual
entering block t and f_t the block (attention + MLP, residual included):

    A_t = ∂ f_t(x_t)[n−1] / ∂ x_t[n−1]        [d, d], the prefix x_t[:n−1] held fixed

Holding the prefix fixed is exact, not an approximation: in a causal model the last position's
input changes no earlier position, so its only route into the last output is its own query, key,
value and MLP, while the prefix enters only through its keys and values. The prefix's keys and
values are therefore computed once (one forward pass of the first n − 1 tokens into a frozen KV
cache) and the block is run on the one last token, f(x) = block_t(x, kv_prefix); the d rows of A_t
are d vector-Jacobian products of that one-token graph, batched (`is_grads_batched`). The cost per
block is one token's forward and d one-token backward passes, not d passes over the sequence.

    Ā_t = (1/P) Σ_p A_t(prompt p)             (the average over P prompts)

The running sum goes to disk after every prompt (`JacobianCache`: safetensors, atomic), with the
model's weight digest, the layers and a checksum of the prompts' token ids, so an interrupted
collection continues where it stopped, a finished one is read back without any model run, and a
file made for another model, other layers or other prompts is refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from saesteer.paths import atomic_write_bytes, cache_dir
from saesteer.steer.hooks import record
from saesteer.steer.sites import Site

FORMAT = "saesteer-jacobians/1"


def model_digest(model) -> str:
    """sha256 over every parameter of the model (name, shape and float32 bytes, in name order)."""
    digest = hashlib.sha256()
    for name, weight in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(weight.shape)).encode())
        digest.update(weight.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def prompts_checksum(prompts: Sequence[Sequence[int]]) -> str:
    """sha256 of the prompts' token ids (order included)."""
    return hashlib.sha256(json.dumps([list(map(int, p)) for p in prompts]).encode()).hexdigest()


def last_position_blocks(model, ids: torch.Tensor, layers: Sequence[int]) -> dict[int, tuple]:
    """For a prompt `ids` [n] (n ≥ 2) and each block t in `layers`: (x_t[n−1] [1, 1, d], f_t) with
    f_t(x) = block t's output at the last position for input x [1, 1, d], the prefix's keys and
    values held fixed (module docstring). f_t(x_t[n−1]) is the model's own resid_post there."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    if ids.ndim != 1 or ids.shape[0] < 2:
        raise ValueError(
            f"A Jacobian prompt needs at least 2 tokens, got shape {tuple(ids.shape)}."
        )
    device = model.cfg.device
    ids = ids.to(device)[None]
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, 1)
    sites = {t: Site(t, "resid_pre") for t in layers}
    with torch.no_grad():
        model(ids[:, :-1], past_kv_cache=cache, return_type=None)
        cache.freeze()
        with record(model, list(sites.values())) as seen:
            model(ids[:, -1:], past_kv_cache=cache, return_type=None)
    inputs = {t: seen[site][-1] for t, site in sites.items()}

    def block(t: int):
        return lambda x: model.blocks[t](x, past_kv_cache_entry=cache[t])

    return {t: (inputs[t].detach(), block(t)) for t in layers}


def last_position_jacobians(model, ids: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """A_t [len(layers), d, d] of one prompt `ids` [n] (n ≥ 2) at each block t in `layers`
    (module docstring): row i of A_t is ∂ f_t[n−1]_i / ∂ x_t[n−1]."""
    d = model.cfg.d_model
    eye = torch.eye(d, device=model.cfg.device, dtype=model.cfg.dtype).view(d, 1, 1, d)
    out = []
    for x0, block in last_position_blocks(model, ids, layers).values():
        x = x0.clone().requires_grad_(True)
        with torch.enable_grad():
            (rows,) = torch.autograd.grad(block(x), x, grad_outputs=eye, is_grads_batched=True)
        out.append(rows.reshape(d, d).detach().float().cpu())
    return torch.stack(out)


class JacobianCache:
    """The file holding Σ_p A_t(p) over the prompts done so far (module docstring)."""

    def __init__(self, path: Path, digest: str, layers: Sequence[int], checksum: str) -> None:
        self.path = Path(path)
        self.identity = {
            "format": FORMAT,
            "model": digest,
            "layers": list(layers),
            "prompts": checksum,
        }

    @classmethod
    def default_path(cls, digest: str, layers: Sequence[int], checksum: str) -> Path:
        key = hashlib.sha256(json.dumps([digest, list(layers), checksum]).encode()).hexdigest()
        return cache_dir() / "jacobians" / f"{key[:32]}.safetensors"

    def load(self) -> tuple[torch.Tensor | None, int]:
        """(sum [L, d, d] or None, prompts done); refuses a file made for something else."""
        if not self.path.exists():
            return None, 0
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                record = handle.metadata() or {}
                total = handle.get_tensor("sum")
        except Exception as error:
            raise ValueError(
                f"{self.path} is not a readable Jacobian cache ({error}); delete it to collect "
                "the Jacobians again."
            ) from None
        stored = {k: json.loads(record[k]) if k == "layers" else record.get(k) for k in record}
        for key, wanted in self.identity.items():
            if stored.get(key) != wanted:
                what = {
                    "model": "another model (its weights differ)",
                    "layers": f"other layers ({stored.get('layers')}, not {wanted})",
                    "prompts": "other prompts",
                    "format": f"another format ({stored.get('format')!r})",
                }[key]
                raise ValueError(
                    f"The Jacobian cache {self.path} was made for {what}; it is left as it is. "
                    "Pass another --lqr-jacobians path, or delete this file to recompute."
                )
        return total, int(record["done"])

    def store(self, total: torch.Tensor, done: int) -> None:
        record = {k: json.dumps(v) if k == "layers" else v for k, v in self.identity.items()}
        record["done"] = str(done)
        atomic_write_bytes(self.path, save({"sum": total.contiguous()}, metadata=record))


def mean_jacobians(
    model,
    prompts: Sequence[Sequence[int]],
    layers: Sequence[int],
    path: str | Path | None = None,
    progress=None,
) -> tuple[torch.Tensor, Path]:
    """Ā [len(layers), d, d] over `prompts` (token-id lists), resumed from / saved to `path`
    (default: a file under the cache folder named by model, layers and prompts)."""
    if not prompts:
        raise ValueError("A-LQR needs at least one Jacobian prompt.")
    digest, checksum = model_digest(model), prompts_checksum(prompts)
    where = Path(path) if path else JacobianCache.default_path(digest, layers, checksum)
    cache = JacobianCache(where, digest, layers, checksum)
    total, done = cache.load()
    for p in range(done, len(prompts)):
        jac = last_position_jacobians(model, torch.tensor(prompts[p]), layers).double()
        total = jac if total is None else total + jac
        cache.store(total, p + 1)
        if progress is not None:
            progress(p + 1, len(prompts))
    return (total / len(prompts)).float(), where
