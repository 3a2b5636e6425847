"""Where an intervention acts: a `Site` is (layer, stream), one activation inside a decoder block.

    stream       what it is (per token, [d_model])           TransformerLens        Hugging Face (Llama)
    resid_pre    residual stream entering block l            blocks.l.hook_resid_pre   input of layers[l]
    resid_post   residual stream leaving block l             blocks.l.hook_resid_post  output of layers[l]
    attn_in      RMSNorm output read by attention (γ incl.)   output of blocks[l].ln1   layers[l].input_layernorm
    mlp_in       RMSNorm output read by the MLP (γ incl.)     output of blocks[l].ln2   layers[l].post_attention_layernorm
    attn_out     attention's output, added to the residual   blocks.l.hook_attn_out    output[0] of layers[l].self_attn
    mlp_out      MLP's output, added to the residual         blocks.l.hook_mlp_out     output of layers[l].mlp

The norm sites hook the norm *modules*, not TL's `hook_normalized` (which is taken before the gain γ),
so both model kinds see the same vector when they hold the same weights (`load_model` keeps
`fold_ln=False`). A site is written `blocks.L.STREAM` (e.g. ``blocks.15.resid_post``); a TL residual
hook name (``blocks.15.hook_resid_post``) is read as the same site.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STREAMS = ("resid_pre", "resid_post", "attn_in", "mlp_in", "attn_out", "mlp_out")
SITE_NAME = re.compile(r"^blocks\.(\d+)\.(?:hook_)?(" + "|".join(STREAMS) + r")$")
TL_MODULES = {"attn_in": "ln1", "mlp_in": "ln2"}
HF_MODULES = {
    "attn_in": "input_layernorm",
    "mlp_in": "post_attention_layernorm",
    "attn_out": "self_attn",
    "mlp_out": "mlp",
}


@dataclass(frozen=True, order=True)
class Site:
    """One activation: block `layer`'s `stream` (module docstring)."""

    layer: int
    stream: str

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise ValueError(f"A site's stream must be one of {STREAMS}, got {self.stream!r}.")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"A site's layer must be an integer ≥ 0, got {self.layer!r}.")

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.{self.stream}"

    @property
    def tl_hook(self) -> str | None:
        """The TransformerLens HookPoint name, or None for a norm site (hooked on its module)."""
        return None if self.stream in TL_MODULES else f"blocks.{self.layer}.hook_{self.stream}"

    @classmethod
    def parse(cls, name: str) -> Site:
        """``blocks.L.STREAM`` or a TL hook name ``blocks.L.hook_resid_post`` → Site."""
        match = SITE_NAME.match(name.strip()) if isinstance(name, str) else None
        if match is None:
            raise ValueError(
                f"{name!r} is not a site; write blocks.L.STREAM with STREAM one of {STREAMS} "
                "(e.g. 'blocks.15.resid_post'), or a residual hook such as "
                "'blocks.15.hook_resid_post'."
            )
        return cls(int(match.group(1)), match.group(2))


def check_sites_fit(sites, n_layers: int) -> None:
    """Every site's layer exists in a model of `n_layers` blocks (else a ValueError naming it)."""
    beyond = sorted({site.name for site in sites if site.layer >= n_layers})
    if beyond:
        raise ValueError(
            f"The intervention acts at {beyond}, but the model has only {n_layers} layers "
            f"(0..{n_layers - 1}); it was made for another model."
        )


def parse_layers(spec: str | None, n_layers: int) -> list[int]:
    """A layer list (`config.layers`) → sorted distinct layer indices: "" or "all" = every layer, else "3,5,9"."""
    text = (spec or "").strip().lower()
    if text in ("", "all"):
        return list(range(n_layers))
    layers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit():
            raise ValueError(
                f"layers={spec!r}: {item!r} is not a layer index; write 'all' or a comma list "
                f"of layers in 0..{n_layers - 1}, e.g. '3,5,9'."
            )
        layers.append(int(item))
    beyond = sorted({layer for layer in layers if layer >= n_layers})
    if beyond:
        raise ValueError(
            f"layers={spec!r}: layer(s) {beyond} do not exist; the model has {n_layers} layers "
            f"(0..{n_layers - 1})."
        )
    return sorted(set(layers))
