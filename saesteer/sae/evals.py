"""SAE evaluation on held-out tokens: reconstruction, sparsity, and the SAE spliced into the model.

With x the hook activations over N held-out tokens, μ their mean, x̂ = SAE(x), z = encode(x):
    explained variance   EV  = 1 − Σ‖x − x̂‖² / Σ‖x − μ‖²        (relative to the mean, not to 0)
                         also without position 0 of each context: in many models the first token
                         is an attention sink with a residual norm ~100× the rest, which alone can
                         make EV look like 0.999 (`explained_variance_without_position_0`)
    FVU                      = 1 − EV
    L0                       = mean over tokens of #{j : z_j > 0}
    density_j                = fraction of tokens with z_j > 0;  dead: density 0,  dense: > `dense_threshold`
Spliced into the model at the hook (next-token cross-entropy CE, per-token KL to the clean model):
    CE recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean)   (zero: the hook's output set to 0)
    An SAE trained without the first s positions (`--skip-positions s`) is spliced in at positions
    ≥ s only (the first s keep x in every run, "zero" included): it was never asked to reconstruct
    them, and the attention sink's huge norm would otherwise dominate CE_sae.
    KL           = mean_t Σ_v p_clean(v) · (log p_clean(v) − log p_sae(v))
    error term:  the hook returns x̂ + (x − x̂); logits must equal the clean ones (max |Δ| ≤ 1e-4)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from saesteer.config import config_to_dict
from saesteer.paths import atomic_write_bytes
from saesteer.sae.configs import EvalSAEConfig
from saesteer.sae.model import SAE

EVAL_FILE = "eval.json"
HISTOGRAM_FILE = "density_histogram.png"


class _Accumulator:
    """Running sums for EV, L0 and per-latent firing counts (float64)."""

    def __init__(self, d_in: int, d_sae: int) -> None:
        self.n = 0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_sq = 0.0
        self.sum_err = 0.0
        self.active = 0.0
        self.fires = torch.zeros(d_sae, dtype=torch.float64)

    def add(self, x: torch.Tensor, recon: torch.Tensor, z: torch.Tensor) -> None:
        x64 = x.double()
        self.n += x.shape[0]
        self.sum_x += x64.sum(dim=0)
        self.sum_sq += float(x64.pow(2).sum())
        self.sum_err += float((x64 - recon.double()).pow(2).sum())
        on = (z > 0).double()
        self.active += float(on.sum())
        self.fires += on.sum(dim=0)

    def results(self, dense_threshold: float) -> tuple[dict[str, float], torch.Tensor]:
        total = self.sum_sq - float(self.sum_x.pow(2).sum()) / self.n
        ev = 1.0 - self.sum_err / max(total, 1e-12)
        density = (self.fires / self.n).float()
        return {
            "n_tokens": self.n,
            "explained_variance": ev,
            "fvu": 1.0 - ev,
            "mse_per_token": self.sum_err / self.n,
            "l0": self.active / self.n,
            "dead_fraction": float((density == 0).float().mean()),
            "dense_fraction": float((density > dense_threshold).float().mean()),
        }, density


@torch.no_grad()
def reconstruction_metrics(
    sae: SAE, batches: Any, dense_threshold: float = 0.1
) -> tuple[dict[str, float], torch.Tensor]:
    """EV, FVU, L0, dead/dense fractions over an iterable of activations [B, d_in]; plus density [d_sae]."""
    acc = _Accumulator(sae.cfg.d_in, sae.cfg.d_sae)
    for x in batches:
        x = x.reshape(-1, x.shape[-1]).float()
        z = sae.encode(x)
        acc.add(x, sae.decode(z), z)
    return acc.results(dense_threshold)


def _next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-token next-token cross-entropy: logits [b, L, V], tokens [b, L] → [b, L−1]."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)


def _constant(value: torch.Tensor) -> Any:
    """A hook that replaces the activation by `value`."""
    return lambda act, hook: value


def _capture_run(
    model: Any, batch: torch.Tensor, hook: str, d_in: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations at `hook` [b, L, d], clean logits [b, L, V]); checks the width against d_in."""
    captured: dict[str, torch.Tensor] = {}

    def capture(act: torch.Tensor, hook: Any) -> None:
        if act.shape[-1] != d_in:
            raise ValueError(
                f"SAE d_in {d_in} does not match the width {act.shape[-1]} of "
                f"{hook.name}; pick the hook (and model) the SAE was trained on."
            )
        captured["x"] = act.detach()

    logits = model.run_with_hooks(batch, fwd_hooks=[(hook, capture)])
    return captured["x"], logits


