"""The whole pipeline (`saesteer demo`, `make demo`): corpus → cache → SAE → features → steering code →
steered generations → audit, each stage through its own public API, into one output folder.

    from saesteer.pipeline import PipelineConfig, run_pipeline
    outputs = run_pipeline(PipelineConfig(model="tiny-test", out="demo_tiny", layer=0, ...))

<out>/
  pipeline.json             this config, library versions, seconds per stage, output paths
  cache/acts.h5             residual activations at blocks.<layer>.hook_resid_post (Brown Corpus)
  sae/                      the TopK SAE (sae-lens format + saesteer.json)
  features/                 feature statistics, sparse latent cache, dashboard/index.html
  code/                     the YaPO steering code (code.safetensors + code.json)
  generations.md            steered generations at every strength (from the audit)
  audit/                    report.html, report.json, strength_curve.png

A stage whose output is complete is reused, so a second run only redoes what is missing; a folder
made with a different config is an error (pick another --out, or delete it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saesteer.config import config_to_dict, option

DEFAULT_PROMPTS = ("The weather this morning was", "She opened the letter and")


@dataclass
class PipelineConfig:
    """Model, sizes and output folder of one end-to-end run (defaults: the ≤ 15-minute CPU demo)."""

    model: str = option("smollm2-135m-instruct", "model name or local folder")
    out: str = option("demo_out", "output folder")
    layer: int = option(15, "block whose resid_post is cached, encoded by the SAE and steered")
    corpus: str = option("brown", "corpus of the activation cache")
    cache_tokens: int = option(49_152, "tokens cached (384 contexts of 128)")
    context_len: int = option(128, "tokens per context")
    k: int = option(32, "active latents per token of the TopK SAE")
    expansion: int = option(4, "d_sae = expansion × d_model")
    sae_tokens: int = option(393_216, "SAE training tokens (8 epochs over the cache, 384 steps)")
    sae_batch: int = option(1024, "SAE batch in tokens")
    sae_lr: float = option(1e-3, "SAE learning rate")
    sae_skip_positions: int = option(
        1, "first tokens of each context the SAE does not train on (1: the attention sink)"
    )
    n_top: int = option(10, "top examples kept per latent in feature discovery")
    behaviour: str = option("sentiment", "shipped behaviour the steering code learns")
    steer_epochs: int = option(2, "YaPO passes over the behaviour's training pairs")
    steer_pairs: int = option(0, "training pairs used (0: all of the behaviour's train split)")
    steer_lr: float = option(0.1, "YaPO learning rate (activation units, see saesteer.steer.train)")
    steer_top_k: int = option(
        32, "latents of the YaPO code (trained dense, then these kept and refitted)"
    )
    alphas: list[float] = option(  # noqa: RUF009 (option gives lists a default factory)
        [-2.0, 1.0, 2.0, 4.0], "strengths generated and audited (α = 0 is added)"
    )
    n_prompts: int = option(6, "held-out prompts generated from at every strength")
    max_new_tokens: int = option(32, "tokens per generation")
    max_pairs: int = option(12, "validation pairs scored in the audit")
    device: str = option("cpu", "torch device")
    seed: int = option(0, "seed of every stage")
    progress: bool = option(True, "show progress bars")


@dataclass
class PipelineOutputs:
    """Where each output is, and how long each stage took (seconds)."""

    out: Path
    cache: Path
    sae: Path
    features: Path
    dashboard: Path
    code: Path
    generations: Path
    audit: Path
    seconds: dict[str, float]

    def named(self) -> list[tuple[str, Path]]:
        """(what, path) of each output, in pipeline order."""
        return [
            ("cache", self.cache),
            ("SAE", self.sae),
            ("dashboard", self.dashboard),
            ("steering code", self.code),
            ("generations", self.generations),
            ("audit report", self.audit / "report.html"),
        ]


def _record(out: Path, config: PipelineConfig) -> dict[str, Any]:
    """Read or start pipeline.json; a different config in the same folder is an error."""
    path = out / "pipeline.json"
    mine = config_to_dict(config)
    mine.pop("progress")
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("config") != mine:
            raise ValueError(
                f"{out} holds a pipeline run with another config ({path}); pass another --out "
                "or delete the folder."
            )
        return record
    out.mkdir(parents=True, exist_ok=True)
    return {"config": mine, "seconds": {}}


def _stage(record: dict[str, Any], out: Path, name: str, done: bool, work) -> None:
    """Run `work()` unless its output is complete; record the seconds and save pipeline.json."""
    if done:
        print(f"[{name}] already done, reusing it", flush=True)
        return
    print(f"[{name}] …", flush=True)
    started = time.time()
    work()
    record["seconds"][name] = round(time.time() - started, 1)
    print(f"[{name}] done in {record['seconds'][name]:.0f} s", flush=True)
    (out / "pipeline.json").write_text(json.dumps(record, indent=2))


def _generations_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Steered generations ({report['behaviour']})", ""]
    for point in report["sweep"]:
        lines += [f"## α = {point['alpha']:g} (success rate {point['success_rate']:.2f})", ""]
        for g in point["generations"]:
            mark = "✓" if g["success"] else "✗"
            lines += [f"- **{g['prompt']}** {g['text']}  ({mark} score {g['score']:.2f})"]
        lines.append("")
    return "\n".join(lines)


def summary(paths: PipelineOutputs) -> dict[str, Any]:
    """The headline numbers: the SAE's final training metrics (explained variance, L0, dead
    fraction), the code's validation preference accuracy, support and edit size ‖Δh‖/‖h‖ at α = 1,
    and the audit's success rate per α."""
    sae = json.loads((paths.sae / "saesteer.json").read_text())["training"]["final_metrics"]
    code = json.loads((paths.code / "code.json").read_text())["meta"]
    audit = json.loads((paths.audit / "report.json").read_text())
    return {
        "sae": {k: sae[k] for k in ("explained_variance", "l0", "dead_fraction") if k in sae},
        "code": {
            k: code[k]
            for k in ("val_accuracy", "support_size", "effect_norm", "effect_ratio")
            if k in code
        },
        "success_rate": {str(p["alpha"]): p["success_rate"] for p in audit["sweep"]},
    }


