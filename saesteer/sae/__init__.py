"""Sparse autoencoders: architectures, training, evals, sae-lens interop.

    from saesteer.sae import SAE, SAEConfig, TrainSAEConfig, train_sae, save_sae, load_sae
    result = train_sae(TrainSAEConfig(out="sae/", cache="acts.h5", arch="topk", k=32))
    sae = load_sae("sae/"); z = sae.encode(x); x_hat = sae.decode(z)

Names are imported on first use, so importing a config dataclass does not import torch.
"""

from __future__ import annotations

from saesteer.lazy import lazy_exports

_EXPORTS = {
    "ARCHITECTURES": "configs",
    "TrainSAEConfig": "configs",
    "EvalSAEConfig": "configs",
    "SAE": "model",
    "SAEConfig": "model",
    "train_sae": "trainer",
    "TrainResult": "trainer",
    "NonFiniteError": "trainer",
    "save_sae": "io",
    "load_sae": "io",
    "sae_checksum": "io",
    "evaluate_spliced": "evals",
    "reconstruction_metrics": "evals",
    "run_eval": "evals",
    "to_saelens": "interop",
    "from_saelens": "interop",
    "load_pretrained": "interop",
    "TensorSource": "data",
    "ModelSource": "data",
    "CacheSource": "cache_source",
    "topk_autoencode": "sparse",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
