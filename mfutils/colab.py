"""Colab: every notebook's first code cell, and the README's "Open in Colab" links.

    python -m mfutils.colab            # rewrite the first cell of every notebook (and its pair)
    python -m mfutils.colab --check    # exit 1 if a notebook's cell is not the current one

The series' repository is configured in one place, ``[project.urls] Repository`` of
``pyproject.toml`` (a fork changes that line and runs this module and
``benchmarks/readme.py``). From it come the Colab links of the README's notebook table and
the first code cell of every notebook. Opened in Colab, where ``mfutils`` is missing, that
cell clones the repository, installs it with Colab's own torch kept (a constraint
``torch==<the installed version>``: pip may not swap the CUDA build for another wheel) and
moves into the clone's ``notebooks/`` folder, where the notebooks find the benchmark results
they read. Anywhere ``mfutils`` is importable the cell does nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BRANCH = "main"
TAG = "colab"
TAGS = [TAG, "remove-cell"]  # remove-cell: the book (myst-nb) leaves the cell out

_CELL = """\
# Colab: clone the series and install mfutils when it is missing (elsewhere: nothing happens)
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("mfutils") is None and "google.colab" in sys.modules:
    clone, url = "/content/{name}", "https://github.com/{slug}"
    if not os.path.isdir(clone):
        git = ["git", "clone", "-q", "--depth", "1", "--branch", "{branch}"]
        subprocess.run([*git, url, clone], check=True)
    import torch  # Colab's CUDA build: the constraint keeps pip from replacing it

    with open("/tmp/keep-torch.txt", "w") as pins:
        pins.write(f"torch=={{torch.__version__}}\\n")
    pip = [sys.executable, "-m", "pip", "install", "-q", "-c", "/tmp/keep-torch.txt"]
    subprocess.run([*pip, "-e", f"{{clone}}[serve]"], check=True)
    sys.path.insert(0, clone)  # the editable install's path hook loads at the next start
    os.chdir(f"{{clone}}/notebooks")"""


def repository(pyproject: str | Path = ROOT / "pyproject.toml") -> str:
    """The series' GitHub ``owner/name``, from ``[project.urls] Repository``.

    Raises
    ------
    ValueError
        The file has no such URL, or it is not a ``https://github.com/owner/name`` address.
    """
    urls = tomllib.loads(Path(pyproject).read_text())["project"].get("urls", {})
    url = urls.get("Repository", "")
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?", url)
    if match is None:
        raise ValueError(
            f"{pyproject}: [project.urls] Repository = {url!r} is not a "
            "https://github.com/owner/name address"
        )
    return match.group(1)


def setup_cell(slug: str, *, branch: str = BRANCH) -> str:
    """The source of every notebook's first code cell for repository ``slug``."""
    return _CELL.format(slug=slug, name=slug.split("/")[1], branch=branch)


def colab_url(notebook: str, slug: str, *, branch: str = BRANCH) -> str:
    """Colab's address of ``notebooks/<notebook>.ipynb`` in repository ``slug``."""
    stem = Path(notebook).stem
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{stem}.ipynb"


def with_setup_cell(notebook, source: str):
    """``notebook`` (nbformat) with ``source`` as its first code cell, tagged :data:`TAGS`:
    replaced where a ``colab`` cell exists, else inserted before the first code cell."""
    cells = notebook.cells
    tagged = [k for k, c in enumerate(cells) if TAG in c.metadata.get("tags", [])]
    if tagged:
        cells[tagged[0]].source = source
        cells[tagged[0]].metadata["tags"] = list(TAGS)
        return notebook
    first = next(k for k, c in enumerate(cells) if c.cell_type == "code")
    cell = jupytext.reads(f"# %%\n{source}\n", fmt="py:percent").cells[0]
    cell.metadata = {"tags": list(TAGS)}
    cells.insert(first, cell)
    return notebook


def stale_notebooks(slug: str, folder: str | Path = NOTEBOOKS) -> list[str]:
    """The notebooks of ``folder`` whose first code cell is not :func:`setup_cell` (``slug``)."""
    want = (setup_cell(slug).strip(), TAGS)
    stale = []
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        first = next(c for c in jupytext.read(path).cells if c.cell_type == "code")
        if (first.source.strip(), first.metadata.get("tags")) != want:
            stale.append(path.name)
    return stale


def write_setup_cells(slug: str, folder: str | Path = NOTEBOOKS) -> list[str]:
    """Give every notebook of ``folder`` and its py:percent pair the current first cell."""
    written = []
    for name in stale_notebooks(slug, folder):
        path = Path(folder) / name
        notebook = with_setup_cell(jupytext.read(path), setup_cell(slug))
        jupytext.write(notebook, path)
        jupytext.write(notebook, path.with_suffix(".py"), fmt="py:percent")
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if stale")
    args = parser.parse_args(argv)
    slug = repository()
    if args.check:
        stale = stale_notebooks(slug)
        if stale:
            print(f"stale Colab cell in {stale}; run python -m mfutils.colab", file=sys.stderr)
        return int(bool(stale))
    for name in write_setup_cells(slug):
        print(f"wrote {name} and its .py pair")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
