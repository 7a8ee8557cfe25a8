"""Shared protocols: explicit models on rating folds, implicit models on a ranking split.

One code path for the notebooks and the benchmarks, so that every model of a comparison sees
the same split and the same metric code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from mfutils.data.container import Ratings
from mfutils.data.implicit import to_implicit
from mfutils.data.splits import canonical_folds, kfold, per_user_holdout
from mfutils.metrics import mae, rmse, topk_metrics

Folds = Sequence[tuple[Ratings, Ratings]]


def rating_folds(data: Ratings, *, seed: int = 0) -> tuple[list[tuple[Ratings, Ratings]], str]:
    """The series' folds for rating prediction and their protocol label.

    ML-100K's canonical ``u1..u5`` when the data carries them (what papers report), else a
    seeded random 5-fold split; every model of a comparison gets the same folds.
    """
    if data.fold is not None:
        return canonical_folds(data), "u1..u5"
    return kfold(data, k=5, seed=seed), f"5-fold random, seed {seed}"


def evaluate_folds(
    make_model: Callable[[], Any],
    folds: Folds,
    *,
    name: str,
    fold_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Fit a fresh model on each training part and score its test part.

    Parameters
    ----------
    make_model : callable
        Returns an unfitted model with ``fit(train)`` and ``predict_ratings(test)``.
    folds : sequence of (train, test)
        The same folds for every model of a comparison (e.g. ML-100K ``u1..u5``).
    name : str
        Model label for the table.
    fold_names : sequence of str, optional
        Labels of the folds; default ``u1, u2, ...``.

    Returns
    -------
    pandas.DataFrame
        One row per fold: ``model, fold, rmse, mae, fit_seconds`` (predictions clipped to the
        rating scale by the model). A model that converts the data for another library first
        may set its own ``fit_seconds`` attribute, the time of the algorithm alone, which
        then replaces the wall time of ``fit``.
    """
    fold_names = list(fold_names or [f"u{k}" for k in range(1, len(folds) + 1)])
    rows = []
    for label, (train, test) in zip(fold_names, folds, strict=True):
        model = make_model()
        start = time.perf_counter()
        model.fit(train)
        seconds = getattr(model, "fit_seconds", time.perf_counter() - start)
        pred = model.predict_ratings(test)  # time-aware models read test.timestamp
        rows.append({"model": name, "fold": label, "rmse": rmse(pred, test.rating),
                     "mae": mae(pred, test.rating), "fit_seconds": seconds})
    return pd.DataFrame(rows)


