"""Resolve an `AuditConfig` into loaded inputs: code, models, SAEs, data and feature folders.

Defaults come from what the code recorded when it was trained (`code.json` → meta.hyper_parameters):
its model, its SAE folder and its training pairs (a shipped behaviour name). Every missing input
that the audit needs is an error naming the flag that supplies it.

`--steer` may also be an intervention folder (`saesteer.steer.intervention`). One SAE reads one hook,
so for an intervention the SAE is used where it reads: Δz at the steered hook H when it is H's SAE
(`saesteer.audit.measure.steered_hook`), the nearest latents of the directions at the sites whose
residual it reads (`describe.reads_site`), and a latent edit made in it is checked against it. An
SAE given with --sae that fits none of these is an error naming the hooks that would; one defaulted
from the training record is then left out, with a note in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saesteer.audit.config import NEUTRAL_PROMPTS, AuditConfig
from saesteer.steer.codes import LatentCode
from saesteer.steer.intervention import Intervention


def _behaviour(config: AuditConfig, trained: dict[str, Any]):
    from saesteer.steer.behaviours import BEHAVIOURS, behaviour

    name = config.behaviour or (trained.get("pairs") if trained.get("pairs") in BEHAVIOURS else "")
    if not name:
        raise ValueError(
            f"The code was not trained on a shipped behaviour; pass --behaviour (one of "
            f"{sorted(BEHAVIOURS)}) to choose the scorer, and --validation FILE for its pairs."
        )
    return behaviour(name)


def _neutral(config: AuditConfig) -> list[str]:
    if not config.neutral:
        return list(NEUTRAL_PROMPTS)
    lines = [line.strip() for line in Path(config.neutral).read_text().splitlines()]
    prompts = [line for line in lines if line]
    if not prompts:
        raise ValueError(f"{config.neutral} holds no prompts; write one neutral prompt a line.")
    return prompts


def _distinct_prompts(pairs: list[Any], n: int) -> list[str]:
    seen: dict[str, None] = {}
    for pair in pairs:
        seen.setdefault(pair.prompt, None)
    return list(seen)[:n]


def _features(config: AuditConfig, sae_path: str) -> tuple[Any, str]:
    """(FeatureStats or None, dashboard folder or "") from the flags or their defaults."""
    from saesteer.features.discovery import META_FILE, FeatureStats

    folder = config.features or (str(Path(sae_path) / "features") if sae_path else "")
    if config.features and not (Path(folder) / META_FILE).is_file():
        raise FileNotFoundError(f"--features {folder}: no {META_FILE}; run `saesteer features`.")
    stats = FeatureStats.load(folder) if folder and (Path(folder) / META_FILE).is_file() else None
    dashboard = config.dashboard or (str(Path(folder) / "dashboard") if folder else "")
    if config.dashboard and not (Path(dashboard) / "index.html").is_file():
        raise FileNotFoundError(f"--dashboard {dashboard}: no index.html in it.")
    return stats, dashboard if (Path(dashboard) / "index.html").is_file() else ""


def intervention_sae(
    intervention: Intervention, sae: Any, path: str, given: bool
) -> tuple[Any, Any, list[str]]:
    """(SAE to describe with or None, SAE of the steered hook or None, notes) for an intervention.

    `given`: the SAE came from --sae (a misfit is then an error), not from the training record.
    """
    from saesteer.audit.describe import reads_site
    from saesteer.audit.measure import steered_hook
    from saesteer.steer.io import check_sae
    from saesteer.steer.operators import LatentEdit

    hook, steered = sae.cfg.hook_name, steered_hook(intervention)
    sites = sorted({e.site.name for e in intervention.edits if hook and reads_site(hook, e.site)})
    latent = [
        e.operator.code
        for e in intervention.edits
        if isinstance(e.operator, LatentEdit) and e.operator.code.hook_name == hook
    ]
    for code in latent:
        check_sae(code.sae_checksum, code.hook_name, sae, where=f"a latent edit of {path}")
    if hook and (hook == steered or sites or latent):
        if hook == steered:
            return sae, sae, []
        note = (
            f"The SAE reads {hook}, not the steered hook {steered} (the residual after the last "
            f"edit), so Δz is not measured there; its latents describe the edits at {sites}."
        )
        return sae, None, [note]
    residual = sorted(
        {e.site.tl_hook for e in intervention.edits if e.site.stream in ("resid_pre", "resid_post")}
    )
    problem = (
        f"the SAE {path} reads {hook!r}"
        if hook
        else f"the SAE {path} records no hook_name, so it is unknown where it reads"
    )
    if given:
        raise ValueError(
            f"The {intervention.method} intervention edits {intervention.hook_name} and is "
            f"measured at {steered}, but {problem}: it fits none of them. Pass --sae with the SAE "
            f"of {[steered, *residual]} (Δz at the steered hook; nearest latents of a residual "
            "site's directions), or drop --sae."
        )
    note = f"Not used: {problem}, which the intervention neither edits nor is measured at."
    return None, None, [note]


def load_inputs(
    config: AuditConfig, model: Any = None, tokenizer: Any = None, generator: Any = None
) -> dict[str, Any]:
    """Everything `run_audit` reads, loaded and checked against each other."""
    from saesteer.audit.run import later_layer
    from saesteer.models import has_hf_weights, load_hf_model, load_model
    from saesteer.sae.io import load_sae
    from saesteer.steer.batching import tokenize_pairs
    from saesteer.steer.behaviours import behaviour_pairs
    from saesteer.steer.io import check_model, check_sae, load_code
    from saesteer.steer.pairs import read_pairs

    code = load_code(config.steer)
    trained = code.meta.get("hyper_parameters", {})
    model_name = config.model or code.model_name or trained.get("model", "")
    if model is None:
        if not model_name:
            raise ValueError("The code records no model; pass --model NAME.")
        model, tokenizer = load_model(model_name, config.device)
    check_model(code, model)
    sae_path = config.sae or trained.get("sae") or ""
    if sae_path and not Path(sae_path).is_dir():
        raise FileNotFoundError(
            f"SAE folder {sae_path} does not exist; pass the code's SAE with --sae DIR."
        )
    sae = load_sae(sae_path, config.device) if sae_path else None
    steered_sae, notes = sae, []
    if sae is not None and isinstance(code, LatentCode):
        check_sae(code.sae_checksum, code.hook_name, sae, where=config.steer)
    if sae is not None and isinstance(code, Intervention):
        sae, steered_sae, notes = intervention_sae(code, sae, sae_path, bool(config.sae))
        sae_path = sae_path if sae is not None else ""
    later_sae = load_sae(config.later_sae, config.device) if config.later_sae else None
    chosen = _behaviour(config, trained)
    chat = config.chat if config.chat is not None else chosen.chat
    pairs = (
        read_pairs(config.validation)
        if config.validation
        else behaviour_pairs(chosen.name, "validation")
    )
    prompts = _distinct_prompts(pairs, config.n_prompts)
    if config.max_pairs:
        pairs = pairs[: config.max_pairs]
    if generator is None:
        use_hf = config.generator == "hf" or (
            config.generator == "auto" and has_hf_weights(model_name)
        )
        generator = load_hf_model(model_name, config.device) if use_hf else model
    stats, dashboard = _features(config, sae_path)
    return {
        "code": code,
        "model": model,
        "tokenizer": tokenizer,
        "generator": generator,
        "sae": sae,
        "steered_sae": steered_sae,
        "notes": notes,
        "later_sae": later_sae,
        "later": later_layer(code, model.cfg.n_layers, config.later_layer, later_sae),
        "behaviour": chosen,
        "chat": chat,
        "prompts": prompts,
        "pair_tokens": tokenize_pairs(tokenizer, pairs, chat, config.max_length),
        "neutral": _neutral(config),
        "stats": stats,
        "dashboard": dashboard,
    }
