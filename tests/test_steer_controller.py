"""The Guiding Giants controller (saesteer.steer.controlled, saesteer.steer.methods.controller) on the
tiny model: the patch lands at every weighted layer with the predicted (s, σ(w)) (the reference's
flaw cannot return), the same-pass flag reproduces that flaw, identities, KV-cache safety on TL and
HF, fitting moves the output and lowers the loss, saving, and clear errors."""

from __future__ import annotations

import pytest
import torch
from helpers import hand_controller

from saesteer.steer.behaviours import behaviour_pairs
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.controlled import Controller, with_timing
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered
from saesteer.steer.hooks import record, steer
from saesteer.steer.io import CodeMismatchError, load_code, save_code
from saesteer.steer.methods import controller as fit_module
from saesteer.steer.methods import fit_intervention
from saesteer.steer.sites import Site

N_PAIRS = 4
ALPHA = 3.0


def tiny_controller(tiny_model, **kwargs) -> Controller:
    model, _ = tiny_model
    return hand_controller(model.cfg.d_model, model.cfg.n_layers, model.cfg.model_name, **kwargs)


def tiny_llama(hidden: int = 32, layers: int = 3):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=120,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def prompts(tokenizer, texts=("The weather today", "My favourite book is about")):
    return batch_prompt_ids(tokenizer, list(texts))


def prefill_values(model, ctl: Controller, ids: torch.Tensor):
    """(scale [B], σ(w) [B, |P|]) from the prompt's last token, unpatched (what prefill reads)."""
    names = [f"blocks.{layer}.hook_resid_post" for layer in ctl.input_layers]
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=names)
        readings = {
            layer: cache[name][:, -1] for layer, name in zip(ctl.input_layers, names, strict=False)
        }
        return ctl.predict(ctl.features(readings))


def before_and_after(model, ctl, alpha, ids, new_tokens=3):
    """Activations at the controller's sites before and after its patch, per forward pass of a
    cached greedy generation (a recorder hooked before the controller, one after)."""
    sites = ctl.sites
    with record(model, sites) as before, steer(model, ctl, alpha), record(model, sites) as after:
        model.generate(
            ids, max_new_tokens=new_tokens, do_sample=False, use_past_kv_cache=True, verbose=False
        )
    return before, after


# --------------------------------------------------------------------------- the patch


def test_prefill_patches_every_weighted_layer_with_the_predicted_values(tiny_model):
    model, tokenizer = tiny_model
    ctl = tiny_controller(tiny_model)
    ids, _ = prompts(tokenizer, ("The weather today",))
    scale, gates = prefill_values(model, ctl, ids)
    assert float(scale.min()) > 0.5 and (gates - 0.5).abs().max() > 0.1
    before, after = before_and_after(model, ctl, ALPHA, ids)
    for j, layer in enumerate(ctl.patched_layers):
        site = Site(layer, "resid_post")
        passes = list(zip(before[site], after[site], strict=True))
        assert len(passes) == 4  # the prompt's pre-read, the prompt, one pass per new token
        read_before, read_after = passes[0]
        torch.testing.assert_close(read_after, read_before)  # the pre-read is unpatched
        prompt_before, prompt_after = passes[1]
        assert prompt_before.shape[1] == ids.shape[1]
        expected = ALPHA * scale[:, None, None] * gates[:, None, j, None] * ctl.directions[j]
        assert expected.norm() > 0.5
        # the prompt is not patched, except its last token (whose output is the first new token)
        torch.testing.assert_close(prompt_after[:, :-1], prompt_before[:, :-1])
        torch.testing.assert_close(
            prompt_after[:, -1:] - prompt_before[:, -1:], expected, atol=1e-4, rtol=1e-4
        )
        for h_before, h_after in passes[2:]:
            assert h_before.shape[1] == 1
            torch.testing.assert_close(h_after - h_before, expected, atol=1e-4, rtol=1e-4)


def test_same_pass_reproduces_the_reference_flaw(tiny_model):
    """Reading the last input layer in the pass it patches: the lower patched layer is never
    patched, the top one is, with the values read from each token's own pre-patch activations."""
    model, tokenizer = tiny_model
    ctl = tiny_controller(tiny_model, timing="same-pass")
    ids, _ = prompts(tokenizer, ("The weather today",))
    before, after = before_and_after(model, ctl, ALPHA, ids)
    low, top = Site(0, "resid_post"), Site(1, "resid_post")
    for h_before, h_after in zip(before[low], after[low], strict=True):
        torch.testing.assert_close(h_after, h_before)  # layer 0 never patched
    moved = 0.0
    for i, (h_before, h_after) in enumerate(zip(before[top], after[top], strict=True)):
        if i == 0:
            torch.testing.assert_close(h_after, h_before)  # the prompt pass
            continue
        readings = {0: before[low][i], 1: h_before}
        scale, gates = ctl.predict(ctl.features(readings))
        expected = ALPHA * (scale * gates[..., 1])[..., None] * ctl.directions[1]
        torch.testing.assert_close(h_after - h_before, expected, atol=1e-4, rtol=1e-4)
        moved += float(expected.detach().norm())
    assert moved > 0.5
    # the same weights with prefill timing do patch layer 0
    before, after = before_and_after(model, with_timing(ctl, "prefill"), ALPHA, ids)
    assert (after[low][1] - before[low][1]).norm() > 0.1


