"""Steered generation: KV cache, alpha = 0, no silent no-ops, padding, positions, HF == TL."""

from __future__ import annotations

import pytest
import torch
from helpers import make_sae, sparse_code

from saesteer.steer.codes import DenseVector, LatentCode
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered, generate_steered
from saesteer.steer.hooks import PositionTracker, steer

PROMPTS = ["The river ran past the old mill and", "Hello", "A short note about the weather:"]


@pytest.fixture(scope="module")
def codes():
    torch.manual_seed(3)
    return {
        "yapo": LatentCode(make_sae("relu"), sparse_code(s=24) * 4, method="yapo"),
        "dense": DenseVector(torch.randn(64) * 4, "blocks.0.hook_resid_pre", "tiny-test", "bipo"),
    }


def new_ids(model, tokenizer, prompts, code=None, alpha=0.0, positions="all", use_cache=True, n=8):
    ids, mask = batch_prompt_ids(tokenizer, prompts)
    return generate_ids_steered(
        model, ids, mask, code, alpha, positions, max_new_tokens=n, use_cache=use_cache
    )


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
@pytest.mark.parametrize("name", ["yapo", "dense"])
def test_kv_cache_equals_no_cache(tiny_model, codes, name, positions):
    model, tokenizer = tiny_model
    with_cache = new_ids(model, tokenizer, PROMPTS[:1], codes[name], 3.0, positions, use_cache=True)
    without = new_ids(model, tokenizer, PROMPTS[:1], codes[name], 3.0, positions, use_cache=False)
    assert torch.equal(with_cache, without)


def test_alpha_zero_identity_and_code_moves_logits(tiny_model, codes):
    model, tokenizer = tiny_model
    tokens = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(tokens)
        for code in codes.values():
            with steer(model, code, 0.0):
                assert torch.equal(model(tokens), plain)
            with steer(model, code, 3.0):
                moved = model(tokens)
            assert (moved - plain).abs().max() > 0.1, "the code did not change the logits"
            assert torch.equal(model(tokens), plain), "hooks were not removed"
    assert torch.equal(
        new_ids(model, tokenizer, PROMPTS, codes["yapo"], 0.0), new_ids(model, tokenizer, PROMPTS)
    )


def test_padded_batch_rows_equal_prompts_alone(tiny_model, codes):
    model, tokenizer = tiny_model
    batch = new_ids(model, tokenizer, PROMPTS, codes["yapo"], 3.0, "generated")
    for row, prompt in enumerate(PROMPTS):
        alone = new_ids(model, tokenizer, [prompt], codes["yapo"], 3.0, "generated")
        assert torch.equal(batch[row], alone[0]), prompt


def test_positions_pick_prompt_or_generated(tiny_model, codes):
    model, tokenizer = tiny_model
    plain = new_ids(model, tokenizer, PROMPTS[:1])
    runs = {
        p: new_ids(model, tokenizer, PROMPTS[:1], codes["dense"], 4.0, p)
        for p in ("all", "prompt", "generated")
    }
    assert all(not torch.equal(ids, plain) for ids in runs.values())
    # "generated" leaves the prompt's forward pass alone: its first new token is the plain one.
    assert runs["generated"][0, 0] == plain[0, 0] and runs["prompt"][0, 0] == runs["all"][0, 0]
    tracker = PositionTracker("generated")
    assert tracker.select(0, 5) == slice(5, 5)  # prompt pass: nothing
    assert tracker.select(5, 1) == slice(0, 1)  # KV step: the new token
    assert tracker.select(0, 4) == slice(4, 4)  # a new, shorter prompt starts a new sequence
    assert tracker.select(0, 5) == slice(4, 5)  # ... re-run without cache, one token longer


def test_chat_prompts_and_text(tiny_model, codes):
    model, tokenizer = tiny_model
    texts = generate_steered(
        model,
        tokenizer,
        ["Say hi", "Tell me a story"],
        codes["yapo"],
        2.0,
        chat=True,
        system="Be brief.",
        max_new_tokens=4,
    )
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_hf_steering_matches_transformer_lens(default_model, default_hf_model):
    """The HF hook on layers[l] is the same edit as TL's hook (resid_pre and resid_post), and HF
    generation under steering is the same with and without its KV cache."""
    model, tokenizer = default_model
    torch.manual_seed(0)
    ids, mask = batch_prompt_ids(tokenizer, ["The capital of France is", "Write a haiku"])
    full = int(mask.sum(1).argmax())  # the unpadded row: TL's forward takes no attention mask
    with torch.no_grad():
        plain = default_hf_model(ids, attention_mask=mask).logits
        for hook in ("blocks.10.hook_resid_post", "blocks.10.hook_resid_pre"):
            code = DenseVector(torch.randn(576) * 3, hook, "smollm2-135m-instruct", "bipo")
            with steer(model, code, 2.0):
                tl = model(ids[full : full + 1])
            with steer(default_hf_model, code, 2.0, model_name="smollm2-135m-instruct"):
                hf = default_hf_model(ids, attention_mask=mask).logits
            torch.testing.assert_close(hf[full : full + 1], tl, atol=2e-3, rtol=1e-3)
            assert (hf - plain).abs().max() > 0.5
    kv = generate_ids_steered(default_hf_model, ids, mask, code, 2.0, "generated", max_new_tokens=4)
    no_kv = generate_ids_steered(
        default_hf_model, ids, mask, code, 2.0, "generated", max_new_tokens=4, use_cache=False
    )
    assert torch.equal(kv, no_kv)
