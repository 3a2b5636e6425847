"""The sparse autoencoder shared by every architecture.

    pre  = (x − b_dec) · W_enc + b_enc            W_enc: [d_in, d_sae], b_enc: [d_sae]
    z    = act(pre)                               ReLU | TopK(k) | BatchTopK(k) | JumpReLU(θ)
    x̂    = z · W_dec + b_dec                      W_dec: [d_sae, d_in] (unit-norm rows), b_dec: [d_in]

Activations (`arch`), at inference:
    relu       z = relu(pre)
    topk       z = relu(pre) on each row's k largest pre-activations, 0 elsewhere
    batchtopk  JumpReLU with the `threshold` estimated during training (training itself keeps the
               k·B largest activations of the whole batch, see `saesteer.sae.activations`)
    jumprelu   z = relu(pre) · 1[pre > θ],  θ = `threshold` [d_sae] (θ ≥ 0 gives pre · 1[pre > θ])

Rescalings that leave x ↦ x̂ unchanged (used to fold training-time conventions into saved weights):
    input scale s (the SAE was trained on s·x):   b_enc ← b_enc/s, θ ← θ/s, b_dec ← b_dec/s  (z ← z/s)
    decoder row norms n_j = ‖W_dec[j]‖:          W_enc[:, j] ← n_j·W_enc[:, j], b_enc_j ← n_j·b_enc_j,
                                                 θ_j ← n_j·θ_j, W_dec[j] ← W_dec[j]/n_j  (z_j ← n_j·z_j;
                                                 not for TopK, whose choice of k would change)

Public API (stable: steering, kernels, features and audit rely on it):
    SAE(SAEConfig), .encode(x) → z, .decode(z) → x̂, .forward(x) → x̂, .pre_acts(x), .activate(pre),
    .W_enc, .b_enc, .W_dec, .b_dec, .threshold (jumprelu/batchtopk; zeros otherwise), .cfg
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from saesteer.sae.configs import ARCHITECTURES


def topk_relu(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """TopK's activation, written once: each row's k largest pre-activations, relu'd.

    pre [.., d_sae] → (values [.., k] ≥ 0, indices [.., k]) in no particular order.
    """
    top, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.relu(top), indices


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
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive; got {self.d_in}, {self.d_sae}.")
        if self.arch in ("topk", "batchtopk") and (self.k is None or not 0 < self.k <= self.d_sae):
            raise ValueError(
                f"{self.arch} needs 0 < k ≤ d_sae ({self.d_sae}); got k={self.k}. "
                "Pass a smaller --k or a larger --d-sae/--expansion."
            )


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
            return torch.relu(pre) * (pre > self.threshold)
        values, indices = topk_relu(pre, self.cfg.k)
        return torch.zeros_like(pre).scatter(-1, indices, values)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = act((x − b_dec) · W_enc + b_enc), [.., d_sae]."""
        return self.activate(self.pre_acts(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = z · W_dec + b_dec, [.., d_in]."""
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on `scale`·x act on raw x: b_enc/s, θ/s, b_dec/s (see module doc)."""
        if not scale > 0:
            raise ValueError(f"Input scale must be positive; got {scale}.")
        self.b_enc /= scale
        self.threshold /= scale
        self.b_dec /= scale

    @torch.no_grad()
    def fold_decoder_norms(self) -> torch.Tensor:
        """Rescale latents so every decoder row has unit norm; returns the old norms [d_sae]."""
        norms = self.W_dec.norm(dim=1).clamp(min=1e-12)
        self.W_enc *= norms
        self.b_enc *= norms
        self.threshold *= norms
        self.W_dec /= norms[:, None]
        return norms

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """W_dec[j] ← W_dec[j] / ‖W_dec[j]‖ (a projection, not a fold: x̂ changes)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
