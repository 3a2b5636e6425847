"""Bad input to steering, generation and pair reading: clear errors, never tracebacks or garbage."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import STEER_HOOK as HOOK
from helpers import make_sae, sparse_code
from safetensors.torch import load_file, save_file

from saesteer.audit.config import AuditConfig
from saesteer.cli import main
from saesteer.steer.codes import DenseVector, LatentCode
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered
from saesteer.steer.hooks import steer
from saesteer.steer.io import load_code, save_code
from saesteer.steer.pairs import (
    PairsFormatError,
    from_bipo_csv,
    from_hf_dataset,
    from_repeng,
    from_steering_vectors,
    from_yapo_records,
    read_pairs,
)

NON_FINITE = [math.nan, math.inf, -math.inf]
GOOD_PAIR = {"prompt": "p", "chosen": "a", "rejected": "b"}


def dense_code() -> DenseVector:
    return DenseVector(torch.randn(64), HOOK, "tiny-test", "bipo")


def generate_cli(capsys, *flags: str) -> tuple[int, str]:
    """(return code, stderr) of `saesteer generate --model tiny-test --prompt Hello FLAGS`."""
    code = main(["generate", "--model", "tiny-test", "--prompt", "Hello", *flags])
    return code, capsys.readouterr().err


def prompt_ids(tokenizer):
    return batch_prompt_ids(tokenizer, ["Hello there"])


# --------------------------------------------------------------------------- 1. alpha


@pytest.mark.parametrize("alpha", NON_FINITE)
def test_steer_refuses_non_finite_alpha(tiny_model, alpha):
    model, _ = tiny_model
    with (
        pytest.raises(ValueError, match="alpha must be a finite number"),
        steer(model, dense_code(), alpha),
    ):
        pass
    tokens = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.isfinite(model(tokens)).all(), "a refused steer left a hook behind"


@pytest.mark.parametrize("alpha", ["nan", "inf"])
def test_generate_cli_refuses_non_finite_alpha(tmp_path, capsys, alpha):
    save_code(dense_code(), tmp_path / "code")
    code, err = generate_cli(capsys, "--steer", str(tmp_path / "code"), "--alpha", alpha)
    assert code == 2
    assert "saesteer generate: error: --alpha must be a finite number" in err


# --------------------------------------------------------------------------- 2. non-finite codes


@pytest.mark.parametrize("bad", NON_FINITE)
def test_load_code_refuses_non_finite_tensors(tmp_path, bad):
    vector = torch.randn(64)
    vector[5] = bad
    save_code(DenseVector(vector, HOOK, "tiny-test", "bipo"), tmp_path / "dense")
    with pytest.raises(ValueError, match=r"code\.safetensors.*'vector'.*non-finite") as info:
        load_code(tmp_path / "dense")
    assert str(tmp_path / "dense") in str(info.value)
    values = sparse_code()
    values[values.nonzero()[0]] = bad
    save_code(LatentCode(make_sae("relu"), values, method="yapo"), tmp_path / "latent")
    with pytest.raises(ValueError, match=r"code\.safetensors.*'values'.*non-finite"):
        load_code(tmp_path / "latent")


# --------------------------------------------------------------------------- 3. temperature


@pytest.mark.parametrize("temperature", [-1.0, math.nan, math.inf])
def test_generate_refuses_bad_temperature(tiny_model, temperature):
    model, tokenizer = tiny_model
    ids, mask = prompt_ids(tokenizer)
    with pytest.raises(ValueError, match="temperature must be a finite number ≥ 0"):
        generate_ids_steered(model, ids, mask, max_new_tokens=2, temperature=temperature)


@pytest.mark.parametrize("temperature", ["-1", "nan"])
def test_generate_cli_refuses_bad_temperature(capsys, temperature):
    code, err = generate_cli(capsys, "--temperature", temperature)
    assert code == 2 and "error: --temperature must be a finite number ≥ 0" in err


# --------------------------------------------------------------------------- 4. support indices


@pytest.mark.parametrize("arch", ["relu", "topk"])
@pytest.mark.parametrize("index", [-1, 256, 1000])
def test_latent_support_outside_the_sae_is_refused(arch, index):
    sae = make_sae(arch)
    values = torch.zeros(256)
    values[3] = 1.0
    with pytest.raises(ValueError, match=r"support.*outside 0\.\.255"):
        LatentCode(sae, values, method="features", support=torch.tensor([3, index]))


@pytest.mark.parametrize("index", [-1, 256])
def test_load_code_refuses_support_outside_the_sae(tmp_path, index):
    save_code(LatentCode(make_sae("relu"), sparse_code(), method="yapo"), tmp_path / "c")
    weights = tmp_path / "c" / "code.safetensors"
    tensors = load_file(weights)
    tensors["support"][0] = index
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=r"code\.safetensors.*outside 0\.\.255"):
        load_code(tmp_path / "c")


def test_load_code_refuses_support_and_values_of_different_lengths(tmp_path):
    save_code(LatentCode(make_sae("relu"), sparse_code(), method="yapo"), tmp_path / "c")
    weights = tmp_path / "c" / "code.safetensors"
    tensors = load_file(weights)
    tensors["values"] = tensors["values"][:-1].contiguous()
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=r"code\.safetensors.*12 support indices but 11 values"):
        load_code(tmp_path / "c")


# --------------------------------------------------------------------------- 5. max_new_tokens


@pytest.mark.parametrize("n", [0, -3])
def test_generate_refuses_no_new_tokens(tiny_model, n):
    model, tokenizer = tiny_model
    ids, mask = prompt_ids(tokenizer)
    with pytest.raises(ValueError, match="max_new_tokens must be ≥ 1"):
        generate_ids_steered(model, ids, mask, max_new_tokens=n)


def test_generate_refuses_more_tokens_than_the_context(tiny_model):
    model, tokenizer = tiny_model
    ids, mask = prompt_ids(tokenizer)
    n_prompt = ids.shape[1]
    with pytest.raises(ValueError, match=rf"{n_prompt} \+ 100000 .*context of 256 tokens"):
        generate_ids_steered(model, ids, mask, max_new_tokens=100_000)
    fits = generate_ids_steered(model, ids, mask, max_new_tokens=256 - n_prompt)
    assert fits.shape == (1, 256 - n_prompt)


def test_hf_generate_refuses_more_tokens_than_the_context():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(1, 100, (1, 6))
    mask = torch.ones_like(ids)
    with pytest.raises(ValueError, match=r"6 \+ 11 .*context of 16 tokens"):
        generate_ids_steered(model, ids, mask, max_new_tokens=11)
    assert generate_ids_steered(model, ids, mask, max_new_tokens=10).shape == (1, 10)


def test_generate_cli_refuses_bad_max_new_tokens(capsys):
    code, err = generate_cli(capsys, "--max-new-tokens", "0")
    assert code == 2 and "error: --max-new-tokens must be ≥ 1, got 0" in err
    code, err = generate_cli(capsys, "--max-new-tokens", "100000")
    assert code == 2 and "context of 256 tokens" in err and "100000" in err


# --------------------------------------------------------------------------- 6. device


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_generate_cli_cuda_without_cuda_names_the_fix(capsys):
    code, err = generate_cli(capsys, "--device", "cuda")
    assert code == 2
    assert "--device cuda" in err and "CUDA" in err and "--device cpu" in err


def test_generate_cli_refuses_an_unknown_device(capsys):
    code, err = generate_cli(capsys, "--device", "gpu")
    assert code == 2 and "--device 'gpu' is not a torch device" in err


# --------------------------------------------------------------------------- 7. audit alphas


@pytest.mark.parametrize("alpha", NON_FINITE)
def test_audit_config_refuses_non_finite_alphas(alpha):
    with pytest.raises(ValueError, match="--alphas must be finite numbers"):
        AuditConfig(steer="s", out="o", alphas=[1.0, alpha])
    with pytest.raises(ValueError, match="--temperature must be a finite number ≥ 0"):
        AuditConfig(steer="s", out="o", temperature=alpha)


def test_audit_cli_refuses_nan_alpha(tmp_path, capsys):
    code = main(["audit", "--steer", str(tmp_path), "--out", str(tmp_path), "--alphas", "nan"])
    assert code == 2 and "saesteer audit: error: --alphas must be finite numbers" in (
        capsys.readouterr().err
    )


# --------------------------------------------------------------------------- 8. pair files


@pytest.mark.parametrize("field", ["prompt", "chosen", "system", "history", "metadata"])
def test_lone_surrogate_in_pairs_names_file_and_line(tmp_path, field):
    bad = {
        "history": [{"role": "user", "content": "x\ud800"}],
        "metadata": {"note": "\udfff"},
    }.get(field, "text \ud800")
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD_PAIR) + "\n" + json.dumps({**GOOD_PAIR, field: bad}) + "\n")
    with pytest.raises(PairsFormatError, match="lone surrogate") as info:
        read_pairs(path)
    assert f"{path}:2" in str(info.value) and repr(field) in str(info.value)


def test_latin1_pairs_file_must_be_utf8(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(GOOD_PAIR), json.dumps({**GOOD_PAIR, "prompt": "café"}, ensure_ascii=False)]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(PairsFormatError, match="must be UTF-8") as info:
        read_pairs(path)
    assert f"{path}:2" in str(info.value)
    csv_path = tmp_path / "bipo.csv"
    csv_path.write_bytes("question,matching,not_matching\ncafé?,oui,non\n".encode("latin-1"))
    with pytest.raises(PairsFormatError, match="must be UTF-8") as info:
        from_bipo_csv(csv_path)
    assert str(csv_path) in str(info.value)


def test_utf8_bom_and_crlf_pairs_file_still_reads(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD_PAIR) + "\r\n").encode() * 2)
    assert len(read_pairs(path)) == 2


@pytest.mark.parametrize(
    ("convert", "records", "message"),
    [
        (from_yapo_records, ["not a dict"], "<records>:1: expected a mapping"),
        (
            from_yapo_records,
            [{**GOOD_PAIR, "prompt": [{"role": "user"}]}],
            "<records>:1: 'prompt' message 1 needs",
        ),
        (
            from_yapo_records,
            [{**GOOD_PAIR, "prompt": [{"role": "system", "content": "S"}]}],
            "<records>:1: 'prompt' has no user or assistant message",
        ),
        (from_hf_dataset, [5], "<dataset>:1: expected a mapping"),
        (from_steering_vectors, ["ab"], "<tuples>:1: expected a .positive, negative. tuple"),
        (from_steering_vectors, [("I feel good", 3)], "<tuples>:1: negative must be a string"),
        (from_repeng, [object()], "<repeng>:1: positive must be a string"),
        (from_repeng, [{"positive": "a b"}], "<repeng>:1: negative must be a string"),
    ],
)
def test_converters_refuse_malformed_records(convert, records, message):
    with pytest.raises(PairsFormatError, match=message):
        convert(records)


def test_from_steering_vectors_decodes_utf8_bytes():
    pairs = from_steering_vectors([(b"I feel great", bytearray(b"I feel bad"))])
    assert pairs[0].prompt == "I feel" and pairs[0].chosen == " great"
    with pytest.raises(PairsFormatError, match="<tuples>:1: positive is not UTF-8"):
        from_steering_vectors([(b"I feel \xff", b"I feel bad")])


# --------------------------------------------------------------------------- 9. damaged folders


@pytest.mark.parametrize("content", ["truncated", b"not a safetensors file", b""])
def test_damaged_weights_file_is_named(tmp_path, content):
    folder = save_code(dense_code(), tmp_path / "c")
    weights = folder / "code.safetensors"
    weights.write_bytes(weights.read_bytes()[:40] if content == "truncated" else content)
    with pytest.raises(ValueError, match="is not a readable safetensors file") as info:
        load_code(folder)
    assert str(weights) in str(info.value)


def test_missing_weights_or_tensor_is_named(tmp_path):
    folder = save_code(dense_code(), tmp_path / "c")
    weights = folder / "code.safetensors"
    save_file({"other": torch.zeros(3)}, weights)
    with pytest.raises(ValueError, match=r"code\.safetensors has no tensor\(s\) \['vector'\]"):
        load_code(folder)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"code\.safetensors"):
        load_code(folder)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": "saesteer-steering-code/1"}'])
def test_bad_code_json_is_named(tmp_path, text):
    folder = save_code(dense_code(), tmp_path / "c")
    (folder / "code.json").write_text(text)
    with pytest.raises(ValueError, match=r"code\.json") as info:
        load_code(folder)
    assert str(folder / "code.json") in str(info.value)


def test_generate_cli_names_a_truncated_code_file(tmp_path, capsys):
    folder = save_code(dense_code(), tmp_path / "c")
    weights = folder / "code.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    code, err = generate_cli(capsys, "--steer", str(folder), "--max-new-tokens", "2")
    assert code == 2 and f"error: {weights} is not a readable safetensors file" in err
