"""Per-row top-k of SAE pre-activations without writing [N, d_sae] to global memory (Triton).

    pre = (x − b_dec)·W_enc + b_enc              x [N, d_model], W_enc [d_model, d_sae]

`_topk_candidates_kernel`, grid (N/BLOCK_N, n_chunks): each program computes pre tile by tile over its
chunk of d_sae columns (GEMM in registers, float32 accumulation) and keeps a running top-KP per row
(KP = next power of two ≥ k) by merging each tile into it with `tl.topk`. It writes only those KP
candidates per row and chunk: [N, n_chunks·KP] keys, a few percent of [N, d_sae]. A torch top-k over
the candidates finishes the job (the true top-k of a row lies among its chunks' top-KPs).

A candidate is one int64 key that sorts like (pre, column): the float32 bits of pre mapped to an
order-preserving int32 (negative floats get their 31 low bits flipped), shifted up 32 bits, OR the
column index. So sorting keys sorts pre-activations and carries their indices along; the key of a
padding column is built from −inf and never wins while d_sae ≥ k real columns exist.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_LOW31 = 0x7FFFFFFF


@triton.jit
def _topk_candidates_kernel(
    x_ptr, stride_xn,
    b_dec_ptr,
    w_ptr, stride_wd, stride_we,
    b_enc_ptr,
    cand_ptr, stride_cn,
    N, D, E, CHUNK,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr, KP: tl.constexpr,
):  # fmt: skip
    """cand[rows, chunk·KP : (chunk+1)·KP] = the KP largest keys of pre[rows, chunk's columns]."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    chunk = tl.program_id(1)
    row_ok = rows < N
    best = tl.full((BLOCK_N, KP), -(2**63), dtype=tl.int64)
    e_start = chunk * CHUNK
    e_stop = tl.minimum(e_start + CHUNK, E)
    for e0 in range(e_start, e_stop, BLOCK_E):
        cols = e0 + tl.arange(0, BLOCK_E)
        col_ok = cols < e_stop
        acc = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + tl.arange(0, BLOCK_D)
            d_ok = dd < D
            x = tl.load(
                x_ptr + rows[:, None] * stride_xn + dd[None, :],
                row_ok[:, None] & d_ok[None, :],
                other=0.0,
            )
            x = x.to(tl.float32) - tl.load(b_dec_ptr + dd, d_ok, other=0.0).to(tl.float32)[None, :]
            w = tl.load(
                w_ptr + dd[:, None].to(tl.int64) * stride_wd + cols[None, :] * stride_we,
                d_ok[:, None] & col_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(x.to(w.dtype), w, acc, input_precision=PRECISION)
        pre = acc + tl.load(b_enc_ptr + cols, col_ok, other=0.0).to(tl.float32)[None, :]
        pre = tl.where(col_ok[None, :], pre, float("-inf"))
        bits = pre.to(tl.int32, bitcast=True)
        ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
        keys = (ordered.to(tl.int64) << 32) | cols.to(tl.int64)[None, :]
        if BLOCK_E > KP:
            keys = tl.topk(keys, KP)
        best = tl.topk(tl.reshape(tl.join(best, keys), (BLOCK_N, 2 * KP)), KP)
    slots = chunk * KP + tl.arange(0, KP)
    tl.store(cand_ptr + rows[:, None] * stride_cn + slots[None, :], best, row_ok[:, None])


def unpack_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 keys → (pre float32, column int64), the inverse of the kernel's packing."""
    ordered = (keys >> 32).to(torch.int32)
    bits = torch.where(ordered >= 0, ordered, ordered ^ _LOW31)
    return bits.view(torch.float32), keys & 0xFFFFFFFF


def launch_config(N: int, k: int) -> dict:
    """Meta-parameters of `_topk_candidates_kernel` for N rows and top-k (KP = pow2 ≥ max(k, 16)).

    Picked so that sm_90 compiles every variant without register spills (see
    tests/test_kernels_compile.py); not yet tuned by timing on a GPU.
    """
    kp = max(16, triton.next_power_of_2(k))
    block_n = min(32 if kp <= 64 else 16, max(16, triton.next_power_of_2(N)))
    return {"BLOCK_N": block_n, "BLOCK_E": max(kp, 64), "BLOCK_D": 32, "KP": kp, "num_warps": 8}


def topk_candidates(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    n_chunks: int | None = None,
) -> torch.Tensor:
    """Keys [N, n_chunks·KP] holding each row's top-k pre-activations (see module docstring).

    n_chunks (default: enough programs to fill a GPU) splits d_sae across programs.
    """
    assert x.dim() == 2 and x.stride(1) == 1, "x must be [N, d_model] with unit stride in d_model"
    N, D = x.shape
    E = W_enc.shape[1]
    assert W_enc.shape == (D, E) and b_enc.shape == (E,) and b_dec.shape == (D,), "SAE shapes"
    assert 0 < k <= E, f"need 0 < k ≤ d_sae ({E}), got {k}"
    assert all(t.device == x.device for t in (W_enc, b_enc, b_dec)), "one device"
    for t in (x, W_enc):
        assert t.dtype in (torch.float32, torch.float16, torch.bfloat16), f"unsupported {t.dtype}"
    cfg = launch_config(N, k)
    kp, block_e = cfg["KP"], cfg["BLOCK_E"]
    row_tiles = triton.cdiv(N, cfg["BLOCK_N"])
    e_tiles = triton.cdiv(E, block_e)
    if n_chunks is None:
        n_chunks = max(1, min(e_tiles, triton.cdiv(1024, row_tiles)))
    chunk = triton.cdiv(e_tiles, n_chunks) * block_e
    n_chunks = triton.cdiv(E, chunk)
    cand = torch.empty((N, n_chunks * kp), device=x.device, dtype=torch.int64)
    _topk_candidates_kernel[(row_tiles, n_chunks)](
        x, x.stride(0), b_dec, W_enc, W_enc.stride(0), W_enc.stride(1), b_enc,
        cand, cand.stride(0), N, D, E, chunk,
        PRECISION="ieee" if W_enc.dtype == torch.float32 else "tf32", **cfg,
    )  # fmt: skip
    return cand


def topk_pre(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre [N, k] float32 descending, indices [N, k] int64): each row's k largest pre-activations."""
    keys = topk_candidates(x, W_enc, b_enc, b_dec, k).topk(k, dim=1).values
    return unpack_keys(keys)
