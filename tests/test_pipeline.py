"""The whole pipeline on the tiny model with tiny sizes: every stage runs and leaves its output."""

from __future__ import annotations

import json

from saesteer.pipeline import PipelineConfig, run_pipeline

TINY = dict(
    model="tiny-test",
    layer=0,
    cache_tokens=2048,
    context_len=64,
    k=8,
    expansion=2,
    sae_tokens=8192,
    sae_batch=512,
    n_top=4,
    steer_epochs=1,
    steer_pairs=8,
    alphas=[4.0],
    n_prompts=2,
    max_new_tokens=5,
    max_pairs=4,
    progress=False,
)


def test_pipeline_on_the_tiny_model_writes_every_output(tmp_path, capsys):
    outputs = run_pipeline(PipelineConfig(out=str(tmp_path / "demo"), **TINY))
    for _, path in outputs.named():
        assert path.exists(), path
    assert (outputs.sae / "saesteer.json").is_file()
    assert (outputs.code / "code.json").is_file()
    report = json.loads((outputs.audit / "report.json").read_text())
    assert [p["alpha"] for p in report["sweep"]] == [0.0, 4.0]
    assert report["what_it_is"]["kind"] == "latent"
    assert report["what_it_is"]["latents"][0]["link"].startswith("../features/dashboard/")
    assert "α = 4" in outputs.generations.read_text()
    record = json.loads((outputs.out / "pipeline.json").read_text())
    assert set(record["seconds"]) == {"cache", "train-sae", "features", "train-steer", "audit"}
    headline = record["summary"]
    assert 0 < headline["sae"]["explained_variance"] <= 1 and headline["sae"]["l0"] > 0
    assert headline["code"]["effect_ratio"] > 0 and headline["code"]["support_size"] > 0
    assert set(headline["success_rate"]) == {"0.0", "4.0"}
    # A second run reuses every stage.
    capsys.readouterr()
    run_pipeline(PipelineConfig(out=str(tmp_path / "demo"), **TINY))
    assert capsys.readouterr().out.count("already done") == 5
