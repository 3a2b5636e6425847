"""`saesteer generate`: text from a model, optionally as a chat reply and steered by a code."""

from __future__ import annotations

import argparse

HELP = "Generate text (optionally a chat reply, optionally steered with --steer DIR --alpha A)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from saesteer.steer.asteer.options import add_auto_arguments
    from saesteer.steer.options import add_steering_arguments

    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or folder")
    parser.add_argument(
        "--prompt",
        required=True,
        action="append",
        help="the prompt (or the user's chat message); repeat for a batch",
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="tokens to generate (default 48)"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--backend",
        choices=["auto", "hf", "transformer_lens"],
        default="auto",
        help="auto: the Hugging Face model on the same weights where there is one (≈4× faster "
        "on CPU than TransformerLens generate), else TransformerLens",
    )
    add_steering_arguments(parser)
    add_auto_arguments(parser)


def load_generation_model(name: str, backend: str, device: str):
    """(model, tokenizer): HF for the default model and local folders unless told otherwise."""
    from saesteer.models import has_hf_weights, load_hf_model, load_model, load_tokenizer

    has_hf = has_hf_weights(name)
    if backend == "hf" or (backend == "auto" and has_hf):
        if not has_hf:
            raise ValueError(
                f"--backend hf needs the default model or a local HF folder, not {name!r}."
            )
        return load_hf_model(name, device=device), load_tokenizer(name)
    return load_model(name, device=device)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad options before a model is loaded (the context length is checked when generating)."""
    from saesteer.steer.generate import check_device, check_max_new_tokens, check_temperature
    from saesteer.steer.hooks import check_alpha

    if getattr(args, "alpha", None) == "auto":
        from saesteer.steer.asteer.options import parse_grid

        if not args.steer:
            raise ValueError("--alpha auto chooses a strength for a code: pass --steer DIR too.")
        if args.steer_positions != "all":
            raise ValueError("--alpha auto predicts for codes steering all positions.")
        parse_grid(args.alpha_grid)
    else:
        check_alpha(args.alpha, "--alpha")
    check_temperature(args.temperature, "--temperature")
    check_max_new_tokens(args.max_new_tokens, "--max-new-tokens")
    check_device(args.device)


def run(args: argparse.Namespace) -> int:
    from saesteer.steer.generate import apply_steering_from_args, generate_steered

    check_arguments(args)
    model, tokenizer = load_generation_model(args.model, args.backend, args.device)
    if args.alpha == "auto":
        return _run_auto(args, model, tokenizer)
    with apply_steering_from_args(model, args):
        texts = generate_steered(
            model,
            tokenizer,
            args.prompt,
            chat=args.chat,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
    for prompt, text in zip(args.prompt, texts, strict=True):
        print(text if len(args.prompt) == 1 else f"### {prompt}\n{text}\n")
    return 0


def _run_auto(args: argparse.Namespace, model, tokenizer) -> int:
    """--alpha auto: each prompt at the grid α of highest predicted P(success)."""
    from saesteer.steer.asteer.auto import generate_auto, load_strength_model, parse_grid
    from saesteer.steer.io import load_code

    sae = None
    if args.sae:
        from saesteer.sae.io import load_sae

        sae = load_sae(args.sae)
    code = load_code(args.steer, sae=sae)
    predictor = load_strength_model(args.strength_model, model, code.model_name)
    texts, alphas = generate_auto(
        model,
        tokenizer,
        code,
        args.prompt,
        predictor,
        parse_grid(args.alpha_grid),
        chat=args.chat,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    for prompt, text, alpha in zip(args.prompt, texts, alphas, strict=True):
        print(f"### α = {alpha:g}" + (f" · {prompt}" if len(args.prompt) > 1 else ""))
        print(text + ("\n" if len(args.prompt) > 1 else ""))
    return 0
