"""`saesteer demo`: the main job on the packaged default model, end to end, offline."""

from __future__ import annotations

import argparse

HELP = "Run the demo pipeline on the default model and corpus and print where each output is."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or folder")
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")


def run(args: argparse.Namespace) -> int:
    import time

    from saesteer.generation import generate_text
    from saesteer.models import load_model

    start = time.time()
    model, tokenizer = load_model(args.model)
    hooks = list(model.hook_dict)
    print(
        f"model  {args.model}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, "
        f"{len(hooks)} hook points, e.g."
    )
    for name in [h for h in hooks if h.startswith("blocks.0.hook_")] + ["…", hooks[-1]]:
        print(f"         {name}")
    question = "What is the capital of France?"
    answer = generate_text(model, tokenizer, question, chat=True, max_new_tokens=32)
    print(f"chat   user: {question}\n       assistant: {answer}")
    print(f"done in {time.time() - start:.0f} s")
    return 0
