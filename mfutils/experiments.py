"""Shared protocols: explicit models on rating folds, implicit models on a ranking split.

One code path for the notebooks and the benchmarks, so that every model of a comparison sees
the same split and the same metric code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from mfutils.data.container import Ratings
from mfutils.data.implicit import to_implicit
from mfutils.data.splits import canonical_folds, kfold, per_user_holdout
from mfutils.losses.presets import LOSS_GRIDS
from mfutils.metrics import mae, rmse, topk_metrics
from mfutils.models.two_tower import TwoTower

Folds = Sequence[tuple[Ratings, Ratings]]

log = logging.getLogger(__name__)


def rating_folds(data: Ratings, *, seed: int = 0) -> tuple[list[tuple[Ratings, Ratings]], str]:
    """The series' folds for rating prediction and their protocol label.

    ML-100K's canonical ``u1..u5`` when the data carries them (what papers report), else a
    seeded random 5-fold split; every model of a comparison gets the same folds.
    """
    if data.fold is not None:
        return canonical_folds(data), "u1..u5"
    return kfold(data, k=5, seed=seed), f"5-fold random, seed {seed}"


def fold_labels(protocol: str, n: int = 5) -> list[str]:
    """Names of the ``n`` folds of ``rating_folds``' ``protocol``: ``u1..`` only for u1..u5."""
    return [f"u{k}" if protocol == "u1..u5" else f"fold {k}" for k in range(1, n + 1)]


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
        rows.append(
            {
                "model": name,
                "fold": label,
                "rmse": rmse(pred, test.rating),
                "mae": mae(pred, test.rating),
                "fit_seconds": seconds,
            }
        )
    return pd.DataFrame(rows)


