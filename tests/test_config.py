"""Job configs: one dataclass feeds flags, YAML/JSON files and the API, with typed values."""

from __future__ import annotations

import argparse

import pytest

from saesteer.cache_job import CacheConfig
from saesteer.config import (
    add_config_arguments,
    config_from_args,
    config_from_dict,
    load_config,
    save_config,
)
from saesteer.sae.configs import TrainSAEConfig


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_round_trips_through_a_file(tmp_path, suffix):
    config = TrainSAEConfig(out="sae/", cache="acts.h5", arch="topk", k=16, lr=5e-4)
    path = tmp_path / f"train{suffix}"
    save_config(config, path)
    assert load_config(TrainSAEConfig, path) == config


def test_yaml_values_get_the_field_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "out: sae/\nlr: 5e-4\ntokens: 1e6\narch: topk\nk: 32\n"
    )  # YAML: '5e-4' is a str
    config = load_config(TrainSAEConfig, path)
    assert config.lr == 5e-4 and isinstance(config.lr, float)
    assert config.tokens == 1_000_000 and isinstance(config.tokens, int)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"out": "x", "arch": "nope"}, "arch must be one of"),
        ({"out": "x", "tokens": "1.5"}, "tokens must be int"),
        ({"out": "x", "lr": "fast"}, "lr must be float"),
        ({"out": "x", "learning_rate": 1.0}, "Unknown option"),
        ({}, "needs --out"),
    ],
)
def test_bad_config_values_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(TrainSAEConfig, values)


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "cache.yaml"
    save_config(CacheConfig(out="a.h5", tokens=4096), path)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, CacheConfig)
    args = parser.parse_args(
        ["--config", str(path), "--tokens", "8192", "--hook", "blocks.0.hook_resid_post"]
    )
    config = config_from_args(CacheConfig, args)
    assert (config.out, config.tokens, config.hook) == ("a.h5", 8192, ["blocks.0.hook_resid_post"])


def test_every_command_help_renders(capsys):
    """A '%' in a field's help once crashed `train-sae --help` (argparse %-formats help)."""
    from saesteer.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        text = sub.format_help()
        assert text.startswith("usage: ") and "--help" in text, name
    warmup = commands.choices["train-sae"].format_help()
    assert "10%" in " ".join(warmup.split())
