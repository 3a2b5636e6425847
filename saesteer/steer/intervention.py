"""An intervention: a set of edits, each (site, operator, optional gate), under one strength α.

    for each edit e = (site, op, gate):   h_site' = gate ? op(h_site, α) : h_site     (per token)

Every steering method returns one (`fit(model, data, config) → Intervention`); the three original
methods' codes (`DenseVector`: one `add` edit; `LatentCode`: one `sae-latent` edit) convert with
`as_intervention` and keep their own saved format. `steer(model, intervention, α)` attaches it to a
TransformerLens or Hugging Face model (`saesteer.steer.hooks`), `save_code` / `load_code` store it as
safetensors + JSON (`saesteer.steer.io`). α = 0 is the identity for every operator.

Edits at the same site apply in list order. Sites read their activation as the model computes it,
so an edit at an earlier layer changes what a later site sees (as the methods assume).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from saesteer.steer.codes import DenseVector, LatentCode, SteeringCode
from saesteer.steer.gates import ProjectionGate
from saesteer.steer.operators import Add, LatentEdit, Operator
from saesteer.steer.sites import Site


@dataclass(frozen=True)
class Edit:
    """One site's edit: `operator` applied where `gate` is open (no gate: every token)."""

    site: Site
    operator: Operator
    gate: ProjectionGate | None = None

    def __post_init__(self) -> None:
        if self.operator.observes is not None and self.site.stream != "resid_post":
            raise ValueError(
                f"A {self.operator.kind} edit reads its block's input and edits the block's "
                f"output, so its site must be blocks.L.resid_post, not {self.site.name}."
            )

    def apply(
        self, h: torch.Tensor, alpha: float, observed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """h' = gate ? op(h, α) : h; `observed` is what an operator with `observes` reads."""
        if alpha == 0:
            return h
        if self.operator.observes is None:
            edited = self.operator.apply(h, alpha)
        else:
            edited = self.operator.apply(h, alpha, observed)
        return edited if self.gate is None else self.gate.gated(h, edited)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Edit:
        gate = None if self.gate is None else self.gate.to(device, dtype)
        return Edit(self.site, self.operator.to(device, dtype), gate)


class Intervention:
    """Edits at sites of one model (module docstring); `meta` records how it was made."""

    def __init__(
        self,
        edits: list[Edit],
        method: str,
        model_name: str,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if not edits:
            raise ValueError(
                f"The {method} intervention has no edits (no site to act at); see its meta or "
                "the method's message for why none was kept."
            )
        widths = {edit.operator.d_model for edit in edits}
        if len(widths) != 1:
            raise ValueError(f"The edits act on different widths {sorted(widths)}.")
        self.edits = tuple(edits)
        self.method = method
        self.model_name = model_name
        self.d_model = widths.pop()
        self.meta = dict(meta or {})

    @property
    def sites(self) -> list[Site]:
        return sorted({edit.site for edit in self.edits})

    @property
    def hook_name(self) -> str:
        """Where it acts, for messages: the site names, joined (one site: that site)."""
        return ", ".join(site.name for site in self.sites)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Intervention:
        moved = Intervention.__new__(Intervention)
        moved.__dict__.update(self.__dict__)
        moved.edits = tuple(edit.to(device, dtype) for edit in self.edits)
        return moved


def as_intervention(code: SteeringCode | Intervention) -> Intervention:
    """An intervention as it is, or a steering code as its one-edit intervention."""
    if isinstance(code, Intervention):
        return code
    site = Site.parse(code.hook_name)
    if isinstance(code, DenseVector):
        operator: Operator = Add(code.vector)
    elif isinstance(code, LatentCode):
        operator = LatentEdit(code)
    elif getattr(code, "weight_edit", False) or getattr(code, "controller", False):
        raise TypeError(
            f"A {type(code).__name__} ({code.method}) is not a list of activation edits, so this "
            "path (the audit's) cannot take it yet; apply it with steer(model, it, alpha) and "
            "measure it with `saesteer bench-steer --methods code:DIR`."
        )
    else:
        raise TypeError(f"Not a steering code or intervention: {type(code).__name__}.")
    return Intervention([Edit(site, operator)], code.method, code.model_name, code.meta)
