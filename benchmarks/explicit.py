"""Explicit-rating benchmark: every model on the same folds, a Markdown table and a JSON file.

    python benchmarks/explicit.py                 # ML-100K u1..u5, the package's models
    python benchmarks/explicit.py --peers         # ... and Surprise on the same folds
    python benchmarks/explicit.py --models BiasedMF-SGD --folds 1
    python benchmarks/explicit.py --task binary   # rating >= 4 -> 1: AUC and log loss
    python benchmarks/explicit.py --split random90 --models NNMF BiasedMF-SGD

Writes ``benchmarks/results/explicit-<dataset>.json``: one record per model with the RMSE of
every fold, the mean RMSE and MAE and the fit seconds of every fold. Models and peers run in
one process, fold after fold, so their timings are comparable.

``--task binary`` trains the models with a binary head (FM, DeepFM) on the folds' ratings
binarised at ``--like-threshold`` and reports AUC and log loss instead (plus the constant
predictor at the training fold's positive rate). ``--split random90`` replaces ``u1..u5`` by
five random 90% / 10% splits (seeds 0..4, labelled ``r0..r4``): NNMF's protocol (Dziugaite &
Roy 2015). The default output name carries the task and split when they are not the defaults.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mfutils import get_device
from mfutils.blending import series_models
from mfutils.data import load_movielens, random_holdout
from mfutils.experiments import evaluate_folds, rating_folds, summarize_folds
from mfutils.metrics import auc, log_loss
from mfutils.models import DeepFM, FactorizationMachine
from mfutils.results import to_markdown

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def package_models(device: torch.device) -> dict[str, Callable[[], object]]:
    """The package's explicit models at their defaults (chosen on validation, notebook 02).

    The series' models of :func:`mfutils.blending.series_models`, plus the FM on ids alone.
    """
    return {**series_models(device=device),
            "FM-ids": lambda: FactorizationMachine(fields=("user", "item"), device=device)}


def binary_models(device: torch.device) -> dict[str, Callable[[], object]]:
    """The models with a binary head (sigmoid, log loss), at the defaults of the rating task."""
    return {
        "FM-ids": lambda: FactorizationMachine(fields=("user", "item"), binary=True,
                                               device=device),
        "FM-side": lambda: FactorizationMachine(binary=True, device=device),
        "DeepFM": lambda: DeepFM(binary=True, device=device),
    }


class ConstantRate:
    """Predicts the training fold's positive rate for every row (the log-loss floor to beat)."""

    def fit(self, train) -> ConstantRate:
        self.rate = float(np.mean(train.rating))
        return self

    def predict_ratings(self, test) -> np.ndarray:
        return np.full(len(test), self.rate)


def evaluate_binary_folds(make_model: Callable[[], object], folds, *, name: str,
                          fold_names: list[str], threshold: float) -> pd.DataFrame:
    """Fit on each training part binarised at ``threshold``; AUC and log loss on its test."""
    rows = []
    for label, (train, test) in zip(fold_names, folds, strict=True):
        model = make_model()
        start = time.perf_counter()
        model.fit(train.with_ratings(train.rating >= threshold))
        seconds = time.perf_counter() - start
        prob = model.predict_ratings(test)
        liked = (test.rating >= threshold).astype(np.float64)
        rows.append({"model": name, "fold": label,
                     "auc": auc(prob, liked) if np.ptp(prob) > 0 else 0.5,
                     "logloss": log_loss(prob, liked), "fit_seconds": seconds})
    return pd.DataFrame(rows)


class SurprisePeer:
    """A Surprise algorithm behind the package's ``fit`` / ``predict_ratings`` interface.

    ``fit_seconds`` is the time of the algorithm's own ``fit`` on its ``Trainset``; building
    the ``Trainset`` from our ``Ratings`` is not counted against Surprise.
    """

    def __init__(self, algo_factory: Callable[[], object]) -> None:
        self.algo_factory = algo_factory

    def fit(self, train) -> SurprisePeer:
        from surprise import Dataset, Reader

        frame = (train.to_frame()[["user", "item", "rating"]].astype({"rating": "float64"})
                 .sort_values(["user", "item"]))  # the order Surprise runs fastest on
        dataset = Dataset.load_from_df(frame, Reader(rating_scale=train.rating_scale))
        trainset = dataset.build_full_trainset()
        self.algo = self.algo_factory()
        start = time.perf_counter()
        self.algo.fit(trainset)
        self.fit_seconds = time.perf_counter() - start
        return self

    def predict_ratings(self, test):
        pairs = zip(test.user, test.item, strict=True)
        return np.array([self.algo.predict(u, i).est for u, i in pairs])


