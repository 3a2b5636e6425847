"""Steered generation speed vs plain Hugging Face `generate` (default model, greedy, KV cache).

    plain HF generate  |  HF generate + YaPO code (support-restricted hook)  |  HF + dense vector
    |  HF + each intervention method's edits  |  TransformerLens generate + YaPO code
    → ms per new token and ratios to plain HF

The intervention rows use random directions in the shapes each method produces (the per-token cost
depends on the operators and sites, not on the fitted values): Selective Steering's rotations at the
two norm outputs of 12 layers (standard, and adaptive with its gate), StTP's gated set-projection,
StMP's gated reflection, CDAS's set-projection and GrAInS's norm-rescaled addition, each at
blocks.15; A-LQR's feedback at every block's output (30 edits that each read the block input);
a Guiding Giants controller (MLP 4·576 → 256 → 31 over the last 4 blocks, patching all 30, with its
prompt pre-read); a Steer2Edit weight edit of 60 heads and 20 neurons (applied to the weights on
entering `steer`, written back on exit: no per-token hook).

The YaPO code lives in a random ReLU SAE (576 → 4608) at blocks.15.hook_resid_post with a 32-latent
support (the edit's cost depends on the support size, not on how the SAE was trained). Requirement:
steered HF generation within 1.05× of plain HF generation.

    .venv/bin/python benchmarks/generation_speed.py [--new-tokens 64] [--repeats 3] [--skip-tl]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def interleaved_ms_per_token(fns: dict, new_tokens: int, repeats: int) -> dict[str, float]:
    """Best ms/token of each fn, runs interleaved round-robin so load changes hit all paths alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - start)
            assert out.shape[1] == new_tokens, out.shape
    return {name: 1000 * t / new_tokens for name, t in best.items()}


def method_interventions() -> dict:
    """Random interventions with the sites, operators and gates of each new method (docstring)."""
    from saesteer.steer.gates import ProjectionGate
    from saesteer.steer.intervention import Edit, Intervention
    from saesteer.steer.operators import (
        AddRescale,
        Feedback,
        Reflect,
        Rotation2D,
        SetProjection,
        orthonormal_plane,
    )
    from saesteer.steer.sites import Site

    d, name, g = 576, "smollm2-135m-instruct", torch.Generator().manual_seed(1)
    b1, b2, u = (torch.randn(d, generator=g) for _ in range(3))
    rotation = Rotation2D(orthonormal_plane(b1, b2), 30.0)
    layers = range(6, 18)
    sites = [Site(layer, stream) for layer in layers for stream in ("attn_in", "mlp_in")]
    gate = ProjectionGate(u, 0.0, "below")
    at15 = Site(15, "resid_post")

    def one(op, gate=None, method=""):
        return Intervention([Edit(at15, op, gate)], method, name)

    return {
        "HF + selective (24 rotations)": Intervention(
            [Edit(s, rotation) for s in sites], "selective", name
        ),
        "HF + selective adaptive (gated)": Intervention(
            [Edit(s, rotation, ProjectionGate(b1, 0.0, "above")) for s in sites], "selective", name
        ),
        "HF + sttp (gated set-projection)": one(SetProjection(u, 3.0), gate, "sttp"),
        "HF + stmp (gated reflection)": one(Reflect(u, 0.0), gate, "stmp"),
        "HF + cdas (set-projection)": one(SetProjection(u, 3.0, -3.0), None, "cdas"),
        "HF + grains (add-rescale)": one(AddRescale(u), None, "grains"),
        "HF + lqr (feedback at 30 blocks)": Intervention(
            [Edit(Site(t, "resid_post"), Feedback(u, 0.01 * b1, 1.0)) for t in range(30)],
            "lqr",
            name,
        ),
        "HF + controller (all 30 layers)": random_controller(g),
        "HF + steer2edit (60 heads, 20 neurons)": random_weight_edit(g),
    }


