"""Kernel benchmarks: fused/support-restricted latent steering vs the unfused YaPO formula, and the
sparse TopK-SAE forward/backward vs the dense one. Prints markdown tables.

    python benchmarks/kernels.py --device cuda    # one prepared GPU run, a few minutes
    python benchmarks/kernels.py --device cpu     # the torch paths on this CPU (--threads N)

GPU (`--device cuda`, bfloat16 unless stated; times from triton.testing.do_bench, median ms):
  * kernel 1 (`latent_steer`, Triton) vs the unfused formula decode(relu(z + α·v)) + (h − decode(z))
    with full encode and two decodes in torch, for N ∈ {1, 64, 4096}, d_model ∈ {576, 2304, 4096},
    d_sae = 16·d_model, |S| ∈ {8, 64, 512}. Bandwidth counts the bytes the edit cannot avoid:
    read h, write h', read the |S| encoder columns and decoder rows once; "% copy" compares it with
    a measured device-to-device copy. "rel err" is max|fused − ref| / max|ref|, ref the
    float32 torch reference on the same bf16 inputs.
  * kernel 2 (`topk_encode` + `sparse_decode`, Triton, forward + backward of an MSE loss) vs the same
    TopK SAE in dense torch, d_model 2304, d_sae 32768, k 64, 4096 tokens, float32 and bfloat16;
    errors of the sparse path against the dense model evaluated in float32 on the same weights.
CPU (`--device cpu`, float32, median of repeated wall-clock runs):
  * the torch support-restricted path (`latent_steer(backend="torch")`) vs the unfused formula at
    d_model 576, d_sae 4608, |S| ∈ {8, 32, 128}, N ∈ {1, 64};
  * sparse decode reference (`F.embedding_bag`) vs dense decode, forward + backward, 576 → 4608,
    k 32, 4096 tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from saesteer import kernels as K
from saesteer.kernels import reference as R


def sae_weights(d_model: int, d_sae: int, device: str, dtype: torch.dtype, seed: int = 0):
    """Random SAE (W_enc [d, e], b_enc [e], W_dec [e, d], b_dec [d]) with unit-norm decoder rows."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    W_dec = torch.randn(d_sae, d_model, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    b_enc = torch.randn(d_sae, generator=g) * 0.1
    b_dec = torch.randn(d_model, generator=g) * 0.1
    tensors = (W_dec.T.contiguous(), b_enc, W_dec, b_dec)
    return tuple(t.to(device, dtype) for t in tensors)


def steering_code(d_sae: int, s: int, device: str, seed: int = 1):
    """(S [s] latent indices, v [d_sae] dense code zero off S, v_S [s])."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    S = torch.randperm(d_sae, generator=g)[:s].sort().values
    v_S = torch.randn(s, generator=g)
    v = torch.zeros(d_sae)
    v[S] = v_S
    return S.to(device), v.to(device), v_S.to(device)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got − want| / max |want|."""
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


