"""How a steering code refers to its SAE: a checksum of the SAE's weights.

`sae_checksum` is the one place to swap for `saesteer.sae.io.sae_checksum` once that lands.
"""

from __future__ import annotations

import hashlib

import torch


def sae_checksum(sae) -> str:
    """sha256 (hex) over the architecture, k, and each state-dict tensor (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(f"{sae.cfg.arch}|{sae.cfg.k}|".encode())
    for name in sorted(sae.state_dict()):
        tensor = sae.state_dict()[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
