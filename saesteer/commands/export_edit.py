"""`saesteer export-edit`: write a Steer2Edit weight edit into a plain Hugging Face model folder."""

from __future__ import annotations

import argparse

HELP = (
    "Export a steer2edit weight edit (from `train-steer --method steer2edit --out EDIT_DIR`) as an "
    "edited Hugging Face model folder that transformers.AutoModelForCausalLM.from_pretrained loads."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("edit", metavar="EDIT_DIR", help="the weight-edit folder (code.json)")
    parser.add_argument(
        "--out",
        required=True,
        metavar="HF_DIR",
        help="output folder (config.json, model.safetensors, tokenizer files); an existing "
        "folder is replaced only if it is an earlier export, a foreign non-empty one is refused",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="edit strength baked into the weights: 1 = the fitted edit (default), 0 = the "
        "unedited model, negative = the opposite edit",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="base model name or folder (default: the one the edit was made for; it must have "
        "the edit's architecture)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="dtype of the exported weights (default float32)",
    )


def run(args: argparse.Namespace) -> int:
    from saesteer.outputs import check_output
    from saesteer.steer.hooks import check_alpha
    from saesteer.steer.io import load_code
    from saesteer.steer.weight_edit import EXPORT_KIND, export_edited_model

    check_alpha(args.alpha, "--alpha")
    check_output(args.out, EXPORT_KIND)  # refuse a foreign folder before loading anything
    edit = load_code(args.edit)
    if not getattr(edit, "weight_edit", False):
        raise ValueError(
            f"{args.edit} is a {getattr(edit, 'method', '?')} code, not a weight edit; only "
            "`train-steer --method steer2edit` folders can be exported as a model."
        )
    model = tokenizer = None
    if args.model is not None:
        from saesteer.models import has_hf_weights, load_hf_model, load_model, load_tokenizer

        if has_hf_weights(args.model):
            model, tokenizer = (
                load_hf_model(args.model, dtype=args.dtype),
                load_tokenizer(args.model),
            )
        else:
            model, tokenizer = load_model(args.model, dtype=args.dtype)
    out = export_edited_model(edit, args.out, args.alpha, model, tokenizer, args.dtype)
    print(
        f"{edit.method} edit ({edit.n_heads_edited} heads, {edit.n_neurons_edited} neurons) of "
        f"{edit.model_name} at α={args.alpha:g} → {out}"
    )
    return 0
