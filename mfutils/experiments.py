"""Shared protocols: explicit models on rating folds, implicit models on a ranking split.

One code path for the notebooks and the benchmarks, so that every model of a comparison sees
the same split and the same metric code.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from tqdm.auto import tqdm

from mfutils.data.container import Ratings
from mfutils.data.implicit import to_implicit
from mfutils.data.splits import canonical_folds, kfold, per_user_holdout
from mfutils.losses.presets import LOSS_SPACES, LossSpace, expand
from mfutils.metrics import mae, rmse, topk_metrics
from mfutils.models.two_tower import TwoTower
from mfutils.train import TrainingFailed

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
    the best fitted model and its options. A point whose fit fails
    (:class:`~mfutils.train.TrainingFailed`: diverged, or collapsed to zero) is kept in the
    table with a NaN score and its reason in ``failed``, and is never chosen. The test part is
    never touched.
    """
    rows, best, best_options, best_value = [], None, {}, -float("inf")
    for options in tqdm(
        grid, desc="validation grid", unit="fit", disable=not progress, leave=False
    ):
        try:
            model, scores, seconds, best_epoch = _fit_on_validation(make_model(**options), split)
        except TrainingFailed as error:
            rows.append({**options, f"valid_{metric}": float("nan"), "failed": str(error)})
            continue
        value = scores[metric]
        row = {**options, f"valid_{metric}": value, "fit_seconds": seconds}
        if best_epoch is not None:
            row["best_epoch"] = best_epoch
        rows.append(row)
        if value > best_value:
            best, best_options, best_value = model, dict(options), value
    table = pd.DataFrame(rows).sort_values(f"valid_{metric}", ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    if best is None and return_best and rows:
        raise TrainingFailed(f"every one of the {len(rows)} grid points failed: {rows[0]}")
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


def suggest(trial: optuna.Trial, key: str, spec: tuple) -> Any:
    """One option of a search space spec: ``("log" | "float", low, high)``, ``("int", low,
    high[, "log"])`` or ``("choice", value, ...)`` (the specs of :mod:`mfutils.tuning` and of
    :data:`mfutils.losses.presets.LOSS_SPACES`)."""
    kind = spec[0]
    if kind == "log":
        return trial.suggest_float(key, spec[1], spec[2], log=True)
    if kind == "float":
        return trial.suggest_float(key, spec[1], spec[2])
    if kind == "int":
        return trial.suggest_int(key, spec[1], spec[2], log=len(spec) == 4)
    if kind == "choice":
        return trial.suggest_categorical(key, list(spec[1:]))
    raise ValueError(f"search space {key}={spec!r}: kind must be log, float, int or choice")


def compare_losses(
    split: RankingSplit,
    *,
    losses: Sequence[str] | None = None,
    spaces: Mapping[str, LossSpace] | None = None,
    trials: int = 8,
    epochs: int = 40,
    patience: int = 4,
    seed: int = 0,
    device: Any = None,
    progress: bool = True,
) -> dict[str, Tuned]:
    """Every loss on the same two-tower MF and split, each tuned with the same budget.

    Each loss gets ``trials`` Optuna trials on ``split.fit`` -> ``split.valid`` (validation
    NDCG@20, early stopping with ``patience`` within ``epochs``): the first is its paper's
    starting point (``LossSpace.start``), the others drawn from its ``space`` by a TPE sampler
    seeded with ``seed`` (random for the first few). The best trial is refit on
    ``split.train`` for its early-stopped number of epochs and scored once on ``split.test``
    (:func:`tune_and_test`'s protocol).

    Parameters
    ----------
    split : RankingSplit
    losses : sequence of str, optional
        Names of ``spaces`` to run (default: all, in order).
    spaces : mapping of str to LossSpace, optional
        Default :data:`mfutils.losses.presets.LOSS_SPACES`.
    trials : int
        Validation fits per loss, the same for every loss.
    epochs, patience : int
    seed : int
        The sampler's seed and every model's initialisation and sampling seed.
    device : optional

    Returns
    -------
    dict of str to Tuned
        Per loss: its trials (``grid``, best first), the chosen options (TwoTower's, with the
        refit's ``epochs``) and the test scores of the refit model.
    """
    spaces = LOSS_SPACES if spaces is None else spaces
    names = list(spaces) if losses is None else list(losses)
    unknown = sorted(set(names) - set(spaces))
    if unknown:
        raise ValueError(f"unknown losses {unknown}; choose from {list(spaces)}")
    if trials < 1:
        raise ValueError(f"trials={trials} must be >= 1")
    tuned = {}
    for name in tqdm(names, desc="losses", unit="loss", disable=not progress):
        spec = spaces[name]
        fixed = {"epochs": epochs, "patience": patience, "seed": seed, "device": device}
        grid, best = _search_loss(spec, split, trials=trials, fixed=fixed, seed=seed)
        options = {**best["options"], "epochs": int(best["best_epoch"] or epochs), "patience": None}
        final = TwoTower(**spec.base, **options, seed=seed, device=device).fit(split.train)
        scores = evaluate_ranking(final, train=split.train, test=split.test)
        tuned[name] = Tuned(
            name=name,
            options=options,
            grid=grid,
            scores=scores,
            valid_model=best["model"],
            model=final,
            base=dict(spec.base),
        )
    return tuned


def _search_loss(
    spec: LossSpace, split: RankingSplit, *, trials: int, fixed: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``trials`` validation fits of one loss (the start first, then seeded TPE draws): every
    trial's row, best first, and the best trial's options, model and early-stopped epoch."""
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        drawn = {key: suggest(trial, key, value) for key, value in spec.space.items()}
        options = expand({**spec.start, **drawn})
        model, scores, seconds, best_epoch = _fit_on_validation(
            TwoTower(**spec.base, **options, **fixed), split
        )
        value = scores["ndcg@20"]
        rows.append(
            {**drawn, "valid_ndcg@20": value, "fit_seconds": seconds, "best_epoch": best_epoch}
        )
        if not best or value > best["value"]:
            best.update(value=value, options=options, model=model, best_epoch=best_epoch)
        return value

    with _quiet_optuna():
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, trials // 2)),
        )
        study.enqueue_trial({key: spec.start[key] for key in spec.space if key in spec.start})
        study.optimize(objective, n_trials=trials)
    grid = pd.DataFrame(rows).sort_values("valid_ndcg@20", ascending=False, kind="stable")
    return grid.reset_index(drop=True), best


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines off while a study runs (the caller shows progress)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def seeds_table(
    records: Mapping[int, Mapping[str, Mapping[str, Any]]],
    *,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
) -> pd.DataFrame:
    """One row per loss from :func:`study_record` records of several seeds: the mean and std
    of each metric over the seeds, and ``tie``: the losses whose mean NDCG@20 is within one
    (sample) standard deviation of the best loss's, marked with the best one.

    ``records`` maps a seed to its record (each seed its own split and initialisation).
    """
    rows = []
    for seed, record in records.items():
        for loss, entry in record.items():
            rows.append({"loss": loss, "seed": seed, **{m: entry["scores"][m] for m in metrics}})
    long = pd.DataFrame(rows)
    table = long.groupby("loss", sort=False)[list(metrics)].agg(["mean", "std"])
    table.columns = [f"{metric} {stat}" for metric, stat in table.columns]
    table["seeds"] = long.groupby("loss", sort=False)["seed"].count()
    table = table.sort_values("ndcg@20 mean", ascending=False)
    top = table.iloc[0]
    spread = max(float(top["ndcg@20 std"]), 0.0) if len(records) > 1 else 0.0
    table["tie"] = (top["ndcg@20 mean"] - table["ndcg@20 mean"]) <= spread
    return table


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
    seed: int = 0,
    device: Any = None,
    progress: bool = True,
) -> dict[str, Tuned]:
    """Replay the final step of :func:`compare_losses` from a saved :func:`study_record`.

    Each loss is fit on ``split.train`` with exactly the settings recorded for it (the
    ``base`` every trial shared and the ``options`` its search chose), whatever the presets
    say today. The split and ``seed`` must be the record's.

    Raises
    ------
    ValueError
        A loss whose entry has no ``base`` (a record written before the settings were
        recorded in full): rerun the study.
    """
    missing = sorted(name for name, entry in record.items() if "base" not in entry)
    if missing:
        raise ValueError(
            f"the record has no base settings for {missing} (written before they were "
            "recorded): rerun the study (python benchmarks/implicit.py --losses)"
        )
    tuned = {}
    for name, entry in tqdm(record.items(), desc="losses", unit="loss", disable=not progress):
        base, options = dict(entry["base"]), dict(entry["options"])
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
