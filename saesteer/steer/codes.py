"""Steering codes: one interface, `code.apply(h, alpha) -> h'`, for every method.

    DenseVector   h' = h + α · v                 v [d_model]   methods: bipo, mean-diff
    LatentCode    mode "add":   YaPO edit        v [d_sae]     methods: yapo, features
                  mode "clamp": clamp edit       c [d_sae]     method:  features
                  (formulas in `saesteer.steer.latent`)

A code knows where it applies (`hook_name`, e.g. ``blocks.15.hook_resid_post``) and for which model
(`model_name`, `d_model`); a latent code also records its SAE's checksum. `meta` holds the method's
hyper-parameters, the training data checksum and training results; `saesteer.steer.io` saves it.
Codes are immutable: a trainer builds a new one from its learned tensor.
"""

from __future__ import annotations

from typing import Any

import torch

import saesteer.kernels as kernels
from saesteer.hook_names import parse_hook_name
from saesteer.sae.io import sae_checksum
from saesteer.steer.latent import latent_clamp

SUPPORT_RESTRICTED_ARCHS = ("relu", "jumprelu", "batchtopk")


def check_support(support: torch.Tensor, d_sae: int) -> torch.Tensor:
    """The support S [s] as int64 latent indices, checked: distinct, each in 0..d_sae − 1.

    A negative index would silently wrap around to another latent and one ≥ d_sae fails deep inside
    indexing, so both are refused here with the SAE's range.
    """
    integer = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
    if support.ndim != 1 or support.dtype not in integer:
        raise ValueError(
            f"The code's support must be a 1-D tensor of latent indices (int64), got shape "
            f"{tuple(support.shape)} of {support.dtype}."
        )
    support = support.long()
    outside = support[(support < 0) | (support >= d_sae)]
    if outside.numel():
        raise ValueError(
            f"The code's support has latent indices {outside.tolist()[:8]} outside 0..{d_sae - 1} "
            f"(the SAE has d_sae={d_sae}); each index must name one of its latents."
        )
    distinct, counts = support.unique(return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"The code's support lists latents {distinct[counts > 1].tolist()[:8]} more than once; "
            "each latent may appear once."
        )
    return support


def _check_shapes(weights: dict[str, torch.Tensor], arch: str, s: int, d_sae: int) -> None:
    """The edit's tensors have the shapes `LatentCode` documents (else a clear error, not a crash)."""
    if "b_dec" not in weights or weights["b_dec"].ndim != 1:
        raise ValueError("The code has no 1-D 'b_dec' [d_model] tensor.")
    d = weights["b_dec"].shape[0]
    if arch in SUPPORT_RESTRICTED_ARCHS:
        expected = {"W_enc_S": (d, s), "b_enc_S": (s,), "W_dec_S": (s, d), "threshold_S": (s,)}
    else:
        expected = {"W_enc": (d, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d)}
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ValueError(f"The {arch} code lacks the tensor(s) {missing}.")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(
                f"The code's {name!r} has shape {tuple(weights[name].shape)}, expected {shape} "
                f"(d_model={d}, support size {s}, d_sae={d_sae})."
            )


class SteeringCode:
    """Base: where a code applies and what it records. Subclasses implement `apply`."""

    method: str = ""

    def __init__(
        self, hook_name: str, model_name: str, d_model: int, meta: dict[str, Any] | None = None
    ) -> None:
        parse_hook_name(hook_name)
        self.hook_name = hook_name
        self.model_name = model_name
        self.d_model = d_model
        self.meta = dict(meta or {})

    @property
    def layer(self) -> int:
        return parse_hook_name(self.hook_name)[0]

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        """h [..., d_model] → steered h' [..., d_model] at strength α (α = 0: identity)."""
        raise NotImplementedError

    def to(self, device: torch.device | str, dtype: torch.dtype) -> SteeringCode:
        """A copy whose tensors live on `device` in `dtype` (the hooked activations')."""
        raise NotImplementedError

    def effect_norm(self, h: torch.Tensor, alpha: float = 1.0) -> float:
        """Mean residual-space size of the edit, mean ‖h' − h‖ over tokens of h [..., d]."""
        with torch.no_grad():
            return (self.apply(h, alpha) - h).norm(dim=-1).mean().item()


