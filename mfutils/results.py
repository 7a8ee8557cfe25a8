"""The series' results table: every notebook logs its headline numbers with their protocol.

Each notebook writes ``<results_dir>/<notebook>.csv`` (rewritten on every run, so re-running a
notebook never duplicates rows); :func:`collect` joins them into one table for the README
(``results.csv`` and ``results.md``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = ["notebook", "model", "metric", "value", "dataset", "protocol"]


class ResultsLog:
    """Rows ``(model, metric, value, dataset, protocol)`` of one notebook.

    Parameters
    ----------
    notebook : str
        The notebook's stem, e.g. ``"02_matrix_factorization"``.
    results_dir : str or Path or None
        Where to write ``<notebook>.csv``; ``None`` keeps the rows in memory only (a notebook
        opened by hand).
    """

    def __init__(self, notebook: str, results_dir: str | Path | None) -> None:
        self.notebook = notebook
        self.results_dir = None if results_dir is None else Path(results_dir)
        self.rows: list[dict[str, object]] = []

    def add(self, model: str, metric: str, value: float, *, dataset: str, protocol: str) -> None:
        """Log one number; ``protocol`` says split, folds and seed, e.g. ``"u1..u5 mean"``."""
        self.rows.append(
            {
                "notebook": self.notebook,
                "model": model,
                "metric": metric,
                "value": float(value),
                "dataset": dataset,
                "protocol": protocol,
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def save(self) -> Path | None:
        """Write the rows (if a results directory was given) and return the file."""
        if self.results_dir is None:
            return None
        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.results_dir / f"{self.notebook}.csv"
        self.frame().to_csv(path, index=False)
        return path


def collect(results_dir: str | Path, *, out_dir: str | Path | None = None) -> pd.DataFrame:
    """Join every notebook's CSV into ``results.csv`` and ``results.md`` in ``out_dir``."""
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir.parent
    parts = [pd.read_csv(path) for path in sorted(results_dir.glob("*.csv"))]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "results.csv", index=False)
    (out_dir / "results.md").write_text(to_markdown(table) + "\n")
    return table


def to_markdown(table: pd.DataFrame, *, floatfmt: str = ".4f") -> str:
    """A GitHub Markdown table (no ``tabulate`` dependency)."""
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in table.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
