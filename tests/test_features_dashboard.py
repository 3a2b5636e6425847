"""`saesteer features` end to end on the tiny model, and its dashboard in headless Chromium."""

from __future__ import annotations

import json

import numpy as np
import pytest
from browser import Browser, chromium_path
from helpers import features_sae
from test_features_discovery import CTX_LEN, HOOK, N_CTX, cache_path, dense

from saesteer.cli import main
from saesteer.features import FeatureStats, SparseLatentCache
from saesteer.features.dashboard import LIST_TOKENS, _round, token_texts
from saesteer.sae.io import save_sae

__all__ = ["cache_path", "dense"]  # module fixtures shared with the discovery tests
ATTACK = 'Hi <img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
PROMPTS = [ATTACK, "The model said hello"]


@pytest.fixture(scope="module")
def site(cache_path, tmp_path_factory):
    """Run the CLI on a saved random SAE; returns (output folder, FeatureStats)."""
    sae_dir = tmp_path_factory.mktemp("sae") / "sae"
    save_sae(features_sae(), sae_dir)
    args = [
        "features",
        "--sae",
        str(sae_dir),
        "--cache",
        str(cache_path),
        "--n-top",
        "5",
        "--n-samples",
        "3",
        "--window-before",
        "3",
        "--window-after",
        "2",
        "--n-logit",
        "4",
        "--n-cofire",
        "3",
        "--sparse-k",
        "6",
        "--batch-contexts",
        "3",
        "--prompts",
        *PROMPTS,
    ]
    assert main(args) == 0
    out = sae_dir / "features"
    return out, FeatureStats.load(out)


def test_cli_writes_stats_sparse_cache_config_and_dashboard(site, dense):
    out, stats = site
    z = features_sae().encode(dense[0])
    np.testing.assert_array_equal(stats.fire_count, (z > 0).sum(0).numpy())
    assert stats.meta["sae"]["arch"] == "relu" and stats.meta["config"]["n_top"] == 5
    assert json.loads((out / "config.json").read_text())["sparse_k"] == 6
    with SparseLatentCache(out / "latents.h5") as sparse:
        assert sparse.n_tokens == N_CTX * CTX_LEN and sparse.attrs["hook"] == HOOK
    assert (out / "dashboard" / "index.html").is_file()


def test_cli_names_the_fix_for_a_missing_input(tmp_path, capsys):
    assert main(["features", "--cache", str(tmp_path / "acts.h5")]) == 2
    assert "needs --sae DIR and --cache PATH" in capsys.readouterr().err


@pytest.fixture(scope="module")
def page(site):
    if chromium_path() is None:
        pytest.skip(
            "Chromium is not installed (apt-get install -y chromium); dashboard not checked"
        )
    with Browser() as browser:
        yield browser.open(site[0] / "dashboard" / "index.html")


def rows(page) -> list[int]:
    return page.evaluate("[...document.querySelectorAll('#rows tr')].map(r => +r.dataset.latent)")


def search(page, **values) -> list[int]:
    """Set list controls by id (text, select or checkbox) as a user would; return the listed latents."""
    for element_id, value in values.items():
        key = "checked" if isinstance(value, bool) else "value"
        page.evaluate(
            f"(() => {{ const e = document.getElementById({json.dumps(element_id.replace('_', '-'))});"
            f" e.{key} = {json.dumps(value)};"
            " for (const kind of ['input', 'change']) e.dispatchEvent(new Event(kind)); })()"
        )
    return rows(page)


def test_feature_list_shows_every_latent_with_its_density(page, site):
    _, stats = site
    assert (
        page.evaluate("document.getElementById('count').textContent")
        == f"{stats.d_sae} of {stats.d_sae} latents"
    )
    assert rows(page) == list(range(stats.d_sae))
    densities = page.evaluate(
        "[...document.querySelectorAll('#rows tr')].map(r => +r.dataset.density)"
    )
    np.testing.assert_allclose(densities, stats.density, rtol=1e-3)
    shown = page.evaluate("document.querySelector('#rows tr td:nth-child(2)').textContent")
    assert shown == f"{100 * stats.density[0]:.3g}%"
    assert page.requests and all(url.startswith("file://") for url in page.requests)
    assert page.errors == []


