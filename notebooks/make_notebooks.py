"""Write the three notebooks from the cells below (run: python notebooks/make_notebooks.py).

Each notebook starts with a parameter cell read from the environment, so CI runs them on the tiny
model with tiny sizes (SAESTEER_NOTEBOOK_MODEL=tiny-test) and users on the default model. They share
one output folder (SAESTEER_NOTEBOOK_OUT, default notebook_out/): run them in order, 01 → 02 → 03.
The notebooks are committed without outputs, their code cells formatted by ruff (a dev dependency).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PARAMETERS = """\
import os
from pathlib import Path

MODEL = os.environ.get("SAESTEER_NOTEBOOK_MODEL", "smollm2-135m-instruct")
OUT = Path(os.environ.get("SAESTEER_NOTEBOOK_OUT", "notebook_out"))
TINY = MODEL == "tiny-test"  # CI: seconds instead of minutes
LAYER = 0 if TINY else 15
HOOK = f"blocks.{LAYER}.hook_resid_post"
DEVICE = "cpu"
"""

NB1 = [
    new_markdown_cell(
        "# 01 · Feature discovery\n\nCache residual-stream activations of a model on the Brown "
        "Corpus, train a TopK sparse autoencoder (SAE) on them, and look at what its latents "
        "respond to: densities, top-activating contexts, the logit lens, and a static dashboard."
    ),
    new_code_cell(
        PARAMETERS
        + """CACHE_TOKENS = 2048 if TINY else 65_536
SAE_TOKENS = 8192 if TINY else 524_288
CONTEXT_LEN = 64 if TINY else 128
"""
    ),
    new_markdown_cell(
        "## 1. Cache activations\n\n`run_cache` runs the model on fixed-length contexts of the "
        "corpus and writes the residual stream at `HOOK` to one HDF5 file (crash-safe, resumable)."
    ),
    new_code_cell(
        """from saesteer.cache_job import CacheConfig, run_cache

cache_path = OUT / "acts.h5"
if not cache_path.exists():
    run_cache(CacheConfig(out=str(cache_path), model=MODEL, hook=[HOOK], tokens=CACHE_TOKENS,
                          context_len=CONTEXT_LEN, dtype="float16", progress=False))
print(cache_path, cache_path.stat().st_size // 1024, "KiB")"""
    ),
    new_markdown_cell(
        "## 2. Train a TopK SAE\n\nz = TopK((x − b_dec)·W_enc + b_enc), x̂ = z·W_dec + b_dec, "
        "trained to minimise ‖x − x̂‖² (plus an auxiliary loss that revives dead latents)."
    ),
    new_code_cell(
        """from saesteer.sae import TrainSAEConfig, load_sae, train_sae

sae_dir = OUT / "sae"
if not (sae_dir / "saesteer.json").exists():
    result = train_sae(TrainSAEConfig(out=str(sae_dir), cache=str(cache_path), hook=HOOK, arch="topk",
                                      k=8 if TINY else 32, expansion=2 if TINY else 4,
                                      tokens=SAE_TOKENS, batch_size=512 if TINY else 1024, lr=1e-3,
                                      init_tokens=min(16_384, CACHE_TOKENS), checkpoint_every=0,
                                      progress=False))
    print({k: round(v, 4) for k, v in result.metrics.items()})
sae = load_sae(sae_dir)
print(sae.cfg)"""
    ),
    new_markdown_cell(
        "## 3. Discover features\n\nOne streaming pass over the cache: per latent its density, "
        "top and quantile examples with context windows, co-firing latents, and the logit lens of "
        "its decoder row. The dashboard is a folder of static files: open `index.html` from disk."
    ),
    new_code_cell(
        """from saesteer.features import FeaturesConfig, FeatureStats, run_features

features_dir = OUT / "features"
run_features(FeaturesConfig(sae=str(sae_dir), cache=str(cache_path), out=str(features_dir),
                            model=MODEL, hook=HOOK, n_top=5 if TINY else 20,
                            prompts=["The weather this morning was"]), progress=False)
stats = FeatureStats.load(features_dir)
print("dashboard:", (features_dir / "dashboard" / "index.html").resolve())
print(f"{(stats.fire_count == 0).sum()} dead latents of {stats.d_sae}; "
      f"median density {float(sorted(stats.density)[stats.d_sae // 2]):.4f}")"""
    ),
    new_markdown_cell(
        "## 4. Read one latent\n\nThe most frequently firing latent's top contexts "
        "(the firing token in brackets) and the tokens its decoder row promotes."
    ),
    new_code_cell(
        """from saesteer.models import load_tokenizer

tokenizer = load_tokenizer(MODEL)
latent = int(stats.density.argmax())
print(f"latent {latent}: density {stats.density[latent]:.4f}")
for k in range(3):
    ids = [int(t) for t in stats.top_window_tokens[latent, k]]
    parts = [tokenizer.decode([t]) if t >= 0 else "" for t in ids]
    parts[stats.window_before] = f"[{parts[stats.window_before]}]"
    print(f"  {stats.top_values[latent, k]:7.3f}  {''.join(parts)!r}")
print("promotes:", [tokenizer.decode([int(t)]) for t in stats.up_ids[latent, :8]])"""
    ),
    new_markdown_cell(
        "## 5. Where does it fire?\n\nThe sparse latent cache answers without "
        "re-encoding: every cached token where the latent is among the top k."
    ),
    new_code_cell(
        """from saesteer.features import SparseLatentCache

with SparseLatentCache(features_dir / "latents.h5") as sparse:
    where, values = sparse.where_fires(latent)
print(f"latent {latent} fires on {len(where)} cached tokens; strongest at token {where[values.argmax()]}")"""
    ),
]

