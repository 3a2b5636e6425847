"""Training-time forward passes and losses of every architecture (inputs already normalised).

Reconstruction, for all:           L_mse = mean_b ‖x_b − x̂_b‖²
relu (L1 weighted by decoder norm): L_sparse = λ₁ · mean_b Σ_j z_bj · ‖W_dec[j]‖
topk:      z keeps each row's k largest pre-activations (relu); decoded sparsely (`topk_autoencode`)
batchtopk: z keeps the k·B largest relu(pre) of the whole batch [B, d_sae]; the inference threshold
           follows θ ← (1 − η)·θ + η·min{z_bj > 0} (η = `threshold_lr`; θ starts at the first
           batch's value), one value for every latent
jumprelu:  z = pre · H(pre − θ), θ = exp(log_θ); straight-through estimator with bandwidth ε and the
           rectangle kernel K(u) = 1[|u| < ½]:
               ∂z/∂θ = −(θ/ε)·K((pre − θ)/ε),   ∂H(pre − θ)/∂θ = −(1/ε)·K((pre − θ)/ε)
           L_sparse = λ₀ · mean_b Σ_j H(pre_bj − θ_j)
AuxK (topk, batchtopk), with dead latents D (no activation for `dead_tokens` tokens) and the
residual e = stopgrad(x − x̂):
           ê = Σ over the k_aux largest relu(pre_bj), j ∈ D, of z_bj·W_dec[j]
           L_aux = α · mean_b ‖e_b − ê_b‖²
All terms are means over rows, so data-parallel ranks with equal slices average to the global loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from saesteer.sae.model import SAE
from saesteer.sae.sparse import dense_topk_autoencode, ragged_decode, sparse_decode, topk_autoencode


@dataclass
class LossSettings:
    """Coefficients of the training objective (see module docstring)."""

    l1_coefficient: float = 1.0
    l0_coefficient: float = 1.0
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.1
    aux_coefficient: float = 1 / 32
    aux_k: int = 256
    threshold_lr: float = 0.01
    sparse: bool = True


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """z = pre·H(pre − θ); ∂z/∂pre = H(pre − θ), ∂z/∂θ = −(θ/ε)·K((pre − θ)/ε)."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        d_pre = grad * (pre > theta)
        d_theta = -(theta / ctx.eps) * _rectangle((pre - theta) / ctx.eps) * grad
        return d_pre, d_theta.sum(dim=0), None


class _Step(torch.autograd.Function):
    """H(pre − θ); ∂/∂pre = 0, ∂/∂θ = −(1/ε)·K((pre − θ)/ε)."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        d_theta = -(1.0 / ctx.eps) * _rectangle((pre - theta) / ctx.eps) * grad
        return None, d_theta.sum(dim=0), None


@dataclass
class StepOutput:
    """One training forward: the loss to minimise, its parts and batch statistics."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]  # detached loss components
    recon: torch.Tensor  # x̂: [B, d_in]
    fired: torch.Tensor  # latents active at least once in the batch: [d_sae] bool
    l0: torch.Tensor  # mean active latents per row (scalar)


