"""What a benchmark "method" is: a spec string that names how to obtain a steering code.

    NAME                 a `train-steer` method (`saesteer.steer.config.METHODS`), its defaults
    NAME:key=value,...   the same with `TrainSteerConfig` options changed, e.g. yapo:top_k=64
    ALIAS                a named variant (ALIASES below)
    code:DIR             a saved code folder, used as it is (not refitted; one "seed")

Every code is fitted by `saesteer.steer.train.fit_steering` on the behaviour's train split, with
its validation split for the preference accuracy, so a method added to `train-steer` is a benchmark
method with no change here. A method is *deterministic* when seeds cannot change it (mean-diff, a
zero learning rate, a saved code): it is fitted and generated from once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ALIASES: dict[str, str] = {
    # the YaPO recipe: no cap, no L1; as sparse as the SAE's ReLU makes it
    "yapo-reference": "yapo:yapo_mode=reference",
    # dense phase → the 32 latents that move the residual most → refit on them
    "yapo-refit": "yapo:support_by=effect",
    # the 32-latent matching-pursuit fit of the pairs' mean difference, untrained
    "sparse-mean-diff": "yapo:support_by=mean-diff,lr=0",
}
FIXED_FIELDS = ("pairs", "out", "model", "sae", "validation", "chat", "seed", "device", "progress")


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method spec: `name` as given, the train-steer `base` method and its overrides."""

    name: str
    base: str
    overrides: tuple[tuple[str, Any], ...] = ()
    code_dir: str = ""

    @property
    def deterministic(self) -> bool:
        options = dict(self.overrides)
        seedless = ("mean-diff", "selective", "swfc", "sttp", "stmp", "grains", "lqr", "steer2edit")
        return bool(self.code_dir) or self.base in seedless or options.get("lr") == 0

    @property
    def needs_sae(self) -> bool:
        return self.base == "yapo"

    def train_config(self, behaviour: str, chat: bool, seed: int, common: dict[str, Any]):
        """The `TrainSteerConfig` that fits this method for one behaviour and seed."""
        from saesteer.config import config_from_dict
        from saesteer.steer.config import TrainSteerConfig

        values = {**common, **dict(self.overrides)}
        values.update(method=self.base, pairs=behaviour, chat=chat, seed=seed, progress=False)
        return config_from_dict(TrainSteerConfig, values)


def parse_method(spec: str) -> MethodSpec:
    """A `MethodSpec` from a spec string (module docstring); clear errors naming what is valid."""
    from saesteer.steer.config import METHODS, TrainSteerConfig

    spec = spec.strip()
    if spec.startswith("code:"):
        folder = spec[len("code:") :]
        if not folder:
            raise ValueError("A method code:DIR needs the code folder after 'code:'.")
        return MethodSpec(spec, "code", code_dir=folder)
    expanded = ALIASES.get(spec, spec)
    base, _, options = expanded.partition(":")
    if base not in METHODS:
        raise ValueError(
            f"Unknown steering method {spec!r}; use one of {list(METHODS)}, an alias "
            f"{sorted(ALIASES)}, NAME:key=value,... or code:DIR."
        )
    fields = {f.name for f in dataclasses.fields(TrainSteerConfig)} - set(FIXED_FIELDS)
    overrides = []
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.replace("-", "_") not in fields:
            raise ValueError(
                f"Method {spec!r}: {item!r} is not key=value with a train-steer option; "
                f"options: {sorted(fields - {'method'})}."
            )
        overrides.append((key.replace("-", "_"), _number(value)))
    return MethodSpec(spec, base, tuple(overrides))


def _number(value: str) -> Any:
    """'0' → 0, '1e-3' → 0.001, anything else stays a string (the config coerces it)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value else number


def fit_method(spec: MethodSpec, behaviour: str, seed: int, context: dict[str, Any]):
    """A steering code for `behaviour` (its train split) by `spec` at `seed`.

    `context` holds model, tokenizer, sae (or None) and common (shared TrainSteerConfig values).
    """
    from saesteer.steer.behaviours import behaviour as shipped
    from saesteer.steer.behaviours import training_data
    from saesteer.steer.io import load_code
    from saesteer.steer.train import fit_steering

    if spec.code_dir:
        return load_code(spec.code_dir, sae=context["sae"])
    if spec.needs_sae and context["sae"] is None:
        raise ValueError(f"Method {spec.name} steers in an SAE's latent space: pass --sae.")
    chosen = shipped(behaviour)
    config = spec.train_config(behaviour, chosen.chat, seed, context["common"])
    train, val = training_data(behaviour)
    result = fit_steering(
        context["model"], context["tokenizer"], train, config, sae=context["sae"], val_pairs=val
    )
    return result.code
