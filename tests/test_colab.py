"""Colab: every notebook starts with the install cell of the configured repository, and that
cell installs only on Colab when mfutils is missing (both branches run with the import mocked)."""

import builtins
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from mfutils import colab

ROOT = Path(__file__).resolve().parents[1]


def test_the_repository_is_configured_once_in_pyproject(tmp_path):
    slug = colab.repository()
    assert slug.count("/") == 1
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\nname = "x"\n[project.urls]\nRepository = "https://example.org/x"\n')
    with pytest.raises(ValueError, match="Repository"):
        colab.repository(bad)


def test_every_notebook_starts_with_the_current_cell():
    assert colab.stale_notebooks(colab.repository()) == []


def test_readme_links_every_notebook_to_colab():
    readme = (ROOT / "README.md").read_text()
    slug = colab.repository()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert colab.colab_url(path.name, slug) in readme, path.name


def test_the_cell_is_inserted_once_and_then_replaced():
    import jupytext

    notebook = jupytext.reads("# %% [markdown]\n# # title\n\n# %%\nx = 1\n", fmt="py:percent")
    colab.with_setup_cell(notebook, colab.setup_cell("a/b"))
    colab.with_setup_cell(notebook, colab.setup_cell("c/d"))
    kinds = [(c.cell_type, c.metadata.get("tags")) for c in notebook.cells]
    assert kinds == [("markdown", None), ("code", colab.TAGS), ("code", None)]
    assert "https://github.com/c/d" in notebook.cells[1].source


def _run_cell(monkeypatch, tmp_path, *, installed: bool, on_colab: bool) -> list:
    """Execute the cell with mfutils' presence and Colab mocked; return the commands run."""
    calls: list = []
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (find_spec(name, *a) if installed else None)
            if name == "mfutils"
            else find_spec(name, *a)
        ),
    )
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(("run", cmd)))
    monkeypatch.setattr("os.chdir", lambda path: calls.append(("chdir", path)))
    monkeypatch.setattr("os.path.isdir", lambda path: False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    pins = tmp_path / "pins.txt"
    real_open = builtins.open
    monkeypatch.setattr(
        builtins,
        "open",
        lambda file, *a, **kw: real_open(pins if file == "/tmp/keep-torch.txt" else file, *a, **kw),
    )
    exec(colab.setup_cell("owner/series"), {"__name__": "__main__"})
    if pins.exists():
        calls.append(("pins", pins.read_text()))
    return calls


def test_the_cell_does_nothing_where_mfutils_is_installed(monkeypatch, tmp_path):
    assert _run_cell(monkeypatch, tmp_path, installed=True, on_colab=True) == []
    assert _run_cell(monkeypatch, tmp_path, installed=True, on_colab=False) == []


def test_the_cell_does_nothing_outside_colab(monkeypatch, tmp_path):
    assert _run_cell(monkeypatch, tmp_path, installed=False, on_colab=False) == []


def test_on_colab_the_cell_clones_installs_keeping_torch_and_enters_the_notebooks(
    monkeypatch, tmp_path
):
    calls = _run_cell(monkeypatch, tmp_path, installed=False, on_colab=True)
    (_, clone), (_, pip), (_, chdir), (_, pins) = calls
    assert clone[:2] == ["git", "clone"] and clone[-2:] == [
        "https://github.com/owner/series",
        "/content/series",
    ]
    assert pip[:4] == [sys.executable, "-m", "pip", "install"]
    assert pip[-2:] == ["-e", "/content/series[serve]"]
    assert pip[pip.index("-c") + 1] == "/tmp/keep-torch.txt"
    assert pins == f"torch=={torch.__version__}\n"  # Colab's own build stays
    assert chdir == "/content/series/notebooks"
