"""Operators: how one site's activation h [..., d] is edited at strength α (α = 0 is the identity).

    add            h' = h + α·v                                           v [d]
    add-rescale    g = h + α·v,  h' = g · ‖h‖ / ‖g‖   (per token: the norm is kept)
    set-projection h' = h + α·(t − û·h)·û        α = 1 puts û·h' exactly at the target t
                   (bidirectional: a second target t⁻ used for α < 0, as h + |α|(t⁻ − û·h)û)
    reflect        h' = h + α·2(b − û·h)·û       α = 1 mirrors û·h across the boundary b
                                                   (s' = 2b − s); α in (0, 1) interpolates
    rotate-2d      h' = h + B (R(α·θ₀) − I) Bᵀ h  B = [b1 b2] [d, 2] orthonormal, R the 2-D rotation:
                   the component in the plane turns by α·θ₀, the rest is untouched, ‖h'‖ = ‖h‖.
                   Applied low-rank: c = Bᵀh (two dots), h' = h + B (Rc − c) (two axpys).
    sae-latent     a YaPO / feature code's latent edit (`saesteer.steer.codes.LatentCode`)
    feedback       h' = h + α·(β − û·x)·k      x = the block's input (resid_pre of the same layer),
                   h its output: A-LQR's gain feedback u = K e, e = (β − û·x)û, k = K û [d]
                   (an operator with `observes = "resid_pre"` reads x; only at resid_post sites)

û denotes a unit vector. Each operator saves as named tensors plus a JSON-able dict of parameters
(`tensors()`, `params()`; `restore_operator` rebuilds one), so an intervention needs no pickle.
"""

from __future__ import annotations

import math
from typing import Any

import torch

EPS = 1e-6


def unit(vector: torch.Tensor, what: str = "direction") -> torch.Tensor:
    """v / ‖v‖ for a 1-D tensor; a zero (or non-finite) vector is an error naming `what`.

    A vector already of unit norm (to 1e-6) is returned as it is, so rebuilding an operator (on
    `to()`, on loading) never changes its direction by an ulp: saved, loaded and placed edits stay
    bit-identical.
    """
    if vector.ndim != 1:
        raise ValueError(f"The {what} must be 1-D [d_model], got shape {tuple(vector.shape)}.")
    norm = vector.norm()
    if not torch.isfinite(norm) or norm <= EPS:
        raise ValueError(
            f"The {what} has norm {norm.item():.3g}: it is zero or not finite, so it points "
            "nowhere (are the two classes' activations identical?)."
        )
    if abs(norm.item() - 1.0) < 1e-6:
        return vector
    return vector / norm


class Operator:
    """Base class: `apply(h, alpha)`, `to(device, dtype)`, and what is saved.

    `observes` names a second activation the operator reads (None: only h): "resid_pre", the input
    of the block whose output it edits; `apply` then takes it as `observed` (same shape as h).
    """

    kind = ""
    observes: str | None = None

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        raise NotImplementedError

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def params(self) -> dict[str, Any]:
        return {}

    @property
    def d_model(self) -> int:
        return next(iter(self.tensors().values())).shape[-1]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Operator:
        moved = {k: t.to(device, dtype) for k, t in self.tensors().items()}
        return type(self).restore(moved, self.params())

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor], params: dict[str, Any]) -> Operator:
        return cls(**tensors, **params)


class Add(Operator):
    """h' = h + α·v."""

    kind = "add"

    def __init__(self, vector: torch.Tensor) -> None:
        if vector.ndim != 1:
            raise ValueError(f"An add vector is 1-D [d_model], got shape {tuple(vector.shape)}.")
        self.vector = vector.detach()

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        return h + alpha * self.vector

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"vector": self.vector}


class AddRescale(Add):
    """g = h + α·v, h' = g·‖h‖/‖g‖ per token (GrAInS): the direction moves, the norm does not."""

    kind = "add-rescale"

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        if alpha == 0:
            return h
        moved = h + alpha * self.vector
        scale = h.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True).clamp_min(EPS)
        return moved * scale


