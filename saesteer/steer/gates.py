"""Gates: which tokens an operator edits, decided per token from the activation h at its site.

    projection gate   open where û·h < τ  (side "below": StTP/StMP, steer only tokens on the
                      wrong side of a probe's threshold) or û·h > τ (side "above": Selective
                      Steering's adaptive mode, τ = 0 on b1)

A gated edit is h' = where(open, op(h), h): a closed gate changes nothing, and since the gate reads
only the token's own activation it gives the same decision with and without a KV cache.
The static layer mask of Selective Steering is not a gate: its masked-off layers simply have no
edit in the intervention (the mask is recorded in the intervention's meta).
"""

from __future__ import annotations

from typing import Any

import torch

from saesteer.steer.operators import unit

SIDES = ("below", "above")


class ProjectionGate:
    """Open on the tokens whose projection û·h is `side` the threshold τ."""

    kind = "projection"

    def __init__(self, direction: torch.Tensor, threshold: float, side: str = "below") -> None:
        if side not in SIDES:
            raise ValueError(f"A projection gate's side must be one of {SIDES}, got {side!r}.")
        self.direction = unit(direction.detach(), "gate direction")
        self.threshold = float(threshold)
        self.side = side

    def open(self, h: torch.Tensor) -> torch.Tensor:
        """Bool mask [...] over h [..., d]: True where the edit applies."""
        s = h @ self.direction
        return s < self.threshold if self.side == "below" else s > self.threshold

    def gated(self, h: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
        return torch.where(self.open(h).unsqueeze(-1), edited, h)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"direction": self.direction}

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "side": self.side}

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ProjectionGate:
        return ProjectionGate(self.direction.to(device, dtype), self.threshold, self.side)


GATES = {ProjectionGate.kind: ProjectionGate}


def restore_gate(kind: str, tensors: dict[str, torch.Tensor], params: dict[str, Any]):
    if kind not in GATES:
        raise ValueError(f"Unknown gate {kind!r}; known: {sorted(GATES)}.")
    try:
        return GATES[kind](**tensors, **params)
    except TypeError as error:
        raise ValueError(
            f"The {kind} gate's saved tensors/parameters do not fit: {error}"
        ) from None
