"""The intervention interface: operator invariants against direct computation, sites on both model
kinds, gates, saving, KV-cache safety, and the old codes through the new path."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_hf_steers_like_tl

from saesteer.steer.codes import DenseVector
from saesteer.steer.gates import ProjectionGate
from saesteer.steer.generate import generate_ids_steered
from saesteer.steer.hooks import record, steer
from saesteer.steer.intervention import Edit, Intervention, as_intervention
from saesteer.steer.io import CodeFormatError, CodeMismatchError, load_code, save_code
from saesteer.steer.operators import (
    Add,
    AddRescale,
    Feedback,
    Reflect,
    Rotation2D,
    SetProjection,
    orthonormal_plane,
)
from saesteer.steer.sites import STREAMS, Site

D = 64


def _h(seed: int = 0, shape=(3, 5, D)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 4


def _plane(seed: int = 1, d: int = D) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return orthonormal_plane(torch.randn(d, generator=g), torch.randn(d, generator=g))


def test_rotation_preserves_norm_is_identity_at_zero_and_equals_dense_formula():
    h, op = _h(), Rotation2D(_plane(), degrees=30.0)
    for alpha in (0.5, 1.0, 3.0, -2.0):
        out = op.apply(h, alpha)
        torch.testing.assert_close(out.norm(dim=-1), h.norm(dim=-1), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(out, h @ op.dense_matrix(alpha).T, atol=1e-4, rtol=1e-5)
        assert (out - h).abs().max() > 0.1  # it moved
    assert torch.equal(op.apply(h, 0.0), h)
    # the plane component turns by exactly α·θ₀; the orthogonal rest is untouched
    c, c2 = h @ op.plane, op.apply(h, 2.0) @ op.plane
    angle = torch.atan2(c2[..., 1], c2[..., 0]) - torch.atan2(c[..., 1], c[..., 0])
    wrapped = torch.remainder(angle + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(
        wrapped, torch.full_like(wrapped, math.radians(60)), atol=1e-4, rtol=0
    )
    rest = h - c @ op.plane.T
    torch.testing.assert_close(op.apply(h, 2.0) - c2 @ op.plane.T, rest, atol=1e-4, rtol=0)


def test_degenerate_rotation_plane_is_refused():
    b1 = torch.randn(D)
    with pytest.raises(ValueError, match=r"degenerate.*parallel"):
        orthonormal_plane(b1, -3 * b1)
    with pytest.raises(ValueError, match="not orthonormal"):
        Rotation2D(torch.randn(D, 2))
    with pytest.raises(ValueError, match="zero or not finite"):
        orthonormal_plane(torch.zeros(D), b1)


def test_set_projection_lands_on_target_and_reflection_twice_is_identity():
    h, u = _h(), torch.randn(D)
    unit = u / u.norm()
    op = SetProjection(u, target=2.5, reverse_target=-1.5)
    torch.testing.assert_close(op.apply(h, 1.0) @ unit, torch.full(h.shape[:-1], 2.5))
    torch.testing.assert_close(op.apply(h, -1.0) @ unit, torch.full(h.shape[:-1], -1.5))
    moved = op.apply(h, 1.0) - h  # only along û
    torch.testing.assert_close(moved - (moved @ unit)[..., None] * unit, torch.zeros_like(h))
    assert torch.equal(op.apply(h, 0.0), h)
    mirror = Reflect(u, boundary=0.7)
    torch.testing.assert_close(mirror.apply(h, 1.0) @ unit, 2 * 0.7 - h @ unit, atol=1e-4, rtol=0)
    torch.testing.assert_close(mirror.apply(mirror.apply(h, 1.0), 1.0), h, atol=1e-4, rtol=0)
    half = mirror.apply(h, 0.5) @ unit  # α = ½ lands on the boundary
    torch.testing.assert_close(half, torch.full_like(half, 0.7), atol=1e-4, rtol=0)


def test_add_rescale_keeps_each_tokens_norm():
    h, v = _h(), torch.randn(D) * 10
    out = AddRescale(v).apply(h, 1.0)
    torch.testing.assert_close(out.norm(dim=-1), h.norm(dim=-1))
    expected = (h + v) / (h + v).norm(dim=-1, keepdim=True) * h.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(out, expected)
    assert torch.equal(AddRescale(v).apply(h, 0.0), h)


def test_gate_closed_changes_nothing_and_open_applies_the_operator():
    h, u = _h(), torch.randn(D)
    s = h @ (u / u.norm())
    op = Add(torch.randn(D))
    site = Site(0, "resid_post")
    never = Edit(site, op, ProjectionGate(u, threshold=float(s.min()) - 1, side="below"))
    assert torch.equal(never.apply(h, 3.0), h)
    always = Edit(site, op, ProjectionGate(u, threshold=float(s.min()) - 1, side="above"))
    torch.testing.assert_close(always.apply(h, 3.0), op.apply(h, 3.0))
    half = Edit(site, op, ProjectionGate(u, threshold=float(s.median()), side="below"))
    out, gate = half.apply(h, 3.0), s < s.median()
    torch.testing.assert_close(out[gate], op.apply(h, 3.0)[gate])
    assert torch.equal(out[~gate], h[~gate])


def test_sites_parse_and_refuse_bad_names():
    assert Site.parse("blocks.15.hook_resid_post") == Site(15, "resid_post")
    assert Site.parse("blocks.3.attn_in").tl_hook is None
    assert Site(2, "mlp_out").tl_hook == "blocks.2.hook_mlp_out"
    for bad in ("blocks.x.resid_post", "blocks.1.hook_q", "resid_post", 5):
        with pytest.raises(ValueError, match="not a site"):
            Site.parse(bad)
    with pytest.raises(ValueError, match="stream"):
        Site(0, "attention")


def _every_kind(d: int = D) -> Intervention:
    g = torch.Generator().manual_seed(3)
    u = torch.randn(d, generator=g)
    edits = [
        Edit(Site(0, "attn_in"), Rotation2D(_plane(4, d), degrees=20.0)),
        Edit(Site(0, "mlp_in"), Rotation2D(_plane(5, d), 20.0), ProjectionGate(u, 0.0, "above")),
        Edit(Site(0, "attn_out"), SetProjection(u, 0.5, -0.5)),
        Edit(Site(1, "mlp_out"), Reflect(u, 0.1), ProjectionGate(u, 0.2, "below")),
        Edit(Site(1, "resid_pre"), AddRescale(torch.randn(d, generator=g) * 3)),
        Edit(Site(1, "resid_post"), Add(torch.randn(d, generator=g))),
    ]
    return Intervention(edits, "test", "tiny-test", {"note": "every kind"})


def test_intervention_moves_output_saves_and_reloads_identically(tiny_model, tmp_path):
    model, _ = tiny_model
    ids = torch.tensor([[1, 5, 9, 200, 17, 33]])
    intervention = _every_kind(model.cfg.d_model)
    plain = model(ids)
    with steer(model, intervention, 0.0):
        assert torch.equal(model(ids), plain)
    with steer(model, intervention, 1.0):
        steered = model(ids)
    assert (steered - plain).abs().max() > 1e-2
    save_code(intervention, tmp_path / "iv")
    loaded = load_code(tmp_path / "iv")
    assert isinstance(loaded, Intervention) and loaded.meta["note"] == "every kind"
    assert [e.site for e in loaded.edits] == [e.site for e in intervention.edits]
    with steer(model, loaded, 1.0):
        torch.testing.assert_close(model(ids), steered, atol=0, rtol=0)


def test_masked_off_layers_are_untouched(tiny_model):
    """An edit at layer 1 leaves layer 0's activations bit-equal (off-mask: identity)."""
    model, _ = tiny_model
    ids = torch.tensor([[1, 5, 9, 200, 17, 33]])
    edit = Edit(Site(1, "attn_in"), Rotation2D(_plane(6, model.cfg.d_model), 90.0))
    watched = [Site(0, s) for s in STREAMS] + [Site(1, "resid_pre")]
    with record(model, watched) as before:
        model(ids)
    with steer(model, Intervention([edit], "t", "tiny-test"), 1.0), record(model, watched) as after:
        model(ids)
    for site in watched:
        assert torch.equal(before[site][0], after[site][0]), site