class TrainingSAE(nn.Module):
    """Wraps an `SAE` with its training objective; `forward(x, dead)` returns a `StepOutput`.

    x [B, d_in] is the normalised input, `dead` [d_sae] bool marks dead latents (for AuxK).
    JumpReLU learns `log_threshold` [d_sae]; `sync_threshold()` copies exp(log θ) into `sae.threshold`.
    """

    def __init__(self, sae: SAE, loss: LossSettings) -> None:
        super().__init__()
        self.sae = sae
        self.settings = loss
        self.arch = sae.cfg.arch
        if self.arch == "jumprelu":
            init = math.log(loss.jumprelu_init_threshold)
            self.log_threshold = nn.Parameter(torch.full((sae.cfg.d_sae,), init))
            self.sync_threshold()

    @property
    def unit_norm_decoder(self) -> bool:
        """ReLU trains free decoder norms (its L1 is norm-weighted); the others keep ‖W_dec[j]‖ = 1."""
        return self.arch != "relu"

    @torch.no_grad()
    def sync_threshold(self) -> None:
        if self.arch == "jumprelu":
            self.sae.threshold.copy_(self.log_threshold.exp())

    def forward(self, x: torch.Tensor, dead: torch.Tensor) -> StepOutput:
        sae, s = self.sae, self.settings
        x_c = x - sae.b_dec
        parts: dict[str, torch.Tensor] = {}
        if self.arch == "topk":
            autoencode = topk_autoencode if s.sparse else dense_topk_autoencode
            out = autoencode(x_c, sae.W_enc, sae.b_enc, sae.W_dec, sae.cfg.k)
            recon = out.recon + sae.b_dec
            fired = torch.bincount(out.idx[out.vals > 0], minlength=sae.cfg.d_sae) > 0
            l0 = (out.vals > 0).sum() / x.shape[0]
        elif self.arch == "batchtopk":
            recon, fired, l0 = self._batchtopk(x_c @ sae.W_enc + sae.b_enc)
        else:
            pre = x_c @ sae.W_enc + sae.b_enc
            if self.arch == "relu":
                z = torch.relu(pre)
                norms = sae.W_dec.norm(dim=1)
                parts["l1"] = s.l1_coefficient * (z * norms).sum(dim=1).mean()
            else:
                theta = self.log_threshold.exp()
                z = _JumpReLU.apply(pre, theta, s.jumprelu_bandwidth)
                l0_soft = _Step.apply(pre, theta, s.jumprelu_bandwidth)
                parts["l0"] = s.l0_coefficient * l0_soft.sum(dim=1).mean()
            recon = z @ sae.W_dec + sae.b_dec
            active = z > 0
            fired, l0 = active.any(dim=0), active.sum() / x.shape[0]
        parts = {"mse": (recon - x).pow(2).sum(dim=1).mean(), **parts}
        if self.arch in ("topk", "batchtopk"):
            parts["aux"] = self._aux_loss(x - recon, x_c, dead)
        loss = sum(parts.values())
        detached = {name: value.detach() for name, value in parts.items()}
        return StepOutput(loss, detached, recon.detach(), fired, l0.detach())

    def _batchtopk(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep the k·B largest relu(pre) of the batch; update the inference threshold."""
        sae, n_rows, d_sae = self.sae, pre.shape[0], self.sae.cfg.d_sae
        vals, flat = torch.relu(pre).flatten().topk(sae.cfg.k * n_rows, sorted=False)
        rows, cols = flat // d_sae, flat % d_sae
        if self.settings.sparse:
            recon = ragged_decode(rows, cols, vals, n_rows, sae.W_dec)
        else:
            z = torch.zeros_like(pre).flatten().scatter(0, flat, vals).view_as(pre)
            recon = z @ sae.W_dec
        positive = vals.detach() > 0
        if self.training and positive.any():
            eta = self.settings.threshold_lr
            smallest = vals.detach()[positive].min()
            if bool((sae.threshold == 0).all()):  # first update: start at the batch's value
                sae.threshold.fill_(float(smallest))
            else:
                sae.threshold.mul_(1 - eta).add_(eta * smallest)
        fired = torch.bincount(cols[positive], minlength=d_sae) > 0
        return recon + sae.b_dec, fired, positive.sum() / n_rows

    def _aux_loss(
        self, residual: torch.Tensor, x_c: torch.Tensor, dead: torch.Tensor
    ) -> torch.Tensor:
        """AuxK: reconstruct the residual from the k_aux largest dead latents (0 if none dead).

        Only the dead latents' pre-activations are computed: x_c·W_enc[:, D] + b_enc[D].
        """
        dead_idx = dead.nonzero().squeeze(1)
        if dead_idx.numel() == 0:
            return x_c.new_zeros(())
        sae = self.sae
        pre_dead = torch.addmm(sae.b_enc[dead_idx], x_c, sae.W_enc[:, dead_idx])
        vals, which = pre_dead.topk(
            min(self.settings.aux_k, dead_idx.numel()), dim=-1, sorted=False
        )
        e_hat = sparse_decode(dead_idx[which], torch.relu(vals), sae.W_dec)
        return self.settings.aux_coefficient * (residual.detach() - e_hat).pow(2).sum(dim=1).mean()

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Drop the part of ∂L/∂W_dec[j] parallel to W_dec[j] (keeps unit norm to first order)."""
        W, grad = self.sae.W_dec, self.sae.W_dec.grad
        if self.unit_norm_decoder and grad is not None:
            grad -= (grad * W).sum(dim=1, keepdim=True) * W

    @torch.no_grad()
    def after_step(self) -> None:
        """Restore the constraints after an optimizer step."""
        if self.unit_norm_decoder:
            self.sae.normalize_decoder()
        self.sync_threshold()
