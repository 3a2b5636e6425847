"""Config dataclasses of the SAE jobs (CLI flags, YAML/JSON files and the Python API alike).

Torch-free on purpose, so `saesteer --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saesteer.config import check_at_least, check_positive, flag, option

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu")
WARMUP_CAP = 0.1  # the warm-up is at most this fraction of the steps
MIN_STEPS = 150  # fewer optimizer steps than this warn (see saesteer.sae.trainer)


def check_fraction(config: Any, name: str, low_open: bool = False) -> None:
    """ValueError naming the flag unless the field is in [0, 1] ((0, 1] with `low_open`)."""
    value = getattr(config, name)
    ok = isinstance(value, int | float) and (0 < value <= 1 if low_open else 0 <= value <= 1)
    if not ok:
        raise ValueError(
            f"{flag(name)} must be in {'(0' if low_open else '[0'}, 1]; got {value!r}."
        )


@dataclass
class TrainSAEConfig:
    """One SAE training run. Data comes from --cache, --activations, or --model (on the fly)."""

    out: str = option(help="Output folder: the SAE (sae-lens format) and checkpoints/")
    hook: str = option(
        "", "Hook name, e.g. blocks.15.hook_resid_post (default: the cache's only hook)"
    )
    cache: str = option("", "Activation cache folder written by `saesteer cache`")
    activations: str = option(
        "", "A .safetensors file with 'acts' [n_tokens, d_in] (small experiments)"
    )
    model: str = option("", "Model to run on the fly when there is no cache (e.g. tiny-test)")
    corpus: str = option("brown", "Corpus for on-the-fly training (with --model)")
    context_len: int = option(128, "Tokens per context for on-the-fly training")
    arch: str = option(
        "topk", "Activation: relu | topk | batchtopk | jumprelu", choices=ARCHITECTURES
    )
    k: int = option(32, "Active latents per token for topk/batchtopk")
    d_sae: int = option(0, "Number of latents (0: expansion × d_in)")
    expansion: int = option(8, "d_sae = expansion × d_in when --d-sae is 0")
    tokens: int = option(2_000_000, "Training tokens (steps = tokens // batch_size)")
    batch_size: int = option(
        1024,
        "Global batch in tokens (split evenly across ranks); steps = tokens // batch_size, so a "
        f"bigger batch means fewer steps (a run of fewer than {MIN_STEPS} steps warns)",
    )
    lr: float = option(1e-3, "Adam learning rate (peak)")
    warmup_steps: int = option(
        50, f"Linear learning-rate warm-up steps (at most {WARMUP_CAP:.0%} of the run's steps)"
    )
    decay_fraction: float = option(0.2, "Final fraction of steps with linear decay to 0")
    l1_coefficient: float = option(1.0, "relu: weight of the decoder-norm-weighted L1 penalty")
    l0_coefficient: float = option(1.0, "jumprelu: weight of the L0 penalty")
    jumprelu_bandwidth: float = option(0.05, "jumprelu: straight-through estimator bandwidth ε")
    jumprelu_init_threshold: float = option(0.1, "jumprelu: initial threshold θ")
    aux_coefficient: float = option(1 / 32, "topk/batchtopk: weight of the AuxK loss")
    aux_k: int = option(256, "topk/batchtopk: dead latents used by the AuxK loss")
    threshold_lr: float = option(0.01, "batchtopk: EMA rate of the inference threshold")
    dead_tokens: int = option(500_000, "A latent is dead after this many tokens without firing")
    b_dec_init: str = option(
        "geometric_median",
        "b_dec from data: geometric_median | mean | zeros",
        choices=("geometric_median", "mean", "zeros"),
    )
    init_tokens: int = option(16_384, "Tokens used for b_dec and the normalisation scale")
    normalize: bool = option(
        True, "Scale inputs to mean norm sqrt(d_in) (folded into the weights on save)"
    )
    sparse: bool = option(
        True, "Sparse decode for topk/batchtopk (embedding_bag); off: dense reference"
    )
    skip_positions: int = option(
        0,
        "Leave out the first N tokens of every context (1: the attention sink, whose huge norm "
        "dominates the loss in SmolLM2)",
    )
    seed: int = option(0, "Seed of the initialisation and the data order")
    checkpoint_every: int = option(200, "Steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = option(2, "Checkpoints kept (newest; at least 1)")
    resume: bool = option(False, "Continue from the newest checkpoint in --out")
    device: str = option("cpu", "cpu | cuda (each rank uses cuda:LOCAL_RANK)")
    progress: bool = option(True, "Show a progress bar")
    log_every: int = option(10, "Steps between progress-bar updates")

    def __post_init__(self) -> None:
        """Refuse values no run can use (each error names the flag and the valid range)."""
        check_at_least(self, ("tokens", "batch_size"), 1, " (steps = tokens // batch_size)")
        check_at_least(
            self, ("context_len", "init_tokens", "dead_tokens", "log_every", "keep_checkpoints"), 1
        )
        check_at_least(self, ("d_sae", "warmup_steps", "skip_positions", "checkpoint_every"), 0)
        if self.d_sae == 0:
            check_at_least(self, ("expansion",), 1, " when --d-sae is 0 (d_sae = expansion × d_in)")
        if self.arch in ("topk", "batchtopk"):
            check_at_least(self, ("k",), 1, f" for {self.arch}")
            check_at_least(self, ("aux_k",), 0)
        check_positive(self, ("lr",), " (the peak Adam learning rate)")
        check_positive(self, ("jumprelu_bandwidth",))
        check_at_least(
            self,
            ("l1_coefficient", "l0_coefficient", "aux_coefficient", "jumprelu_init_threshold"),
            0,
        )
        check_fraction(self, "decay_fraction")
        check_fraction(self, "threshold_lr", low_open=True)

    def loss_settings(self) -> Any:
        """The `training.LossSettings` of this run: its fields, read from the same-named options."""
        import dataclasses

        from saesteer.sae.training import LossSettings

        names = [f.name for f in dataclasses.fields(LossSettings)]
        return LossSettings(**{name: getattr(self, name) for name in names})

    def width(self, d_in: int) -> int:
        return self.d_sae or self.expansion * d_in


@dataclass
class EvalSAEConfig:
    """One SAE evaluation on held-out tokens; results land beside the SAE."""

    sae: str = option(help="SAE folder (saesteer or sae-lens format)")
    model: str = option("", "Model the SAE reads (default: the one recorded in the SAE)")
    hook: str = option("", "Hook name (default: the one recorded in the SAE)")
    corpus: str = option("brown", "Corpus for held-out tokens")
    context_len: int = option(128, "Tokens per context")
    n_tokens: int = option(16_384, "Held-out tokens")
    seed: int = option(
        1234, "Seed of the sample of held-out contexts (the corpus validation split)"
    )
    batch_contexts: int = option(8, "Contexts per model forward")
    dense_threshold: float = option(
        0.1, "A latent active on more than this fraction of tokens is dense"
    )
    skip_positions: int = option(
        -1,
        "Splice the SAE in from this position on (earlier positions stay clean); "
        "-1: the --skip-positions the SAE was trained with",
    )
    out: str = option("", "Folder for eval.json and the histogram (default: the SAE folder)")

    def __post_init__(self) -> None:
        """Refuse values no evaluation can use (each error names the flag and the valid range)."""
        check_at_least(self, ("context_len", "n_tokens", "batch_contexts"), 1)
        check_at_least(self, ("skip_positions",), -1, " (-1: as trained)")
        check_fraction(self, "dense_threshold")