class DenseVector(SteeringCode):
    """h' = h + α · v with v [d_model] (BiPO vector or mean-difference / CAA vector)."""

    def __init__(
        self,
        vector: torch.Tensor,
        hook_name: str,
        model_name: str,
        method: str,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if vector.ndim != 1:
            raise ValueError(
                f"A dense steering vector is 1-D [d_model]; got shape {tuple(vector.shape)}."
            )
        super().__init__(hook_name, model_name, vector.shape[0], meta)
        self.vector = vector.detach()
        self.method = method

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        return h + alpha * self.vector

    def to(self, device: torch.device | str, dtype: torch.dtype) -> DenseVector:
        return DenseVector(
            self.vector.to(device, dtype), self.hook_name, self.model_name, self.method, self.meta
        )


class LatentCode(SteeringCode):
    """A code in an SAE's latent space (YaPO, or hand-chosen latents); see module docstring.

    Keeps only what the edit reads: for ReLU/JumpReLU/BatchTopK SAEs the support's slices
    (W_enc_S [d, s], b_enc_S, W_dec_S [s, d], b_dec, threshold_S); for TopK SAEs the full W_enc,
    b_enc, W_dec, b_dec (the full encode is needed). So a saved code needs no SAE to be applied.
    """

    def __init__(
        self,
        sae,
        values: torch.Tensor,
        method: str,
        mode: str = "add",
        meta: dict[str, Any] | None = None,
        model_name: str | None = None,
        hook_name: str | None = None,
        support: torch.Tensor | None = None,
    ) -> None:
        if values.shape != (sae.cfg.d_sae,):
            raise ValueError(
                f"Code has shape {tuple(values.shape)}, but the SAE has d_sae="
                f"{sae.cfg.d_sae}; a latent code is one value per SAE latent."
            )
        hook_name = hook_name or sae.cfg.hook_name
        if not hook_name:
            raise ValueError(
                "The SAE records no hook_name; pass hook_name='blocks.L.hook_resid_post'."
            )
        values = values.detach()
        if support is None:
            support = values.nonzero().squeeze(-1)
        support = check_support(support, sae.cfg.d_sae).sort().values  # [s]: supp(v) or chosen
        with torch.no_grad():
            if sae.cfg.arch in SUPPORT_RESTRICTED_ARCHS:
                weights = {
                    "W_enc_S": sae.W_enc[:, support],
                    "b_enc_S": sae.b_enc[support],
                    "W_dec_S": sae.W_dec[support],
                    "b_dec": sae.b_dec,
                    "threshold_S": sae.threshold[support],
                }
            else:
                weights = {
                    "W_enc": sae.W_enc,
                    "b_enc": sae.b_enc,
                    "W_dec": sae.W_dec,
                    "b_dec": sae.b_dec,
                }
        self._setup(
            {k: t.detach().clone() for k, t in weights.items()},
            support,
            values[support],
            arch=sae.cfg.arch,
            k=sae.cfg.k,
            d_sae=sae.cfg.d_sae,
            sae_checksum=sae_checksum(sae),
            hook_name=hook_name,
            model_name=model_name or sae.cfg.model_name,
            method=method,
            mode=mode,
            meta=meta,
        )

    def _setup(
        self,
        weights,
        support,
        values,
        *,
        arch,
        k,
        d_sae,
        sae_checksum,
        hook_name,
        model_name,
        method,
        mode,
        meta,
    ) -> None:
        if mode not in ("add", "clamp"):
            raise ValueError(f"mode must be 'add' or 'clamp', got {mode!r}.")
        if mode == "clamp" and arch not in SUPPORT_RESTRICTED_ARCHS:
            raise ValueError(
                f"Clamping needs a ReLU/JumpReLU/BatchTopK SAE, not {arch}; use mode 'add'."
            )
        if arch not in (*SUPPORT_RESTRICTED_ARCHS, "topk"):
            raise ValueError(f"Unknown SAE architecture {arch!r} for a latent code.")
        if arch == "topk" and not (isinstance(k, int) and 0 < k <= d_sae):
            raise ValueError(f"A TopK code needs 0 < k ≤ d_sae ({d_sae}); got k={k!r}.")
        support = check_support(support, d_sae)
        if values.shape != support.shape:
            raise ValueError(
                f"The code has {support.numel()} support indices but {values.numel()} values "
                f"(shape {tuple(values.shape)}); it needs one value per support latent."
            )
        _check_shapes(weights, arch, support.numel(), d_sae)
        SteeringCode.__init__(self, hook_name, model_name, weights["b_dec"].shape[0], meta)
        self.method, self.mode, self.arch, self.k, self.d_sae = method, mode, arch, k, d_sae
        self.sae_checksum = sae_checksum
        self.weights, self.support, self.values = weights, support, values  # values: v_S or c_S

    @classmethod
    def from_tensors(
        cls,
        weights: dict[str, torch.Tensor],
        support: torch.Tensor,
        values: torch.Tensor,
        **fields: Any,
    ) -> LatentCode:
        """Rebuild a code from its saved tensors (fields: arch, k, d_sae, sae_checksum, hook_name,
        model_name, method, mode, meta) without the SAE."""
        code = cls.__new__(cls)
        code._setup(dict(weights), support, values, **fields)
        return code

    @property
    def support_size(self) -> int:
        return int(self.support.numel())

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        w = self.weights
        if self.arch not in SUPPORT_RESTRICTED_ARCHS:
            return kernels.topk_latent_steer(
                h,
                w["W_enc"],
                w["b_enc"],
                w["W_dec"],
                w["b_dec"],
                self.k,
                self.support,
                self.values,
                alpha,
            )
        threshold = None if self.arch == "relu" else w["threshold_S"]
        edit = kernels.latent_steer if self.mode == "add" else latent_clamp
        return edit(
            h, w["W_enc_S"], w["b_enc_S"], w["W_dec_S"], w["b_dec"], self.values, alpha, threshold
        )

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LatentCode:
        code = LatentCode.__new__(LatentCode)
        code.__dict__.update(self.__dict__)
        code.values = self.values.to(device, dtype)
        code.support = self.support.to(device)
        code.weights = {k: t.to(device, dtype) for k, t in self.weights.items()}
        return code


def feature_code(
    sae,
    latents: dict[int, float],
    mode: str = "add",
    hook_name: str | None = None,
    model_name: str | None = None,
) -> LatentCode:
    """Manual SAE feature steering: add `latents[i]` to latent i (mode "add": z' = relu(z + α·v)),
    or clamp latent i towards `latents[i]` (mode "clamp": z' = z + α·(c − z); c = 0 ablates)."""
    if not latents:
        raise ValueError("Choose at least one latent, e.g. {123: 8.0}.")
    bad = [i for i in latents if not 0 <= int(i) < sae.cfg.d_sae]
    if bad:
        raise ValueError(f"Latent indices {bad} are outside the SAE's 0..{sae.cfg.d_sae - 1}.")
    values = torch.zeros(sae.cfg.d_sae)
    for index, value in latents.items():
        values[int(index)] = float(value)
    meta = {"latents": {str(int(i)): float(v) for i, v in latents.items()}, "mode": mode}
    support = torch.tensor(sorted({int(i) for i in latents}), dtype=torch.long)
    return LatentCode(
        sae,
        values,
        method="features",
        mode=mode,
        meta=meta,
        hook_name=hook_name,
        model_name=model_name,
        support=support,
    )
