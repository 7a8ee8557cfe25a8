"""Implicit-feedback benchmark: every ranking model on one split, a Markdown table and a JSON file.

    python benchmarks/implicit.py               # ML-100K, the series' protocol, our models
    python benchmarks/implicit.py --peers       # ... and the `implicit` library on the same split
    python benchmarks/implicit.py --models iALS EASE --seed 1
    python benchmarks/implicit.py --losses      # two-tower MF with every loss (notebook 12)
    python benchmarks/implicit.py --compact     # compact id tables: accuracy vs parameters

The protocol is :func:`mfutils.experiments.ranking_split`: every rating an interaction, a
seeded per-user 80/20 split, full ranking with the training items masked. Hyperparameters
are the ones chosen on the validation part (notebooks 11 and 12); every model is fit on the
whole train part here and scored on test. Writes
``benchmarks/results/implicit-<dataset>.json`` with every metric and the fit seconds.

``--losses`` runs notebook 12's study instead: the two-tower MF with each loss of
:data:`mfutils.losses.presets.LOSS_GRIDS`, each tuned on the validation part over its grid,
refit on the whole train part for the early-stopped number of epochs and scored on test
(``benchmarks/results/losses-<dataset>.json``, with each loss's chosen setting).

``--compact`` instead runs the size curves of notebook 13 (:mod:`mfutils.compact`): the
two-tower model with hashed, hash-embedded and Bloom-embedded id tables (and a full table of
smaller width) at 50/25/10/5% of the full tables' parameters, NDCG@20 on the same split, and
biased MF's RMSE on ML-100K's u1 fold; writes ``benchmarks/results/compact-<dataset>.json``
and ``compact-<dataset>.png``.
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
from mfutils.compact import METHODS, best_on_valid, ranking_curve, rating_curve
from mfutils.data import load_movielens
from mfutils.experiments import (
    compare_losses,
    evaluate_ranking,
    ranking_split,
    rating_folds,
    study_record,
    tuned_table,
)
from mfutils.models import EASE, ImplicitALS, MostPopular
from mfutils.plotting import plot_compact_curves
from mfutils.results import to_markdown

# This script is named like the `implicit` library it compares against; running it puts this
# folder first on sys.path, which would make `import implicit` import the script itself.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# iALS setting chosen on the validation part of ML-100K (notebook 11); peers get the same.
ALS = {"n_factors": 64, "reg": 30.0, "alpha": 2.0, "epochs": 15}


def package_models(device: torch.device) -> dict[str, Callable[[], object]]:
    """The package's ranking models at their validated settings."""
    return {
        "MostPopular": lambda: MostPopular(device=device),
        "EASE": lambda: EASE(device=device),
        "iALS": lambda: ImplicitALS(**ALS, device=device),
        "iALS-Cholesky": lambda: ImplicitALS(**ALS, solver="cholesky", device=device),
    }


class ImplicitPeer:
    """A model of the ``implicit`` library behind ``fit`` / ``score_items``.

    ``fit_seconds`` is the time of the library's own ``fit`` on its CSR matrix; building the
    matrix from our ``Ratings`` is not counted against it.
    """

    def __init__(self, factory: Callable[[], object]) -> None:
        self.factory = factory
        self.device = torch.device("cpu")

    def fit(self, train) -> ImplicitPeer:
        import scipy.sparse as sp

        values = np.ones(len(train), dtype=np.float32)
        matrix = sp.csr_matrix(
            (values, (train.user, train.item)), shape=(train.n_users, train.n_items)
        )
        self.model = self.factory()
        start = time.perf_counter()
        self.model.fit(matrix, show_progress=False)
        self.fit_seconds = time.perf_counter() - start
        return self

    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        user_factors = np.asarray(self.model.user_factors)[users.cpu().numpy()]
        return torch.as_tensor(user_factors @ np.asarray(self.model.item_factors).T)


