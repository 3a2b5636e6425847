"""`saesteer bench-steer`: compare steering methods the way the literature does, in one grid.

config.py    BenchSteerConfig (the CLI flags, config files and the Python API)
methods.py   method specs: train-steer methods, aliases, NAME:key=value, code:DIR
evaluate.py  one cell: steered generations and their scores
capability.py multiple-choice accuracy and held-out Brown perplexity under steering
strength.py  --alphas auto (bracket and bisect the coherence budget)
metrics.py   the formulas (coherence, side effects, combined score, bootstrap intervals)
summary.py   cells → leaderboard at the coherence budget
store.py     the output folder: ownership, lock, resumable cells
report.py, plot.py  report.html and PNGs
job.py       run_bench(config)

from saesteer.bench import BenchSteerConfig, run_bench
result = run_bench(BenchSteerConfig(out="runs/bench", methods=["mean-diff", "yapo"]))
"""

from saesteer.bench.config import BenchSteerConfig


def run_bench(config: BenchSteerConfig, model=None, tokenizer=None):
    """Run (or continue) the benchmark grid; see `saesteer.bench.job.run_bench`."""
    from saesteer.bench.job import run_bench as run

    return run(config, model, tokenizer)


__all__ = ["BenchSteerConfig", "run_bench"]