NB2 = [
    new_markdown_cell(
        "# 02 · Train a sparse steering code (YaPO)\n\nLearn a code v in the SAE's latent space "
        "from preference pairs, so that steering with z' = relu(z + α·v), "
        "h' = h + (z' − z)·W_dec makes the model prefer the chosen completions. "
        "Needs the SAE of notebook 01."
    ),
    new_code_cell(
        PARAMETERS
        + """BEHAVIOUR = "sentiment"
EPOCHS = 1 if TINY else 2
N_PAIRS = 8 if TINY else 0  # 0: every training pair
sae_dir = OUT / "sae"
if not (sae_dir / "saesteer.json").exists():
    raise FileNotFoundError(f"No SAE in {sae_dir}: run 01_feature_discovery.ipynb first (same OUT).")
"""
    ),
    new_markdown_cell(
        "## 1. The data\n\nA shipped behaviour: pairs of a prompt with a chosen and a "
        "rejected completion, split into train and validation (held-out prompts)."
    ),
    new_code_cell(
        """from saesteer.steer.behaviours import behaviour, training_data

chosen = behaviour(BEHAVIOUR)
train, val = training_data(BEHAVIOUR)
train = train[: N_PAIRS or None]
print(chosen.description, f"— {len(train)} train / {len(val)} validation pairs")
print(train[0])"""
    ),
    new_markdown_cell(
        "## 2. Train\n\nThe loss is −log σ(d·β·(r(y_w) − r(y_l))) + λ‖v‖₁ with "
        "r(y) = log π_{d·v}(y|x) − log π_0(y|x) and a random direction d = ±1 per step; the L1 "
        "term (a soft-threshold after each step) and the top-k cap keep the code small."
    ),
    new_code_cell(
        """from saesteer.models import load_model
from saesteer.sae import load_sae
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.train import fit_steering

model, tokenizer = load_model(MODEL, DEVICE)
sae = load_sae(sae_dir).requires_grad_(False)
config = TrainSteerConfig(pairs=BEHAVIOUR, method="yapo", model=MODEL, sae=str(sae_dir),
                          chat=chosen.chat, epochs=EPOCHS, lr=0.1, l1=0.05, top_k=32,
                          progress=False)
result = fit_steering(model, tokenizer, train, config, sae=sae, val_pairs=val)
code = result.code
for row in result.history:
    print(row)
print(f"support: {code.support_size} latents; validation preference accuracy "
      f"{code.meta['val_accuracy']:.2f} (α=+1), {code.meta['val_accuracy_reversed']:.2f} (α=−1)")"""
    ),
    new_markdown_cell(
        "## 3. Save it, and a dense baseline\n\nThe code folder is self-contained "
        "(it keeps the SAE rows it needs). The mean-difference vector is the "
        "classic dense baseline (CAA)."
    ),
    new_code_cell(
        """import dataclasses

from saesteer.steer.io import save_code

save_code(code, OUT / "code_yapo")
dense = fit_steering(model, tokenizer, train, dataclasses.replace(config, method="mean-diff", hook_name=HOOK),
                     val_pairs=val).code
save_code(dense, OUT / "code_mean_diff")
print(sorted(p.name for p in OUT.iterdir()))"""
    ),
    new_markdown_cell(
        "## 4. Steered generations\n\nThe same held-out prompts at a few strengths "
        "(α = 0 is the unsteered model), with the behaviour's score."
    ),
    new_code_cell(
        """from saesteer.steer.generate import generate_steered

prompts = list(dict.fromkeys(p.prompt for p in val))[:2]
for alpha in (0.0, 2.0, 4.0):
    texts = generate_steered(model, tokenizer, prompts, code, alpha, chat=chosen.chat,
                             max_new_tokens=8 if TINY else 32)
    for prompt, text in zip(prompts, texts, strict=True):
        print(f"α={alpha:<4} score {chosen.score(text):+.2f}  {prompt} → {text!r}")"""
    ),
]