def run_pipeline(config: PipelineConfig) -> PipelineOutputs:
    """Run every stage (module docstring) and return where the outputs are.

    The folder is claimed first (`saesteer.outputs`): a foreign --out is refused before any work
    and a second demo on the same folder fails fast; finished stages are reused."""
    from saesteer.outputs import Output

    output = Output(config.out, "demo")
    with output:
        return _run_stages(config, output.in_place())


def _run_stages(config: PipelineConfig, out: Path) -> PipelineOutputs:
    import importlib.metadata

    from saesteer.audit.config import AuditConfig
    from saesteer.audit.run import run_audit
    from saesteer.cache_job import CacheConfig, run_cache
    from saesteer.features import FeaturesConfig, run_features
    from saesteer.models import has_hf_weights, load_hf_model, load_model
    from saesteer.sae import TrainSAEConfig, load_sae, train_sae
    from saesteer.steer.behaviours import behaviour
    from saesteer.steer.config import TrainSteerConfig
    from saesteer.steer.io import META_FILE as CODE_META
    from saesteer.steer.job import train_steer

    record = _record(out, config)
    record["versions"] = {
        n: importlib.metadata.version(n) for n in ("saesteer", "torch", "transformer-lens")
    }
    hook = f"blocks.{config.layer}.hook_resid_post"
    chosen = behaviour(config.behaviour)
    paths = PipelineOutputs(
        out=out,
        cache=out / "cache" / "acts.h5",
        sae=out / "sae",
        features=out / "features",
        dashboard=out / "features" / "dashboard" / "index.html",
        code=out / "code",
        generations=out / "generations.md",
        audit=out / "audit",
        seconds=record["seconds"],
    )
    cache_config = CacheConfig(
        out=str(paths.cache),
        model=config.model,
        hook=[hook],
        tokens=config.cache_tokens,
        context_len=config.context_len,
        dtype="float16",
        corpus=config.corpus,
        seed=config.seed,
        device=config.device,
        progress=config.progress,
    )
    _stage(record, out, "cache", paths.cache.is_file(), lambda: run_cache(cache_config))
    sae_config = TrainSAEConfig(
        out=str(paths.sae),
        cache=str(paths.cache),
        hook=hook,
        arch="topk",
        k=config.k,
        expansion=config.expansion,
        tokens=config.sae_tokens,
        batch_size=config.sae_batch,
        lr=config.sae_lr,
        init_tokens=min(16_384, config.cache_tokens),
        skip_positions=config.sae_skip_positions,
        checkpoint_every=0,
        seed=config.seed,
        device=config.device,
        progress=config.progress,
    )
    sae_done = (paths.sae / "saesteer.json").is_file()
    _stage(record, out, "train-sae", sae_done, lambda: train_sae(sae_config))
    prompts = list(DEFAULT_PROMPTS)
    features_config = FeaturesConfig(
        sae=str(paths.sae),
        cache=str(paths.cache),
        out=str(paths.features),
        model=config.model,
        hook=hook,
        n_top=config.n_top,
        prompts=prompts,
        device=config.device,
        seed=config.seed,
    )
    _stage(
        record,
        out,
        "features",
        paths.dashboard.is_file(),
        lambda: run_features(features_config, progress=config.progress),
    )
    model, tokenizer = load_model(config.model, config.device)

    def train_code() -> None:
        steer_config = TrainSteerConfig(
            pairs=config.behaviour,
            method="yapo",
            out=str(paths.code),
            model=config.model,
            sae=str(paths.sae),
            chat=chosen.chat,
            epochs=config.steer_epochs,
            lr=config.steer_lr,
            top_k=config.steer_top_k,
            seed=config.seed,
            device=config.device,
            progress=config.progress,
            max_pairs=config.steer_pairs,
        )
        sae = load_sae(paths.sae, config.device).requires_grad_(False)
        train_steer(steer_config, model, tokenizer, sae)

    _stage(record, out, "train-steer", (paths.code / CODE_META).is_file(), train_code)

    def audit() -> None:
        generator = (
            load_hf_model(config.model, config.device) if has_hf_weights(config.model) else model
        )
        audit_config = AuditConfig(
            steer=str(paths.code),
            out=str(paths.audit),
            alphas=list(config.alphas),
            model=config.model,
            sae=str(paths.sae),
            features=str(paths.features),
            behaviour=config.behaviour,
            n_prompts=config.n_prompts,
            max_new_tokens=config.max_new_tokens,
            max_pairs=config.max_pairs,
            seed=config.seed,
            device=config.device,
        )
        result = run_audit(audit_config, model, tokenizer, generator)
        paths.generations.write_text(_generations_markdown(result.report))

    _stage(record, out, "audit", (paths.audit / "report.json").is_file(), audit)
    record["summary"] = summary(paths)
    record["outputs"] = {name: str(path) for name, path in paths.named()}
    (out / "pipeline.json").write_text(json.dumps(record, indent=2))
    return paths