def test_greedy_text_equal_with_and_without_kv_cache(tiny_model):
    model, _ = tiny_model
    ids = torch.tensor([[1, 5, 9, 200, 17, 33], [0, 0, 4, 8, 15, 16]])
    mask = (ids != 0).long()
    intervention = _every_kind(model.cfg.d_model)
    plain = generate_ids_steered(model, ids, mask, max_new_tokens=6)
    for positions in ("all", "generated"):
        kv = generate_ids_steered(model, ids, mask, intervention, 1.0, positions, max_new_tokens=6)
        no_kv = generate_ids_steered(
            model, ids, mask, intervention, 1.0, positions, max_new_tokens=6, use_cache=False
        )
        assert torch.equal(kv, no_kv), positions
        assert not torch.equal(kv, plain), positions


def test_old_codes_run_through_the_intervention_path(tiny_model):
    model, _ = tiny_model
    code = DenseVector(torch.randn(model.cfg.d_model), "blocks.0.hook_resid_post", "tiny-test", "x")
    iv = as_intervention(code)
    assert iv.hook_name == "blocks.0.resid_post" and iv.method == "x"
    h = _h(shape=(2, 3, model.cfg.d_model))
    torch.testing.assert_close(iv.edits[0].apply(h, 2.0), code.apply(h, 2.0))