@torch.no_grad()
def evaluate_spliced(
    model: Any,
    sae: SAE,
    hook: str,
    tokens: torch.Tensor,
    batch_contexts: int = 8,
    dense_threshold: float = 0.1,
    skip_positions: int = 0,
) -> tuple[dict[str, float], torch.Tensor]:
    """All metrics of the module docstring on tokens [n_ctx, L]; returns (metrics, density [d_sae]).

    skip_positions: the first positions keep their clean activation in the spliced runs."""
    if hook not in model.hook_dict:
        raise ValueError(
            f"Hook {hook!r} is not in the model; the SAE was trained on {sae.cfg.hook_name!r}."
        )
    acc = _Accumulator(sae.cfg.d_in, sae.cfg.d_sae)
    acc_rest = _Accumulator(sae.cfg.d_in, sae.cfg.d_sae)  # positions ≥ 1 only
    sums = {
        "ce_clean": 0.0,
        "ce_sae": 0.0,
        "ce_zero": 0.0,
        "ce_sae_with_error": 0.0,
        "kl_sae": 0.0,
        "kl_sae_with_error": 0.0,
    }
    max_error_term_diff, n_pred = 0.0, 0
    for start in range(0, tokens.shape[0], batch_contexts):
        batch = tokens[start : start + batch_contexts].long()
        x, clean = _capture_run(model, batch, hook, sae.cfg.d_in)
        z = sae.encode(x.float())
        recon = sae.decode(z).to(x.dtype)
        keep = torch.arange(x.shape[1], device=x.device)[None, :, None] < skip_positions
        acc.add(
            x.reshape(-1, x.shape[-1]), recon.reshape(-1, x.shape[-1]), z.reshape(-1, z.shape[-1])
        )
        acc_rest.add(
            x[:, 1:].reshape(-1, x.shape[-1]),
            recon[:, 1:].reshape(-1, x.shape[-1]),
            z[:, 1:].reshape(-1, z.shape[-1]),
        )
        spliced, zeroed = torch.where(keep, x, recon), torch.where(keep, x, torch.zeros_like(x))
        runs = {
            "sae": model.run_with_hooks(batch, fwd_hooks=[(hook, _constant(spliced))]),
            "zero": model.run_with_hooks(batch, fwd_hooks=[(hook, _constant(zeroed))]),
            "sae_with_error": model.run_with_hooks(
                batch, fwd_hooks=[(hook, _constant(recon + (x - recon)))]
            ),
        }
        max_error_term_diff = max(
            max_error_term_diff, float((runs["sae_with_error"] - clean).abs().max())
        )
        logp_clean = F.log_softmax(clean.float(), dim=-1)
        sums["ce_clean"] += float(_next_token_ce(clean, batch).sum())
        for name, logits in runs.items():
            sums[f"ce_{name}"] += float(_next_token_ce(logits, batch).sum())
            if name != "zero":
                logp = F.log_softmax(logits.float(), dim=-1)
                kl = (logp_clean.exp() * (logp_clean - logp)).sum(dim=-1)
                sums[f"kl_{name}"] += float(kl[:, :-1].sum())
        n_pred += batch.shape[0] * (batch.shape[1] - 1)
    metrics, density = acc.results(dense_threshold)
    if acc_rest.n:
        rest, _ = acc_rest.results(dense_threshold)
        metrics["explained_variance_without_position_0"] = rest["explained_variance"]
        metrics["l0_without_position_0"] = rest["l0"]
    means = {name: value / n_pred for name, value in sums.items()}
    gap = means["ce_zero"] - means["ce_clean"]
    recovered = (means["ce_zero"] - means["ce_sae"]) / gap if abs(gap) > 1e-12 else float("nan")
    recovered_err = (
        (means["ce_zero"] - means["ce_sae_with_error"]) / gap if abs(gap) > 1e-12 else float("nan")
    )
    metrics.update(
        means,
        ce_loss_recovered=recovered,
        ce_loss_recovered_with_error=recovered_err,
        max_logit_diff_with_error=max_error_term_diff,
        n_predictions=n_pred,
        spliced_from_position=skip_positions,
    )
    return metrics, density


