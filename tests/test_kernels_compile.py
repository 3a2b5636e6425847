"""The Triton kernels compile for a GPU (sm_90) with the meta-parameters their launchers use.

The interpreter accepts things a GPU build rejects (blocks < 16 in a dot, some layouts), so this
compiles every kernel ahead of time for CUDA sm_90 with Triton's bundled toolchain: no GPU needed.
Triton must not be in interpreter mode for that, and `test_kernels.py` turns it on for the pytest
process, so the compile runs in a subprocess (this file run as a script) without TRITON_INTERPRET.
It prints registers and spill bytes per kernel (from the bundled cuobjdump) for tuning; only a
failed compile fails the test. Timing still needs a GPU: see benchmarks/kernels.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import pytest

DTYPES = {"fp32": "*fp32", "bf16": "*bf16"}


def _compile(fn, types: dict, meta: dict) -> str:
    """Compile fn for sm_90; ptr args typed by `types`, other runtime args i32. Returns a report line."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    meta = dict(meta)
    num_warps = meta.pop("num_warps", 4)
    sig = {n: "constexpr" if n in meta else types.get(n, "i32") for n in fn.arg_names}
    kernel = triton.compile(
        ASTSource(fn, sig, meta), target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps}
    )
    usage = ""
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    if os.path.exists(cuobjdump):
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(kernel.asm["cubin"])
            f.flush()
            dump = subprocess.run(
                [cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True
            ).stdout
        regs, stack = re.findall(r"REG:(\d+)", dump), re.findall(r"STACK:(\d+)", dump)
        usage = f"regs {regs[0] if regs else '?'}, stack {stack[0] if stack else '?'} B"
    return f"{fn.__name__} {meta} warps {num_warps}: {usage}"


def _ptr_types(fn, dtype: str, **overrides: str) -> dict:
    types = {n: DTYPES[dtype] for n in fn.arg_names if n.endswith("_ptr")}
    types.update(overrides)
    return types


def compile_all() -> None:
    from saesteer.kernels import sparse, steer, topk

    for dtype in DTYPES:
        prec = "ieee" if dtype == "fp32" else "tf32"
        for jump, (N, S) in [(False, (1, 8)), (True, (64, 64)), (False, (4096, 512))]:
            cfg_delta, cfg_apply = steer.launch_configs(N, S)
            types = _ptr_types(
                steer._steer_delta_kernel,
                dtype,
                delta_ptr="*fp32",
                v_ptr="*fp32",
                alpha="fp32",
            )
            meta = {"JUMP": jump, "PRECISION": prec, **cfg_delta}
            print(_compile(steer._steer_delta_kernel, types, meta), flush=True)
            types = _ptr_types(steer._steer_apply_kernel, dtype, delta_ptr="*fp32")
            meta = {"PRECISION": prec, **cfg_apply}
            print(_compile(steer._steer_apply_kernel, types, meta), flush=True)
        for k in (64,) if dtype == "fp32" else (8, 64):
            types = _ptr_types(topk._topk_candidates_kernel, dtype, cand_ptr="*i64")
            meta = {"PRECISION": prec, **topk.launch_config(4096, k)}
            print(_compile(topk._topk_candidates_kernel, types, meta), flush=True)
        idx = {"idx_ptr": "*i64"}
        for fn, types, meta in [
            (
                sparse._gather_matmul_kernel,
                _ptr_types(sparse._gather_matmul_kernel, dtype, c_ptr="*fp32", **idx),
                {"HAS_BIAS": True, **sparse.GATHER_MATMUL_CONFIG},
            ),
            (
                sparse._gather_dot_kernel,
                _ptr_types(sparse._gather_dot_kernel, dtype, out_ptr="*fp32", **idx),
                sparse.GATHER_DOT_CONFIG,
            ),
            (
                sparse._scatter_outer_kernel,
                _ptr_types(
                    sparse._scatter_outer_kernel, dtype, c_ptr="*fp32", out_ptr="*fp32", **idx
                ),
                sparse.SCATTER_OUTER_CONFIG,
            ),
        ]:
            print(_compile(fn, types, meta), flush=True)


@pytest.mark.subprocess
def test_kernels_compile_for_sm90():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    run = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
    )
    print(run.stdout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


if __name__ == "__main__":
    compile_all()
