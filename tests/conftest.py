"""Shared, expensive fixtures: each model is built once per test run."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Without a GPU, Triton kernels can only run in its interpreter, and Triton picks interpreter or
# compiler once, at its first import (transformer_lens imports it): set the switch before that.
# On a GPU machine the kernels are compiled and tested for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def tiny_model():
    """(HookedTransformer, tokenizer) of the 2-layer random `tiny-test` model, seed 0."""
    from saesteer.models import load_model

    return load_model("tiny-test", seed=0)


@pytest.fixture(scope="session")
def default_model():
    """(HookedTransformer, tokenizer) of SmolLM2-135M-Instruct, all 30 layers, fp32 (convert once)."""
    from saesteer.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def default_hf_model():
    """The Hugging Face model on the same converted weights as `default_model`."""
    from saesteer.models import load_hf_model

    return load_hf_model("smollm2-135m-instruct")
