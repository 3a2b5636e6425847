"""The one output policy (`saesteer.outputs`) and the commands that use it: ownership by marker,
refusal before any work, one writer, a swap with no missing version, umask permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest
from helpers import train_steer_argv

from saesteer.cli import main
from saesteer.outputs import OWNER_FILE, Output, OutputError, check_output, swap_into_place


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _user_folder(path, name="code.json"):
    """A user's folder that happens to hold a file named like one of saesteer's."""
    path.mkdir()
    (path / "log.md").write_text("my notes")
    (path / name).write_text("{}")
    return path


def test_a_folder_holding_code_json_is_not_saesteer_s(tmp_path, capsys):
    """Defect 1: train-steer deleted a folder because it held a file named code.json."""
    folder = _user_folder(tmp_path / "r")
    assert main(train_steer_argv(folder)) == 2
    assert "saesteer did not write" in capsys.readouterr().err
    assert (folder / "log.md").read_text() == "my notes"


def test_audit_refuses_a_folder_holding_report_json_before_loading_anything(tmp_path, capsys):
    folder = _user_folder(tmp_path / "r", "report.json")
    assert main(["audit", "--steer", str(tmp_path / "no-code"), "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "saesteer did not write" in err  # the --out check ran before the code was read
    assert sorted(p.name for p in folder.iterdir()) == ["log.md", "report.json"]


def test_train_sae_refuses_an_sae_lens_folder_and_the_root(tmp_path, capsys):
    """Defect 3: an sae-lens SAE folder was overwritten, and --out / accepted."""
    folder = tmp_path / "saelens"
    folder.mkdir()
    (folder / "cfg.json").write_text('{"d_in": 8}')
    (folder / "sae_weights.safetensors").write_bytes(b"weights")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    argv = ["train-sae", "--cache", str(tmp_path / "missing.h5"), "--tokens", "1024"]
    assert main([*argv, "--out", str(folder)]) == 2
    assert "saesteer did not write" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert main([*argv, "--out", "/"]) == 2
    assert "give a folder of its own" in capsys.readouterr().err
    with pytest.raises(OutputError, match="is a file"):
        check_output(folder / "cfg.json", "sae")


def test_an_output_of_another_kind_is_refused(tmp_path):
    folder = tmp_path / "audit"
    folder.mkdir()
    (folder / OWNER_FILE).write_text(json.dumps({"kind": "audit"}))
    (folder / "report.json").write_text("{}")
    with pytest.raises(OutputError, match="saesteer audit folder, not a steering-code"):
        Output(folder, "steering-code")


def test_train_steer_replaces_its_own_output_and_follows_the_umask(tmp_path, umask_022, capsys):
    out = tmp_path / "code"
    assert main(train_steer_argv(out)) == 0
    first = (out / "code.safetensors").read_bytes()
    assert json.loads((out / OWNER_FILE).read_text())["kind"] == "steering-code"
    assert main(train_steer_argv(out)) == 0  # its own kind: replaced
    assert (out / "code.safetensors").read_bytes() == first
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # not mkdtemp's 0700
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # not mkstemp's 0600


def test_a_second_writer_fails_fast(tmp_path, capsys):
    """Defect 5: two writers on one --out both exited 0."""
    out = tmp_path / "code"
    with Output(out, "steering-code"):
        assert main(train_steer_argv(out)) == 2
    assert "Another saesteer job is writing" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("kernel_exchange", [True, False])
def test_the_swap_replaces_the_old_version(tmp_path, monkeypatch, kernel_exchange):
    """With renameat2's exchange (one step) and without it (two renames, recoverable)."""
    from saesteer import outputs

    if not kernel_exchange:
        monkeypatch.setattr(outputs, "exchange", lambda a, b: False)
    final, new = tmp_path / "out", tmp_path / "new"
    final.mkdir()
    (final / "v").write_text("old")
    new.mkdir()
    (new / "v").write_text("new")
    swap_into_place(new, final)
    assert (final / "v").read_text() == "new" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_kill_between_the_fallback_renames_is_recovered(tmp_path):
    """Where renameat2 cannot exchange, the old folder waits in .NAME.old-*; a kill right after
    that rename leaves no NAME, and the next writer restores the old version."""
    old = tmp_path / ".out.old-abc" / "version"
    old.mkdir(parents=True)
    (old / OWNER_FILE).write_text(json.dumps({"kind": "audit"}))
    (old / "report.json").write_text("{}")
    with Output(tmp_path / "out", "audit"):
        assert (tmp_path / "out" / "report.json").is_file()
    assert not (tmp_path / ".out.old-abc").exists()


def test_stale_temporaries_of_killed_runs_are_removed_and_foreign_ones_kept(tmp_path):
    ours = tmp_path / ".out.tmp-dead1"
    ours.mkdir()
    (ours / OWNER_FILE).write_text(json.dumps({"kind": "audit"}))
    (ours / "half-written").write_text("x")
    theirs = tmp_path / ".out.tmp-user"
    theirs.mkdir()
    (theirs / "keep").write_text("x")
    with Output(tmp_path / "out", "audit") as output, output.replacing() as tmp:
        (tmp / "report.json").write_text("{}")
    assert not ours.exists() and (theirs / "keep").is_file()
    assert (tmp_path / "out" / "report.json").is_file()


def test_a_failed_job_keeps_the_previous_version(tmp_path):
    output = Output(tmp_path / "out", "audit")
    with output, output.replacing() as tmp:
        (tmp / "report.json").write_text("first")
    with pytest.raises(RuntimeError, match="boom"), output, output.replacing() as tmp:
        (tmp / "report.json").write_text("second, half")
        raise RuntimeError("boom")
    assert (tmp_path / "out" / "report.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_cache_refuses_a_user_folder_named_like_its_partial(tmp_path, tiny_model):
    """Defect 4: the cache filled, then deleted, a user's OUT.partial folder."""
    import numpy as np

    from activations_cache import CacheExistsError, write_cache

    model, _ = tiny_model
    partial = tmp_path / "acts.h5.partial"
    partial.mkdir()
    (partial / "thesis.tex").write_text("years of work")
    tokens = np.zeros((2, 8), dtype=np.int64)
    with pytest.raises(CacheExistsError, match="did not make"):
        write_cache(
            tmp_path / "acts.h5", model, tokens, ["blocks.0.hook_resid_post"], progress=False
        )
    assert (partial / "thesis.tex").read_text() == "years of work"


def test_a_second_cache_writer_fails_fast(tmp_path, capsys):
    from saesteer.outputs import writer_lock

    out = tmp_path / "acts.h5"
    argv = ["cache", "--model", "tiny-test", "--hook", "blocks.0.hook_resid_post"]
    with writer_lock(out):
        assert main([*argv, "--tokens", "64", "--no-progress", "--out", str(out)]) == 2
    assert "Another saesteer job is writing" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "acts.h5.partial").exists()


def test_features_refuses_a_folder_holding_the_user_s_config_json(tmp_path, capsys):
    """Defect 5: `features --out` overwrote a user's config.json."""
    from helpers import make_sae

    from saesteer.sae.io import save_sae

    sae_dir = save_sae(make_sae("relu"), tmp_path / "sae")
    folder = _user_folder(tmp_path / "mine", "config.json")
    argv = ["features", "--sae", str(sae_dir), "--cache", str(tmp_path / "none.h5")]
    assert main([*argv, "--out", str(folder)]) == 2
    assert "saesteer did not write" in capsys.readouterr().err
    assert (folder / "config.json").read_text() == "{}"
