"""`saesteer audit`: sweep a code's or intervention's strength; write report.html + report.json."""

from __future__ import annotations

import argparse

HELP = (
    "Audit a steering code or intervention over a sweep of strengths: what it edits, its effect, "
    "success and cost (HTML + JSON)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from saesteer.audit.config import AuditConfig
    from saesteer.config import add_config_arguments

    add_config_arguments(parser, AuditConfig)
    parser.epilog = (
        "Example: saesteer audit --steer codes/sentiment --alphas -2 1 2 4 --out audit/  "
        "(model, SAE and behaviour default to what the code was trained with)."
    )


def run(args: argparse.Namespace) -> int:
    from saesteer.audit.config import AuditConfig
    from saesteer.audit.run import run_audit
    from saesteer.config import config_from_args

    result = run_audit(config_from_args(AuditConfig, args))
    print(f"{'α':>6} {'success':>8} {'Δlog-odds':>10} {'perplexity':>10} {'KL drift':>9}")
    for p in result.report["sweep"]:
        ppl = p["perplexity"] if p["perplexity"] is not None else float("nan")
        print(
            f"{p['alpha']:>6g} {p['success_rate']:>8.2f} {p['log_odds_change']:>10.3f} "
            f"{ppl:>10.2f} {p['kl_neutral']:>9.4f}"
        )
    print(f"report {result.html}\n       {result.json}\n       {result.curve}")
    return 0
