"""Auditing interventions: the cached-below runs equal the whole model under `steer()`, on the tiny
model, for a hand-made multi-site intervention (an add below, a rotation at a norm output, a gated
set-projection at an MLP output, a reflection at the residual leaving the last edited block)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import direct_log_odds
from test_audit import HOOK, NEUTRAL, SMALL, random_sae

from saesteer.audit import AuditConfig, describe_intervention, measure, run_audit
from saesteer.audit.loading import intervention_sae, load_inputs
from saesteer.audit.report import fmt
from saesteer.audit.run import later_layer
from saesteer.cli import main
from saesteer.generation import prompt_token_ids
from saesteer.sae import save_sae
from saesteer.steer.behaviours import behaviour_pairs
from saesteer.steer.codes import feature_code
from saesteer.steer.gates import ProjectionGate
from saesteer.steer.generate import generate_steered
from saesteer.steer.hooks import record, steer
from saesteer.steer.intervention import Edit, Intervention
from saesteer.steer.io import CodeMismatchError, save_code
from saesteer.steer.operators import (
    Add,
    LatentEdit,
    Reflect,
    Rotation2D,
    SetProjection,
    orthonormal_plane,
)
from saesteer.steer.sites import Site

D, ALPHA = 64, 3.0
STEERED = "blocks.1.hook_resid_post"  # the residual leaving the last edited block


def _vectors(seed: int, n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(D, generator=g) for _ in range(n)]


def _median_projection(model, tokenizer, direction: torch.Tensor, hook: str) -> float:
    """The median of û·h at `hook` over the neutral prompts: a gate threshold open on about half."""
    unit = direction / direction.norm()
    values = []
    for text in NEUTRAL:
        with torch.no_grad():
            _, cache = model.run_with_cache(prompt_token_ids(tokenizer, text), names_filter=[hook])
        values.append(cache[hook][0] @ unit)
    return torch.cat(values).median().item()


def multi_site(model, tokenizer) -> Intervention:
    """Add at blocks.0.resid_post, Rotation2D at blocks.1.attn_in, gated SetProjection at
    blocks.1.mlp_out, Reflect at blocks.1.resid_post."""
    v, b1, b2, u, w = _vectors(5, 5)
    tau = _median_projection(model, tokenizer, u, "blocks.1.hook_mlp_out")
    edits = [
        Edit(Site(0, "resid_post"), Add(2 * v / v.norm())),
        Edit(Site(1, "attn_in"), Rotation2D(orthonormal_plane(b1, b2), degrees=25.0)),
        Edit(Site(1, "mlp_out"), SetProjection(u, target=3.0), ProjectionGate(u, tau, "below")),
        Edit(Site(1, "resid_post"), Reflect(w, boundary=0.5)),
    ]
    return Intervention(edits, "handmade", "tiny-test", {"layer_mask": [0, 1]})


def low_sites(*_) -> Intervention:
    """Edits in block 0 only (s = 0, the embedding cached; H = blocks.0.hook_resid_post), gated."""
    v, b1, b2, u = _vectors(7, 4)
    edits = [
        Edit(Site(0, "resid_pre"), Add(v)),
        Edit(Site(0, "mlp_in"), Rotation2D(orthonormal_plane(b1, b2), degrees=40.0)),
        Edit(Site(0, "attn_out"), Reflect(u, boundary=0.0), ProjectionGate(u, 0.0, "above")),
    ]
    return Intervention(edits, "low", "tiny-test")


def pre_last(*_) -> Intervention:
    """The last edited block's only edit is at resid_pre (H = blocks.1.hook_resid_pre), above s = 0."""
    v, b1, b2 = _vectors(9, 3)
    edits = [
        Edit(Site(0, "attn_in"), Rotation2D(orthonormal_plane(b1, b2), degrees=30.0)),
        Edit(Site(1, "resid_pre"), Add(v)),
    ]
    return Intervention(edits, "pre-last", "tiny-test")


def with_latent_edit(*_) -> Intervention:
    """A feature code's latent edit at blocks.0.resid_post (made in random_sae(HOOK, 0)) and an add
    at blocks.1.attn_out."""
    code = feature_code(random_sae(HOOK, 0), {3: 4.0, 17: -2.0, 40: 6.0})
    (v,) = _vectors(11, 1)
    edits = [Edit(Site(0, "resid_post"), LatentEdit(code)), Edit(Site(1, "attn_out"), Add(v))]
    return Intervention(edits, "latent-mix", "tiny-test")


