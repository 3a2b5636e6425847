"""A-LQR's claim at our scale: does the closed loop track its setpoints better than open-loop
addition of the same size? On the default model, per behaviour: fit `lqr` (Jacobians timed), then
on the validation pairs (prompt + chosen completion, teacher-forced) the tracking error
|v̂_t·x_t − β_t| per layer, unsteered, under feedback at α, and under a constant push c_t·v̂_t with
c_t = the feedback's mean ‖u_t‖ at that layer (equal mean edit size, layer by layer). Also the
local-linearity check behind the method: the relative error of the first-order prediction
‖f(x + δ) − f(x) − Ā δ‖ / ‖f(x + δ) − f(x)‖ for δ = the control's size along v̂.

    python benchmarks/lqr_tracking.py --behaviours formality topic-ocean --alphas 0.5 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from machine import cpu_name

from saesteer.models import load_model
from saesteer.steer.batching import tokenize_pairs
from saesteer.steer.behaviours import BEHAVIOURS, training_data
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.jacobians import mean_jacobians
from saesteer.steer.methods import lqr


def texts_of(tokenizer, pairs, chat: bool) -> list[torch.Tensor]:
    """Each validation pair's prompt + chosen completion as a 1-D id tensor (no padding)."""
    tokens = tokenize_pairs(tokenizer, pairs, chat)
    rows = tokens.input_ids[0::2]
    lengths = (tokens.target_mask[0::2].nonzero()[:, 1]).split(
        tokens.target_mask[0::2].sum(1).long().tolist()
    )
    return [row[: int(last[-1]) + 1] for row, last in zip(rows, lengths, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--behaviours", nargs="+", default=["formality", "topic-ocean"])
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model("smollm2-135m-instruct")
    print(
        f"# {cpu_name()}, {args.threads} threads, torch {torch.__version__}, {platform.python_version()}"
    )
    rows = []
    for name in args.behaviours:
        chat = BEHAVIOURS[name].chat
        train, val = training_data(name)
        config = TrainSteerConfig(pairs=name, method="lqr", chat=chat, progress=False)
        started = time.time()
        fitted = lqr.fit(model, tokenizer, train, config)
        fit_seconds = time.time() - started
        texts = texts_of(tokenizer, val, chat)
        plain = lqr.tracking_errors(model, fitted, texts, 0.0)
        print(
            f"\n## {name}: fit {fit_seconds:.0f} s (Jacobians {fitted.meta['jacobian_seconds']:.0f} s"
            f" over {fitted.meta['n_jacobian_prompts']} prompts), {len(texts)} validation texts"
        )
        print(
            "| α | mean ‖u‖ | error unsteered | error closed loop | error open loop | closed / open |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for alpha in args.alphas:
            closed = lqr.tracking_errors(model, fitted, texts, alpha)
            sizes = {t: r["edit_norm"] for t, r in closed.items()}
            opened = lqr.tracking_errors(model, fitted, texts, 1.0, lqr.open_loop(fitted, sizes))
            layers = sorted(closed)[1:]  # x_0 is the embedding: no control reaches it
            mean = {
                key: sum(table[t]["tracking_error"] for t in layers) / len(layers)
                for key, table in (("plain", plain), ("closed", closed), ("open", opened))
            }
            size = sum(sizes[t] for t in sorted(closed)) / len(closed)
            print(
                f"| {alpha:g} | {size:.3f} | {mean['plain']:.3f} | {mean['closed']:.3f} | "
                f"{mean['open']:.3f} | {mean['closed'] / mean['open']:.2f} |"
            )
            rows.append(
                {
                    "behaviour": name,
                    "alpha": alpha,
                    "mean_edit_norm": size,
                    "per_layer": {
                        t: {"plain": plain[t], "closed": closed[t], "open": opened[t]}
                        for t in sorted(closed)
                    },
                    **{f"mean_error_{k}": v for k, v in mean.items()},
                    "fit_seconds": fit_seconds,
                    "jacobian_seconds": fitted.meta["jacobian_seconds"],
                }
            )
        prompts = lqr.jacobian_prompts(tokenizer, train, chat, config.lqr_prompts)
        span = list(range(fitted.edits[0].site.layer, fitted.edits[-1].site.layer + 1))
        jacobians, _ = mean_jacobians(model, prompts, span)  # the fit's file: read, not rerun
        linearity = lqr.linearity_errors(model, fitted, texts[:4], jacobians, sizes)
        bands = [sorted(linearity)[i : i + 10] for i in range(0, len(linearity), 10)]
        print(
            "local linearity: median ‖f(x+δ) − f(x) − Āδ‖ / ‖f(x+δ) − f(x)‖ at the last α's "
            "control size, per band of 10 layers: "
            + ", ".join(
                f"{b[0]}–{b[-1]}: {sum(linearity[t] for t in b) / len(b):.2f}" for b in bands
            )
        )
        rows[-1]["linearity"] = linearity
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
