"""Steering audit: what a steering code is, what it did, whether it worked, and what it cost.

    from saesteer.audit import AuditConfig, run_audit
    result = run_audit(AuditConfig(steer="codes/sentiment", out="audit/", alphas=[1, 2, 4]))
    result.report["sweep"]        # one record per α; result.html, result.json, result.curve

Modules: `config` (AuditConfig), `metrics` (the formulas), `measure` (model runs), `describe`
(latents of a code), `loading` (inputs from flags), `run` (the sweep), `plot`, `report` (HTML).
Names are imported on first use, so importing the config does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AuditConfig": "saesteer.audit.config",
    "NEUTRAL_PROMPTS": "saesteer.audit.config",
    "AuditResult": "saesteer.audit.run",
    "run_audit": "saesteer.audit.run",
    "describe_code": "saesteer.audit.describe",
    "nearest_latents": "saesteer.audit.describe",
    "next_token_kl": "saesteer.audit.metrics",
    "perplexity": "saesteer.audit.metrics",
    "ngram_repetition": "saesteer.audit.metrics",
    "render_html": "saesteer.audit.report",
    "strength_curve": "saesteer.audit.plot",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'saesteer.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
