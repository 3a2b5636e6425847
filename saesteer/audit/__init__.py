"""Steering audit: what a steering code (or intervention) is, what it did, whether it worked, and
what it cost.

    from saesteer.audit import AuditConfig, run_audit
    result = run_audit(AuditConfig(steer="codes/sentiment", out="audit/", alphas=[1, 2, 4]))
    result.report["sweep"]        # one record per α; result.html, result.json, result.curve

`steer` may be a code folder or an intervention folder (`saesteer.steer.intervention`: edits at
several sites, with operators and gates); `measure` says where each is measured.

Modules: `config` (AuditConfig), `metrics` (the formulas), `measure` (model runs), `describe`
(latents of a code, edits of an intervention), `loading` (inputs from flags), `run` (the sweep),
`plot`, `report` (HTML).
Names are imported on first use, so importing the config does not import torch.
"""

from __future__ import annotations

from saesteer.lazy import lazy_exports

_EXPORTS = {
    "AuditConfig": "config",
    "NEUTRAL_PROMPTS": "config",
    "AuditResult": "run",
    "run_audit": "run",
    "describe_code": "describe",
    "describe_intervention": "describe",
    "nearest_latents": "describe",
    "next_token_kl": "metrics",
    "perplexity": "metrics",
    "ngram_repetition": "metrics",
    "render_html": "report",
    "strength_curve": "plot",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
