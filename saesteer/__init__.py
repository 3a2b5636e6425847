"""saesteer: sparse-autoencoder interpretability and latent-space steering of language models.

Heavy libraries (torch's model stack, TransformerLens, sae-lens) are imported lazily by the
functions that need them, so `import saesteer` stays fast.
"""

__version__ = "0.1.0"