BUILDS = {  # builder, s, H
    "multi_site": (multi_site, 1, STEERED),
    "low_sites": (low_sites, 0, "blocks.0.hook_resid_post"),
    "pre_last": (pre_last, 0, "blocks.1.hook_resid_pre"),
    "with_latent_edit": (with_latent_edit, 1, STEERED),
}


def whole_model(model, ids, intervention, alpha, hooks=()):
    """(logits [T, vocab], {hook: [T, d]}) of the whole model under steer(model, intervention, α)."""
    with torch.no_grad(), steer(model, intervention, alpha):
        logits, cache = model.run_with_cache(ids, names_filter=list(hooks))
    return logits[0], {h: cache[h][0] for h in hooks}


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_cached_below_runs_equal_the_whole_model_under_steer(tiny_model, build):
    model, tokenizer = tiny_model
    builder, start, hook = BUILDS[build]
    intervention = builder(model, tokenizer)
    plan = measure.make_plan(intervention, model)
    assert (plan.start, plan.hook) == (start, hook)
    n_layers = model.cfg.n_layers
    for text in NEUTRAL:
        ids = prompt_token_ids(tokenizer, text)
        h = measure.residuals(model, [ids[0]], plan.start).resid[0]
        plain, _ = whole_model(model, ids, intervention, 0.0)
        torch.testing.assert_close(measure.forward(model, plan, h, 0.0), plain)
        later = [f"blocks.{layer}.hook_resid_post" for layer in range(plan.hook_stop, n_layers)]
        logits, cache = whole_model(model, ids, intervention, ALPHA, [hook, *later])
        torch.testing.assert_close(measure.forward(model, plan, h, ALPHA), logits)
        torch.testing.assert_close(measure.at_hook(model, plan, h, ALPHA), cache[hook])
        for name in later:  # the later layer's residual, as `_Auditor._later` runs it
            stop = int(name.split(".")[1]) + 1
            torch.testing.assert_close(measure.forward(model, plan, h, ALPHA, stop), cache[name])
        assert (logits - plain).abs().max() > 0.05  # it moved the output: no silent no-op


def test_every_hooked_edit_fires_and_the_gate_splits_tokens(tiny_model):
    model, tokenizer = tiny_model
    intervention = multi_site(model, tokenizer)
    plan = measure.make_plan(intervention, model)
    assert [e.site.name for e in plan.bottom] == ["blocks.0.resid_post"]
    ids = prompt_token_ids(tokenizer, NEUTRAL[0])
    h = measure.residuals(model, [ids[0]], plan.start).resid[0]
    full = measure.forward(model, plan, h, ALPHA)
    for dropped in range(1, len(intervention.edits)):  # each hooked edit changes the logits
        kept = [e for j, e in enumerate(intervention.edits) if j != dropped]
        partial = measure.make_plan(Intervention(kept, "partial", "tiny-test"), model)
        assert (measure.forward(model, partial, h, ALPHA) - full).abs().max() > 1e-3, dropped
    gate_site = Site(1, "mlp_out")
    opened = []
    for text in NEUTRAL:
        with record(model, [gate_site]) as seen, steer(model, intervention, ALPHA):
            model(prompt_token_ids(tokenizer, text))  # the recorder runs first: the gate's input
        opened.append(intervention.edits[2].gate.open(seen[gate_site][0][0]))
    opened = torch.cat(opened)
    assert opened.any() and not opened.all()


@pytest.fixture(scope="module")
def audited(tiny_model, tmp_path_factory):
    """The multi-site intervention audited once, with the SAE of its steered hook."""
    model, tokenizer = tiny_model
    root = tmp_path_factory.mktemp("audit_intervention")
    intervention = multi_site(model, tokenizer)
    save_code(intervention, root / "intervention")
    sae = random_sae(STEERED, 3)
    save_sae(sae, root / "sae")
    (root / "neutral.txt").write_text("\n".join(NEUTRAL) + "\n")
    config = AuditConfig(
        steer=str(root / "intervention"),
        out=str(root / "report"),
        sae=str(root / "sae"),
        neutral=str(root / "neutral.txt"),
        n_latents=4,
        **SMALL,
    )
    return run_audit(config, model, tokenizer), intervention, sae, root


def point(result, alpha):
    return next(p for p in result.report["sweep"] if p["alpha"] == alpha)