def peer_models(threads: int) -> dict[str, Callable[[], object]]:
    """``implicit`` 0.7 ALS at the same factors, sweeps and regularization as ours.

    Our confidence is :math:`c = 1 + \\alpha r` (HKV08 eq. 3); ``implicit`` uses the matrix
    value itself as the confidence, scaled by its ``alpha``, so on 0/1 data its ``alpha`` is our
    ``1 + alpha``. Its conjugate-gradient solver runs 3 steps per sweep, as ours does.
    """
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError:
        sys.exit("--peers needs implicit: pip install -e '.[bench]'")
    return {
        "implicit ALS": lambda: ImplicitPeer(
            lambda: AlternatingLeastSquares(
                factors=ALS["n_factors"],
                regularization=ALS["reg"],
                alpha=1.0 + ALS["alpha"],
                iterations=ALS["epochs"],
                random_state=0,
                num_threads=threads,
                calculate_training_loss=False,
            )
        ),
        "implicit BPR": lambda: ImplicitPeer(
            lambda: BayesianPersonalizedRanking(
                factors=64,
                learning_rate=0.05,
                regularization=0.001,
                iterations=200,
                random_state=0,
                num_threads=threads,
            )
        ),
    }


# The compact-embedding curves (notebook 13). The two-tower setting is the full model chosen on
# the validation part (sampled softmax, 1024 uniform candidates); every point keeps it, trains
# up to 30 epochs with early stopping on validation NDCG@20 (compact tables learn slower), and
# changes only the id tables. Hashed tables try two widths within each budget: the drop-in
# width 64 (fewer rows) and 16 (more rows); best_on_valid picks one per budget.
COMPACT_TWO_TOWER = {
    "n_factors": 64,
    "loss": "softmax",
    "negatives": "popularity",
    "popularity_alpha": 0.0,
    "n_negatives": 1024,
    "lr": 3e-3,
    "epochs": 30,
    "patience": 3,
}
COMPACT_WIDTHS = {"hashing": (64, 16), "hash": (64, 16), "bloom": (64, 16)}
COMPACT_MF = {"n_factors": 20, "epochs": 20, "lr": 0.005, "reg": 0.15}  # BiasedMF adam defaults
COMPACT_OPTIONS = {"hash": {"k": 2}, "bloom": {"k": 2}, "hashing": {"sign": True}}
COMPACT_RATIOS = (0.5, 0.25, 0.1, 0.05)


