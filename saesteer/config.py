"""One dataclass per job feeds the CLI, a YAML/JSON config file and the Python API.

Declare each field with `option(default, "help text")`: the help text is the field's docstring and
becomes the `--flag`'s help. `add_config_arguments` turns the dataclass into argparse flags
(`field_name` → `--field-name`), `config_from_args` builds the dataclass from a parsed namespace
(values from `--config FILE` first, flags on top), and `save_config`/`load_config` round-trip it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with a help text (its docstring). Lists/dicts get a default factory."""
    if isinstance(default, list | dict):
        factory = default.copy
        return dataclasses.field(default_factory=factory, metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(scalar type, is_list) for annotations like `int`, `str | None`, `list[str]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()
) -> None:
    """Add `--config FILE` and one `--flag` per dataclass field (defaults resolved later)."""
    parser.add_argument(
        "--config", type=Path, help="YAML or JSON file with any of the options below"
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, is_list = _base_type(hints[f.name])
        default = (
            f.default
            if f.default is not _MISSING
            else (f.default_factory() if f.default_factory is not _MISSING else None)
        )
        help_text = f.metadata.get("help", "")
        required = f.default is _MISSING and f.default_factory is _MISSING
        help_text += " (required)" if required else f" (default: {default})"
        help_text = help_text.replace("%", "%%")  # argparse %-formats help strings
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif is_list:
            parser.add_argument(
                flag, type=kind, nargs="+", action="extend", default=None, help=help_text
            )
        else:
            choices = f.metadata.get("choices")
            parser.add_argument(flag, type=kind, choices=choices, default=None, help=help_text)


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build `cls` from `--config FILE` (if given) overridden by explicitly passed flags."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(_read_mapping(args.config))
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return config_from_dict(cls, values)


def config_from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build `cls` from a mapping; unknown keys and missing required fields are clear errors."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"Unknown option(s) for {cls.__name__}: {unknown}. Valid: {sorted(names)}")
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is _MISSING and f.default_factory is _MISSING and f.name not in values
    ]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise ValueError(f"{cls.__name__} needs {flags}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    coerced = {k: _coerce(cls, fields[k], hints[k], v) for k, v in values.items()}
    return cls(**coerced)


def _coerce(cls: type, f: dataclasses.Field, annotation: Any, value: Any) -> Any:
    """`value` (e.g. from YAML, where `5e-4` is a string) as the field's type; clear error if not."""
    kind, is_list = _base_type(annotation)
    if value is None:
        return None
    try:
        if is_list:
            items = value if isinstance(value, list | tuple) else [value]
            result = [_scalar(kind, item) for item in items]
        else:
            result = _scalar(kind, value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{cls.__name__}.{f.name} must be {getattr(kind, '__name__', kind)}"
            f"{' (or a list of them)' if is_list else ''}, got {value!r}"
        ) from None
    choices = f.metadata.get("choices")
    if choices and any(item not in choices for item in (result if is_list else [result])):
        raise ValueError(f"{cls.__name__}.{f.name} must be one of {list(choices)}, got {value!r}")
    return result


def _scalar(kind: Any, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "false", "no", "0"):
            return str(value).lower() in ("true", "yes", "1")
        raise ValueError(value)
    if kind is int and isinstance(value, str | float):
        number = float(value)
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    if kind in (int, float, str):
        return kind(str(value) if isinstance(value, Path) else value)
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-able dict of a config dataclass (paths become strings)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def save_config(config: Any, path: str | Path) -> None:
    """Write a config as YAML (.yaml/.yml) or JSON (anything else)."""
    path = Path(path)
    data = config_to_dict(config)
    text = (
        yaml.safe_dump(data, sort_keys=False)
        if path.suffix in (".yaml", ".yml")
        else json.dumps(data, indent=2)
    )
    path.write_text(text)


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a config written by `save_config` (or by hand) back into `cls`."""
    return config_from_dict(cls, _read_mapping(Path(path)))


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    text = path.read_text()
    data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"Config file {path} must hold a mapping of option names to values.")
    return data


# --------------------------------------------------------------------------- range checks


def flag(name: str) -> str:
    """The command-line flag of a config field: `batch_size` → `--batch-size`."""
    return "--" + name.replace("_", "-")


def check_at_least(config: Any, names: tuple[str, ...], low: float, why: str = "") -> None:
    """ValueError naming the flag unless every field in `names` is a finite number ≥ `low`."""
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= low):
            raise ValueError(f"{flag(name)} must be ≥ {low:g}{why}; got {value!r}.")


def check_positive(config: Any, names: tuple[str, ...], why: str = "") -> None:
    """ValueError naming the flag unless every field in `names` is a finite number > 0."""
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{flag(name)} must be a positive number{why}; got {value!r}.")