def summarize_folds(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over folds for every model, in first-seen order."""
    grouped = per_fold.groupby("model", sort=False)
    summary = grouped.agg(
        rmse_mean=("rmse", "mean"), rmse_std=("rmse", "std"), mae_mean=("mae", "mean"),
        fit_seconds=("fit_seconds", "mean"), folds=("fold", "count"),
    )
    return summary.reset_index()


def validation_grid(
    make_model: Callable[..., Any],
    grid: Sequence[dict[str, Any]],
    fit_part: Ratings,
    valid_part: Ratings,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """Validation RMSE of ``make_model(**options)`` for every option set in ``grid``.

    Tune here -- on a validation split carved from the training data -- and report the chosen
    setting on the test folds; never choose hyperparameters on the test set.
    """
    rows = []
    for options in tqdm(grid, desc="validation grid", unit="fit", disable=not progress,
                        leave=False):
        model = make_model(**options)
        model.fit(fit_part)
        rows.append({**options, "valid_rmse": rmse(model.predict_ratings(valid_part),
                                                    valid_part.rating)})
    return pd.DataFrame(rows).sort_values("valid_rmse", kind="stable").reset_index(drop=True)



# ---------------------------------------------------------------------- implicit feedback
RANKING_KS = (10, 20, 50)


@dataclass(frozen=True)
class RankingSplit:
    """The series' implicit-feedback split; every part shares one id space.

    Attributes
    ----------
    train : Ratings
        All training interactions (``fit`` and ``valid`` together): what a final model is
        fit on, and what is masked when ranking for the test users.
    test : Ratings
        Held-out interactions, touched only for the final numbers.
    fit, valid : Ratings
        ``train`` cut again per user: tune and early-stop on ``valid`` with models fit on
        ``fit``, never on ``test``.
    protocol : str
        The label to print beside every number.
    """

    train: Ratings
    test: Ratings
    fit: Ratings
    valid: Ratings
    protocol: str


def ranking_split(
    data: Ratings, *, test_fraction: float = 0.2, valid_fraction: float = 0.1, seed: int = 0,
    threshold: float | None = None,
) -> RankingSplit:
    """Implicit-feedback protocol of the series (issue 5; DirectAU's and MAWU's per-user split).

    Every rating (or every rating ``>= threshold``) becomes an interaction; each user's
    interactions are split at random into train and test (``test_fraction``), then the
    train part again into fit and valid (``valid_fraction`` of train).

    Parameters
    ----------
    data : Ratings
        Explicit or implicit data.
    test_fraction, valid_fraction : float
        Per-user shares, in ``(0, 1)``.
    seed : int
        Seed of both random cuts.
    threshold : float, optional
        Keep only ratings ``>= threshold`` as interactions; ``None`` keeps all.
    """
    events = to_implicit(data, threshold=threshold)
    train, test = per_user_holdout(events, test_fraction=test_fraction, seed=seed)
    fit_part, valid = per_user_holdout(train, test_fraction=valid_fraction, seed=seed + 1)
    kept = "every rating" if threshold is None else f"ratings >= {threshold:g}"
    protocol = (f"{data.name}, {kept} an interaction, per-user random "
                f"{1 - test_fraction:.0%}/{test_fraction:.0%} (seed {seed}), valid = "
                f"{valid_fraction:.0%} of each user's train; full ranking, train items masked")
    return RankingSplit(train=train, test=test, fit=fit_part, valid=valid, protocol=protocol)


def evaluate_ranking(
    model: Any, *, train: Ratings, test: Ratings, ks: Sequence[int] = RANKING_KS,
    device: Any = None,
) -> dict[str, float]:
    """Full-ranking Recall, NDCG, HitRate, Precision @ks and MRR of a fitted model.

    ``train`` (the interactions the model saw) is masked; pass ``split.fit`` and
    ``split.valid`` while tuning, ``split.train`` and ``split.test`` for the final numbers.
    """
    device = device if device is not None else getattr(model, "device", None)
    return topk_metrics(model.score_items, train=train.csr(device), test=test.csr(device),
                        ks=ks, device=device)


def ranking_grid(
    make_model: Callable[..., Any],
    grid: Sequence[dict[str, Any]],
    split: RankingSplit,
    *,
    metric: str = "ndcg@20",
    progress: bool = True,
    return_best: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, Any]:
    """Validation ``metric`` of ``make_model(**options)`` fit on ``split.fit``, per option set.

    Returns the grid sorted best first (higher is better), with the fit seconds and, for
    models with a training history, the epoch early stopping kept; with ``return_best`` also
    the best fitted model. The test part is never touched.
    """
    rows, best, best_value = [], None, -float("inf")
    for options in tqdm(grid, desc="validation grid", unit="fit", disable=not progress,
                        leave=False):
        model = make_model(**options)
        start = time.perf_counter()
        model.fit(split.fit, valid=split.valid)
        seconds = time.perf_counter() - start
        value = evaluate_ranking(model, train=split.fit, test=split.valid, ks=(20,))[metric]
        row = {**options, f"valid_{metric}": value, "fit_seconds": seconds}
        history = getattr(model, "history", None)
        if history is not None and "best_epoch" in history.attrs:
            row["best_epoch"] = history.attrs["best_epoch"]
        rows.append(row)
        if value > best_value:
            best, best_value = model, value
    table = pd.DataFrame(rows).sort_values(f"valid_{metric}", ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    return (table, best) if return_best else table
