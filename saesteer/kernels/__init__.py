"""SAE kernels behind one dispatch point: Triton on CUDA tensors, the torch reference elsewhere.

    latent_steer(h, W_enc_S, b_enc_S, W_dec_S, b_dec, v_S, alpha, threshold_S=None, out=None)
        pre_S = (h − b_dec)·W_enc_S + b_enc_S;  z_S = pre_S·1[pre_S > θ_S] (ReLU when θ is None)
        h' = h + (relu(z_S + α·v_S) − z_S)·W_dec_S          ReLU / JumpReLU SAE, support S of v
    topk_latent_steer(h, W_enc, b_enc, W_dec, b_dec, k, S, v_S, alpha, out=None)
        the same edit with z = topk-relu(pre) over all d_sae
    topk_encode(x, W_enc, b_enc, b_dec, k) → (values [N, k], indices [N, k])     differentiable
    sparse_decode(values, indices, W_dec, b_dec) → x̂ = Σ_j values_j·W_dec[indices_j] + b_dec, differentiable

h and x are [..., d_model] (leading dims are flattened); formulas and shapes in `reference.py`,
Triton kernels in `steer.py`, `topk.py`, `sparse.py`.

Which path runs (`backend`):
    "auto"    Triton when `triton_available(...)`: every tensor on CUDA, triton importable and
              SAESTEER_DISABLE_TRITON unset; else the torch reference.
    "torch"   always the reference.
    "triton"  Triton, also on CPU tensors when TRITON_INTERPRET=1 (the interpreter: slow, for tests;
              bfloat16 is computed wrongly there, so upcast bf16 to float32 first).
SAESTEER_DISABLE_TRITON=1 overrides every backend and forces the reference. Triton modules are
imported on first use only, so `import saesteer.kernels` never imports triton.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from saesteer.kernels import reference

__all__ = [
    "latent_steer",
    "sparse_decode",
    "topk_encode",
    "topk_latent_steer",
    "triton_available",
    "triton_disabled",
]


def triton_disabled() -> bool:
    """True when SAESTEER_DISABLE_TRITON is set to a true value (1, true, yes)."""
    return os.environ.get("SAESTEER_DISABLE_TRITON", "").strip().lower() in ("1", "true", "yes")


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_available(*tensors: torch.Tensor) -> bool:
    """Whether backend "auto" runs Triton for these tensors (all on CUDA, triton usable, not disabled)."""
    if triton_disabled() or not _triton_importable():
        return False
    return all(t.is_cuda for t in tensors)


def _use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
    if backend == "torch" or triton_disabled():
        return False
    if backend == "auto":
        return triton_available(*tensors)
    if not _triton_importable():
        raise RuntimeError("backend='triton' but triton is not installed")
    on_cuda = all(t.is_cuda for t in tensors)
    interpreted = os.environ.get("TRITON_INTERPRET", "") == "1"
    if not on_cuda and not (interpreted and all(t.device.type == "cpu" for t in tensors)):
        raise RuntimeError(
            "backend='triton' needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set "
            "before triton is first imported"
        )
    return True


def _rows(h: torch.Tensor) -> torch.Tensor:
    """[..., d] → [N, d] with unit stride in d (a view when possible)."""
    h2 = h.reshape(-1, h.shape[-1])
    return h2 if h2.stride(1) == 1 else h2.contiguous()


def _write_out(result: torch.Tensor, h: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    result = result.view(h.shape)
    if out is None:
        return result
    if result.data_ptr() != out.data_ptr():
        out.copy_(result)
    return out


def _rows_out(h: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor | None:
    """out as [N, d] when it can be written through a view, else None (then copied into)."""
    if out is None:
        return None
    assert out.shape == h.shape and out.dtype == h.dtype, "out must have h's shape and dtype"
    try:
        out2 = out.view(-1, out.shape[-1])
    except RuntimeError:
        return None
    return out2 if out2.stride(1) == 1 else None


def latent_steer(
    h: torch.Tensor,
    W_enc_S: torch.Tensor,
    b_enc_S: torch.Tensor,
    W_dec_S: torch.Tensor,
    b_dec: torch.Tensor,
    v_S: torch.Tensor,
    alpha: float,
    threshold_S: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Steered residual h' [..., d_model] = h + (relu(z_S + α·v_S) − z_S)·W_dec_S.

    W_enc_S [d_model, s], b_enc_S [s], W_dec_S [s, d_model], b_dec [d_model], v_S [s] are the SAE's
    columns/rows on the code's support S; threshold_S [s] for JumpReLU (None: ReLU). `out=h` edits
    in place. Float32 accumulation; h in float32/float16/bfloat16, h' in h's dtype.
    """
    tensors = [h, W_enc_S, b_enc_S, W_dec_S, b_dec, v_S]
    if threshold_S is not None:
        tensors.append(threshold_S)
    h2 = _rows(h)
    if not _use_triton(backend, *tensors):
        result = reference.latent_steer_ref(
            h2, W_enc_S, b_enc_S, W_dec_S, b_dec, v_S, alpha, threshold_S
        )
        return _write_out(result, h, out)
    from saesteer.kernels.steer import latent_steer_triton

    out2 = _rows_out(h, out)
    result = latent_steer_triton(
        h2, W_enc_S, b_enc_S, W_dec_S, b_dec, v_S, alpha, threshold_S, out2
    )
    return _write_out(result, h, out)


