"""The sparse autoencoder shared by every architecture.

    pre  = (x − b_dec) · W_enc + b_enc            W_enc: [d_in, d_sae], b_enc: [d_sae]
    z    = act(pre)                               ReLU | TopK(k) | BatchTopK(k) | JumpReLU(θ)
    x̂    = z · W_dec + b_dec                      W_dec: [d_sae, d_in] (unit-norm rows), b_dec: [d_in]

Activations (`arch`):
    relu       z = relu(pre)
    topk       z = relu(pre) on each row's k largest pre-activations, 0 elsewhere
    batchtopk  training: the k·B largest over the whole batch; inference: JumpReLU with `threshold`
    jumprelu   z = pre · 1[pre > θ],  θ = `threshold` [d_sae]

Public API (stable: steering, kernels, features and audit rely on it):
    SAE(SAEConfig), .encode(x) → z, .decode(z) → x̂, .forward(x) → x̂,
    .W_enc, .b_enc, .W_dec, .b_dec, .threshold (jumprelu/batchtopk; zeros otherwise), .cfg
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu")


@dataclass
class SAEConfig:
    """Shape and activation of an SAE, plus where it was trained (for checks and interop)."""

    d_in: int
    d_sae: int
    arch: str = "relu"
    k: int | None = None
    model_name: str = ""
    hook_name: str = ""
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"Unknown SAE architecture {self.arch!r}; use one of {ARCHITECTURES}.")
        if self.arch in ("topk", "batchtopk"):
            if self.k is None or not 0 < self.k <= self.d_sae:
                raise ValueError(f"{self.arch} needs 0 < k ≤ d_sae ({self.d_sae}); got k={self.k}.")


class SAE(nn.Module):
    """Sparse autoencoder x [.., d_in] → z [.., d_sae] → x̂ [.., d_in]. See module docstring."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))
        nn.init.kaiming_uniform_(self.W_dec)
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)
            self.W_enc.copy_(self.W_dec.T)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """pre = (x − b_dec) · W_enc + b_enc, [.., d_sae]."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """z = act(pre) for inference (BatchTopK uses its JumpReLU threshold here)."""
        arch = self.cfg.arch
        if arch == "relu":
            return torch.relu(pre)
        if arch in ("jumprelu", "batchtopk"):
            return pre * (pre > self.threshold)
        values, indices = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = act((x − b_dec) · W_enc + b_enc), [.., d_sae]."""
        return self.activate(self.pre_acts(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = z · W_dec + b_dec, [.., d_in]."""
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
