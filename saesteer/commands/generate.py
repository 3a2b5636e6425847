"""`saesteer generate`: greedy or sampled text from a model, optionally as a chat turn."""

from __future__ import annotations

import argparse

HELP = "Generate text from a model (the default model unless --model), optionally as a chat reply."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="model name or local folder"
    )
    parser.add_argument("--prompt", required=True, help="the prompt (or the user's chat message)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="tokens to generate (default 48)"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    from saesteer.generation import generate_text
    from saesteer.models import load_model

    model, tokenizer = load_model(args.model, device=args.device)
    text = generate_text(
        model,
        tokenizer,
        args.prompt,
        chat=args.chat,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    print(text)
    return 0
