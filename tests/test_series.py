"""The series runner: figures in the executed notebooks, whatever backend the shell exports."""

import os

import nbformat
import pytest

from mfutils.series import inline_figures, missing_figures

papermill = pytest.importorskip("papermill")


def _notebook(path, *cells):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)
    return path


def test_drawing_cells_carry_images_under_a_headless_agg_shell(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # what the Makefile exports for the tests
    source = _notebook(
        tmp_path / "in.ipynb",
        "import pandas as pd",
        "pd.Series([3, 1, 2]).plot()",
        "if False:\n    pd.Series([1]).plot()",
    )
    out = tmp_path / "out.ipynb"
    with inline_figures():
        papermill.execute_notebook(str(source), str(out), kernel_name="python3", progress_bar=False)
    assert missing_figures(out) == []
    assert os.environ["MPLBACKEND"] == "Agg"  # restored for the rest of the process
    papermill.execute_notebook(
        str(source), str(out), kernel_name="python3", progress_bar=False
    )  # Agg: the plot is only "<Axes: >" text
    assert missing_figures(out) == [1]
