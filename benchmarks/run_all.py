"""Run every benchmark once, one after another (`make bench`), and print their tables.

Each script prints ratios against its peer plus absolute numbers; copy what you measured, with the
machine, into benchmarks/RESULTS.md. Run on an otherwise idle machine: the CPU numbers move with load.
The kernel benchmark runs on CUDA when a GPU is present, else its CPU part.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RUNS = [
    ["cache_throughput.py", "--tokens", "16384"],
    ["linear_backends.py"],
    ["cache_fp16_sae.py"],
    ["sae_training.py"],
    ["generation_speed.py", "--skip-tl"],
    ["steering.py"],
    ["kernels.py", "--device", "cuda" if torch.cuda.is_available() else "cpu"],
]


def main() -> int:
    failed = []
    for script, *args in RUNS:
        print(f"\n===== {script} {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script), *args]).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
