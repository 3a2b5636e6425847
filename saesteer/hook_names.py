"""TransformerLens hook names, parsed in one place.

blocks.{l}.hook_resid_pre     the residual stream entering block l
blocks.{l}.hook_resid_post    the residual stream leaving block l (= entering block l + 1)
blocks.{l}.<anything>         some other hook inside block l
hook_embed, hook_pos_embed    before every block
"""

from __future__ import annotations

import re

RESID_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


def hook_layer(hook: str) -> int | None:
    """The block a hook lives in (`blocks.5.hook_resid_post` → 5), or None (embeddings etc.)."""
    found = BLOCK_HOOK.match(hook)
    return int(found.group(1)) if found else None


def is_resid_hook(hook: str) -> bool:
    return RESID_HOOK.match(hook) is not None


def parse_hook_name(hook_name: str) -> tuple[int, str]:
    """``blocks.{l}.hook_resid_{pre|post}`` → (l, "pre" | "post"); other hooks are an error."""
    match = RESID_HOOK.match(hook_name)
    if match is None:
        raise ValueError(
            f"Hook {hook_name!r} is not supported here; use a residual-stream hook "
            "such as 'blocks.15.hook_resid_post' or 'blocks.15.hook_resid_pre'."
        )
    return int(match.group(1)), match.group(2)


def start_layer(hook_name: str) -> int:
    """The block whose input is the hooked residual: l for resid_pre, l + 1 for resid_post."""
    layer, where = parse_hook_name(hook_name)
    return layer if where == "pre" else layer + 1


def resid_post(layer: int) -> str:
    """`blocks.{layer}.hook_resid_post`."""
    return f"blocks.{layer}.hook_resid_post"
