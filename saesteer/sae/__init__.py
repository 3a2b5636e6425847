"""Sparse autoencoders: architectures, training, evals, sae-lens interop.

    from saesteer.sae import SAE, SAEConfig, TrainSAEConfig, train_sae, save_sae, load_sae
    result = train_sae(TrainSAEConfig(out="sae/", cache="acts.h5", arch="topk", k=32))
    sae = load_sae("sae/"); z = sae.encode(x); x_hat = sae.decode(z)

Names are imported on first use, so importing a config dataclass does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ARCHITECTURES": "saesteer.sae.configs",
    "TrainSAEConfig": "saesteer.sae.configs",
    "EvalSAEConfig": "saesteer.sae.configs",
    "SAE": "saesteer.sae.model",
    "SAEConfig": "saesteer.sae.model",
    "train_sae": "saesteer.sae.trainer",
    "TrainResult": "saesteer.sae.trainer",
    "NonFiniteError": "saesteer.sae.trainer",
    "save_sae": "saesteer.sae.io",
    "load_sae": "saesteer.sae.io",
    "sae_checksum": "saesteer.sae.io",
    "evaluate_spliced": "saesteer.sae.evals",
    "reconstruction_metrics": "saesteer.sae.evals",
    "run_eval": "saesteer.sae.evals",
    "to_saelens": "saesteer.sae.interop",
    "from_saelens": "saesteer.sae.interop",
    "load_pretrained": "saesteer.sae.interop",
    "TensorSource": "saesteer.sae.data",
    "ModelSource": "saesteer.sae.data",
    "CacheSource": "saesteer.sae.cache_source",
    "topk_autoencode": "saesteer.sae.sparse",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'saesteer.sae' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
