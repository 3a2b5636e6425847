"""`run_audit(config)`: sweep a steering code's or intervention's strength and report what it is,
did, achieved and cost.

For every α in the sweep (α = 0 is the unsteered baseline), on held-out data:

    did it work   the behaviour's scorer on greedy generations from the validation prompts
                  (success rate, mean score) and preference log-odds on the validation pairs
    what it cost  perplexity of those generations under the unsteered model, their n-gram
                  repetition, and KL drift of next-token distributions on neutral prompts
    what it did   latent changes Δz at the steered layer (and at a later layer with its SAE),
                  residual-norm change at both layers, and per token for one prompt

The steered layer H is a code's own hook; for an intervention it is the residual stream leaving
its last edited block, blocks.m.hook_resid_post with m its largest site layer (blocks.m.hook_resid_pre
when every edit at m is at resid_pre; `saesteer.audit.measure.steered_hook`). Δz there needs an SAE of
H (--sae); the later layer L comes after H.

Formulas: `saesteer.audit.metrics`; how the model is run: `saesteer.audit.measure`. Outputs in
`config.out`: report.json, report.html and strength_curve.png (written atomically).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saesteer.audit import measure, metrics
from saesteer.audit.config import AuditConfig
from saesteer.audit.describe import describe_code
from saesteer.config import config_to_dict
from saesteer.hook_names import hook_layer, parse_hook_name, resid_post, start_layer
from saesteer.steer.codes import LatentCode, SteeringCode
from saesteer.steer.intervention import Intervention, as_intervention

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
CURVE_PNG = "strength_curve.png"
TOKEN_VIEW_LATENTS = 3


@dataclass
class AuditResult:
    """The report (as written to report.json) and where its files are."""

    report: dict[str, Any]
    out: Path

    @property
    def html(self) -> Path:
        return self.out / REPORT_HTML

    @property
    def json(self) -> Path:
        return self.out / REPORT_JSON

    @property
    def curve(self) -> Path:
        return self.out / CURVE_PNG


def later_layer(
    code: SteeringCode | Intervention, n_layers: int, requested: int, later_sae: Any
) -> int | None:
    """The later layer L whose resid_post is measured: `requested` (≥ 0), the later SAE's layer,
    else m + max(1, n_layers // 6) capped at the last block, m the steered hook H's layer
    (`measure.steered_hook`: a code's own hook, an intervention's residual after its last edit).
    L must come after H; None when no block follows H (then a later SAE is an error)."""
    hook = measure.steered_hook(as_intervention(code))
    first = start_layer(hook)
    if requested >= 0:
        chosen = requested
    elif later_sae is not None:
        chosen = parse_hook_name(later_sae.cfg.hook_name)[0]
    else:
        chosen = min(n_layers - 1, hook_layer(hook) + max(1, n_layers // 6))
    where = hook if isinstance(code, SteeringCode) else _after_last_edit(code, hook)
    if first > n_layers - 1:
        if later_sae is not None:
            raise ValueError(
                f"--later-sae reads {later_sae.cfg.hook_name!r}, but no block follows the steered "
                f"hook {where} in this {n_layers}-layer model; drop --later-sae."
            )
        return None
    if not first <= chosen < n_layers:
        raise ValueError(
            f"--later-layer {chosen} must lie after the steered hook {where} "
            f"(blocks {first}..{n_layers - 1})."
        )
    if later_sae is not None and later_sae.cfg.hook_name != resid_post(chosen):
        raise ValueError(
            f"The later SAE reads {later_sae.cfg.hook_name!r}, not blocks.{chosen}.hook_resid_post; "
            "pass the SAE of that layer or drop --later-layer."
        )
    return chosen


def _after_last_edit(intervention: Intervention, hook: str) -> str:
    """How messages name an intervention's steered hook."""
    return (
        f"{hook} (the residual after the last edit of the {intervention.method} intervention at "
        f"{intervention.hook_name})"
    )


def _until_eos(row: torch.Tensor, eos: int | None) -> torch.Tensor:
    """Generated ids up to (not including) the first end-of-sequence token."""
    if eos is None:
        return row
    hits = (row == eos).nonzero()
    return row[: int(hits[0])] if len(hits) else row


def _finite(value: Any) -> Any:
    """NaN/inf → None, recursively, so report.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class _Auditor:
    """Holds the unsteered baselines; `sweep_point(α)` measures one strength."""

    def __init__(self, cfg: AuditConfig, setup: dict[str, Any]) -> None:
        self.cfg = cfg
        self.__dict__.update(setup)
        self.steered_sae = setup.get("steered_sae", setup.get("sae"))  # the SAE of the steered hook
        model = self.model
        self.plan = measure.make_plan(self.code, model)
        self.start = self.plan.start
        self.prompt_ids = [self._prompt_ids(p) for p in self.prompts]
        self.prompt_res = measure.residuals(model, self.prompt_ids, self.start)
        self.h0 = measure.hook_states(model, self.plan, self.prompt_res.resid, 0.0)  # [tokens, d]
        pad = self.tokenizer.pad_token_id or 0
        neutral_ids, self.neutral_mask = measure.right_padded(
            [self._prompt_ids(p, chat=False) for p in self.neutral], pad
        )
        self.neutral_h = model(neutral_ids.to(model.cfg.device), stop_at_layer=self.start)
        self.neutral_logits = measure.run_above(model, self.neutral_h, self.start)
        self.pairs = measure.pair_residuals(model, self.pair_tokens, self.start)
        self.z0 = self.steered_sae.encode(self.h0) if self.steered_sae is not None else None
        self.hL0 = self._later(self.prompt_res.resid, 0.0)
        later_sae = self.later_sae if self.hL0 is not None else None
        self.zL0 = later_sae.encode(self.hL0) if later_sae is not None else None

    def _prompt_ids(self, prompt: str, chat: bool | None = None) -> torch.Tensor:
        from saesteer.generation import prompt_token_ids

        return prompt_token_ids(self.tokenizer, prompt, self.chat if chat is None else chat)[0]

    def _later(self, resid: list[torch.Tensor], alpha: float) -> torch.Tensor | None:
        if self.later is None:
            return None
        return torch.cat(
            [measure.forward(self.model, self.plan, h, alpha, self.later + 1) for h in resid]
        )

    def _generate(self, alpha: float) -> list[torch.Tensor]:
        from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered

        ids, mask = batch_prompt_ids(self.tokenizer, self.prompts, chat=self.chat)
        eos = self.tokenizer.eos_token_id
        new = generate_ids_steered(
            self.generator,
            ids,
            mask,
            self.code if alpha != 0 else None,
            alpha,
            self.cfg.positions,
            max_new_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature,
            seed=self.cfg.seed,
            eos_token_id=eos,
        )
        return [_until_eos(row, eos) for row in new]

    def sweep_point(self, alpha: float) -> dict[str, Any]:
        cfg, model = self.cfg, self.model
        generated = self._generate(alpha)
        texts = [self.tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated]
        scores = [self.behaviour.score(t) for t in texts]
        logprobs = measure.generation_logprobs(model, self.prompt_ids, generated)
        neutral = measure.forward(model, self.plan, self.neutral_h, alpha)
        kl = metrics.next_token_kl(self.neutral_logits, neutral, self.neutral_mask)
        logp = measure.pair_logprobs(model, self.pairs, self.plan, alpha)
        states = self._states(alpha)
        point: dict[str, Any] = {
            "alpha": alpha,
            "success_rate": sum(map(self.behaviour.succeeded, texts)) / len(texts),
            "mean_score": sum(scores) / len(scores),
            **metrics.preference_summary(logp, self.pairs.logp_ref),
            "perplexity": metrics.perplexity(logprobs),
            "repetition": metrics.mean_ngram_repetition([g.tolist() for g in generated], cfg.ngram),
            "kl_neutral": kl,
            "mean_new_tokens": sum(len(g) for g in generated) / len(generated),
            "steered_layer": {"hook": self.plan.hook, **metrics.norm_change(self.h0, states["h"])},
            "generations": [
                {"prompt": p, "text": t, "score": s, "success": self.behaviour.succeeded(t)}
                for p, t, s in zip(self.prompts, texts, scores, strict=True)
            ],
        }
        if "z" in states:
            point["steered_layer"]["top_latents"] = metrics.top_changes(
                metrics.latent_mean_deltas(self.z0, states["z"]), cfg.n_latents
            )
        if "hL" in states:
            later = {"hook": resid_post(self.later)}
            later.update(metrics.norm_change(self.hL0, states["hL"]))
            if "zL" in states:
                later["top_latents"] = metrics.top_changes(
                    metrics.latent_mean_deltas(self.zL0, states["zL"]), cfg.n_latents
                )
            point["later_layer"] = later
        return point

    def _states(self, alpha: float) -> dict[str, torch.Tensor]:
        """Steered states of all prompt tokens at α: h' at the steered hook H, z' = encode(h') (with
        an SAE of H), h'_L at the later layer and z'_L (with a later SAE); each [prompt tokens, ...]."""
        states = {"h": measure.hook_states(self.model, self.plan, self.prompt_res.resid, alpha)}
        if self.steered_sae is not None:
            states["z"] = self.steered_sae.encode(states["h"])
        if self.later is not None:
            states["hL"] = self._later(self.prompt_res.resid, alpha)
            if self.later_sae is not None:
                states["zL"] = self.later_sae.encode(states["hL"])
        return states

    def token_view(self, alpha: float) -> dict[str, Any]:
        """Per token of the first prompt at α: its top |Δz| latents and ‖Δh_L‖ at the later layer."""
        states = self._states(alpha)
        n = self.prompt_ids[0].numel()  # the first prompt's tokens come first in the concatenation
        texts = self.tokenizer.batch_decode(
            [[t] for t in self.prompt_ids[0].tolist()], clean_up_tokenization_spaces=False
        )
        deltas = {
            name: states[key][:n] - base[:n]
            for key, name, base in (("z", "steered", self.z0), ("zL", "later", self.zL0))
            if key in states
        }
        rows = []
        for t in range(n):
            row: dict[str, Any] = {"token": texts[t]}
            for name, delta in deltas.items():
                top = delta[t].abs().topk(min(TOKEN_VIEW_LATENTS, delta.shape[1])).indices
                row[name] = [[int(i), float(delta[t, i])] for i in top if delta[t, i] != 0]
            if "hL" in states:
                row["later_edit_norm"] = float((states["hL"][t] - self.hL0[t]).norm())
            rows.append(row)
        return {"alpha": alpha, "prompt": self.prompts[0], "tokens": rows}


def headline_alpha(alphas: list[float]) -> float:
    """The strength shown per token: the largest positive α, else the α of largest |α|."""
    positive = [a for a in alphas if a > 0]
    return max(positive) if positive else max(alphas, key=abs)


@torch.no_grad()
def run_audit(
    config: AuditConfig, model: Any = None, tokenizer: Any = None, generator: Any = None
) -> AuditResult:
    """Audit `config.steer` (module docstring). Pass an already loaded TransformerLens `model` and
    `tokenizer` (and a Hugging Face `generator` with the same weights) to skip loading them."""
    from saesteer.audit.loading import load_inputs
    from saesteer.outputs import Output

    output = Output(config.out, "audit")  # a foreign --out fails here, before any work
    with output:
        return _audit(config, output, load_inputs(config, model, tokenizer, generator))


def _audit(config: AuditConfig, output, setup: dict[str, Any]) -> AuditResult:
    from saesteer.audit.plot import strength_curve
    from saesteer.audit.report import render_html

    auditor = _Auditor(config, setup)
    points = [auditor.sweep_point(alpha) for alpha in config.alphas]
    out = Path(config.out)
    code = setup["code"]
    about = describe_code(
        code,
        setup["model"],
        setup["tokenizer"],
        setup["sae"],
        setup["stats"],
        setup["dashboard"],
        out,
        config.n_latents,
    )
    if setup.get("notes"):
        about["notes"] = [*about.get("notes", []), *setup["notes"]]
    report = {
        "format": "saesteer-audit/1",
        "code_path": str(config.steer),
        "behaviour": setup["behaviour"].name,
        "behaviour_description": setup["behaviour"].description,
        "chat": setup["chat"],
        "what_it_is": about,
        "training": {
            k: code.meta.get(k)
            for k in ("val_accuracy", "val_accuracy_reversed", "data_checksum", "train_seconds")
            if k in code.meta
        },
        "sae_checksum": code.sae_checksum if isinstance(code, LatentCode) else None,
        "later_layer": setup["later"],
        "n_prompts": len(setup["prompts"]),
        "n_pairs": auditor.pairs.tokens.n_pairs,
        "n_neutral": len(setup["neutral"]),
        "sweep": points,
        "token_view": auditor.token_view(headline_alpha(config.alphas)),
        "config": config_to_dict(config),
        "versions": {
            name: importlib.metadata.version(name)
            for name in ("saesteer", "torch", "transformer-lens")
        },
    }
    report = _finite(report)
    with output.replacing() as tmp:
        (tmp / REPORT_JSON).write_text(json.dumps(report, indent=2))
        strength_curve(report, tmp / CURVE_PNG)
        (tmp / REPORT_HTML).write_text(render_html(report, CURVE_PNG))
    return AuditResult(report, out)