def test_alpha_zero_and_scale_zero_are_the_identity(tiny_model):
    model, tokenizer = tiny_model
    ids, mask = prompts(tokenizer)
    plain = generate_ids_steered(model, ids, mask, max_new_tokens=6)
    with torch.no_grad():
        plain_logits = model(ids)
    ctl = tiny_controller(tiny_model)
    off = tiny_controller(tiny_model, s_bias=0.0)
    with torch.no_grad():
        off.net.fc2.weight[0].zero_()  # s ≡ 0
    logit_off = with_timing(off, "prefill")
    logit_off.scale = "logit"
    for code, alpha in ((ctl, 0.0), (off, ALPHA), (logit_off, ALPHA)):
        assert torch.equal(
            generate_ids_steered(model, ids, mask, code, alpha, max_new_tokens=6), plain
        )
        with steer(model, code, alpha), code.scoring([2, 3]), torch.no_grad():
            torch.testing.assert_close(model(ids), plain_logits)
    assert not torch.equal(
        generate_ids_steered(model, ids, mask, ctl, ALPHA, max_new_tokens=6), plain
    )


# --------------------------------------------------------------------------- KV cache, TL and HF


@pytest.mark.parametrize("timing", ["prefill", "same-pass"])
def test_greedy_text_equal_with_and_without_kv_cache_tl(tiny_model, timing):
    model, tokenizer = tiny_model
    ctl = tiny_controller(tiny_model, timing=timing)
    ids, mask = prompts(tokenizer)
    kwargs = dict(max_new_tokens=8)
    cached = generate_ids_steered(model, ids, mask, ctl, ALPHA, use_cache=True, **kwargs)
    uncached = generate_ids_steered(model, ids, mask, ctl, ALPHA, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, generate_ids_steered(model, ids, mask, **kwargs))


def test_greedy_text_equal_with_and_without_kv_cache_hf():
    model = tiny_llama()
    ctl = hand_controller(32, 3, "", inputs=(1, 2), patched=(0, 1, 2), s_bias=3.0)
    torch.manual_seed(1)
    ids = torch.randint(1, 120, (2, 7))
    mask = torch.ones_like(ids)
    kwargs = dict(max_new_tokens=8)
    cached = generate_ids_steered(model, ids, mask, ctl, 4.0, use_cache=True, **kwargs)
    uncached = generate_ids_steered(model, ids, mask, ctl, 4.0, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, generate_ids_steered(model, ids, mask, **kwargs))
    # the HF hooks patch every weighted layer at generated positions, as on TL
    grown = torch.cat([ids, cached[:, :1]], dim=1)
    with (
        record(model, ctl.sites) as before,
        steer(model, ctl, 4.0),
        record(model, ctl.sites) as after,
        torch.no_grad(),
    ):
        model(ids)  # the prompt pass (after an unpatched pre-read of the prompt)
        model(grown)  # continued without cache: position 7 is generated
    # the pre-read is unpatched: (s, σ(w)) from its last token (HF's hidden_states[-1] is normed)
    readings = {layer: before[Site(layer, "resid_post")][0][:, -1] for layer in ctl.input_layers}
    scale, gates = ctl.predict(ctl.features(readings))
    for j, layer in enumerate(ctl.patched_layers):
        site = Site(layer, "resid_post")
        assert len(before[site]) == 3
        torch.testing.assert_close(after[site][0], before[site][0])
        expected = 4.0 * (scale * gates[:, j])[:, None] * ctl.directions[j]
        for run in (1, 2):  # the prompt, then the re-run: patched from the prompt's last token
            diff = after[site][run] - before[site][run]
            torch.testing.assert_close(diff[:, :6], torch.zeros_like(diff[:, :6]))
            for position in range(6, diff.shape[1]):
                torch.testing.assert_close(diff[:, position], expected, atol=1e-4, rtol=1e-4)