def test_search_filters_by_token_id_and_density(page, site, tiny_model):
    _, stats = site
    tokenizer = tiny_model[1]
    strongest = int(np.argmax(stats.top_values[:, 0]))
    centre = stats.top_window_tokens[strongest, 0, stats.window_before]
    query = token_texts(tokenizer, {int(centre)})[str(centre)].strip().lower()
    assert query, "the strongest example's token should have visible text"
    texts = token_texts(tokenizer, set(stats.top_window_tokens.ravel()) | set(stats.up_ids.ravel()))
    expected = []
    for i in range(stats.d_sae):
        centres = [
            int(t)
            for t, s in zip(
                stats.top_window_tokens[i, :, stats.window_before], stats.top_tokens[i], strict=True
            )
            if s >= 0
        ]
        listed = list(dict.fromkeys(centres))[:LIST_TOKENS] + stats.up_ids[i, :LIST_TOKENS].tolist()
        if any(query in texts[str(t)].lower() for t in listed):
            expected.append(i)
    assert strongest in expected
    assert search(page, search=query) == expected
    assert search(page, search="#7") == [7]
    threshold = float(np.median(stats.density) * 100)
    expected = [i for i, d in enumerate(_round(stats.density.tolist())) if 100 * d >= threshold]
    assert search(page, search="", min_density=str(threshold)) == expected
    by_density = search(page, min_density="", sort="density-desc")
    assert by_density == sorted(
        range(stats.d_sae), key=lambda i: (-_round(float(stats.density[i])), i)
    )
    search(page, sort="index")
    assert page.errors == []


def test_feature_page_shows_contexts_logit_lens_and_keeps_a_label(page, site, tiny_model, tmp_path):
    _, stats = site
    i = int(np.argmax(stats.top_values[:, 0]))
    page.evaluate(f"location.hash = '#/feature/{i}'")
    page.wait_for("document.querySelectorAll('#top .context').length > 0")
    n_top = int((stats.top_tokens[i] >= 0).sum())
    assert page.evaluate("document.querySelectorAll('#top .context').length") == n_top
    assert float(
        page.evaluate("document.getElementById('density').dataset.value")
    ) == pytest.approx(stats.density[i], rel=1e-3)
    centre = stats.top_window_tokens[i, 0, stats.window_before]
    texts = token_texts(tiny_model[1], {int(centre), *stats.up_ids[i].tolist()})
    shown_centre = page.evaluate("document.querySelector('#top .context .tok.center').textContent")
    assert shown_centre == texts[str(centre)].replace("\n", "↵")
    act = page.evaluate("document.querySelector('#top .context .act').textContent")
    assert float(act) == pytest.approx(stats.top_values[i, 0], rel=1e-3)
    promoted = page.evaluate(
        "[...document.querySelectorAll('#promoted .tok')].map(e => e.firstChild.textContent)"
    )
    assert promoted == [texts[str(t)].replace("\n", "↵") for t in stats.up_ids[i]]
    page.evaluate(
        "(() => { const e = document.getElementById('label'); e.value = 'my <b>label</b>'; e.dispatchEvent(new Event('change')); })()"
    )
    page.screenshot(tmp_path / "feature.png")
    page.evaluate("location.hash = '#/'")
    page.reload()  # labels live in localStorage: they survive a reload
    assert search(page, labelled=True) == [i]
    assert search(page, labelled=False, search="<b>label") == [i]
    search(page, search="")
    assert page.errors == []


def test_prompt_page_lists_latents_per_token_and_escapes_text(page, site, tiny_model, tmp_path):
    from saesteer.features.prompts import prompt_latents

    expected = prompt_latents(tiny_model[0], features_sae(), HOOK, PROMPTS, 8)[0]
    page.evaluate("location.hash = '#/prompt/0'")
    page.wait_for("document.querySelectorAll('#prompt-table tbody tr').length > 0")
    table = page.evaluate(
        "[...document.querySelectorAll('#prompt-table tbody tr')].map(r => "
        "[...r.querySelectorAll('a.feat')].map(a => +a.dataset.latent))"
    )
    assert table == [[j for j in ids if j >= 0] for ids in expected.latent_ids]
    assert page.evaluate("document.getElementById('strip').textContent") == ATTACK
    assert page.evaluate(
        "[typeof window.pwned, document.querySelectorAll('main img, main script').length]"
    ) == ["undefined", 0]
    shot = page.screenshot(tmp_path / "prompt.png")
    page.evaluate("location.hash = '#/'")
    page.wait_for("!!document.getElementById('rows')")
    listing = page.screenshot(tmp_path / "dashboard.png")
    assert shot.stat().st_size > 5000 and listing.read_bytes()[:4] == b"\x89PNG"
    assert all(url.startswith("file://") for url in page.requests)
    assert page.errors == []


def test_browser_helper_reports_errors_and_requests(tmp_path):
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    (tmp_path / "bad.html").write_text(
        '<script src="missing.js"></script><script>console.error("boom"); nope();</script>'
    )
    with Browser() as browser:
        page = browser.open(tmp_path / "bad.html")
        assert page.evaluate("1 + 1") == 2
    assert len(page.errors) == 3 and "missing.js" in page.errors[0]
    assert "boom" in page.errors[1] and "nope" in page.errors[2]
    assert page.requests[-1].endswith("missing.js")
