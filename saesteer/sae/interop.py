"""Convert SAEs between saesteer and an installed sae-lens (imported lazily: it takes ~13 s).

    to_saelens(sae)         → sae_lens StandardSAE | TopKSAE | JumpReLUSAE with the same encode/decode
    from_saelens(sl_sae)    → saesteer SAE (accepts sae-lens training SAEs too, e.g. BatchTopK)
    load_pretrained(release, sae_id) → saesteer SAE from the sae-lens registry (needs the HF hub)

Folders need no conversion: `saesteer.sae.io.save_sae` writes sae-lens's format and `load_sae`
reads sae-lens folders.
"""

from __future__ import annotations

from typing import Any

import torch

from saesteer.sae.io import TO_SAELENS_ARCH, sae_from_saelens_parts
from saesteer.sae.model import SAE


def to_saelens(sae: SAE) -> Any:
    """A sae-lens inference SAE computing the same z and x̂ as `sae` (BatchTopK → JumpReLU)."""
    from sae_lens import (
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )

    cfg = sae.cfg
    kind = TO_SAELENS_ARCH[cfg.arch]
    if kind == "standard":
        out = StandardSAE(StandardSAEConfig(d_in=cfg.d_in, d_sae=cfg.d_sae))
    elif kind == "topk":
        out = TopKSAE(TopKSAEConfig(d_in=cfg.d_in, d_sae=cfg.d_sae, k=cfg.k))
    else:
        out = JumpReLUSAE(JumpReLUSAEConfig(d_in=cfg.d_in, d_sae=cfg.d_sae))
    out.cfg.metadata.model_name = cfg.model_name or None
    out.cfg.metadata.hook_name = cfg.hook_name or None
    weights = {name: t.detach().clone() for name, t in sae.state_dict().items()}
    if kind != "jumprelu":
        weights.pop("threshold")
    out.load_state_dict(weights)
    return out


def from_saelens(sl_sae: Any) -> SAE:
    """A saesteer SAE from a sae-lens SAE object (weights copied, conventions folded)."""
    cfg = sl_sae.cfg.to_dict()
    weights = {name: t.detach().cpu().float() for name, t in sl_sae.state_dict().items()}
    if "topk_threshold" in weights:  # a BatchTopK training SAE: its inference form is JumpReLU
        value = weights.pop("topk_threshold")
        weights["threshold"] = torch.ones(weights["b_enc"].shape) * value
        cfg["architecture"] = "batchtopk"
    sae = sae_from_saelens_parts(cfg, weights)
    return sae


def load_pretrained(release: str, sae_id: str, device: str = "cpu") -> SAE:
    """A pretrained sae-lens SAE (release id and SAE id from its registry), as a saesteer SAE."""
    from sae_lens import SAE as SaeLensSAE

    try:
        sl_sae = SaeLensSAE.from_pretrained(release, sae_id, device="cpu")
    except OSError as error:
        raise RuntimeError(
            f"Could not fetch {release}/{sae_id} from the Hugging Face hub ({error}); "
            "pretrained SAEs need network access (unset HF_HUB_OFFLINE)."
        ) from error
    return from_saelens(sl_sae).to(device)
