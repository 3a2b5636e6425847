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
    plain = HFResidualSource(default_hf_model, HOOKS, packed_linears=False)
    path = write_cache(tmp_path / "hf.h5", plain, tokens, HOOKS, batch_size=2, progress=False)
    packed = write_cache(
        tmp_path / "packed.h5", default_hf_model, tokens, HOOKS, batch_size=2, progress=False
    )
    with torch.inference_mode():
        hidden = default_hf_model(
            torch.as_tensor(tokens, dtype=torch.long), output_hidden_states=True
        ).hidden_states
        _, cache = default_model[0].run_with_cache(
            torch.as_tensor(tokens, dtype=torch.long), names_filter=HOOKS, stop_at_layer=4
        )
    with open_cache(path) as reader, open_cache(packed) as fast:
        assert reader.attrs["backend"] == "hf_residual"
        assert fast.attrs["source"]["packed_linears"]  # the default on a float32 CPU model
        for hook, layer in zip(HOOKS, [0, 3, 4], strict=True):
            got = reader.read(hook, range(reader.n_tokens))
            # oneDNN on packed weights sums in another order: equal up to fp32 rounding.
            torch.testing.assert_close(
                fast.read(hook, range(fast.n_tokens)), got, rtol=1e-5, atol=1e-4
            )
            # Same HF modules, same batch: bitwise (hidden_states[l] is the input of layer l).
            assert torch.equal(got, hidden[layer].reshape(-1, 576)), hook
            # TransformerLens computes the same function with other kernels: equal up to fp32 rounding.
            torch.testing.assert_close(got, cache[hook].reshape(-1, 576), rtol=1e-4, atol=2e-4)


def test_hf_fast_path_lists_its_hooks(default_hf_model):
    with pytest.raises(
        UnknownHookError, match=r"blocks\.\{0\.\.29\}\.hook_resid_pre.*TransformerLens backend"
    ):
        HFResidualSource(default_hf_model, ["blocks.3.hook_mlp_out"])


def test_compiled_hf_forward_equals_eager_within_float_error(default_hf_model, tmp_path):
    """torch.compile (inductor, frozen weights) computes the same residual stream; the last, short
    batch is padded to the compiled shape, and the width probe's other shapes stay eager."""
    tokens = np.random.default_rng(0).integers(0, 49152, size=(5, 16), dtype=np.int32)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
    caches = {
        compiled: write_cache(
            tmp_path / f"compiled-{compiled}.h5",
            default_hf_model,
            tokens,
            hooks,
            batch_size=2,
            progress=False,
            compile=compiled,
        )
        for compiled in (False, True)
    }
    with open_cache(caches[False]) as eager, open_cache(caches[True]) as compiled:
        assert compiled.attrs["source"]["compiled"] and not eager.attrs["source"]["compiled"]
        assert compiled.attrs["model_weights_sha256"] == eager.attrs["model_weights_sha256"]
        for hook in hooks:
            torch.testing.assert_close(
                compiled.read(hook, range(compiled.n_tokens)),
                eager.read(hook, range(eager.n_tokens)),
                rtol=1e-5,
                atol=1e-4,
            )


def test_weights_checksum_covers_only_the_layers_that_run(default_hf_model):
    """Layers above the last hook do not shape the cache, so they are not hashed; layers below are."""
    low, high = default_hf_model.model.layers[1], default_hf_model.model.layers[5]
    source = HFResidualSource(default_hf_model, ["blocks.2.hook_resid_post"])
    before = source.weights_sha256()
    with torch.no_grad():
        high.mlp.down_proj.weight.mul_(2)
        assert source.weights_sha256() == before
        low.mlp.down_proj.weight.mul_(2)
        changed = source.weights_sha256()
        low.mlp.down_proj.weight.div_(2)
        high.mlp.down_proj.weight.div_(2)
    assert changed != before
    assert source.weights_sha256() == before


def test_auto_compile_falls_back_to_eager_when_compiling_fails(
    default_hf_model, tmp_path, monkeypatch
):
    """A machine without a working C++ compiler: compile=True fails loudly, "auto" warns and goes on."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (str(tmp_path / "no-such-c++"),))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    tokens = torch.as_tensor(np.random.default_rng(1).integers(0, 49152, size=(2, 8)))
    hook = ["blocks.0.hook_resid_post"]
    eager = HFResidualSource(default_hf_model, hook)(tokens)[hook[0]]

    strict = HFResidualSource(default_hf_model, hook)
    strict.compile_for(2, 8)
    with pytest.raises(Exception, match="no-such-c"):
        strict(tokens)
    lenient = HFResidualSource(default_hf_model, hook)
    lenient.compile_for(2, 8, fallback=True)
    with pytest.warns(UserWarning, match="torch.compile of the forward failed"):
        got = lenient(tokens)[hook[0]]
    assert lenient.compiled is None and torch.equal(got, eager)
    torch._dynamo.reset()