NB3 = [
    new_markdown_cell(
        "# 03 · Audit a steering code\n\nFor a sweep of strengths: what the code is (its latents), "
        "what it did (latent and residual changes), whether it worked (scorer, preference "
        "log-odds) and what it cost (perplexity, repetition, KL drift on neutral prompts). "
        "Needs notebooks 01 and 02."
    ),
    new_code_cell(
        PARAMETERS
        + """ALPHAS = [2.0] if TINY else [-2.0, 2.0, 4.0, 8.0]
code_dir = OUT / "code_yapo"
if not (code_dir / "code.json").exists():
    raise FileNotFoundError(f"No code in {code_dir}: run 01 and 02 first (same OUT).")
"""
    ),
    new_markdown_cell(
        "## 1. Run the audit\n\nWrites `report.html` (static, opens from disk), "
        "`report.json` and `strength_curve.png`."
    ),
    new_code_cell(
        """from saesteer.audit import AuditConfig, run_audit
from saesteer.models import load_model

model, tokenizer = load_model(MODEL, DEVICE)
config = AuditConfig(steer=str(code_dir), out=str(OUT / "audit"), alphas=ALPHAS,
                     sae=str(OUT / "sae"), features=str(OUT / "features"),
                     n_prompts=2 if TINY else 6, max_new_tokens=6 if TINY else 32,
                     max_pairs=4 if TINY else 18)
result = run_audit(config, model, tokenizer)
print("open", result.html.resolve())"""
    ),
    new_markdown_cell("## 2. The strength sweep\n\nOne row per α; α = 0 is the baseline."),
    new_code_cell(
        """keys = ["success_rate", "log_odds_change", "preference_accuracy", "perplexity", "repetition", "kl_neutral"]
print("alpha".rjust(6), *(k[:12].rjust(13) for k in keys))
for p in result.report["sweep"]:
    print(f"{p['alpha']:6g}", *(f"{p[k]:13.4g}" if p[k] is not None else " " * 13 for k in keys))"""
    ),
    new_code_cell(
        """from IPython.display import Image

Image(filename=str(result.curve))"""
    ),
    new_markdown_cell(
        "## 3. What the code is\n\nIts latents by |v_i|, with the tokens each "
        "decoder row promotes (logit lens) and a link into the dashboard."
    ),
    new_code_cell(
        """for card in result.report["what_it_is"]["latents"][:5]:
    print(f"latent {card['index']:5d}  v={card['weight']:+.3f}  promotes {card['promoted'][:5]}  {card['link']}")"""
    ),
    new_markdown_cell(
        "## 4. A dense vector, in latent terms\n\nThe mean-difference vector has no latents of "
        "its own; its nearest SAE latents (cosine with decoder rows) say what it points at."
    ),
    new_code_cell(
        """from saesteer.audit import describe_code
from saesteer.sae import load_sae
from saesteer.steer.io import load_code

dense = load_code(OUT / "code_mean_diff")
about = describe_code(dense, model, tokenizer, sae=load_sae(OUT / "sae"), n=5)
for card in about["latents"]:
    print(f"latent {card['index']:5d}  cos={card['weight']:+.3f}  promotes {card['promoted'][:5]}")"""
    ),
]

NOTEBOOKS = {
    "01_feature_discovery.ipynb": NB1,
    "02_train_steering_code.ipynb": NB2,
    "03_steering_audit.ipynb": NB3,
}


def main() -> None:
    folder = Path(__file__).parent
    paths = []
    for name, cells in NOTEBOOKS.items():
        notebook = new_notebook(cells=cells)
        for index, cell in enumerate(notebook.cells):  # stable ids: regenerating changes no line
            cell.id = f"{name[:2]}-{index:02d}"
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nbformat.validate(notebook)
        nbformat.write(notebook, folder / name)
        paths.append(str(folder / name))
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", *paths], check=True)
    print("\n".join(paths))


if __name__ == "__main__":
    main()