def test_report_describes_the_edits(audited):
    result, intervention, *_ = audited
    assert json.loads(result.json.read_text()) == result.report
    assert result.report["later_layer"] is None  # no block follows blocks.1
    about = result.report["what_it_is"]
    assert about["kind"] == "intervention" and about["steered_hook"] == STEERED
    assert about["sites"] == [s.name for s in intervention.sites] and about["layer_mask"] == [0, 1]
    edits = about["edits"]
    assert [e["site"] for e in edits] == [e.site.name for e in intervention.edits]
    assert [e["operator"]["kind"] for e in edits] == [
        "add",
        "rotate-2d",
        "set-projection",
        "reflect",
    ]
    assert edits[0]["operator"]["params"]["norm"] == pytest.approx(2.0)
    assert edits[1]["operator"]["params"]["degrees"] == 25.0
    assert edits[2]["gate"]["side"] == "below" and edits[2]["gate"]["direction"] == "û"
    assert edits[2]["gate"]["threshold"] == pytest.approx(intervention.edits[2].gate.threshold)
    assert edits[3]["operator"]["params"]["boundary"] == 0.5
    # logit lens for residual-basis directions; none at the norm output (a note says why)
    assert edits[1]["directions"] == [] and "RMSNorm output" in edits[1]["note"]
    for edit in (edits[0], edits[2], edits[3]):
        assert all(len(d["promoted"]) == 8 for d in edit["directions"])
    # nearest latents only where the SAE reads the site (blocks.1.hook_resid_post)
    assert [len(d.get("latents", [])) for d in edits[3]["directions"]] == [4]
    assert "latents" not in edits[0]["directions"][0]
    assert all(p["steered_layer"]["hook"] == STEERED for p in result.report["sweep"])


def test_kl_and_latent_changes_match_the_whole_model(audited, tiny_model):
    result, intervention, sae, _ = audited
    model, tokenizer = tiny_model
    rec, kls = point(result, ALPHA), []
    for text in NEUTRAL:
        ids = prompt_token_ids(tokenizer, text)
        p0 = model(ids)[0].double().log_softmax(-1)
        pa = whole_model(model, ids, intervention, ALPHA)[0].double().log_softmax(-1)
        kls.extend((p0.exp() * (p0 - pa)).sum(-1).tolist())
    assert rec["kl_neutral"] == pytest.approx(sum(kls) / len(kls), rel=1e-4)
    assert rec["kl_neutral"] > 1e-3
    ids = [prompt_token_ids(tokenizer, g["prompt"]) for g in rec["generations"]]
    before = torch.cat(
        [whole_model(model, x, intervention, 0.0, [STEERED])[1][STEERED] for x in ids]
    )
    after = torch.cat(
        [whole_model(model, x, intervention, ALPHA, [STEERED])[1][STEERED] for x in ids]
    )
    delta = (sae.encode(after) - sae.encode(before)).double().mean(0)
    top = rec["steered_layer"]["top_latents"]
    assert [c["index"] for c in top] == delta.abs().argsort(descending=True)[: len(top)].tolist()
    h0, h1 = before.double(), after.double()
    assert rec["steered_layer"]["edit_norm"] == pytest.approx(
        (h1 - h0).norm(dim=-1).mean().item(), rel=1e-4
    )
    assert rec["steered_layer"]["edit_norm"] > 0.1


def test_preference_log_odds_match_the_whole_model(audited, tiny_model):
    result, intervention, *_ = audited
    model, tokenizer = tiny_model
    pairs = behaviour_pairs("sentiment", "validation")[:4]
    lo = {
        alpha: direct_log_odds(model, tokenizer, pairs, intervention, alpha)
        for alpha in (0.0, ALPHA)
    }
    rec = point(result, ALPHA)
    change = sum(a - b for a, b in zip(lo[ALPHA], lo[0.0], strict=True)) / 4
    assert rec["log_odds"] == pytest.approx(sum(lo[ALPHA]) / 4, rel=1e-4, abs=1e-4)
    assert rec["log_odds_change"] == pytest.approx(change, rel=1e-4, abs=1e-4)
    assert abs(rec["log_odds_change"]) > 1e-3


def test_generations_are_steered_by_the_intervention(audited, tiny_model):
    result, intervention, *_ = audited
    model, tokenizer = tiny_model
    rec = point(result, ALPHA)
    prompts = [g["prompt"] for g in rec["generations"]]
    texts = generate_steered(model, tokenizer, prompts, intervention, ALPHA, max_new_tokens=6)
    assert [g["text"] for g in rec["generations"]] == texts


