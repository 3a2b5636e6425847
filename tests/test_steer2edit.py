"""Steer2Edit (saesteer.steer.methods.steer2edit, saesteer.steer.weight_edit) on the tiny model: the
scores and λ against a direct computation, that the edit acts (and towards the chosen side), exact
revert, TransformerLens = Hugging Face, export to a plain transformers folder, saving, bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import train_steer_argv

from saesteer.models import TinyModelSpec, build_tiny_model
from saesteer.outputs import OutputError
from saesteer.steer.batching import completion_logprobs, tokenize_pairs
from saesteer.steer.behaviours import behaviour_pairs
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered
from saesteer.steer.hooks import steer
from saesteer.steer.io import CodeFormatError, CodeMismatchError, load_code, save_code
from saesteer.steer.methods import fit_intervention, preference_accuracy, steer2edit
from saesteer.steer.weight_edit import (
    WeightEdit,
    apply_weight_edit,
    export_edited_model,
    hf_model_from_tl,
)

N_PAIRS = 8
# The tiny model is 64 wide (chance |cos| ≈ 1/8), so lower thresholds than SmolLM2's defaults.
RHO_ATTN, RHO_MLP, SOFTNESS = 0.15, 0.3, 0.5


def config(**overrides) -> TrainSteerConfig:
    values = dict(
        pairs="sentiment",
        method="steer2edit",
        edit_rho_attn=RHO_ATTN,
        edit_rho_mlp=RHO_MLP,
        edit_softness=SOFTNESS,
        chat=False,
        progress=False,
    )
    return TrainSteerConfig(**{**values, **overrides})


def pairs():
    return behaviour_pairs("sentiment")[:N_PAIRS]


@pytest.fixture(scope="module")
def edit(tiny_model) -> WeightEdit:
    model, tokenizer = tiny_model
    return steer2edit.fit(model, tokenizer, pairs(), config())


@pytest.fixture(scope="module")
def hf_model(tiny_model):
    return hf_model_from_tl(*tiny_model)


@pytest.fixture(scope="module")
def ids(tiny_model) -> torch.Tensor:
    return tokenize_pairs(tiny_model[1], pairs()[:2], chat=False).input_ids


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(model, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(after[k], before[k])]
    assert not changed, f"weights not restored: {changed}"


@torch.no_grad()
def logits(model, ids: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "hook_dict"):
        return model(ids)
    return model(input_ids=ids).logits


# --------------------------------------------------------------------------- the formulas


def test_soft_threshold_has_a_dead_zone_keeps_the_sign_and_is_one_at_rho():
    g = torch.tensor([-0.9, -0.2, -0.1, -0.05, 0.0, 0.07, 0.1, 0.2, 0.6], dtype=torch.float64)
    rho, a = 0.2, 0.5  # dead zone |g| ≤ ρa = 0.1
    lam = steer2edit.soft_threshold(g, rho, a)
    expected = [-(0.9 - 0.1) / 0.1, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, (0.6 - 0.1) / 0.1]
    torch.testing.assert_close(lam, torch.tensor(expected, dtype=torch.float64))
    assert torch.equal(torch.sign(lam[lam != 0]), torch.sign(g[lam != 0]))
    assert not steer2edit.soft_threshold(g, -1.0, a).any()  # ρ < 0: that part off
    assert not steer2edit.soft_threshold(g, 0.0, a).any()
    with pytest.raises(ValueError, match="edit_softness"):
        steer2edit.soft_threshold(g, rho, 1.0)


def span_means_by_hand(model, tokenizer, pair_list, names):
    """{name: (μ⁺, μ⁻)} from one unpadded forward per completion, averaged over its tokens."""
    sums = {name: [0.0, 0.0] for name in names}
    for pair in pair_list:
        prompt = tokenizer(pair.prompt).input_ids
        for side, completion in enumerate((pair.chosen, pair.rejected)):
            full = prompt + tokenizer(completion, add_special_tokens=False).input_ids
            _, cache = model.run_with_cache(torch.tensor([full]), names_filter=names)
            for name in names:
                sums[name][side] = sums[name][side] + cache[name][0, len(prompt) :].double().mean(0)
    return {name: (s[0] / len(pair_list), s[1] / len(pair_list)) for name, s in sums.items()}


def test_scores_and_lambdas_match_a_direct_computation(tiny_model, edit):
    model, tokenizer = tiny_model
    layer = 1
    p = f"blocks.{layer}."
    names = [p + "hook_attn_out", p + "hook_mlp_out", p + "attn.hook_z", p + "mlp.hook_post"]
    means = span_means_by_hand(model, tokenizer, pairs(), names)
    n_heads, d_head = model.cfg.n_heads, model.cfg.d_head
    # the Hugging Face layouts: o_proj [d_model, n_heads·d_head], down_proj [d_model, d_mlp]
    o_proj = model.blocks[layer].attn.W_O.detach().double().flatten(0, 1).T
    down = model.blocks[layer].mlp.W_out.detach().double().T
    v_attn = means[names[0]][0] - means[names[0]][1]
    v_attn = v_attn / v_attn.norm()
    v_mlp = means[names[1]][0] - means[names[1]][1]
    v_mlp = v_mlp / v_mlp.norm()
    z_bar = (0.5 * (means[names[2]][0] + means[names[2]][1])).reshape(n_heads, d_head)
    post_bar = 0.5 * (means[names[3]][0] + means[names[3]][1])

    def lam(g: float, rho: float) -> float:
        return (1 if g > 0 else -1) * max(abs(g) - rho * SOFTNESS, 0.0) / (rho * (1 - SOFTNESS))

    found = next(x for x in edit.layers if x.layer == layer)
    torch.testing.assert_close(found.v_attn.double(), v_attn, atol=1e-5, rtol=0)
    expected_heads = {}
    for j in range(n_heads):
        block = o_proj[:, j * d_head : (j + 1) * d_head]
        write = block @ z_bar[j]
        g = float(write @ v_attn / write.norm())
        if lam(g, RHO_ATTN) != 0:
            key = block.T @ v_attn
            expected_heads[j] = (lam(g, RHO_ATTN), key / key.norm())
    assert expected_heads, "the test layer should have edited heads"
    assert found.heads.tolist() == sorted(expected_heads)
    for j, lam_j, key_j in zip(
        found.heads.tolist(), found.head_lambdas, found.head_keys, strict=True
    ):
        assert float(lam_j) == pytest.approx(expected_heads[j][0], abs=1e-4)
        torch.testing.assert_close(key_j.double(), expected_heads[j][1], atol=1e-5, rtol=0)

    torch.testing.assert_close(found.v_mlp.double(), v_mlp, atol=1e-5, rtol=0)
    edited = dict(
        zip(
            found.neurons.tolist(),
            zip(found.neuron_lambdas, found.neuron_signs, strict=True),
            strict=True,
        )
    )
    assert 0 < len(edited) < model.cfg.d_mlp
    checked = 0
    for i in range(40):  # a few neurons, edited or not
        write = down[:, i] * post_bar[i]
        g = float(write @ v_mlp / write.norm())
        expected = lam(g, RHO_MLP)
        if expected == 0:
            assert i not in edited
            continue
        checked += 1
        assert float(edited[i][0]) == pytest.approx(expected, abs=1e-4)
        assert float(edited[i][1]) == (1.0 if float(down[:, i] @ v_mlp) > 0 else -1.0)
    assert checked > 0


# --------------------------------------------------------------------------- effect


def test_edit_changes_the_output_and_moves_towards_the_chosen_side(tiny_model, edit, ids):
    model, tokenizer = tiny_model
    plain = logits(model, ids)
    with steer(model, edit, 1.0):
        edited = logits(model, ids)
    assert (edited - plain).abs().max() > 0.1  # no silent no-op

    # the edited layer's attention output moves along v̂ (what the edit is built to do)
    layer = edit.layers[0]
    site = f"blocks.{layer.layer}.hook_attn_out"

    def projection(alpha: float) -> float:
        with steer(model, edit, alpha):
            _, cache = model.run_with_cache(ids, names_filter=[site])
        return float((cache[site] @ layer.v_attn).mean())

    assert projection(-1.0) < projection(0.0) < projection(1.0)

    # and on the training pairs the chosen completions gain log-probability over the rejected
    tokens = tokenize_pairs(tokenizer, pairs(), chat=False)
    with torch.no_grad():
        base = completion_logprobs(model(tokens.input_ids), tokens.input_ids, tokens.target_mask)
        with steer(model, edit, 1.0):
            lp = completion_logprobs(model(tokens.input_ids), tokens.input_ids, tokens.target_mask)
    reward = lp - base
    assert float((reward[0::2] - reward[1::2]).mean()) > 0
    assert preference_accuracy(model, tokenizer, pairs(), edit, 1.0) > 0.5


def test_fit_intervention_records_meta_and_accuracy(tiny_model):
    model, tokenizer = tiny_model
    val = behaviour_pairs("sentiment", "validation")[:4]
    result = fit_intervention(model, tokenizer, pairs(), config(), val)
    meta = result.code.meta
    assert isinstance(result.code, WeightEdit)
    assert meta["sites"] == [s.name for s in result.code.sites] and meta["sites"]
    assert meta["heads_edited"] == result.code.n_heads_edited > 0
    assert 0 <= meta["val_accuracy"] <= 1 and 0 <= meta["val_accuracy_reversed"] <= 1
    assert meta["hyper_parameters"]["edit_rho_mlp"] == RHO_MLP


def test_an_edit_with_nothing_above_the_thresholds_is_refused(tiny_model):
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match=r"edits nothing.*largest head score"):
        steer2edit.fit(model, tokenizer, pairs(), config(edit_rho_attn=5.0, edit_rho_mlp=5.0))
    with pytest.raises(ValueError, match="both edit_rho_attn and edit_rho_mlp"):
        steer2edit.fit(model, tokenizer, pairs(), config(edit_rho_attn=-1.0, edit_rho_mlp=-1.0))
    with pytest.raises(ValueError, match="edit_softness"):
        config(edit_softness=1.0)


def test_turning_a_part_off_edits_only_the_other(tiny_model):
    model, tokenizer = tiny_model
    only_mlp = steer2edit.fit(model, tokenizer, pairs(), config(edit_rho_attn=-1.0))
    assert only_mlp.n_heads_edited == 0 and only_mlp.n_neurons_edited > 0
    assert all(site.stream == "mlp_out" for site in only_mlp.sites)


@pytest.mark.parametrize("part", ["attn", "mlp"])
def test_activation_twin_adds_the_edits_write_change_at_the_mean_input(tiny_model, part):
    """At the lowest edited layer (nothing below it changes), the weight edit moves the span-mean
    write of that part by exactly c·v̂ (it is linear in the part's input): the twin's vector."""
    model, tokenizer = tiny_model
    options = {"edit_rho_attn": -1.0} if part == "mlp" else {"edit_rho_mlp": -1.0}
    edit = steer2edit.fit(model, tokenizer, pairs(), config(**options))
    twin = steer2edit.fit(model, tokenizer, pairs(), config(edit_apply="activations", **options))
    assert twin.meta["apply"] == "activations"
    assert [e.site for e in twin.edits] == edit.sites  # one addition per edited part
    lowest = twin.edits[0]
    name = lowest.site.tl_hook
    tokens = tokenize_pairs(tokenizer, pairs(), chat=False)
    weights = tokens.target_mask / tokens.target_mask.sum(1, keepdim=True)

    def span_mean() -> torch.Tensor:
        _, cache = model.run_with_cache(tokens.input_ids, names_filter=name)
        return torch.einsum("rt,rtd->rd", weights.double(), cache[name].double()).mean(0)

    plain = span_mean()
    with steer(model, edit, 1.0):
        edited = span_mean()
    vector = lowest.operator.vector.double()
    assert vector.norm() > 1e-3
    torch.testing.assert_close(edited - plain, vector, rtol=1e-4, atol=1e-5)
    with steer(model, twin, 1.0):  # the twin moves the output too
        moved = model(tokens.input_ids[:2])
    assert not torch.allclose(moved, model(tokens.input_ids[:2]))
    with pytest.raises(ValueError, match="edit_apply"):
        config(edit_apply="both")


# --------------------------------------------------------------------------- apply / revert


def test_revert_restores_every_weight_bit_for_bit_also_after_an_error(tiny_model, edit, ids):
    model, _ = tiny_model
    before = snapshot(model)
    plain = logits(model, ids)
    with steer(model, edit, 1.0):
        assert not torch.equal(
            model.blocks[edit.layers[0].layer].mlp.W_out,
            before[f"blocks.{edit.layers[0].layer}.mlp.W_out"],
        ) or not torch.equal(
            model.blocks[edit.layers[0].layer].attn.W_O,
            before[f"blocks.{edit.layers[0].layer}.attn.W_O"],
        )
        logits(model, ids)
    assert_same_weights(model, before)
    with pytest.raises(RuntimeError, match="boom"), apply_weight_edit(model, edit, 2.5):
        logits(model, ids)
        raise RuntimeError("boom")
    assert_same_weights(model, before)
    with apply_weight_edit(model, edit, 1.0), apply_weight_edit(model, edit, -0.7):  # nested
        pass
    assert_same_weights(model, before)
    assert torch.equal(logits(model, ids), plain)


def test_alpha_zero_is_the_identity(tiny_model, edit, ids):
    model, _ = tiny_model
    before = snapshot(model)
    plain = logits(model, ids)
    with steer(model, edit, 0.0):
        assert_same_weights(model, before)
        assert torch.equal(logits(model, ids), plain)


def test_weight_edits_refuse_partial_positions(tiny_model, edit):
    with (
        pytest.raises(ValueError, match="every position"),
        steer(tiny_model[0], edit, 1.0, positions="generated"),
    ):
        pass


def test_transformer_lens_and_hugging_face_give_the_same_edited_logits(
    tiny_model, hf_model, edit, ids
):
    model, _ = tiny_model
    before = snapshot(hf_model)
    torch.testing.assert_close(logits(hf_model, ids), logits(model, ids), atol=1e-4, rtol=1e-4)
    for alpha in (1.0, -0.5):
        with steer(model, edit, alpha), steer(hf_model, edit, alpha):
            tl, hf = logits(model, ids), logits(hf_model, ids)
            layer = edit.layers[0].layer
            tl_w = model.blocks[layer].attn.W_O.detach().flatten(0, 1).T
            hf_w = hf_model.model.layers[layer].self_attn.o_proj.weight
            assert torch.equal(tl_w, hf_w)  # the same edited numbers, bit for bit
        torch.testing.assert_close(hf, tl, atol=1e-4, rtol=1e-4)
    assert_same_weights(hf_model, before)


# --------------------------------------------------------------------------- save, export


def test_save_load_round_trip_gives_the_same_edited_output(tiny_model, edit, ids, tmp_path):
    model, _ = tiny_model
    save_code(edit, tmp_path / "edit")
    loaded = load_code(tmp_path / "edit")
    assert isinstance(loaded, WeightEdit)
    assert loaded.checksum() == edit.checksum()
    assert loaded.architecture == edit.architecture and loaded.model_name == "tiny-test"
    record = json.loads((tmp_path / "edit" / "code.json").read_text())
    assert record["format"] == "saesteer-weight-edit/1" and record["checksum"] == edit.checksum()
    assert record["architecture"] == {
        "n_layers": 2,
        "d_model": 64,
        "n_heads": 4,
        "d_head": 16,
        "d_mlp": 256,
    }
    with steer(model, edit, 1.0):
        expected = logits(model, ids)
    with steer(model, loaded, 1.0):
        assert torch.equal(logits(model, ids), expected)


def test_a_tampered_edit_folder_is_refused(edit, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_code(edit, tmp_path / "edit")
    tensors = load_file(folder / "code.safetensors")
    name = next(k for k in tensors if k.endswith("lambdas"))
    tensors[name] = tensors[name] * 2
    save_file(tensors, folder / "code.safetensors")
    with pytest.raises(CodeFormatError, match="checksum"):
        load_code(folder)


@pytest.mark.parametrize(
    "spec",
    [TinyModelSpec(n_layers=3), TinyModelSpec(n_heads=8, d_head=8), TinyModelSpec(d_mlp=128)],
)
def test_an_edit_for_another_architecture_is_a_clear_error(edit, spec, ids):
    other, _ = build_tiny_model(spec=spec)
    before = snapshot(other)
    with pytest.raises(CodeMismatchError) as error, steer(other, edit, 1.0):
        pass
    message = str(error.value)
    assert "n_layers 2, d_model 64, n_heads 4, d_head 16, d_mlp 256" in message
    actual = f"n_layers {spec.n_layers}, d_model 64, n_heads {spec.n_heads}, d_head {spec.d_head}"
    assert actual in message
    assert_same_weights(other, before)


def test_export_loads_with_plain_transformers_and_generates_the_same_text(
    tiny_model, edit, tmp_path
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = tiny_model
    before = snapshot(model)
    out = export_edited_model(edit, tmp_path / "hf", 1.0, model=model, tokenizer=tokenizer)
    assert_same_weights(model, before)
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(out)
    prompts = ["I walked into the room and", "The weather today"]
    ids, mask = batch_prompt_ids(loaded_tokenizer, prompts)
    in_memory = generate_ids_steered(model, ids, mask, edit, 1.0, max_new_tokens=10)
    exported = generate_ids_steered(loaded, ids, mask, None, 0.0, max_new_tokens=10)
    assert torch.equal(in_memory, exported)
    plain = generate_ids_steered(model, ids, mask, None, 0.0, max_new_tokens=10)
    assert not torch.equal(plain, exported)  # the edit is in the exported weights
    # exporting again into our own folder replaces it
    export_edited_model(edit, out, 0.0, model=model, tokenizer=tokenizer)
    assert json.loads((out / "saesteer-edit.json").read_text())["alpha"] == 0.0


def test_export_refuses_a_folder_that_is_not_ours(tiny_model, edit, tmp_path):
    model, tokenizer = tiny_model
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="did not write"):
        export_edited_model(edit, foreign, 1.0, model=model, tokenizer=tokenizer)
    assert sorted(p.name for p in foreign.iterdir()) == ["config.json", "notes.txt"]
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert (foreign / "config.json").read_text() == "{}"


def test_train_steer_and_export_edit_commands(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from saesteer.cli import main

    edit_dir, hf_dir = tmp_path / "edit", tmp_path / "hf"
    extra = ["--max-pairs", "6", "--edit-rho-attn", "0.15", "--edit-rho-mlp", "0.3"]
    assert main([*train_steer_argv(edit_dir, "steer2edit"), *extra, "--edit-softness", "0.5"]) == 0
    edit = load_code(edit_dir)
    assert isinstance(edit, WeightEdit) and "val_accuracy" in edit.meta
    assert main(["export-edit", str(edit_dir), "--out", str(hf_dir), "--alpha", "0.5"]) == 0
    assert "steer2edit edit" in capsys.readouterr().out
    AutoModelForCausalLM.from_pretrained(hf_dir)
    assert main(["export-edit", str(tmp_path), "--out", str(hf_dir)]) == 2  # not an edit folder


def test_export_edit_help_names_its_options(capsys):
    from saesteer.cli import main

    with pytest.raises(SystemExit):
        main(["export-edit", "--help"])
    text = capsys.readouterr().out
    assert "--alpha" in text and "--out" in text and "from_pretrained" in text


def test_config_dataclass_round_trips_the_new_options():
    cfg = config()
    assert dataclasses.replace(cfg, edit_rho_attn=0.3).edit_rho_attn == 0.3
