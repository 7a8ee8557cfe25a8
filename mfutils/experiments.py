"""Evaluate explicit models on shared folds: one code path for notebooks and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from mfutils.data.container import Ratings
from mfutils.data.splits import canonical_folds, kfold
from mfutils.metrics import mae, rmse

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

