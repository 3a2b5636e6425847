"""Sparse autoencoders: architectures, training, evals, sae-lens interop."""

from saesteer.sae.model import ARCHITECTURES, SAE, SAEConfig

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig"]