def random_controller(g: torch.Generator):
    """A controller of the default model's shapes with random weights (the cost is the shapes')."""
    from saesteer.steer.controlled import Controller, ControllerNet

    net = ControllerNet(4 * 576, 256, 31)
    directions = 0.01 * torch.randn(30, 576, generator=g)
    return Controller(net, range(26, 30), range(30), directions, "smollm2-135m-instruct", 30)


def random_weight_edit(g: torch.Generator):
    """A Steer2Edit edit of 2 heads at each of the 30 layers and 1 neuron at each of the first 20."""
    from saesteer.steer.operators import unit
    from saesteer.steer.weight_edit import Architecture, LayerEdit, WeightEdit

    arch = Architecture(n_layers=30, d_model=576, n_heads=9, d_head=64, d_mlp=1536)
    layers = []
    for layer in range(30):
        keys = torch.nn.functional.normalize(torch.randn(2, 64, generator=g), dim=1)
        neurons = (
            torch.tensor([layer * 7 % 1536]) if layer < 20 else torch.zeros(0, dtype=torch.long)
        )
        layers.append(
            LayerEdit(
                layer,
                unit(torch.randn(576, generator=g)),
                torch.tensor([0, 1]),
                0.1 * torch.ones(2),
                keys,
                unit(torch.randn(576, generator=g)),
                neurons,
                0.1 * torch.ones(neurons.numel()),
                torch.ones(neurons.numel()),
            )
        )
    return WeightEdit(layers, "smollm2-135m-instruct", arch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-tl", action="store_true", help="skip the slow TransformerLens run")
    args = parser.parse_args()

    from saesteer.models import load_hf_model, load_model, load_tokenizer
    from saesteer.sae import SAE, SAEConfig
    from saesteer.steer.codes import DenseVector, LatentCode
    from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered

    torch.manual_seed(0)
    hook = "blocks.15.hook_resid_post"
    sae = SAE(
        SAEConfig(
            d_in=576, d_sae=4608, arch="relu", hook_name=hook, model_name="smollm2-135m-instruct"
        )
    )
    v = torch.zeros(4608)
    v[torch.randperm(4608)[:32]] = torch.randn(32)
    yapo = LatentCode(sae, v, method="yapo")
    dense = DenseVector(torch.randn(576), hook, "smollm2-135m-instruct", "bipo")
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    hf = load_hf_model("smollm2-135m-instruct")
    ids, mask = batch_prompt_ids(tokenizer, ["Once upon a time, in a small village by the sea,"])
    n = args.new_tokens

    def plain():
        with torch.inference_mode():
            out = hf.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.eos_token_id,
            )
        return out[:, ids.shape[1] :]

    rows = interleaved_ms_per_token(
        {
            "HF generate (plain)": plain,
            "HF generate + YaPO (32 latents)": lambda: generate_ids_steered(
                hf, ids, mask, yapo, 4.0, max_new_tokens=n
            ),
            "HF generate + dense vector": lambda: generate_ids_steered(
                hf, ids, mask, dense, 4.0, max_new_tokens=n
            ),
            **{
                name: lambda iv=iv: generate_ids_steered(hf, ids, mask, iv, 1.0, max_new_tokens=n)
                for name, iv in method_interventions().items()
            },
        },
        n,
        args.repeats,
    )
    if not args.skip_tl:
        model, _ = load_model("smollm2-135m-instruct")
        rows |= interleaved_ms_per_token(
            {
                "TL generate + YaPO (32 latents)": lambda: generate_ids_steered(
                    model, ids, mask, yapo, 4.0, max_new_tokens=n
                )
            },
            n,
            1,
        )
    base = rows["HF generate (plain)"]
    print(
        f"default model, greedy, {n} new tokens, KV cache, {torch.get_num_threads()} threads, "
        f"best of {args.repeats} (TL: 1 run)"
    )
    print(f"{'path':36s} {'ms/token':>9s} {'× plain HF':>11s}")
    for name, ms in rows.items():
        print(f"{name:36s} {ms:9.1f} {ms / base:11.2f}")


if __name__ == "__main__":
    main()