def density_histogram(density: torch.Tensor, path: Path, title: str = "") -> Path:
    """PNG histogram of log10 feature density (dead latents counted in a separate bar at the left)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alive = density[density > 0]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if alive.numel():
        ax.hist(torch.log10(alive).numpy(), bins=50, color="tab:blue")
    ax.set_xlabel("log10 feature density (fraction of tokens active)")
    ax.set_ylabel("latents")
    dead = int((density == 0).sum())
    ax.set_title(f"{title} ({dead} dead of {density.numel()})".strip())
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_eval(folder: str | Path, metrics: dict[str, Any], density: torch.Tensor) -> Path:
    """Write eval.json and density_histogram.png into `folder` (beside the SAE); returns the JSON path."""
    folder = Path(folder)
    density_histogram(density, folder / HISTOGRAM_FILE, title="feature density")
    path = folder / EVAL_FILE
    atomic_write_bytes(path, json.dumps(metrics, indent=2, default=str).encode())
    return path


def trained_skip_positions(folder: str | Path) -> int:
    """The --skip-positions an SAE folder was trained with (0 when it does not say)."""
    from saesteer.sae.io import META_FILE, sae_dir

    meta = sae_dir(folder) / META_FILE
    if not meta.is_file():
        return 0
    training = json.loads(meta.read_text()).get("training") or {}
    return int((training.get("config") or {}).get("skip_positions", 0))


def run_eval(
    cfg: EvalSAEConfig, model: Any = None, tokens: torch.Tensor | None = None
) -> dict[str, Any]:
    """Load the SAE, the model and held-out tokens (unless given), evaluate, write, return metrics."""
    from saesteer.sae.io import load_sae, output_beside_sae

    out = output_beside_sae(cfg.sae, cfg.out, "")
    sae = load_sae(cfg.sae)
    hook = cfg.hook or sae.cfg.hook_name
    if not hook:
        raise ValueError("The SAE records no hook; pass --hook, e.g. blocks.0.hook_resid_post.")
    model_name = cfg.model or sae.cfg.model_name
    tokenizer = None
    if model is None:
        if not model_name:
            raise ValueError("The SAE records no model; pass --model, e.g. tiny-test.")
        from saesteer.models import load_model

        model, tokenizer = load_model(model_name)
    if tokens is None:
        from saesteer.corpus import make_contexts

        tokenizer = tokenizer or model.tokenizer
        contexts = make_contexts(
            tokenizer,
            source=cfg.corpus,
            context_len=cfg.context_len,
            n_tokens=cfg.n_tokens,
            split="validation",
            seed=cfg.seed,
        )
        tokens = torch.as_tensor(contexts.tokens, dtype=torch.long)
    skip = cfg.skip_positions if cfg.skip_positions >= 0 else trained_skip_positions(cfg.sae)
    metrics, density = evaluate_spliced(
        model, sae, hook, tokens, cfg.batch_contexts, cfg.dense_threshold, skip
    )
    from saesteer.sae.io import sae_checksum

    result = {
        "sae_checksum": sae_checksum(sae),
        "model": model_name,
        "hook": hook,
        "config": config_to_dict(cfg),
        **metrics,
    }
    write_eval(out, result, density)
    return result
