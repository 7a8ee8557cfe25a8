"""Explicit-rating benchmark: every model on the same folds, a Markdown table and a JSON file.

    python benchmarks/explicit.py                 # ML-100K u1..u5, the package's models
    python benchmarks/explicit.py --peers         # ... and Surprise on the same folds
    python benchmarks/explicit.py --models BiasedMF-SGD --folds 1

Writes ``benchmarks/results/explicit-<dataset>.json``: one record per model with the RMSE of
every fold, the mean RMSE and MAE and the fit seconds of every fold. Models and peers run in
one process, fold after fold, so their timings are comparable.
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
from mfutils.data import load_movielens
from mfutils.experiments import evaluate_folds, rating_folds, summarize_folds
from mfutils.models import (
    NNMF,
    AsymmetricSVD,
    BaselineEstimates,
    BiasedMF,
    DeepFM,
    FactorizationMachine,
    GlobalNeighborhood,
    IntegratedModel,
    ItemKNN,
    SVDpp,
    TimeSVDpp,
)
from mfutils.results import to_markdown

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def package_models(device: torch.device) -> dict[str, Callable[[], object]]:
    """The package's explicit models at their defaults (chosen on validation, notebook 02)."""
    return {
        "BaselineEstimates-ALS": lambda: BaselineEstimates(method="als", device=device),
        "BiasedMF-SGD": lambda: BiasedMF(method="sgd", device=device),
        "BiasedMF-Adam": lambda: BiasedMF(method="adam", device=device),
        "BiasedMF-ALS": lambda: BiasedMF(method="als", device=device),
        "ItemKNN": lambda: ItemKNN(device=device),
        "GlobalNeighborhood": lambda: GlobalNeighborhood(device=device),
        "SVDpp": lambda: SVDpp(device=device),
        "AsymmetricSVD": lambda: AsymmetricSVD(device=device),
        "IntegratedModel": lambda: IntegratedModel(device=device),
        "TimeSVDpp": lambda: TimeSVDpp(device=device),
        "FM-ids": lambda: FactorizationMachine(fields=("user", "item"), device=device),
        "FM-side": lambda: FactorizationMachine(device=device),
        "DeepFM": lambda: DeepFM(device=device),
        "NNMF": lambda: NNMF(device=device),
    }


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
    args = parser.parse_args(argv)

    device = get_device(args.device)
    data = load_movielens(args.dataset)
    folds, protocol = rating_folds(data, seed=0)
    names = [f"u{k}" for k in range(1, len(folds) + 1)]
    if args.folds:
        folds, names = [folds[k - 1] for k in args.folds], [names[k - 1] for k in args.folds]
    models = package_models(device)
    if args.peers:
        models.update(peer_models())
    if args.models:
        unknown = set(args.models) - set(models)
        if unknown:
            parser.error(f"unknown models {sorted(unknown)}; known: {sorted(models)}")
        models = {name: models[name] for name in args.models}

    # Fold-major order: every model sees fold k before any model sees fold k+1.
    per_fold = pd.concat(
        [evaluate_folds(make, [fold], name=name, fold_names=[label])
         for fold, label in zip(folds, names, strict=True) for name, make in models.items()],
        ignore_index=True,
    )
    summary = summarize_folds(per_fold)
    print(f"\n{args.dataset}, {protocol} ({', '.join(names)}), device {device}, "
          f"{torch.get_num_threads()} threads\n")
    print(to_markdown(summary))

    records = []
    for name, rows in per_fold.groupby("model", sort=False):
        records.append({
            "model": name, "rmse": rows["rmse"].tolist(), "rmse_mean": rows["rmse"].mean(),
            "mae_mean": rows["mae"].mean(), "fit_seconds": rows["fit_seconds"].tolist(),
            "folds": rows["fold"].tolist(),
        })
    output = args.output or RESULTS_DIR / f"explicit-{args.dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": args.dataset, "protocol": protocol, "device": str(device),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.machine(), "processor": platform.processor()}
    output.write_text(json.dumps({"meta": meta, "models": records}, indent=2) + "\n")
    print(f"\nwrote {output}")
    return summary


if __name__ == "__main__":
    main()