def topk_latent_steer(
    h: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    S: torch.Tensor,
    v_S: torch.Tensor,
    alpha: float,
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Steered residual for a TopK SAE: z = topk-relu((h − b_dec)·W_enc + b_enc) over all d_sae,
    then h' = h + (relu(z_S + α·v_S) − z_S)·W_dec[S]. S: [s] latent indices, v_S [s]."""
    h2 = _rows(h)
    if not _use_triton(backend, h, W_enc, b_enc, W_dec, b_dec, S, v_S):
        result = reference.topk_latent_steer_ref(h2, W_enc, b_enc, W_dec, b_dec, k, S, v_S, alpha)
        return _write_out(result, h, out)
    from saesteer.kernels.steer import topk_latent_steer_triton

    out2 = _rows_out(h, out)
    result = topk_latent_steer_triton(h2, W_enc, b_enc, W_dec, b_dec, k, S, v_S, alpha, out2)
    return _write_out(result, h, out)


def topk_encode(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [N, k], indices [N, k] int64): relu of each row's k largest pre-activations
    pre = (x − b_dec)·W_enc + b_enc, in descending order. Differentiable in x, W_enc, b_enc, b_dec.
    The Triton path never writes pre [N, d_sae]; its backward is sparse (see `sparse.py`)."""
    x2 = _rows(x)
    if not _use_triton(backend, x, W_enc, b_enc, b_dec):
        values, indices = reference.topk_encode_ref(x2, W_enc, b_enc, b_dec, k)
    else:
        from saesteer.kernels.sparse import TopKEncode

        values, indices = TopKEncode.apply(x2, W_enc, b_enc, b_dec, k)
    lead = x.shape[:-1]
    return values.view(*lead, k), indices.view(*lead, k)


def sparse_decode(
    values: torch.Tensor,
    indices: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """x̂ [..., d] = Σ_j values[..., j]·W_dec[indices[..., j]] + b_dec, never forming [N, d_sae].

    values/indices [..., k] (indices in [0, d_sae), unchecked: no device sync), W_dec [d_sae, d],
    b_dec [d]; differentiable in values, W_dec, b_dec.
    Reference: `F.embedding_bag` (fast on CPU); Triton: gather kernels with a sparse backward."""
    k = values.shape[-1]
    v2, i2 = values.reshape(-1, k), indices.reshape(-1, k)
    if not _use_triton(backend, values, indices, W_dec, b_dec):
        result = reference.sparse_decode_ref(v2, i2, W_dec, b_dec)
    else:
        from saesteer.kernels.sparse import SparseDecode

        result = SparseDecode.apply(v2, i2, W_dec, b_dec)
    return result.view(*values.shape[:-1], W_dec.shape[1])