def summarize_folds(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over folds for every model, in first-seen order."""
    grouped = per_fold.groupby("model", sort=False)
    summary = grouped.agg(
        rmse_mean=("rmse", "mean"),
        rmse_std=("rmse", "std"),
        mae_mean=("mae", "mean"),
        fit_seconds=("fit_seconds", "mean"),
        folds=("fold", "count"),
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
    for options in tqdm(
        grid, desc="validation grid", unit="fit", disable=not progress, leave=False
    ):
        model = make_model(**options)
        model.fit(fit_part)
        rows.append(
            {**options, "valid_rmse": rmse(model.predict_ratings(valid_part), valid_part.rating)}
        )
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
    data: Ratings,
    *,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
    seed: int = 0,
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
    protocol = (
        f"{data.name}, {kept} an interaction, per-user random "
        f"{1 - test_fraction:.0%}/{test_fraction:.0%} (seed {seed}), valid = "
        f"{valid_fraction:.0%} of each user's train; full ranking, train items masked"
    )
    return RankingSplit(train=train, test=test, fit=fit_part, valid=valid, protocol=protocol)


def evaluate_ranking(
    model: Any, *, train: Ratings, test: Ratings, ks: Sequence[int] = RANKING_KS, device: Any = None
) -> dict[str, float]:
    """Full-ranking Recall, NDCG, HitRate, Precision @ks and MRR of a fitted model.

    ``train`` (the interactions the model saw) is masked; pass ``split.fit`` and
    ``split.valid`` while tuning, ``split.train`` and ``split.test`` for the final numbers.
    """
    device = device if device is not None else getattr(model, "device", None)
    return topk_metrics(
        model.score_items, train=train.csr(device), test=test.csr(device), ks=ks, device=device
    )


def _fit_on_validation(
    model: Any, split: RankingSplit
) -> tuple[Any, dict[str, float], float, int | None]:
    """Fit on ``split.fit`` (early-stopping on ``split.valid`` where the model does); the
    model, its validation @20 scores, the fit seconds and the epoch early stopping kept."""
    start = time.perf_counter()
    model.fit(split.fit, valid=split.valid)
    seconds = time.perf_counter() - start
    scores = evaluate_ranking(model, train=split.fit, test=split.valid, ks=(20,))
    history = getattr(model, "history", None)
    best_epoch = history.attrs.get("best_epoch") if history is not None else None
    return model, scores, seconds, best_epoch


def ranking_grid(
    make_model: Callable[..., Any],
    grid: Sequence[dict[str, Any]],
    split: RankingSplit,
    *,
    metric: str = "ndcg@20",
    progress: bool = True,
    return_best: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, Any, dict[str, Any]]:
    """Validation ``metric`` of ``make_model(**options)`` fit on ``split.fit``, per option set.

    Returns the grid sorted best first (higher is better), with the fit seconds and, for
    models with a training history, the epoch early stopping kept; with ``return_best`` also
    the best fitted model and its options. The test part is never touched.
    """
    rows, best, best_options, best_value = [], None, {}, -float("inf")
    for options in tqdm(
        grid, desc="validation grid", unit="fit", disable=not progress, leave=False
    ):
        model, scores, seconds, best_epoch = _fit_on_validation(make_model(**options), split)
        value = scores[metric]
        row = {**options, f"valid_{metric}": value, "fit_seconds": seconds}
        if best_epoch is not None:
            row["best_epoch"] = best_epoch
        rows.append(row)
        if value > best_value:
            best, best_options, best_value = model, dict(options), value
    table = pd.DataFrame(rows).sort_values(f"valid_{metric}", ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    return (table, best, best_options) if return_best else table


@dataclass(frozen=True, eq=False)
class Tuned:
    """A model tuned on validation and scored once on test (see :func:`tune_and_test`).

    Attributes
    ----------
    name : str
    options : dict
        The grid point chosen on validation (plus ``epochs`` when early stopping chose them).
    grid : pandas.DataFrame
        Every grid point's validation score, best first (:func:`ranking_grid`).
    scores : dict
        Test metrics of the final model, fit on the whole train part.
    valid_model : object
        The best model of the grid, fit on ``split.fit`` (e.g. for its learning curve).
    model : object
        The final model.
    base : dict
        The options every grid point shared (a loss preset's ``base``), so that a record of
        the run replays the settings it was run with.
    """

    name: str
    options: dict[str, Any]
    grid: pd.DataFrame
    scores: dict[str, float]
    valid_model: Any
    model: Any
    base: dict[str, Any] = field(default_factory=dict)


def tune_and_test(
    make_model: Callable[..., Any],
    grid: Sequence[dict[str, Any]],
    split: RankingSplit,
    *,
    name: str,
    ks: Sequence[int] = RANKING_KS,
    progress: bool = True,
) -> Tuned:
    """Choose options on validation, refit on the whole train part, score test once.

    Every option set of ``grid`` is fit on ``split.fit`` and scored on ``split.valid``
    (:func:`ranking_grid`); the best one is refit on ``split.train`` (fit + valid) and scored
    on ``split.test`` with ``split.train`` masked. For a model that early-stopped on
    validation, the refit runs the chosen number of epochs without validation
    (``make_model(**options, epochs=best_epoch, patience=None)``, so ``make_model`` must let
    these override its defaults): the test part never takes part in a choice.
    """
    table, best, options = ranking_grid(
        make_model, grid, split, progress=progress, return_best=True
    )
    history = getattr(best, "history", None)
    if history is not None and "best_epoch" in history.attrs:
        options = {**options, "epochs": int(history.attrs["best_epoch"]), "patience": None}
    final = make_model(**options).fit(split.train)
    scores = evaluate_ranking(final, train=split.train, test=split.test, ks=ks)
    return Tuned(
        name=name, options=options, grid=table, scores=scores, valid_model=best, model=final
    )


def compare_losses(
    split: RankingSplit,
    *,
    losses: Sequence[str] | None = None,
    grids: Mapping[str, Any] | None = None,
    epochs: int = 30,
    patience: int = 3,
    seed: int = 0,
    device: Any = None,
    progress: bool = True,
) -> dict[str, Tuned]:
    """Every loss on the same two-tower MF and split, each tuned on its own validation grid.

    Parameters
    ----------
    split : RankingSplit
    losses : sequence of str, optional
        Names of ``grids`` to run (default: all, in order).
    grids : mapping of str to LossGrid, optional
        Default :data:`mfutils.losses.presets.LOSS_GRIDS`.
    epochs, patience : int
        Upper bound of the epochs and early-stopping patience on validation NDCG@20.
    seed : int
        The same initialisation and sampling seed for every loss.
    device : optional

    Returns
    -------
    dict of str to Tuned
        Per loss: its grid, the chosen options and the test scores of the refit model.
    """

    grids = LOSS_GRIDS if grids is None else grids
    names = list(grids) if losses is None else list(losses)
    unknown = sorted(set(names) - set(grids))
    if unknown:
        raise ValueError(f"unknown losses {unknown}; choose from {list(grids)}")
    tuned = {}
    for name in tqdm(names, desc="losses", unit="loss", disable=not progress):
        base = {
            "epochs": epochs,
            "patience": patience,
            "seed": seed,
            "device": device,
            **grids[name].base,
        }

        def make(_base: dict[str, Any] = base, **options: Any) -> TwoTower:
            return TwoTower(**{**_base, **options})

        result = tune_and_test(make, grids[name].grid, split, name=name, progress=False)
        tuned[name] = replace(result, base=dict(grids[name].base))
    return tuned


def tuned_table(
    tuned: Mapping[str, Tuned],
    *,
    metrics: Sequence[str] = (
        "recall@10",
        "ndcg@10",
        "recall@20",
        "ndcg@20",
        "recall@50",
        "ndcg@50",
    ),
) -> pd.DataFrame:
    """One row per tuned model: the chosen options, the validation NDCG@20 behind the choice,
    and the test ``metrics``."""
    rows = {}
    for name, result in tuned.items():
        chosen = {k: v for k, v in result.options.items() if k != "patience"}
        rows[name] = {
            "chosen": ", ".join(f"{k}={v}" for k, v in chosen.items()),
            "valid ndcg@20": result.grid["valid_ndcg@20"].iloc[0],
            **{m: result.scores[m] for m in metrics},
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def ablation(
    make_model: Callable[..., Any],
    variants: Mapping[str, dict[str, Any]],
    split: RankingSplit,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """Validation Recall@20 and NDCG@20 of ``make_model(**options)`` per labelled variant.

    Every variant is fit on ``split.fit`` (early-stopping on ``split.valid`` where the model
    does) and scored on ``split.valid``: an ablation compares design choices, so it stays on
    validation like any other choice, in the order given.
    """
    rows = {}
    for label, options in tqdm(
        variants.items(), desc="ablation", unit="fit", disable=not progress, leave=False
    ):
        _, scores, seconds, best_epoch = _fit_on_validation(make_model(**options), split)
        rows[label] = {
            "valid recall@20": scores["recall@20"],
            "valid ndcg@20": scores["ndcg@20"],
            "best_epoch": best_epoch,
            "fit_seconds": seconds,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def study_record(tuned: Mapping[str, Tuned]) -> dict[str, dict[str, Any]]:
    """A JSON-ready record of a tuning run: per model its grid, chosen options and test scores
    (what :func:`refit_study` replays)."""
    return {
        name: {
            "base": result.base,
            "options": result.options,
            "grid": result.grid.astype(object)
            .where(result.grid.notna(), None)
            .to_dict(orient="records"),
            "scores": result.scores,
        }
        for name, result in tuned.items()
    }


def refit_study(
    record: Mapping[str, Mapping[str, Any]],
    split: RankingSplit,
    *,
    grids: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: Any = None,
    progress: bool = True,
) -> dict[str, Tuned]:
    """Replay the final step of :func:`compare_losses` from a saved :func:`study_record`.

    Each loss is fit on ``split.train`` with the settings recorded for it: the preset's
    ``base`` and the options its validation grid chose. So a replay is the recorded run
    whatever the presets say today (a difference is logged). The split must be the one of the
    record. ``grids`` (default :data:`mfutils.losses.presets.LOSS_GRIDS`) supplies the base
    only for records written before the base was recorded.
    """

    grids = LOSS_GRIDS if grids is None else grids
    unknown = sorted(
        name for name, entry in record.items() if "base" not in entry and name not in grids
    )
    if unknown:
        raise ValueError(
            f"the record holds unknown losses {unknown} and no base settings for "
            f"them; known: {list(grids)}"
        )
    tuned = {}
    for name, entry in tqdm(record.items(), desc="losses", unit="loss", disable=not progress):
        options = dict(entry["options"])
        if "base" in entry:
            base = dict(entry["base"])
            if name in grids and dict(grids[name].base) != base:
                log.info(
                    "%s: replaying the recorded settings %s; today's preset is %s",
                    name,
                    base,
                    dict(grids[name].base),
                )
        else:
            base = dict(grids[name].base)
            log.warning(
                "%s: the record has no base settings (written before they were "
                "recorded); replaying with today's preset %s",
                name,
                base,
            )
        model = TwoTower(**{"seed": seed, "device": device, **base, **options})
        model.fit(split.train)
        scores = evaluate_ranking(model, train=split.train, test=split.test)
        tuned[name] = Tuned(
            name=name,
            options=options,
            grid=pd.DataFrame(entry["grid"]),
            scores=scores,
            valid_model=None,
            model=model,
            base=base,
        )
    return tuned