def test_intervention_for_another_model_or_damaged_folder_is_refused(tiny_model, tmp_path):
    model, _ = tiny_model
    far = Edit(Site(7, "resid_post"), Add(torch.randn(model.cfg.d_model)))
    far_away = Intervention([far], "t", "tiny-test")
    with pytest.raises(CodeMismatchError, match="only 2 layers"), steer(model, far_away, 1.0):
        pass
    with pytest.raises(ValueError, match="no edits"):
        Intervention([], "selective", "tiny-test")
    folder = save_code(_every_kind(model.cfg.d_model), tmp_path / "iv")
    text = (folder / "code.json").read_text().replace('"rotate-2d"', '"spin"', 1)
    (folder / "code.json").write_text(text)
    with pytest.raises(CodeFormatError, match="Unknown operator 'spin'"):
        load_code(folder)


def test_every_stream_is_the_same_edit_on_transformer_lens_and_hugging_face(
    default_model, default_hf_model
):
    """One edit at each of the six streams: HF logits equal TL logits (the site maps agree)."""
    model, tokenizer = default_model
    d = model.cfg.d_model
    ids = tokenizer("The ocean was calm that morning, and", return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(0)
    for stream in STREAMS:
        v = torch.randn(d, generator=g)
        op = (
            Add(v / v.norm() * 4)
            if stream not in ("attn_in", "mlp_in")
            else Rotation2D(_plane(7, d), 60.0)
        )
        intervention = Intervention([Edit(Site(10, stream), op)], "t", model.cfg.model_name)
        assert_hf_steers_like_tl(model, default_hf_model, intervention, 1.0, ids, stream)


def test_a_feedback_edit_reads_the_same_block_input_on_transformer_lens_and_hugging_face(
    default_model, default_hf_model
):
    """A-LQR's feedback at two consecutive blocks (the second reads the first's edited output):
    HF (its layer pre-hook hands over the input) equals TL (hook_resid_pre)."""
    model, tokenizer = default_model
    d = model.cfg.d_model
    ids = tokenizer("The ocean was calm that morning, and", return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(1)
    edits = [
        Edit(
            Site(layer, "resid_post"),
            Feedback(torch.randn(d, generator=g), 0.3 * torch.randn(d, generator=g), 5.0),
        )
        for layer in (10, 11)
    ]
    intervention = Intervention(edits, "lqr", model.cfg.model_name)
    assert_hf_steers_like_tl(model, default_hf_model, intervention, 1.0, ids)
