"""float32 linear layers on the CPU: torch `F.linear` (MKL on x86) vs oneDNN on a packed weight.

    .venv/bin/python benchmarks/linear_backends.py [--rows 1024] [--repeats 30]

The GEMM shapes of the SmolLM2-135M cache forward (a batch of 8 × 128 tokens = 1,024 rows; d 576,
k/v 192, MLP 1,536), each timed as GFLOP/s = 2·rows·k·n / seconds, best of 3 interleaved rounds:
torch's `F.linear`, `activations_cache.packed_linear.PackedLinear` (oneDNN, weight packed once),
and MKL's own packed GEMM (what inductor's `freezing` picks for float32 on x86). Prints the
machine and the ratio packed ÷ F.linear. This is why the cache forward packs its linears on CPU.
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import cpu_name

from activations_cache.packed_linear import PackedLinear

SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576)]  # (in, out): q/o, k/v, up/gate, down


def gflops(fn, rows: int, k: int, n: int, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 2 * rows * k * n * repeats / (time.perf_counter() - start) / 1e9


def time_shape(k: int, n: int, rows: int, repeats: int) -> dict[str, float]:
    """Best GFLOP/s of each backend for x [rows, k] @ Wᵀ, W [n, k]."""
    x, linear = torch.randn(rows, k), torch.nn.Linear(k, n, bias=False)
    packed = PackedLinear(linear, rows)
    mkl_weight = torch.ops.mkl._mkl_reorder_linear_weight(linear.weight, rows)
    runs = {
        "F.linear": lambda: linear(x),
        "oneDNN": lambda: packed(x),
        "MKL": lambda: torch.ops.mkl._mkl_linear(x, mkl_weight, linear.weight, None, rows),
    }
    best: dict[str, float] = {}
    for _ in range(3):
        for name, fn in runs.items():
            best[name] = max(best.get(name, 0.0), gflops(fn, rows, k, n, repeats))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(
        f"{cpu_name()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.rows} rows"
    )
    torch.manual_seed(0)
    print(f"{'in → out':>12} {'F.linear':>9} {'oneDNN packed':>14} {'MKL packed':>11} {'ratio':>6}")
    with torch.inference_mode():
        for k, n in SHAPES:
            best = time_shape(k, n, args.rows, args.repeats)
            print(
                f"{k:>5} → {n:<5} {best['F.linear']:9.0f} {best['oneDNN']:14.0f} {best['MKL']:11.0f}"
                f" {best['oneDNN'] / best['F.linear']:6.2f}"
            )


if __name__ == "__main__":
    main()