def cpu_time_ms(fn, min_s: float = 0.5) -> float:
    """Median wall-clock ms of fn() over repeats filling about min_s seconds."""
    fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_s or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_cpu() -> None:
    torch.manual_seed(0)
    d, e = 576, 4608
    W_enc, b_enc, W_dec, b_dec = sae_weights(d, e, "cpu", torch.float32)
    print(f"CPU, {torch.get_num_threads()} torch threads, float32, d_model {d}, d_sae {e}\n")
    print(
        "| N | S | unfused ms | restricted ms | unfused µs/token | restricted µs/token | speed-up |"
    )
    print("|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for N in (1, 64):
            h = torch.randn(N, d)
            for s in (8, 32, 128):
                S, v, v_S = steering_code(e, s, "cpu")
                We_S, be_S, Wd_S = W_enc[:, S].contiguous(), b_enc[S], W_dec[S].contiguous()

                def unfused(h=h, v=v):
                    return R.yapo_dense(h, W_enc, b_enc, W_dec, b_dec, v, 2.0, torch.relu)

                def restricted(h=h, We_S=We_S, be_S=be_S, Wd_S=Wd_S, v_S=v_S):
                    return K.latent_steer(h, We_S, be_S, Wd_S, b_dec, v_S, 2.0, backend="torch")

                torch.testing.assert_close(restricted(), unfused(), atol=1e-3, rtol=1e-3)
                t_u, t_r = cpu_time_ms(unfused), cpu_time_ms(restricted)
                print(
                    f"| {N} | {s} | {t_u:.3f} | {t_r:.3f} | {t_u * 1e3 / N:.1f} | "
                    f"{t_r * 1e3 / N:.1f} | {t_u / t_r:.1f}× |"
                )

    k, n_tok = 32, 4096
    values = torch.rand(n_tok, k, requires_grad=True)
    indices = torch.stack([torch.randperm(e)[:k] for _ in range(n_tok)])
    W = W_dec.clone().requires_grad_()
    b = b_dec.clone().requires_grad_()

    def step(decode):
        values.grad = W.grad = b.grad = None
        decode().square().mean().backward()

    def dense():
        z = torch.zeros(n_tok, e).scatter(1, indices, values)
        return z @ W + b

    def sparse():
        return K.sparse_decode(values, indices, W, b, backend="torch")

    t_d, t_s = cpu_time_ms(lambda: step(dense), 2.0), cpu_time_ms(lambda: step(sparse), 2.0)
    print(f"\nDecode forward + backward, {d} → {e}, k {k}, {n_tok} tokens, float32 (CPU)\n")
    print("| path | ms / batch | tokens/s |")
    print("|---|---|---|")
    print(f"| dense (scatter z, z·W_dec) | {t_d:.1f} | {n_tok / t_d * 1e3:,.0f} |")
    print(f"| sparse (embedding_bag reference) | {t_s:.1f} | {n_tok / t_s * 1e3:,.0f} |")
    print(f"\nspeed-up sparse vs dense: {t_d / t_s:.1f}×")


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth (read + write bytes / s) of a 1 GiB buffer, in GB/s."""
    from triton.testing import do_bench

    src = torch.empty(2**28, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / ms / 1e6


def steer_row(sae, h: torch.Tensor, s: int, copy_gbs: float) -> str:
    """One markdown row: fused vs unfused latent steer for residuals h and a code of support s."""
    from triton.testing import do_bench

    W_enc, b_enc, W_dec, b_dec = sae
    N, d = h.shape
    e = W_enc.shape[1]
    S, v, v_S = steering_code(e, s, h.device)
    v, v_S = v.to(h.dtype), v_S.to(h.dtype)
    We_S, be_S, Wd_S = W_enc[:, S].contiguous(), b_enc[S], W_dec[S].contiguous()

    def fused():
        return K.latent_steer(h, We_S, be_S, Wd_S, b_dec, v_S, 2.0)

    def unfused():
        return R.yapo_dense(h, W_enc, b_enc, W_dec, b_dec, v, 2.0, torch.relu)

    ref = R.latent_steer_ref(h, We_S, be_S, Wd_S, b_dec, v_S, 2.0)
    err = rel_err(fused(), ref)
    t_f, t_u = do_bench(fused) * 1e3, do_bench(unfused) * 1e3
    gbs = (2 * N * d + 2 * s * d) * h.element_size() / t_f / 1e3
    return (
        f"| {d} | {e} | {N} | {s} | {t_u:.1f} | {t_f:.1f} | {t_u / t_f:.1f}× | "
        f"{gbs:.0f} | {100 * gbs / copy_gbs:.0f}% | {err:.2e} |"
    )


def bench_cuda_steer(
    copy_gbs: float,
    d_models=(576, 2304, 4096),
    Ns=(1, 64, 4096),
    Ss=(8, 64, 512),
    device: str = "cuda",
) -> None:
    dtype = torch.bfloat16
    print("\nKernel 1, fused latent steer vs unfused YaPO formula (GPU, bfloat16, ReLU SAE)\n")
    print(
        "| d_model | d_sae | N | S | unfused µs | fused µs | speed-up | fused GB/s | % copy | rel err |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d in d_models:
        sae = sae_weights(d, 16 * d, device, dtype)
        for N in Ns:
            h = torch.randn(N, d, device=device, dtype=dtype)
            for s in Ss:
                print(steer_row(sae, h, s, copy_gbs), flush=True)
        sae = None
        torch.cuda.empty_cache()


def dense_topk_sae(x, W_enc, b_enc, W_dec, b_dec, k):
    """x̂ of a TopK SAE in plain torch: the full pre [N, d_sae] and z [N, d_sae] are materialised."""
    return R.topk_act((x - b_dec) @ W_enc + b_enc, k) @ W_dec + b_dec


def sparse_topk_sae(x, W_enc, b_enc, W_dec, b_dec, k):
    """x̂ of a TopK SAE through `topk_encode` + `sparse_decode` (Triton on CUDA)."""
    values, indices = K.topk_encode(x, W_enc, b_enc, b_dec, k)
    return K.sparse_decode(values, indices, W_dec, b_dec)


def train_step(model, x, params, k):
    """Forward + backward of the MSE loss; returns (x̂, d W_dec)."""
    for p in params:
        p.grad = None
    x_hat = model(x, *params, k)
    (x_hat.float() - x.float()).square().mean().backward()
    return x_hat.detach(), params[2].grad


def training_row(dtype: torch.dtype, d: int, e: int, k: int, n_tok: int, device: str) -> str:
    """One markdown row: dense torch vs sparse Triton TopK SAE, forward + backward of an MSE loss.

    Errors are against the dense model in float32 on the same weights: in bfloat16, dense torch
    rounds pre to bf16 before its top-k, so near-ties pick other latents than fp32 accumulation."""
    from triton.testing import do_bench

    params = [t.requires_grad_() for t in sae_weights(d, e, device, dtype)]
    x = torch.randn(n_tok, d, device=device, dtype=dtype)
    exact = [p.detach().float().requires_grad_() for p in params]
    x_ref, g_ref = train_step(dense_topk_sae, x.float(), exact, k)
    x_s, g_s = train_step(sparse_topk_sae, x, params, k)
    err_x, err_g = rel_err(x_s, x_ref), rel_err(g_s, g_ref)
    t_d = do_bench(lambda: train_step(dense_topk_sae, x, params, k))
    t_s = do_bench(lambda: train_step(sparse_topk_sae, x, params, k))
    name = str(dtype).removeprefix("torch.")
    return f"| {name} | {t_d:.2f} | {t_s:.2f} | {t_d / t_s:.1f}× | {err_x:.2e} | {err_g:.2e} |"


def bench_cuda_training(d=2304, e=32768, k=64, n_tok=4096, device: str = "cuda") -> None:
    print(f"\nKernel 2, TopK SAE forward + backward, {d} → {e}, k {k}, {n_tok} tokens (GPU)\n")
    print(
        "| dtype | dense torch ms | sparse Triton ms | speed-up | rel err x̂ vs fp32 | rel err dW_dec vs fp32 |"
    )
    print("|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        print(training_row(dtype, d, e, k, n_tok, device), flush=True)
        torch.cuda.empty_cache()


def bench_cuda() -> None:
    assert torch.cuda.is_available(), "--device cuda needs a GPU"
    assert K.triton_available(torch.zeros(1, device="cuda")), "Triton disabled or not installed"
    name = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth_gbs()
    print(f"GPU: {name}; measured copy bandwidth {copy_gbs:.0f} GB/s (read + write)")
    bench_cuda_steer(copy_gbs)
    bench_cuda_training()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_cuda() if args.device == "cuda" else bench_cpu()


if __name__ == "__main__":
    main()
