"""`saesteer bench-steer`: behaviours × methods × seeds × strengths → results.json + report.html."""

from __future__ import annotations

import argparse

HELP = "Compare steering methods: success against coherence, drift and capability, per behaviour."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from saesteer.bench.config import BenchSteerConfig
    from saesteer.config import add_config_arguments

    add_config_arguments(parser, BenchSteerConfig)
    parser.epilog = (
        "Example: saesteer bench-steer --behaviours sentiment topic-food --methods mean-diff bipo "
        "yapo --seeds 2 --out runs/bench   (rerun the same command to continue a killed run)."
    )


def summary_lines(report: dict) -> list[str]:
    """The per-behaviour table printed at the end of a run (a KL of None: "–", not measured)."""
    budget = report["config"]["budget"]
    lines = []
    for name, entry in report["behaviours"].items():
        width = max(22, *(len(m) for m in entry["methods"]))
        lines += [
            f"\n{name} (best α within {budget:g}× unsteered perplexity):",
            f"  {'method':<{width}} {'α':>12} {'success':>8} {'ppl':>7} {'KL':>7} {'H':>5}  vs leader",
        ]
        for method, data in entry["methods"].items():
            best = data["best"]
            if best is None:
                lines.append(f"  {method:<{width}} {'none within the budget':>30}")
                continue
            kl = "–" if best["kl"] is None else f"{best['kl']:.3f}"
            alphas = "/".join(f"{a:g}" if a is not None else "–" for a in data["best_alpha"])
            versus = (
                "leader"
                if method == entry["leader"]
                else ("worse" if data["distinguishable"] else "not distinguishable")
            )
            lines.append(
                f"  {method:<{width}} {alphas:>12} {best['success_rate']:>8.2f} {best['ppl']:>7.2f} "
                f"{kl:>7} {best['combined']:>5.2f}  {versus}"
            )
            for info in data.get("codes", {}).values():  # --alphas predicted
                found = info.get("strength_search") or {}
                if "grid_search" in found:
                    mine, full = found["search"], found["grid_search"]
                    lines.append(
                        f"    predicted α {found['decoded']}: success {mine['success_rate']:.2f} "
                        f"in {mine['tokens']} tokens; grid {full['success_rate']:.2f} in "
                        f"{full['tokens']} ({found['tokens_saved']:.0%} saved)"
                    )
    return lines


def run(args: argparse.Namespace) -> int:
    from saesteer.bench import BenchSteerConfig, run_bench
    from saesteer.config import config_from_args

    result = run_bench(config_from_args(BenchSteerConfig, args))
    print("\n".join(summary_lines(result.report)))
    seconds = result.report["seconds"]
    print(
        f"\nwall {seconds['wall']:.0f} s · "
        + " · ".join(
            f"{k} {seconds[k]:.0f} s" for k in ("fit", "generation", "scoring", "capability")
        )
    )
    for failure in result.failures:
        print(
            f"failed: {failure['behaviour']} {failure['method']} seed {failure['seed']}: {failure['error']}"
        )
    print(f"report {result.html}\n       {result.results}")
    return 1 if result.failures else 0
