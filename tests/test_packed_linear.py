"""oneDNN linears on packed weights (the CPU cache forward) against torch's own `F.linear`."""

from __future__ import annotations

import pytest
import torch

from activations_cache import packed_linear

pytestmark = pytest.mark.skipif(not packed_linear.available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("shape", [(1, 64), (7, 64), (2, 512, 64)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=bias)
    x = torch.randn(*shape)
    packed = packed_linear.PackedLinear(linear, rows=1024)
    with torch.inference_mode():
        want = linear(x)
        got = packed(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.equal(got, torch.zeros_like(got))


def test_with_packed_linears_shares_the_rest_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 8)
    )
    copy = packed_linear.with_packed_linears(model, rows=4)
    assert isinstance(copy[0], packed_linear.PackedLinear) and copy[1] is model[1]
    assert isinstance(model[0], torch.nn.Linear) and isinstance(model[2], torch.nn.Linear)
    x = torch.randn(4, 16)
    with torch.inference_mode():
        torch.testing.assert_close(copy(x), model(x), rtol=1e-5, atol=1e-5)