def test_scoring_pass_equals_incremental_passes(tiny_model):
    """A whole-sequence pass under `scoring(prompt_lengths)` patches as generation does."""
    model, tokenizer = tiny_model
    ctl = tiny_controller(tiny_model)
    ids, _ = prompts(tokenizer, ("The weather today",))
    n = ids.shape[1]
    grown = torch.cat([ids, torch.tensor([[11, 12, 13]])], dim=1)
    with torch.no_grad(), steer(model, ctl, ALPHA):
        model(ids)
        incremental = [model(grown[:, : n + k])[:, -1] for k in (1, 2, 3)]
        with ctl.scoring([n]):
            whole = model(grown)
    for k, logits in enumerate(incremental, start=1):
        torch.testing.assert_close(whole[:, n + k - 1], logits, atol=1e-4, rtol=1e-4)


def test_scoring_pass_equals_incremental_passes_hf():
    """The same on a Hugging Face model, through the benchmark's batched forward (the path the
    capability probe takes for the default model)."""
    from saesteer.bench.forward import sequence_outputs

    model = tiny_llama()
    ctl = hand_controller(32, 3, "", inputs=(1, 2), patched=(0, 1, 2), s_bias=3.0)
    torch.manual_seed(2)
    row, start = torch.randint(1, 120, (10,)), 6
    with torch.no_grad(), steer(model, ctl, 4.0):
        incremental = [model(row[None, : start + k]).logits[0, -1] for k in range(4)]
        with ctl.scoring([start]):
            whole = sequence_outputs(model, [row])[0][0]
    plain = sequence_outputs(model, [row])[0][0]
    for k, logits in enumerate(incremental):
        torch.testing.assert_close(whole[start - 1 + k], logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(whole[start - 1], plain[start - 1])
    torch.testing.assert_close(whole[: start - 1], plain[: start - 1])  # the prompt is not patched


def test_capability_scores_a_controller_as_it_generates(tiny_model):
    """The benchmark's multiple-choice score under a controller: each option's log-probs as
    generation would give them (prompt first, then one token longer per pass), not the
    whole-text pass that a controller reads as a prompt; Brown perplexity is not measured."""
    from saesteer.bench.capability import CapabilityProbe

    model, tokenizer = tiny_model
    ctl = tiny_controller(tiny_model)
    probe = CapabilityProbe(model, tokenizer, n_items=2, brown_tokens=64)
    plain = probe.option_scores()
    with torch.no_grad(), steer(model, ctl, ALPHA):
        scored = probe.option_scores(ctl)
        result = probe.measure(ctl)
    assert result["brown_ppl"] is None and result["mc_accuracy"] is not None
    reference = []
    for row, start in zip(probe.rows, probe.starts, strict=True):
        with torch.no_grad(), steer(model, ctl, ALPHA):
            last = [model(row[None, : start + k])[0, -1] for k in range(row.numel() - start)]
        logp = torch.log_softmax(torch.stack(last).double(), dim=-1)  # pass k predicts start + k
        reference.append(logp.gather(-1, row[start:, None])[:, 0].mean())
    assert scored == pytest.approx([float(r) for r in reference], abs=1e-4)
    assert max(abs(a - b) for a, b in zip(scored, plain, strict=True)) > 1e-3


# --------------------------------------------------------------------------- fitting


def fit_config(**overrides) -> TrainSteerConfig:
    values = dict(
        pairs="formality",
        method="controller",
        epochs=2,
        batch_pairs=2,
        progress=False,
        chat=True,
        controller_lr=3e-3,
    )
    return TrainSteerConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def fitted(tiny_model):
    model, tokenizer = tiny_model
    val = behaviour_pairs("formality", "validation")[:2]
    return fit_intervention(
        model, tokenizer, behaviour_pairs("formality")[:N_PAIRS], fit_config(), val
    )


def test_fit_lowers_its_loss_and_moves_the_output(tiny_model, fitted):
    model, tokenizer = tiny_model
    ctl = fitted.code
    meta = ctl.meta
    assert isinstance(ctl, Controller) and ctl.patched_layers == (0, 1)
    assert ctl.input_layers == (0, 1)  # the last four blocks of a 2-layer model
    assert meta["loss_final"] < meta["loss_init"]
    assert meta["sites"] == ["blocks.0.resid_post", "blocks.1.resid_post"]
    assert 0 <= meta["val_accuracy"] <= 1 and "data_checksum" in meta
    ids, _mask = prompts(tokenizer)
    with torch.no_grad():
        plain = model(ids)
        with steer(model, ctl, 8.0), ctl.scoring([ids.shape[1] - 2] * 2):
            steered = model(ids)
    # the last prompt token and the completion move (logits at positions ≥ prompt length − 1)
    assert (steered[:, -3:] - plain[:, -3:]).abs().max() > 1e-3
    torch.testing.assert_close(steered[:, :-3], plain[:, :-3])  # the rest of the prompt does not


def test_fit_bce_orders_s_by_label(tiny_model, fitted):
    """s is higher on label-1 prompts (asked for the rejected side) than on label-0 ones."""
    model, tokenizer = tiny_model
    ctl = fitted.code
    by_label = ctl.meta["s_by_label"]
    assert by_label["rejected_side_1"] > by_label["chosen_side_0"]
    # recomputed from the prompts themselves, as the runtime reads them
    from saesteer.steer.batching import tokenize_pairs
    from saesteer.steer.methods.cdas import instructed_pairs

    config = fit_config()
    plus, minus, _ = instructed_pairs(behaviour_pairs("formality")[:N_PAIRS], config, True)
    tokens = tokenize_pairs(tokenizer, plus + minus, True, config.max_length)
    starts = tokens.target_mask.argmax(1)
    feats, _ = fit_module._readings(
        model, tokens.input_ids, starts, list(ctl.input_layers), None, "cpu"
    )
    with torch.no_grad():
        s, _ = ctl.outputs(feats[0::2])
    assert float(s[N_PAIRS:].mean()) > float(s[:N_PAIRS].mean())


# --------------------------------------------------------------------------- saving, errors


def test_save_load_round_trip_through_train_steer(tiny_model, tmp_path):
    from saesteer.steer.job import train_steer

    model, tokenizer = tiny_model
    out = tmp_path / "ctl"
    result = train_steer(fit_config(out=str(out), max_pairs=N_PAIRS, epochs=1), model, tokenizer)
    loaded = load_code(out)
    assert isinstance(loaded, Controller)
    assert loaded.patched_layers == result.code.patched_layers and loaded.timing == "prefill"
    assert loaded.meta["loss_final"] == result.code.meta["loss_final"]
    ids, mask = prompts(tokenizer)
    first = generate_ids_steered(model, ids, mask, result.code, 6.0, max_new_tokens=6)
    assert torch.equal(generate_ids_steered(model, ids, mask, loaded, 6.0, max_new_tokens=6), first)
    hand = tiny_controller(tiny_model, timing="same-pass")
    save_code(hand, tmp_path / "hand")
    again = load_code(tmp_path / "hand")
    assert again.timing == "same-pass"
    assert torch.equal(
        generate_ids_steered(model, ids, mask, again, ALPHA, max_new_tokens=6),
        generate_ids_steered(model, ids, mask, hand, ALPHA, max_new_tokens=6),
    )


def test_wrong_width_or_layer_set_is_a_clear_error(tiny_model):
    model, _ = tiny_model
    ctl = tiny_controller(tiny_model)
    for other, problem in (
        (tiny_llama(hidden=32, layers=2), "d_model 32"),
        (tiny_llama(64, 1), "1 layers"),
    ):
        ids = torch.randint(1, 120, (1, 5))
        with torch.no_grad():
            plain = other(ids).logits
        with pytest.raises(CodeMismatchError, match=problem) as caught, steer(other, ctl, 1.0):
            pass
        message = str(caught.value)
        assert "2 layers" in message and "d_model 64" in message and "tiny-test" in message
        with torch.no_grad():
            torch.testing.assert_close(other(ids).logits, plain)  # no hook left behind
        assert all(not layer._forward_hooks for layer in other.model.layers)
    wrong = hand_controller(64, 3, model.cfg.model_name, inputs=(1, 2), patched=(0, 1, 2))
    with pytest.raises(CodeMismatchError, match=r"3 layers.*2 layers"), steer(model, wrong, 1.0):
        pass
    assert "forward" not in model.__dict__


def test_bad_options_are_refused(tiny_model):
    model, _tokenizer = tiny_model
    with pytest.raises(ValueError, match="controller_timing"):
        fit_config(controller_timing="later")
    with pytest.raises(ValueError, match="controller_hidden"):
        fit_config(controller_hidden=0)
    for field, value, match in (
        ("controller_layers", "5", "outside the model's 2 layers"),
        ("controller_input_layers", "x", "comma-separated"),
        ("controller_lr", float("nan"), "controller_lr"),
        ("controller_train_alpha", 0.0, "controller_train_alpha"),
    ):
        with pytest.raises(ValueError, match=match):
            fit_module.check_options(fit_config(**{field: value}), model.cfg.n_layers)
    ctl = tiny_controller(tiny_model)
    with pytest.raises(ValueError, match="generated"), steer(model, ctl, 1.0, positions="prompt"):
        pass
    with pytest.raises(ValueError, match="finite"), steer(model, ctl, float("nan")):
        pass


def test_load_code_routes_the_controller_and_weight_edit_formats():
    from saesteer.steer import controlled, io, weight_edit

    assert io.OTHER_FORMATS == {
        weight_edit.FORMAT: ("saesteer.steer.weight_edit", "load_weight_edit"),
        controlled.FORMAT: ("saesteer.steer.controlled", "load_controller"),
    }
