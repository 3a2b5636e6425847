"""Float32 linear layers through oneDNN with the weight packed once, for the CPU cache forward.

    y = x Wᵀ + b        (x [n, k], W [m, k] packed into oneDNN's blocked layout at construction)

On x86, torch runs a float32 `F.linear` through MKL's GEMM. On the AMD EPYC CPUs measured here,
oneDNN's GEMM on a pre-packed weight is 1.09–1.17× faster at the cache's shapes (1,024 rows × 576 …
1,536; `benchmarks/linear_backends.py`), so the early-stopped SmolLM2 forward runs ~1.1× faster,
eager or compiled (numbers in benchmarks/RESULTS.md). Results equal `F.linear` up to float32 summation order (~1e-6 relative).

`with_packed_linears(module)` returns a structural copy of `module` whose `nn.Linear` submodules are
replaced by `PackedLinear`; every other submodule, parameter, buffer and hook is shared, and the
original model is left untouched. Memory: one packed copy of each replaced weight.
"""

from __future__ import annotations

import copy

import torch


def available() -> bool:
    """oneDNN with linear-weight packing is compiled into this torch build."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_reorder_linear_weight"
    )


@torch.library.custom_op("saesteer::packed_linear", mutates_args=())
def packed_linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    """x [n, k] @ Wᵀ + b through oneDNN; an opaque op, so `torch.compile` calls it as is."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


@packed_linear.register_fake
def _packed_linear_shape(x, packed, bias, out_features):
    return x.new_empty(x.shape[0], out_features)


class PackedLinear(torch.nn.Module):
    """`linear` with its weight packed for oneDNN (`rows`: the typical number of input rows)."""

    def __init__(self, linear: torch.nn.Linear, rows: int):
        super().__init__()
        self.out_features = linear.out_features
        weight = linear.weight.detach()
        self.register_buffer(
            "packed", torch.ops.mkldnn._reorder_linear_weight(weight, rows), persistent=False
        )
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = packed_linear(x.reshape(-1, x.shape[-1]), self.packed, self.bias, self.out_features)
        return y.reshape(*x.shape[:-1], self.out_features)


def with_packed_linears(module: torch.nn.Module, rows: int = 1024) -> torch.nn.Module:
    """A copy of `module` sharing everything but its float32 `nn.Linear`s, which become `PackedLinear`."""
    if isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.float32:
        return PackedLinear(module, rows)
    if not any(isinstance(m, torch.nn.Linear) for m in module.modules()):
        return module  # nothing to replace below: share it
    clone = copy.copy(module)
    clone._modules = {
        name: None if child is None else with_packed_linears(child, rows)
        for name, child in module._modules.items()
    }
    return clone
