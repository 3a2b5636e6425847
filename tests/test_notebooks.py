"""The three notebooks run top to bottom on the tiny model (one shared output folder, in order)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
ORDER = ["01_feature_discovery", "02_train_steering_code", "03_steering_audit"]


def test_notebooks_are_committed_without_outputs():
    for name in ORDER:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        assert "SAESTEER_NOTEBOOK_MODEL" in code[0].source


def test_notebooks_execute_in_order_on_the_tiny_model(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("SAESTEER_NOTEBOOK_MODEL", "tiny-test")
    monkeypatch.setenv("SAESTEER_NOTEBOOK_OUT", str(tmp_path / "out"))
    for name in ORDER:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        client = NotebookClient(
            notebook,
            kernel_name="python3",
            timeout=300,
            resources={"metadata": {"path": str(tmp_path)}},
        )
        try:
            client.execute()
        finally:
            nbformat.write(notebook, tmp_path / f"{name}.executed.ipynb")
    assert (tmp_path / "out" / "features" / "dashboard" / "index.html").is_file()
    assert (tmp_path / "out" / "code_yapo" / "code.json").is_file()
    assert (tmp_path / "out" / "audit" / "report.html").is_file()
    if not notebook.cells[-1].outputs:
        pytest.fail("the last cell printed nothing")
