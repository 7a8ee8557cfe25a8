"""Run the whole notebook series headlessly with papermill and write the results table.

    python -m mfutils.series                      # every notebook, default parameters
    python -m mfutils.series --only 01 02         # a subset, by number prefix
    python -m mfutils.series -p device cpu        # override a parameter in every notebook

Executed notebooks go to ``<output>/notebooks/``, each notebook's numbers to
``<output>/results/<notebook>.csv`` and the joined table to ``<output>/results.csv`` and
``<output>/results.md``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from mfutils.results import collect, to_markdown

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
# The kernels draw with IPython's inline backend: a headless MPLBACKEND=Agg (the Makefile's,
# CI's) inherited by the kernels would leave every plot as "<Axes: ...>" text.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# A top-level statement that draws (an indented one may sit in a branch that did not run).
_DRAWS = re.compile(
    r"^\S.*?(\bplotting\.plot_\w+\(|\bsns\.\w*(plot|heatmap|map)\w*\(|"
    r"\bplt\.(subplots|figure|imshow)\(|\.plot\()",
    re.MULTILINE,
)
_IMAGES = ("image/png", "image/svg+xml", "image/jpeg")


@contextlib.contextmanager
def inline_figures() -> Iterator[None]:
    """Kernels started inside draw inline (``MPLBACKEND`` set for them, then restored)."""
    previous = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = previous


def missing_figures(notebook: str | Path) -> list[int]:
    """Indices of the code cells of an executed notebook that draw but hold no image output.

    A cell draws when a top-level line calls a plotting function (``plotting.plot_*``,
    seaborn's ``*plot``, ``plt.subplots``, ``DataFrame.plot``).
    """
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    missing = []
    for index, cell in enumerate(cells):
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") != "code" or not _DRAWS.search(source):
            continue
        if not any(
            kind in output.get("data", {}) for output in cell.get("outputs", ()) for kind in _IMAGES
        ):
            missing.append(index)
    return missing


def _parse_value(text: str) -> object:
    """Parameter values as Python literals when they parse (``3``, ``[1, 2]``), else strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_series(
    *, notebooks: list[Path], output: Path, parameters: dict[str, object], kernel: str = "python3"
) -> int:
    """Execute ``notebooks`` in order; return the number that failed."""
    import papermill

    executed_dir, results_dir = output / "notebooks", output / "results"
    executed_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in tqdm(notebooks, desc="notebooks", unit="nb"):
        start = time.perf_counter()
        try:
            with inline_figures():
                papermill.execute_notebook(
                    str(path),
                    str(executed_dir / path.name),
                    kernel_name=kernel,
                    parameters={**parameters, "results_dir": str(results_dir.resolve())},
                    cwd=str(path.parent),
                    progress_bar=False,
                )
            status = "ok"
            if blank := missing_figures(executed_dir / path.name):
                status += f" (no image in the drawing cells {blank})"
        except papermill.PapermillExecutionError as err:
            failures.append(path.name)
            status = f"FAILED: {err.ename}: {err.evalue}"
        tqdm.write(f"{path.name}: {status} ({time.perf_counter() - start:.0f} s)")
    table = collect(results_dir, out_dir=output)
    print(to_markdown(table))
    print(f"\nwrote {output / 'results.csv'} and {output / 'results.md'}")
    if failures:
        print(
            f"{len(failures)} notebook(s) failed: {', '.join(failures)}; the executed copies "
            f"in {executed_dir} show the failing cell",
            file=sys.stderr,
        )
    return len(failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--notebooks",
        type=Path,
        default=NOTEBOOK_DIR,
        help="folder of NN_topic.ipynb notebooks (default: the repo's)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("runs/latest"),
        help="where executed notebooks and results go (default: runs/latest)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="NN",
        help="run only notebooks whose name starts with these prefixes",
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a parameter in every notebook",
    )
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    args = parser.parse_args(argv)
    notebooks = sorted(args.notebooks.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if nb.name.startswith(tuple(args.only))]
    if not notebooks:
        parser.error(f"no notebooks NN_*.ipynb found in {args.notebooks} (--only {args.only})")
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    return (
        1
        if run_series(
            notebooks=notebooks, output=args.output, parameters=parameters, kernel=args.kernel
        )
        else 0
    )


if __name__ == "__main__":
    raise SystemExit(main())