def peer_models() -> dict[str, Callable[[], object]]:
    """Surprise 1.1.x at its defaults (optional extra ``bench``)."""
    try:
        from surprise import SVD, BaselineOnly, KNNBaseline, SVDpp
    except ImportError:
        sys.exit("--peers needs scikit-surprise: pip install -e '.[bench]'")
    return {
        "Surprise BaselineOnly": lambda: SurprisePeer(lambda: BaselineOnly(verbose=False)),
        "Surprise SVD": lambda: SurprisePeer(lambda: SVD(random_state=0)),
        "Surprise SVD++": lambda: SurprisePeer(lambda: SVDpp(random_state=0)),
        "Surprise KNNBaseline": lambda: SurprisePeer(lambda: KNNBaseline(
            sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False)),
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--peers", action="store_true", help="also run Surprise")
    parser.add_argument("--models", nargs="*", default=None, help="subset of model names")
    parser.add_argument("--folds", type=int, nargs="*", default=None,
                        help="fold numbers to run (default all)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path to write")
    parser.add_argument("--task", choices=("rating", "binary"), default="rating",
                        help="rating: RMSE / MAE; binary: rating >= --like-threshold, AUC")
    parser.add_argument("--like-threshold", type=float, default=4.0)
    parser.add_argument("--split", choices=("folds", "random90"), default="folds",
                        help="folds: the dataset's u1..u5 (or 5 seeded 80/20); random90: 5 "
                             "random 90/10 splits, seeds 0..4")
    args = parser.parse_args(argv)

    device = get_device(args.device)
    data = load_movielens(args.dataset)
    if args.split == "random90":
        folds = [random_holdout(data, test_fraction=0.1, seed=s) for s in range(5)]
        names, protocol = [f"r{s}" for s in range(5)], "random 90/10, seeds 0..4"
    else:
        folds, protocol = rating_folds(data, seed=0)
        names = [f"u{k}" for k in range(1, len(folds) + 1)]
    if args.folds:
        folds, names = [folds[k - 1] for k in args.folds], [names[k - 1] for k in args.folds]
    if args.task == "binary":
        if args.peers:
            parser.error("--peers has no binary task")
        models = {**binary_models(device), "constant": ConstantRate}
        protocol += f", rating >= {args.like_threshold:g} -> 1"
    else:
        models = package_models(device)
    if args.peers:
        models.update(peer_models())
    if args.models:
        unknown = set(args.models) - set(models)
        if unknown:
            parser.error(f"unknown models {sorted(unknown)}; known: {sorted(models)}")
        models = {name: models[name] for name in args.models}

    # Fold-major order: every model sees fold k before any model sees fold k+1.
    def evaluate(make, fold, name, label):
        if args.task == "binary":
            return evaluate_binary_folds(make, [fold], name=name, fold_names=[label],
                                         threshold=args.like_threshold)
        return evaluate_folds(make, [fold], name=name, fold_names=[label])

    per_fold = pd.concat(
        [evaluate(make, fold, name, label)
         for fold, label in zip(folds, names, strict=True) for name, make in models.items()],
        ignore_index=True,
    )
    metrics = ("auc", "logloss") if args.task == "binary" else ("rmse", "mae")
    summary = (per_fold.groupby("model", sort=False)[[*metrics, "fit_seconds"]].mean()
               .reset_index() if args.task == "binary" else summarize_folds(per_fold))
    print(f"\n{args.dataset}, {protocol} ({', '.join(names)}), device {device}, "
          f"{torch.get_num_threads()} threads\n")
    print(to_markdown(summary))

    records = []
    for name, rows in per_fold.groupby("model", sort=False):
        records.append({
            "model": name, metrics[0]: rows[metrics[0]].tolist(),
            **{f"{m}_mean": rows[m].mean() for m in metrics},
            "fit_seconds": rows["fit_seconds"].tolist(), "folds": rows["fold"].tolist(),
        })
    suffix = "".join(f"-{v}" for v, default in ((args.task, "rating"), (args.split, "folds"))
                     if v != default)
    output = args.output or RESULTS_DIR / f"explicit-{args.dataset}{suffix}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": args.dataset, "protocol": protocol, "device": str(device),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.machine(), "processor": platform.processor()}
    output.write_text(json.dumps({"meta": meta, "models": records}, indent=2) + "\n")
    print(f"\nwrote {output}")
    return summary


if __name__ == "__main__":
    main()