def run_compact(dataset: str, seed: int, device: torch.device, output: Path | None) -> dict:
    """Both size curves, a JSON file and a plot; returns the JSON payload."""
    data = load_movielens(dataset)
    split = ranking_split(data, seed=seed)
    ranking = ranking_curve(
        split,
        model_options={**COMPACT_TWO_TOWER, "device": device},
        ratios=COMPACT_RATIOS,
        embedding_options=COMPACT_OPTIONS,
        widths=COMPACT_WIDTHS,
    )
    folds, fold_label = rating_folds(data, seed=seed)
    train, test = folds[0]
    rating = rating_curve(
        train,
        test,
        model_options={**COMPACT_MF, "device": device},
        ratios=COMPACT_RATIOS,
        embedding_options=COMPACT_OPTIONS,
    )
    full = ranking.loc[ranking["method"] == "full", "ndcg@20"].iloc[0]
    ranking["ndcg_loss"] = 1 - ranking["ndcg@20"] / full
    chosen = best_on_valid(ranking)
    print(
        f"\n{split.protocol}; fit on fit, early-stopped on valid, scored on test; "
        f"device {device}\n\nevery point:\n"
    )
    print(to_markdown(ranking.round(4)))
    print("\nwidth chosen on validation per method and budget:\n")
    print(to_markdown(chosen.round(4)))
    print(f"\nbiased MF (Adam), {dataset} {fold_label} first fold, test RMSE\n")
    print(to_markdown(rating.round(4)))

    output = output or RESULTS_DIR / f"compact-{dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": dataset,
        "protocol": split.protocol,
        "ranking_fit": f"fit part, early stopping on valid (patience "
        f"{COMPACT_TWO_TOWER['patience']}), scored on test with all train "
        "items masked",
        "rating_protocol": f"{fold_label}, first fold",
        "methods": list(METHODS),
        "two_tower": COMPACT_TWO_TOWER,
        "biased_mf": COMPACT_MF,
        "embedding_options": COMPACT_OPTIONS,
        "widths": COMPACT_WIDTHS,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    payload = {
        "meta": meta,
        "ranking": ranking.to_dict("records"),
        "chosen": chosen.to_dict("records"),
        "rating": rating.to_dict("records"),
    }
    output.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    figure = plot_compact_curves(chosen, rating)
    figure.savefig(output.with_suffix(".png"), dpi=120, bbox_inches="tight")
    print(f"\nwrote {output} and {output.with_suffix('.png')}")
    return payload


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--peers", action="store_true", help="also run the implicit library")
    parser.add_argument("--models", nargs="*", default=None, help="subset of model names")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path to write")
    parser.add_argument(
        "--compact",
        action="store_true",
        help="compact id tables: accuracy vs parameters (notebook 13)",
    )
    parser.add_argument(
        "--losses",
        action="store_true",
        help="two-tower MF with every loss, each tuned on validation",
    )
    parser.add_argument("--epochs", type=int, default=20, help="epoch bound with --losses")
    args = parser.parse_args(argv)

    device = get_device(args.device)
    if args.compact:
        payload = run_compact(args.dataset, args.seed, device, args.output)
        return pd.DataFrame(payload["ranking"])
    split = ranking_split(load_movielens(args.dataset), seed=args.seed)
    if args.losses:
        return loss_study(split, args, device)
    models = package_models(device)
    if args.peers:
        models.update(peer_models(torch.get_num_threads()))
    if args.models:
        unknown = set(args.models) - set(models)
        if unknown:
            parser.error(f"unknown models {sorted(unknown)}; known: {sorted(models)}")
        models = {name: models[name] for name in args.models}

    rows = []
    for name, make in models.items():
        model = make()
        start = time.perf_counter()
        model.fit(split.train)
        seconds = getattr(model, "fit_seconds", time.perf_counter() - start)
        scores = evaluate_ranking(model, train=split.train, test=split.test, device=device)
        rows.append({"model": name, **scores, "fit_seconds": seconds})
    table = pd.DataFrame(rows)
    shown = [
        "model",
        "recall@10",
        "ndcg@10",
        "recall@20",
        "ndcg@20",
        "recall@50",
        "ndcg@50",
        "fit_seconds",
    ]
    print(f"\n{split.protocol}; device {device}, {torch.get_num_threads()} threads\n")
    print(to_markdown(table[shown]))

    output = args.output or RESULTS_DIR / f"implicit-{args.dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps({"meta": _meta(args, split, device), "models": rows}, indent=2, default=float)
        + "\n"
    )
    print(f"\nwrote {output}")
    return table


def _plain(value: object) -> object:
    """JSON form of numpy scalars (and anything else, as text)."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _meta(args: argparse.Namespace, split, device: torch.device) -> dict[str, object]:
    return {
        "dataset": args.dataset,
        "protocol": split.protocol,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }


def loss_study(split, args: argparse.Namespace, device: torch.device) -> pd.DataFrame:
    """Every loss on the two-tower MF, tuned on validation (notebook 12's table)."""
    start = time.perf_counter()
    study = compare_losses(
        split, losses=args.models, epochs=args.epochs, seed=args.seed, device=device
    )
    table = tuned_table(study).reset_index(names="loss")
    print(
        f"\n{split.protocol}; two-tower MF, d=64, each loss tuned on validation "
        f"(epochs <= {args.epochs}); device {device}, {torch.get_num_threads()} threads, "
        f"{time.perf_counter() - start:.0f} s in all\n"
    )
    print(
        to_markdown(
            table[
                ["loss", "chosen", "valid ndcg@20", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]
            ]
        )
    )
    output = args.output or RESULTS_DIR / f"losses-{args.dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {**_meta(args, split, device), "epochs": args.epochs, "seed": args.seed}
    output.write_text(
        json.dumps(
            {"meta": meta, "losses": table.to_dict(orient="records"), "study": study_record(study)},
            indent=2,
            default=_plain,
        )
        + "\n"
    )
    print(f"\nwrote {output}")
    return table


if __name__ == "__main__":
    main()
