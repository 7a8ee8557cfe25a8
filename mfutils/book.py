"""The series as a static web book, built by Sphinx + myst-nb from the executed notebooks.

    python -m mfutils.book                           # runs/latest -> runs/latest/book/
    python -m mfutils.book --run runs/latest --out site/

The book shows exactly the outputs of the last ``make run``: myst-nb renders each executed
notebook with its stored outputs (nothing is re-executed), in the series' order, after a
landing page (the README: the story and the result tables) and before the run's results
summary (``results.md``). Math is typeset by MathJax shipped with the book
(``sphinx-mathjax-offline``), so the pages work without a network.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_CONF = """\
project = "Matrix factorization, a notebook series"
extensions = ["myst_nb", "sphinx-mathjax-offline"]
nb_execution_mode = "off"  # the notebooks were executed by `make run`
myst_enable_extensions = ["dollarmath", "amsmath"]
html_theme = "alabaster"
html_title = project
html_theme_options = {"page_width": "1100px"}
exclude_patterns = ["_build"]
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
"""


def build_book(
    run: str | Path = "runs/latest",
    out: str | Path | None = None,
    *,
    readme: str | Path = README,
    quiet: bool = True,
) -> Path:
    """Build the book of the executed notebooks in ``run/notebooks``; return its index page.

    Parameters
    ----------
    run : path
        A ``make run`` output folder: ``notebooks/NN_*.ipynb`` executed, ``results.md``.
    out : path, optional
        Where the HTML goes; default ``run/book``. Replaced if it exists.
    readme : path
        The landing page's Markdown.

    Raises
    ------
    FileNotFoundError
        ``run`` holds no executed notebooks (run ``make run`` first).
    RuntimeError
        Sphinx failed (its messages are printed above).
    """
    from sphinx.cmd.build import build_main  # the `book` extra, needed by this command only

    run = Path(run)
    out = run / "book" if out is None else Path(out)
    notebooks = sorted((run / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(
            f"{run / 'notebooks'} holds no executed NN_*.ipynb notebooks: run `make run` first"
        )
    with tempfile.TemporaryDirectory(prefix="mfutils-book-") as tmp:
        source = Path(tmp)
        (source / "conf.py").write_text(_CONF)
        (source / "notebooks").mkdir()
        for path in notebooks:
            shutil.copy2(path, source / "notebooks" / path.name)
        pages = [f"notebooks/{path.stem}" for path in notebooks]
        results = run / "results.md"
        if results.is_file():
            (source / "results.md").write_text(
                "# Results of the run\n\n" + results.read_text(encoding="utf-8")
            )
            pages.append("results")
        toc = "\n".join(
            ["", "```{toctree}", ":maxdepth: 1", ":caption: The series", "", *pages, "```", ""]
        )
        (source / "index.md").write_text(Path(readme).read_text(encoding="utf-8") + toc)
        if out.exists():
            shutil.rmtree(out)
        status = build_main(["-b", "html", *(["-q"] if quiet else []), str(source), str(out)])
    if status:
        raise RuntimeError(f"sphinx-build failed with status {status} (messages above)")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run",
        type=Path,
        default=Path("runs/latest"),
        help="a `make run` output folder (default runs/latest)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where the HTML goes (default RUN/book)"
    )
    args = parser.parse_args(argv)
    try:
        index = build_book(args.run, args.out)
    except FileNotFoundError as err:
        parser.error(str(err))
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
