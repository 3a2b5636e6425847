"""SAE evals: the error-term splice leaves logits unchanged, CE recovered/KL on a trained SAE,
eval.json and the density histogram beside the SAE, and the eval-sae command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import (
    HOOK,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quick_config,
    tiny_cache,
    tiny_tokens,
)

from saesteer.sae.configs import EvalSAEConfig
from saesteer.sae.evals import evaluate_spliced, run_eval
from saesteer.sae.trainer import train_sae


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sae") / "topk"
    cache = tiny_cache(tiny_model[0])
    train_sae(quick_config(out, cache=str(cache), hook=HOOK, k=16, d_sae=256, tokens=256 * 150))
    return out


def test_error_term_leaves_logits_unchanged_and_results_are_written(
    tiny_model, trained: Path
) -> None:
    model = tiny_model[0]
    held_out = torch.as_tensor(tiny_tokens(n_ctx=16, seed=99), dtype=torch.long)
    metrics = run_eval(
        EvalSAEConfig(sae=str(trained), model="tiny-test"), model=model, tokens=held_out
    )
    assert metrics["hook"] == HOOK
    assert metrics["max_logit_diff_with_error"] <= 1e-4
    assert metrics["kl_sae_with_error"] < 1e-6
    assert abs(metrics["ce_sae_with_error"] - metrics["ce_clean"]) < 1e-5
    assert metrics["kl_sae"] > 0
    assert 0.6 < metrics["explained_variance"] < 1 and metrics["fvu"] == pytest.approx(
        1 - metrics["explained_variance"]
    )
    assert 0 < metrics["l0"] <= 16 and 0 <= metrics["dead_fraction"] < 1
    written = json.loads((trained / "eval.json").read_text())
    assert written["sae_checksum"] == metrics["sae_checksum"]
    assert (trained / "density_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ce_loss_recovered_on_the_default_model(default_model, tmp_path: Path) -> None:
    """A TopK SAE trained briefly on layer 2 of SmolLM2 recovers most of the CE loss."""
    from saesteer.corpus import make_contexts
    from saesteer.sae.data import ModelSource

    model, tokenizer = default_model
    hook = "blocks.2.hook_resid_post"
    tokens = make_contexts(
        tokenizer, source="brown", context_len=32, n_tokens=144 * 32, seed=0
    ).tokens
    source = ModelSource(model, hook, tokens[:128], contexts_per_chunk=128)
    result = train_sae(
        quick_config(tmp_path / "sae", k=32, d_sae=1152, tokens=256 * 100, lr=1e-3), source=source
    )
    held_out = torch.as_tensor(tokens[128:136], dtype=torch.long)
    metrics, _ = evaluate_spliced(model, result.sae, hook, held_out)
    assert metrics["max_logit_diff_with_error"] <= 1e-4
    assert metrics["ce_loss_recovered_with_error"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["ce_zero"] > metrics["ce_sae"] > metrics["ce_clean"]
    assert 0.5 < metrics["ce_loss_recovered"] < 1.0, metrics
    assert metrics["kl_sae"] > 0 and metrics["explained_variance"] > 0.8
    # Position 0 is SmolLM2's attention sink (norm ~100× the rest): EV without it is the honest one.
    assert 0 < metrics["explained_variance_without_position_0"] < metrics["explained_variance"]


def test_explained_variance_is_relative_to_the_mean(tiny_model, trained: Path) -> None:
    """An SAE that outputs the mean has EV 0 (not the large positive value 'relative to zero' gives)."""
    from saesteer.sae.io import load_sae

    sae = load_sae(trained)
    tokens = torch.as_tensor(tiny_tokens(n_ctx=8, seed=5), dtype=torch.long)
    _, cache = tiny_model[0].run_with_cache(tokens, names_filter=HOOK)
    x = cache[HOOK].reshape(-1, 64)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.copy_(x.mean(0))
    metrics, _ = evaluate_spliced(tiny_model[0], sae, HOOK, tokens)
    assert abs(metrics["explained_variance"]) < 1e-4


def test_d_in_mismatch_with_the_model_is_a_clear_error(tiny_model, trained: Path) -> None:
    from saesteer.sae.model import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=32, d_sae=64))
    with pytest.raises(ValueError, match="d_in 32 does not match the width 64"):
        evaluate_spliced(tiny_model[0], sae, HOOK, torch.ones(1, 8, dtype=torch.long))


def test_eval_sae_command(trained: Path, tmp_path: Path, capsys) -> None:
    from saesteer.cli import main

    code = main(
        [
            "eval-sae",
            "--sae",
            str(trained),
            "--model",
            "tiny-test",
            "--n-tokens",
            "512",
            "--context-len",
            "32",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["max_logit_diff_with_error"] <= 1e-4
    assert (tmp_path / "eval.json").exists() and (tmp_path / "density_histogram.png").exists()
