"""Regenerate the README's result tables from ``benchmarks/results/*.json``.

    python benchmarks/readme.py           # rewrite the tables in README.md
    python benchmarks/readme.py --check   # exit 1 if a table drifted from its JSON (CI)

Each generated table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in the
README; the prose around it is written by hand and names the command that made the JSON.
Today: ``explicit``, from ``explicit-ml-100k-tuned.json`` (nested tuning, clean),
``explicit-ml-100k.json`` (defaults on u1..u5) and ``explicit-ml-latest-small-replica.json``
(defaults on the replica's fold 1); ``bayesian``, from ``explicit-ml-100k-bayesian.json`` (the
Bayesian FM presets beside myFM on the same features); ``bayesian-seeds``, from
``explicit-ml-100k-bayesian-seeds0-4.json`` (the same on u1, five seeds each) and
``explicit-ml-100k-bayesian-threads1.json`` (u1 and u2 on one thread); ``losses`` and
``losses-replica``, from ``losses-ml-100k.json`` and ``losses-ml-latest-small-replica.json``
(the loss study over its seeds, beside iALS tuned on the same splits and MostPopular);
``notebooks``, the series' table, whose topics are written by hand and whose "Open in
Colab" links come from the repository named in ``pyproject.toml``
(:func:`mfutils.colab.repository`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from mfutils.colab import colab_url, repository
from mfutils.losses import LOSSES
from mfutils.models import TwoTower

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TWO_TOWER_DEFAULTS = {
    name: p.default for name, p in inspect.signature(TwoTower.__init__).parameters.items()
}


def _records(name: str) -> dict[str, dict]:
    payload = json.loads((RESULTS / name).read_text())
    return {record["model"]: record for record in payload["models"]}


def _cell(record: dict | None, key: str = "rmse_mean") -> str:
    if record is None:
        return "—"
    if record.get("error"):
        return "failed"
    return f"{record[key]:.4f}"


def _u1(record: dict | None) -> str:
    if record is None or record.get("error"):
        return _cell(record)
    return f"{record['rmse'][record['folds'].index('u1')]:.4f}"


def explicit_table() -> str:
    """Tuned (nested) and default RMSE on ML-100K, and defaults on the release replica."""
    tuned = _records("explicit-ml-100k-tuned.json")
    defaults = _records("explicit-ml-100k.json")
    replica = _records("explicit-ml-latest-small-replica.json")
    lines = [
        "| model | tuned u1..u5 | tuned u1 | trials | defaults u1..u5 (not clean) | "
        "defaults u1 | replica, defaults |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, record in tuned.items():
        trials = record.get("trials") or "defaults"
        lines.append(
            f"| {model} | {_cell(record)} | {_u1(record)} | {trials} | "
            f"{_cell(defaults.get(model))} | {_u1(defaults.get(model))} | "
            f"{_cell(replica.get(model))} |"
        )
    return "\n".join(lines)


BAYESIAN_ROWS = {  # our preset -> (its features, the myFM peer on the same features)
    "BayesianFM-ids": "ids (= Bayesian biased MF)",
    "BayesianFM-flipped": "ids + N(u) + N(i) (SVD++ flipped)",
    "BayesianFM-side": "+ side fields",
    "BayesianFM": "+ time fields (the defaults)",
    "BayesianFM-ordinal": "+ ordinal output, rank 16",
}


def _seconds(record: dict | None) -> str:
    if record is None or record.get("error"):
        return _cell(record)
    return f"{sum(record['fit_seconds']) / len(record['fit_seconds']):.1f}"


def bayesian_table() -> str:
    """The Bayesian FM presets against myFM on the same features, ML-100K u1..u5."""
    records = _records("explicit-ml-100k-bayesian.json")
    lines = [
        "| features | BayesianFM u1..u5 | u1 | s / fit | myFM u1..u5 | u1 | s / fit |",
        "|---|---|---|---|---|---|---|",
    ]
    for preset, features in BAYESIAN_ROWS.items():
        ours, peer = records.get(preset), records.get("myFM" + preset.removeprefix("BayesianFM"))
        lines.append(
            f"| {features} (`{preset}`) | {_cell(ours)} | {_u1(ours)} | "
            f"{_seconds(ours)} | {_cell(peer)} | {_u1(peer)} | {_seconds(peer)} |"
        )
    return "\n".join(lines)


def bayesian_seeds_table() -> str:
    """The Bayesian FM presets against myFM on u1 over five seeds, and on one thread."""
    seeds = _records("explicit-ml-100k-bayesian-seeds0-4.json")
    one_thread = _records("explicit-ml-100k-bayesian-threads1.json")
    lines = [
        "| features | BayesianFM u1, 5 seeds | s / fit | 1 thread | "
        "myFM u1, 5 seeds | s / fit | 1 thread |",
        "|---|---|---|---|---|---|---|",
    ]

    def cells(name: str) -> str:
        record = seeds.get(name)
        if record is None or record.get("error"):
            spread = _cell(record)
        else:
            mean, std = _stats(record["rmse"])
            spread = f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")
        return f"{spread} | {_seconds(record)} | {_seconds(one_thread.get(name))}"

    for preset, features in BAYESIAN_ROWS.items():
        peer = "myFM" + preset.removeprefix("BayesianFM")
        lines.append(f"| {features} (`{preset}`) | {cells(preset)} | {cells(peer)} |")
    return "\n".join(lines)


def _stats(values: list[float]) -> tuple[float, float | None]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None or std != std else f"{mean:.4f} ± {std:.4f}"


def losses_table(name: str) -> str:
    """The loss study (``benchmarks/implicit.py --losses``) in ``results/<name>``: every
    loss's test NDCG@20 and Recall@20, mean ± std over the seeds, ties with the best marked,
    the samplers the seeds' searches chose; tuned iALS and MostPopular on the same splits
    first."""
    study = json.loads((RESULTS / name).read_text())
    seeds = study["seeds"]
    lines = [
        "| model | NDCG@20 | Recall@20 | seeds | tie with the best | negatives chosen (per seed) |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (("ials", "iALS, tuned per seed"), ("popular", "MostPopular")):
        scores = [entry[key]["scores"] for entry in seeds.values() if key in entry]
        if scores:
            ndcg = _mean_std(*_stats([s["ndcg@20"] for s in scores]))
            recall = _mean_std(*_stats([s["recall@20"] for s in scores]))
            lines.append(f"| {label} | {ndcg} | {recall} | {len(scores)} | | |")
    for row in study["summary"]:
        chosen = [
            _negatives(entry["study"][row["loss"]])
            for entry in seeds.values()
            if row["loss"] in entry["study"]
        ]
        tie = "" if row["tie"] is None else ("yes" if row["tie"] else "no")
        lines.append(
            f"| MF + {row['loss']} | {_mean_std(row['ndcg@20 mean'], row['ndcg@20 std'])} | "
            f"{_mean_std(row['recall@20 mean'], row['recall@20 std'])} | {row['seeds']} | "
            f"{tie} | {', '.join(chosen)} |"
        )
    return "\n".join(lines)


def _negatives(record: dict) -> str:
    """A loss's chosen candidate set in words (TwoTower's defaults where not recorded)."""
    options = {**TWO_TOWER_DEFAULTS, **record["base"], **record["options"]}
    if not LOSSES[options["loss"]].needs_negatives:
        return f"none, batch {options['batch_size']}"
    kind, n = options["negatives"], options["n_negatives"]
    if kind == "uniform":
        return f"{n} uniform per row"
    if kind == "popularity":
        return f"{n} shared" + (" uniform" if options["popularity_alpha"] == 0 else "")
    return kind + (" + logQ" if options["logq"] else "")


def notebooks_table(current: str) -> str:
    """The series' table: each row's notebook and topic as written, its Colab link rebuilt."""
    slug = repository()
    rows = ["| notebook | topic | Colab |", "|---|---|---|"]
    for line in current.splitlines()[2:]:
        notebook, topic = (cell.strip() for cell in line.strip("|").split("|")[:2])
        # a text link, not Colab's badge image: the book of the README works offline
        link = f"[open in Colab]({colab_url(notebook.strip('`'), slug)})"
        rows.append(f"| {notebook} | {topic} | {link} |")
    return "\n".join(rows)


TABLES: dict[str, Callable[[str], str]] = {
    "explicit": lambda current: explicit_table(),
    "bayesian": lambda current: bayesian_table(),
    "bayesian-seeds": lambda current: bayesian_seeds_table(),
    "losses": lambda current: losses_table("losses-ml-100k.json"),
    "losses-replica": lambda current: losses_table("losses-ml-latest-small-replica.json"),
    "notebooks": notebooks_table,
}


def render(text: str) -> str:
    """``text`` (the README) with every generated table replaced by its current version."""
    for name, build in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(\n<!-- /table:{name} -->)", re.S)
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"README.md has no <!-- table:{name} --> ... <!-- /table:{name} -->")
        head, tail = match.span()
        current = text[match.end(1) : match.start(2)]
        text = text[:head] + match.group(1) + build(current) + match.group(2) + text[tail:]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if README.md differs from the JSON",
    )
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(
                f"{args.readme}: a result table differs from benchmarks/results/*.json; run "
                "python benchmarks/readme.py",
                file=sys.stderr,
            )
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