class SetProjection(Operator):
    """h' = h + |α|·(t − û·h)·û: α = 1 sets the projection on û to the target t (StTP, CDAS).

    With a `reverse_target` t⁻ (bidirectional, CDAS), α < 0 steers to t⁻ instead: h + |α|(t⁻ − û·h)û;
    without one, α < 0 pushes away from t: h + α(t − û·h)û.
    """

    kind = "set-projection"

    def __init__(
        self, direction: torch.Tensor, target: float, reverse_target: float | None = None
    ) -> None:
        self.direction = unit(direction.detach(), "set-projection direction")
        self.target = float(target)
        self.reverse_target = None if reverse_target is None else float(reverse_target)

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        s = h @ self.direction
        if alpha < 0 and self.reverse_target is not None:
            target, alpha = self.reverse_target, -alpha
        else:
            target = self.target
        return h + (alpha * (target - s)).unsqueeze(-1) * self.direction

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"direction": self.direction}

    def params(self) -> dict[str, Any]:
        return {"target": self.target, "reverse_target": self.reverse_target}


class Reflect(Operator):
    """h' = h + α·2(b − û·h)·û: α = 1 mirrors the projection across the boundary b (StMP)."""

    kind = "reflect"

    def __init__(self, direction: torch.Tensor, boundary: float) -> None:
        self.direction = unit(direction.detach(), "reflection direction")
        self.boundary = float(boundary)

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        s = h @ self.direction
        return h + (2 * alpha * (self.boundary - s)).unsqueeze(-1) * self.direction

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"direction": self.direction}

    def params(self) -> dict[str, Any]:
        return {"boundary": self.boundary}


class Feedback(Operator):
    """h' = h + α·(β − û·x)·k: x the block's input, h its output (A-LQR, `methods/lqr.py`).

    With k = K û (K the block's LQR gain), this is u = α K e for the tracking error
    e = (β − û·x) û of the state x against the setpoint β on û; α = 1 is the LQR law.
    """

    kind = "feedback"
    observes = "resid_pre"

    def __init__(self, direction: torch.Tensor, gain: torch.Tensor, setpoint: float) -> None:
        self.direction = unit(direction.detach(), "feedback direction")
        if gain.shape != self.direction.shape:
            raise ValueError(
                f"A feedback gain is [d_model] like its direction {tuple(self.direction.shape)}, "
                f"got {tuple(gain.shape)}."
            )
        self.gain = gain.detach()
        self.setpoint = float(setpoint)

    def apply(
        self, h: torch.Tensor, alpha: float, observed: torch.Tensor | None = None
    ) -> torch.Tensor:
        if observed is None or observed.shape != h.shape:
            raise ValueError(
                "A feedback edit reads the block's input x as well as its output h: apply it "
                "through steer() (which hooks both), or pass observed=x of h's shape "
                f"{tuple(h.shape)}."
            )
        error = self.setpoint - observed @ self.direction
        return h + (alpha * error).unsqueeze(-1) * self.gain

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"direction": self.direction, "gain": self.gain}

    def params(self) -> dict[str, Any]:
        return {"setpoint": self.setpoint}


def orthonormal_plane(b1: torch.Tensor, b2: torch.Tensor, tolerance: float = 1e-3) -> torch.Tensor:
    """B = [b̂1, unit(b2 − (b2·b̂1) b̂1)] [d, 2] (Gram–Schmidt); b1 ∥ b2 is a degenerate plane."""
    first = unit(b1.double(), "rotation plane's b1")
    second = unit(b2.double(), "rotation plane's b2")
    residue = second - (second @ first) * first
    if residue.norm() < tolerance:
        raise ValueError(
            f"The rotation plane is degenerate: b1 and b2 are parallel (|cos| = "
            f"{(second @ first).abs().item():.6f}), so they span a line, not a plane. Choose b2 "
            "from directions that differ from b1 (more calibration data, or other layers)."
        )
    return torch.stack([first, residue / residue.norm()], dim=1).to(b1.dtype)


