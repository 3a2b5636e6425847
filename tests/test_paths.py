"""Atomic output folders never delete what saesteer did not write."""

from __future__ import annotations

import pytest

from saesteer.paths import atomic_directory


def test_atomic_directory_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("mine")
    with (
        pytest.raises(FileExistsError, match="not saesteer's output"),
        atomic_directory(tmp_path, marker="report.json") as tmp,
    ):
        (tmp / "report.json").write_text("{}")
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_atomic_directory_replaces_its_own_kind_and_cleans_up_on_error(tmp_path):
    out = tmp_path / "audit"
    with atomic_directory(out, marker="report.json") as tmp:
        (tmp / "report.json").write_text("1")
    with atomic_directory(out, marker="report.json") as tmp:
        (tmp / "report.json").write_text("2")
    assert (out / "report.json").read_text() == "2"
    with pytest.raises(RuntimeError), atomic_directory(out, marker="report.json") as tmp:
        (tmp / "report.json").write_text("3")
        raise RuntimeError("killed midway")
    assert (out / "report.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["audit"]
