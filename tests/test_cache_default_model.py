"""The default model (SmolLM2-135M): TransformerLens path bitwise, HF fast path vs HF and vs TransformerLens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activations_cache import HFResidualSource, UnknownHookError, open_cache, write_cache

pytestmark = pytest.mark.slow
HOOKS = ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_post", "blocks.3.hook_resid_post"]


@pytest.fixture(scope="module")
def tokens(default_model) -> np.ndarray:
    tokenizer = default_model[1]
    text = (
        "The Brown Corpus was compiled at Brown University in 1961 from texts of many kinds. " * 3
    )
    ids = tokenizer(text)["input_ids"][:24]
    return np.array([ids[:12], ids[12:24]], dtype=np.int32)


def test_transformer_lens_path_equals_run_with_cache_bitwise(default_model, tokens, tmp_path):
    model = default_model[0]
    hooks = [*HOOKS, "blocks.1.hook_mlp_out"]
    path = write_cache(tmp_path / "tl.h5", model, tokens, hooks, batch_size=2, progress=False)
    _, cache = model.run_with_cache(
        torch.as_tensor(tokens, dtype=torch.long), names_filter=hooks, stop_at_layer=4
    )
    with open_cache(path, verify=True) as reader:
        assert reader.attrs["source"]["stop_at_layer"] == 4
        for hook in hooks:
            assert torch.equal(
                reader.read(hook, range(reader.n_tokens)), cache[hook].reshape(-1, 576)
            ), hook


def test_hf_fast_path_equals_hf_hidden_states_and_tl_within_float_error(
    default_model, default_hf_model, tokens, tmp_path
):
    path = write_cache(
        tmp_path / "hf.h5", default_hf_model, tokens, HOOKS, batch_size=2, progress=False
    )
    with torch.inference_mode():
        hidden = default_hf_model(
            torch.as_tensor(tokens, dtype=torch.long), output_hidden_states=True
        ).hidden_states
        _, cache = default_model[0].run_with_cache(
            torch.as_tensor(tokens, dtype=torch.long), names_filter=HOOKS, stop_at_layer=4
        )
    with open_cache(path) as reader:
        assert reader.attrs["backend"] == "hf_residual"
        for hook, layer in zip(HOOKS, [0, 3, 4], strict=True):
            got = reader.read(hook, range(reader.n_tokens))
            # Same HF modules, same batch: bitwise (hidden_states[l] is the input of layer l).
            assert torch.equal(got, hidden[layer].reshape(-1, 576)), hook
            # TransformerLens computes the same function with other kernels: equal up to fp32 rounding.
            torch.testing.assert_close(got, cache[hook].reshape(-1, 576), rtol=1e-4, atol=2e-4)


def test_hf_fast_path_lists_its_hooks(default_hf_model):
    with pytest.raises(
        UnknownHookError, match=r"blocks\.\{0\.\.29\}\.hook_resid_pre.*TransformerLens backend"
    ):
        HFResidualSource(default_hf_model, ["blocks.3.hook_mlp_out"])