class Rotation2D(Operator):
    """Turn the component of h in the plane B = [b1 b2] by θ = α·θ₀ degrees (module docstring)."""

    kind = "rotate-2d"

    def __init__(self, plane: torch.Tensor, degrees: float = 1.0) -> None:
        if plane.ndim != 2 or plane.shape[1] != 2:
            raise ValueError(f"A rotation plane is [d_model, 2], got {tuple(plane.shape)}.")
        gram = plane.double().T @ plane.double()
        if not torch.allclose(gram, torch.eye(2, dtype=torch.float64), atol=1e-3):
            raise ValueError(
                "The rotation plane's columns are not orthonormal (BᵀB ≠ I); build it with "
                "orthonormal_plane(b1, b2)."
            )
        self.plane = plane.detach()
        self.degrees = float(degrees)

    @property
    def d_model(self) -> int:
        return self.plane.shape[0]

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        theta = math.radians(alpha * self.degrees)
        if theta == 0:
            return h
        cos, sin = math.cos(theta), math.sin(theta)
        c = h @ self.plane  # [..., 2]
        turned = torch.stack(
            [cos * c[..., 0] - sin * c[..., 1], sin * c[..., 0] + cos * c[..., 1]], dim=-1
        )
        return h + (turned - c) @ self.plane.T

    def dense_matrix(self, alpha: float) -> torch.Tensor:
        """The same map as a d×d matrix M (h' = h Mᵀ), for tests: I + B (R − I) Bᵀ."""
        theta = math.radians(alpha * self.degrees)
        rotation = torch.tensor(
            [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
            dtype=self.plane.dtype,
        )
        identity = torch.eye(self.plane.shape[0], dtype=self.plane.dtype)
        return (
            identity + self.plane @ (rotation - torch.eye(2, dtype=self.plane.dtype)) @ self.plane.T
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"plane": self.plane}

    def params(self) -> dict[str, Any]:
        return {"degrees": self.degrees}


class LatentEdit(Operator):
    """A latent code's SAE edit (YaPO / features): `code.apply(h, α)`, saved with its SAE slices."""

    kind = "sae-latent"
    FIELDS = ("arch", "k", "d_sae", "sae_checksum", "hook_name", "model_name", "method", "mode")

    def __init__(self, code) -> None:
        self.code = code

    @property
    def d_model(self) -> int:
        return self.code.d_model

    def apply(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        return self.code.apply(h, alpha)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LatentEdit:
        return LatentEdit(self.code.to(device, dtype))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"support": self.code.support, "values": self.code.values, **self.code.weights}

    def params(self) -> dict[str, Any]:
        return {name: getattr(self.code, name) for name in self.FIELDS}

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor], params: dict[str, Any]) -> LatentEdit:
        from saesteer.steer.codes import LatentCode

        weights = dict(tensors)
        support, values = weights.pop("support"), weights.pop("values")
        return cls(LatentCode.from_tensors(weights, support, values, meta={}, **params))


OPERATORS = {
    op.kind: op
    for op in (Add, AddRescale, SetProjection, Reflect, Feedback, Rotation2D, LatentEdit)
}


def restore_operator(
    kind: str, tensors: dict[str, torch.Tensor], params: dict[str, Any]
) -> Operator:
    """Rebuild a saved operator from its `kind`, tensors and parameters."""
    if kind not in OPERATORS:
        raise ValueError(f"Unknown operator {kind!r}; known: {sorted(OPERATORS)}.")
    try:
        return OPERATORS[kind].restore(tensors, params)
    except TypeError as error:
        raise ValueError(
            f"The {kind} operator's saved tensors/parameters do not fit: {error}"
        ) from None