def test_page_lists_the_sites_and_loads_without_errors(audited, tmp_path):
    from browser import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium).")
    result, intervention, *_ = audited
    with Browser() as browser:
        page = browser.open(result.html)
        sites = page.evaluate(
            "[...document.querySelectorAll('#edits tr[data-site]')].map(r => r.dataset.site)"
        )
        assert sites == [e.site.name for e in intervention.edits]
        kl = page.evaluate(
            f'document.querySelector(\'td[data-metric="kl_neutral"][data-alpha="{fmt(ALPHA)}"]\')'
            ".textContent"
        )
        assert kl == fmt(point(result, ALPHA)["kl_neutral"])
        text = page.evaluate("document.body.innerText")
        assert "handmade intervention" in text and STEERED in text
        directions = page.evaluate("document.querySelectorAll('tr[data-direction]').length")
        assert directions == 3  # v, û (gate: the same û), w's û; none at the norm site
        assert page.errors == []


def test_an_sae_of_another_hook_is_refused_and_a_defaulted_one_dropped(audited, tiny_model):
    _, intervention, _, root = audited
    model, tokenizer = tiny_model
    other = random_sae("blocks.0.hook_resid_pre", 4)
    with pytest.raises(ValueError, match=r"fits none of them.*blocks\.1\.hook_resid_post"):
        intervention_sae(intervention, other, "other-sae", given=True)
    kept, steered, notes = intervention_sae(intervention, other, "other-sae", given=False)
    assert kept is None and steered is None and "Not used" in notes[0]
    site_sae = random_sae("blocks.0.hook_resid_post", 5)  # reads the add's site, not H
    kept, steered, notes = intervention_sae(intervention, site_sae, "site-sae", given=True)
    assert kept is site_sae and steered is None and "not the steered hook" in notes[0]
    save_sae(other, root / "other_sae")
    config = AuditConfig(
        steer=str(root / "intervention"), out=str(root / "x"), sae=str(root / "other_sae"), **SMALL
    )
    with pytest.raises(ValueError, match="fits none of them"):
        load_inputs(config, model, tokenizer, model)


def test_later_layer_must_follow_the_steered_hook(tiny_model):
    model, tokenizer = tiny_model
    low = low_sites()  # H = blocks.0.hook_resid_post
    assert later_layer(low, 2, -1, None) == 1
    with pytest.raises(
        ValueError, match=r"after the steered hook blocks\.0\.hook_resid_post.*last edit"
    ):
        later_layer(low, 2, 0, None)
    with pytest.raises(ValueError, match="no block follows the steered hook"):
        later_layer(multi_site(model, tokenizer), 2, -1, random_sae(STEERED, 6))


def test_a_latent_edit_lists_its_latents_and_is_checked_against_the_sae(tiny_model):
    model, tokenizer = tiny_model
    intervention = with_latent_edit()
    about = describe_intervention(intervention, model, tokenizer, random_sae(HOOK, 0), n=3)
    latent, added = about["edits"]
    assert [c["index"] for c in latent["latents"]] == [40, 3, 17]  # by |value|
    assert latent["operator"]["params"]["support_size"] == 3
    assert len(added["directions"]) == 1  # attn_out: a logit lens, no SAE of that site
    assert len(added["directions"][0]["promoted"]) == 8 and "latents" not in added["directions"][0]
    with pytest.raises(CodeMismatchError, match="checksum"):
        intervention_sae(intervention, random_sae(HOOK, 9), "wrong-sae", given=True)


def test_cli_audits_an_intervention_folder(tiny_model, tmp_path, capsys):
    model, tokenizer = tiny_model
    save_code(multi_site(model, tokenizer), tmp_path / "intervention")
    (tmp_path / "neutral.txt").write_text("\n".join(NEUTRAL[:2]) + "\n")
    argv = ["audit", "--steer", str(tmp_path / "intervention"), "--out", str(tmp_path / "out")]
    argv += ["--behaviour", "sentiment", "--alphas", "1", "--n-prompts", "1"]
    argv += [
        "--max-new-tokens",
        "3",
        "--max-pairs",
        "2",
        "--neutral",
        str(tmp_path / "neutral.txt"),
    ]
    assert main(argv) == 0
    assert "report" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["what_it_is"]["kind"] == "intervention"
    assert report["sweep"][1]["kl_neutral"] > 0 and "Pass --sae" in report["what_it_is"]["notes"][0]
