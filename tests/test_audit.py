"""The audit's numbers equal a direct computation on the tiny model (whole model under `steer()`)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from helpers import direct_log_odds

from saesteer.audit import AuditConfig, run_audit
from saesteer.audit.describe import nearest_latents
from saesteer.audit.metrics import next_token_kl, ngram_repetition, perplexity
from saesteer.audit.report import fmt
from saesteer.generation import prompt_token_ids
from saesteer.sae import SAE, SAEConfig, save_sae
from saesteer.steer.behaviours import behaviour_pairs
from saesteer.steer.codes import DenseVector, feature_code
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered
from saesteer.steer.hooks import steer
from saesteer.steer.io import save_code

HOOK, LATER = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
ALPHA = 3.0
NEUTRAL = ["The train leaves the station at", "Water boils when", "The museum opens at nine and"]
SMALL = dict(alphas=[ALPHA], n_prompts=2, max_new_tokens=6, max_pairs=4, behaviour="sentiment")


def random_sae(hook: str, seed: int) -> SAE:
    torch.manual_seed(seed)
    sae = SAE(SAEConfig(d_in=64, d_sae=96, arch="relu", model_name="tiny-test", hook_name=hook))
    with torch.no_grad():
        sae.b_enc.fill_(-0.3)
    return sae.requires_grad_(False)


@pytest.fixture(scope="module")
def audited(tiny_model, tmp_path_factory):
    """A 3-latent code on a random SAE, audited once: (report, code, sae, later_sae, folder)."""
    model, tokenizer = tiny_model
    root = tmp_path_factory.mktemp("audit")
    sae, later_sae = random_sae(HOOK, 0), random_sae(LATER, 1)
    save_sae(sae, root / "sae")
    save_sae(later_sae, root / "sae_later")
    code = feature_code(sae, {3: 4.0, 17: -2.0, 40: 6.0})
    save_code(code, root / "code")
    (root / "neutral.txt").write_text("\n".join(NEUTRAL) + "\n")
    config = AuditConfig(
        steer=str(root / "code"),
        out=str(root / "report"),
        sae=str(root / "sae"),
        later_sae=str(root / "sae_later"),
        neutral=str(root / "neutral.txt"),
        **SMALL,
    )
    result = run_audit(config, model, tokenizer)
    return result, code, sae, later_sae, root


def point(result, alpha):
    return next(p for p in result.report["sweep"] if p["alpha"] == alpha)


def test_metric_formulas_on_hand_made_cases():
    assert ngram_repetition([1, 2, 3, 1, 2, 3], 3) == pytest.approx(1 - 3 / 4)
    assert ngram_repetition([5, 5], 3) == 0.0
    logits = torch.randn(4, 7)
    assert next_token_kl(logits, logits) == pytest.approx(0.0, abs=1e-12)
    uniform = torch.full((5,), -torch.log(torch.tensor(50.0)).item())
    assert perplexity([uniform[:2], uniform[2:]]) == pytest.approx(50.0)
    p, q = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    a, b = p.softmax(-1)[0], q.softmax(-1)[0]
    assert next_token_kl(p, q) == pytest.approx((a * (a / b).log()).sum().item())


def test_nearest_latents_are_the_largest_absolute_cosines():
    W_dec = torch.randn(30, 8)
    v = torch.randn(8)
    indices, cosines = nearest_latents(v, W_dec, 5)
    brute = torch.nn.functional.cosine_similarity(W_dec, v[None], dim=1)
    assert indices == brute.abs().argsort(descending=True)[:5].tolist()
    assert cosines == pytest.approx(brute[indices].tolist())


def test_outputs_and_what_it_is(audited):
    result, _code, *_ = audited
    assert result.html.is_file() and result.curve.stat().st_size > 1000
    assert json.loads(result.json.read_text()) == result.report
    assert [p["alpha"] for p in result.report["sweep"]] == [0.0, ALPHA]
    about = result.report["what_it_is"]
    assert about["kind"] == "latent" and about["support_size"] == 3
    assert [c["index"] for c in about["latents"]] == [40, 3, 17]  # by |value|
    assert [c["weight"] for c in about["latents"]] == [6.0, 4.0, -2.0]
    baseline = point(result, 0.0)
    assert baseline["kl_neutral"] == pytest.approx(0.0, abs=1e-6)
    assert baseline["log_odds_change"] == 0.0


def test_kl_drift_matches_whole_model_under_steer(audited, tiny_model):
    result, code, *_ = audited
    model, tokenizer = tiny_model
    kls = []
    for text in NEUTRAL:
        ids = prompt_token_ids(tokenizer, text)
        with torch.no_grad():
            p0 = model(ids)[0].double().log_softmax(-1)
            with steer(model, code, ALPHA):
                pa = model(ids)[0].double().log_softmax(-1)
        kls.extend((p0.exp() * (p0 - pa)).sum(-1).tolist())  # one KL per position
    assert point(result, ALPHA)["kl_neutral"] == pytest.approx(sum(kls) / len(kls), rel=1e-4)


def test_generations_perplexity_and_repetition_match_direct(audited, tiny_model):
    result, code, *_ = audited
    model, tokenizer = tiny_model
    rec = point(result, ALPHA)
    prompts = [g["prompt"] for g in rec["generations"]]
    ids, mask = batch_prompt_ids(tokenizer, prompts)
    new = generate_ids_steered(model, ids, mask, code, ALPHA, max_new_tokens=6)
    eos = tokenizer.eos_token_id
    logps, reps, texts = [], [], []
    for prompt, row in zip(prompts, new, strict=True):
        gen = row.tolist()
        gen = gen[: gen.index(eos)] if eos in gen else gen
        texts.append(tokenizer.decode(gen, skip_special_tokens=True).strip())
        full = prompt_token_ids(tokenizer, prompt)[0].tolist() + gen
        with torch.no_grad():
            logp = model(torch.tensor([full]))[0].double().log_softmax(-1)
        n_prompt = len(full) - len(gen)
        logps += [logp[t - 1, full[t]].item() for t in range(n_prompt, len(full))]
        grams = Counter(tuple(gen[j : j + 3]) for j in range(len(gen) - 2))
        reps.append(1 - len(grams) / sum(grams.values()) if grams else 0.0)
    assert [g["text"] for g in rec["generations"]] == texts
    expected_ppl = torch.exp(-torch.tensor(logps).mean()).item()
    assert rec["perplexity"] == pytest.approx(expected_ppl, rel=1e-4)
    assert rec["repetition"] == pytest.approx(sum(reps) / len(reps))


def test_latent_and_norm_changes_match_run_with_cache(audited, tiny_model):
    result, code, sae, later_sae, _ = audited
    model, tokenizer = tiny_model
    rec = point(result, ALPHA)
    prompts = [g["prompt"] for g in rec["generations"]]
    ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    names = ["blocks.1.hook_resid_pre", LATER]  # resid_pre 1 = the edited resid_post 0

    def states(steered: bool):
        out = {n: [] for n in names}
        for x in ids:
            with torch.no_grad():
                if steered:
                    with steer(model, code, ALPHA):
                        _, cache = model.run_with_cache(x, names_filter=names)
                else:
                    _, cache = model.run_with_cache(x, names_filter=names)
            for n in names:
                out[n].append(cache[n][0])
        return {n: torch.cat(v) for n, v in out.items()}

    before, after = states(False), states(True)
    for name, layer_sae, key in (
        (names[0], sae, "steered_layer"),
        (LATER, later_sae, "later_layer"),
    ):
        delta = (layer_sae.encode(after[name]) - layer_sae.encode(before[name])).double().mean(0)
        top = rec[key]["top_latents"]
        assert [c["index"] for c in top] == delta.abs().argsort(descending=True)[
            : len(top)
        ].tolist()
        assert [c["mean_delta"] for c in top] == pytest.approx(
            delta[[c["index"] for c in top]].tolist(), rel=1e-4, abs=1e-6
        )
        h0, h1 = before[name].double(), after[name].double()
        assert rec[key]["norm_change"] == pytest.approx(
            (h1.norm(dim=-1) - h0.norm(dim=-1)).mean().item(), rel=1e-4
        )
        assert rec[key]["edit_norm"] == pytest.approx(
            (h1 - h0).norm(dim=-1).mean().item(), rel=1e-4
        )


def test_preference_log_odds_match_direct(audited, tiny_model):
    result, code, *_ = audited
    model, tokenizer = tiny_model
    pairs = behaviour_pairs("sentiment", "validation")[:4]
    lo = {alpha: direct_log_odds(model, tokenizer, pairs, code, alpha) for alpha in (0.0, ALPHA)}
    rec = point(result, ALPHA)
    changes = [a - b for a, b in zip(lo[ALPHA], lo[0.0], strict=True)]
    assert rec["log_odds"] == pytest.approx(sum(lo[ALPHA]) / 4, rel=1e-4, abs=1e-4)
    assert rec["log_odds_change"] == pytest.approx(sum(changes) / 4, rel=1e-4, abs=1e-4)
    assert rec["preference_accuracy"] == sum(c > 0 for c in changes) / 4


def test_cli_audits_a_dense_vector_with_its_nearest_latents(audited, tmp_path, capsys):
    from saesteer.cli import main

    _, _, _sae, _, root = audited
    torch.manual_seed(2)
    save_code(DenseVector(torch.randn(64), HOOK, "tiny-test", "bipo"), tmp_path / "dense")
    argv = ["audit", "--steer", str(tmp_path / "dense"), "--out", str(tmp_path / "out")]
    argv += ["--sae", str(root / "sae"), "--behaviour", "sentiment", "--alphas", "1"]
    argv += ["--n-prompts", "1", "--max-new-tokens", "3", "--max-pairs", "2", "--n-latents", "4"]
    argv += ["--neutral", str(root / "neutral.txt")]
    assert main(argv) == 0
    assert "report" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    about = report["what_it_is"]
    assert about["kind"] == "dense" and len(about["latents"]) == 4
    assert fmt(report["sweep"][1]["alpha"]) == "1"


def test_report_page_loads_without_errors_and_shows_the_numbers(audited, tmp_path):
    from browser import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium).")
    result, _code, *_ = audited
    with Browser() as browser:
        page = browser.open(result.html)
        page.wait_for("document.querySelector('img').complete")
        for rec in result.report["sweep"]:
            for key in ("kl_neutral", "success_rate", "perplexity", "log_odds_change"):
                selector = f'td[data-metric="{key}"][data-alpha="{fmt(rec["alpha"])}"]'
                shown = page.evaluate(f"document.querySelector('{selector}').textContent")
                assert shown == fmt(rec[key]), (key, rec["alpha"])
        latents = page.evaluate(
            "[...document.querySelectorAll('#latents tr[data-latent]')].map(r => r.dataset.latent)"
        )
        assert latents == ["40", "3", "17"]
        assert page.evaluate("document.querySelector('img').naturalWidth") > 100
        page.screenshot(tmp_path / "report.png")
        assert page.errors == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
