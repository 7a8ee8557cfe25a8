r"""Linear blending of rating predictors, as in the Netflix prize.

The winning Netflix teams did not pick one model: they combined hundreds by a regression on
predictions for ratings the models had not been trained on (Töscher, Jahrer & Bell 2009,
"The BigChaos Solution to the Netflix Grand Prize", §3; Koren 2009, "The BellKor Solution",
§VI). The protocol, with the probe set of the prize replaced by a validation split of each
training fold:

1. Carve a validation part ``V`` out of the training fold ``T`` (never the test part).
2. Fit every model on ``T \ V`` and predict ``V`` (and the test part).
3. Learn blend weights on ``V``: ridge regression with an intercept,

   .. math::
       \min_{w, b}\ \frac{1}{|V|}\sum_{(u,i)\in V}\big(r_{ui} - b - \textstyle\sum_m w_m
       \hat r^{(m)}_{ui}\big)^2 + \lambda\,\lVert w\rVert^2,

   with :math:`\lambda` chosen by K-fold cross-validation *within* ``V``.
4. Optionally (the prize's "probe refit") refit every model with the same hyperparameters on
   all of ``T`` and apply the weights to these models' test predictions: the models gain the
   validation ratings, the weights stay those learned on held-out predictions.

Optionally the weights vary with how much is known about the user and the item, as in the
prize blends that fed the *support* of a rating to the blender (Töscher, Jahrer & Bell 2009,
§3): with standardised features :math:`s_{ui}` (log user and item support in the models'
training data), the blend stays linear in its parameters,

.. math::
    \hat r_{ui} = b + \sum_m \Big(w_m + \sum_k v_{mk}\, s_{ui,k}\Big)\,\hat r^{(m)}_{ui}
    + \sum_k c_k\, s_{ui,k},

and is fit by the same ridge regression on the expanded columns.

The ridge problem is solved in closed form (centred normal equations, float64, on any torch
device); the penalty keeps it well posed when two models predict alike or a column is constant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mfutils.data.container import Ratings
from mfutils.data.splits import validation_split
from mfutils.metrics import rmse
from mfutils.models import registry

__all__ = [
    "DEFAULT_LAMBDAS",
    "DETERMINISTIC_MODELS",
    "SERIES_MODELS",
    "VARIANT_MODELS",
    "FoldPredictions",
    "LinearBlend",
    "SeedBag",
    "blend_folds",
    "fit_ridge_blend",
    "fold_predictions",
    "ridge_solve",
    "series_model_spec",
    "series_models",
    "support_features",
]

DEFAULT_LAMBDAS = tuple(float(v) for v in np.logspace(-6, 1, 15))
SERIES_MODELS = (
    "BaselineEstimates-ALS",
    "BiasedMF-SGD",
    "BiasedMF-Adam",
    "BiasedMF-ALS",
    "ItemKNN",
    "GlobalNeighborhood",
    "SVDpp",
    "AsymmetricSVD",
    "IntegratedModel",
    "TimeSVDpp",
    "FM-side",
    "DeepFM",
    "NNMF",
    "BayesianMF",
    "BayesianFM",
)
# Variants the explicit benchmark runs beside the series (the FM on ids alone; the Bayesian
# FM on ids alone, with both bags but no side features, and its ordinal rank-16 setting):
# names series_models accepts too.
VARIANT_MODELS = ("FM-ids", "BayesianFM-ids", "BayesianFM-flipped", "BayesianFM-ordinal")
Predictions = Mapping[str, np.ndarray] | pd.DataFrame


@dataclass(frozen=True, eq=False)
class LinearBlend:
    """``b + sum_j w_j * column_j``, learned by :func:`fit_ridge_blend`.

    The columns are the predictions, and with features also every prediction times every
    (standardised) feature and the features themselves.

    Attributes
    ----------
    names : tuple of str
        The predictors (models).
    feature_names : tuple of str
        The features the weights depend on (empty for a plain blend).
    columns : tuple of str
        Names of all columns, in the order of ``weights``.
    weights : np.ndarray, shape (len(columns),)
    intercept : float
    lam : float
        The ridge penalty chosen by cross-validation.
    cv : pandas.DataFrame
        Cross-validated RMSE of every candidate ``lam`` (columns ``lam, cv_rmse``).
    feature_mean, feature_std : np.ndarray, shape (len(feature_names),)
        Standardisation of the features, from the rows the blend was fit on.
    clip : tuple of float, optional
        The rating scale blended predictions are clipped to.
    """

    names: tuple[str, ...]
    feature_names: tuple[str, ...]
    columns: tuple[str, ...]
    weights: np.ndarray
    intercept: float
    lam: float
    cv: pd.DataFrame = field(repr=False)
    feature_mean: np.ndarray = field(repr=False)
    feature_std: np.ndarray = field(repr=False)
    clip: tuple[float, float] | None = None

    def predict(self, predictions: Predictions, features: pd.DataFrame | None = None) -> np.ndarray:
        """Blend the columns named in :attr:`names` (extra columns are ignored), float64.

        ``features`` (the same kind of features as in fitting, for the same rows) is required
        when the blend was fit with features.
        """
        if self.feature_names and features is None:
            raise ValueError(
                f"this blend was fit with the features {list(self.feature_names)}; "
                "pass them for the rows to predict"
            )
        x = _expand(_design(predictions, self.names), self._standard(features))
        out = x @ self.weights + self.intercept
        return np.clip(out, *self.clip) if self.clip is not None else out

    def frame(self) -> pd.DataFrame:
        """The weights as a table, intercept last."""
        return pd.DataFrame(
            {
                "column": [*self.columns, "(intercept)"],
                "weight": [*self.weights.tolist(), self.intercept],
            }
        )

    def _standard(self, features: pd.DataFrame | None) -> np.ndarray | None:
        if not self.feature_names:
            return None
        return (_design(features, self.feature_names) - self.feature_mean) / self.feature_std


def ridge_solve(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Ridge regression with an unpenalised intercept, in closed form.

    Solves :math:`(X_c^\top X_c / n + \lambda I)\,w = X_c^\top y_c / n` with :math:`X_c, y_c`
    the centred data, then :math:`b = \bar y - \bar x^\top w`.

    Parameters
    ----------
    x : Tensor, shape (n, m)
    y : Tensor, shape (n,)
    lam : float
        Penalty :math:`\lambda \ge 0` on the mean squared error's scale; ``0`` is least squares
        (and needs linearly independent, non-constant columns).

    Returns
    -------
    weights : Tensor, shape (m,)
    intercept : Tensor, shape ()
    """
    x_mean, y_mean = x.mean(0), y.mean()  # shape: (m,), ()
    xc, yc = x - x_mean, y - y_mean  # shape: (n, m), (n,)
    n, m = x.shape
    gram = xc.T @ xc / n + lam * torch.eye(m, dtype=x.dtype, device=x.device)  # shape: (m, m)
    weights = torch.linalg.solve(gram, xc.T @ yc / n)  # shape: (m,)
    return weights, y_mean - x_mean @ weights


def fit_ridge_blend(
    predictions: Predictions,
    target: np.ndarray,
    *,
    features: pd.DataFrame | None = None,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    n_folds: int = 5,
    seed: int = 0,
    clip: tuple[float, float] | None = None,
    device: torch.device | str | None = None,
) -> LinearBlend:
    """Learn a ridge blend of ``predictions`` for ``target``; ``lam`` by K-fold CV.

    Parameters
    ----------
    predictions : mapping of str to array, or DataFrame
        One column of predictions per model for the *validation* ratings (held out from the
        models' training data). Never pass test-set predictions here.
    target : np.ndarray, shape (n,)
        The validation ratings.
    features : pandas.DataFrame, optional
        Per-row features (e.g. :func:`support_features`) the weights may depend on; they are
        standardised and enter as ``prediction * feature`` and ``feature`` columns.
    lambdas : sequence of float
        Candidate penalties (on the mean squared error's scale).
    n_folds : int
        Folds of the cross-validation over the validation rows that picks ``lam``; the final
        weights are refit on all rows with that ``lam``.
    seed : int
        Seed of the CV fold assignment.
    clip : tuple of float, optional
        Clip blended predictions to this rating scale.
    device : str or torch.device, optional
        Where to solve; CPU by default (the system is ``m x m``).

    Raises
    ------
    ValueError
        When columns differ in length from each other or from ``target``, contain NaN/inf,
        there are fewer than ``2 * n_folds`` rows, or no ``lambdas``.
    """
    names = tuple(predictions.keys())
    x_np = _design(predictions, names)  # shape: (n, m)
    feature_names = () if features is None else tuple(features.columns)
    mean, std = np.zeros(len(feature_names)), np.ones(len(feature_names))
    if feature_names:
        f_np = _design(features, feature_names)  # shape: (n, q)
        if len(f_np) != len(x_np):
            raise ValueError(f"features have {len(f_np)} rows, the predictions {len(x_np)}")
        mean, std = f_np.mean(0), f_np.std(0)
        std[std == 0] = 1.0
        x_np = _expand(x_np, (f_np - mean) / std)  # shape: (n, m + m q + q)
    y_np = np.array(target, dtype=np.float64)  # a writable copy
    if y_np.shape != (len(x_np),):
        raise ValueError(
            f"target has shape {y_np.shape}; the predictions have {len(x_np)} rows "
            "each: pass the ratings of the same rows, in the same order"
        )
    if not np.isfinite(y_np).all():
        raise ValueError("target contains NaN or inf")
    if not lambdas or min(lambdas) < 0:
        raise ValueError(f"lambdas={lambdas!r} must be a non-empty sequence of values >= 0")
    if n_folds < 2 or len(y_np) < 2 * n_folds:
        raise ValueError(
            f"need n_folds >= 2 and at least 2 * n_folds rows; got n_folds="
            f"{n_folds} and {len(y_np)} rows"
        )
    device = torch.device(device) if device is not None else torch.device("cpu")
    x = torch.as_tensor(x_np, device=device)
    y = torch.as_tensor(y_np, device=device)
    gen = torch.Generator().manual_seed(seed)
    fold = (torch.randperm(len(y), generator=gen) % n_folds).to(device)  # shape: (n,)
    rows = []
    for lam in lambdas:
        squared = 0.0
        for k in range(n_folds):
            held = fold == k
            w, b = ridge_solve(x[~held], y[~held], lam)
            squared += float(((x[held] @ w + b - y[held]) ** 2).sum())
        rows.append({"lam": float(lam), "cv_rmse": (squared / len(y)) ** 0.5})
    cv = pd.DataFrame(rows)
    best = float(cv.loc[cv["cv_rmse"].idxmin(), "lam"])
    w, b = ridge_solve(x, y, best)
    columns = (
        *names,
        *(f"{name} x {feature}" for name in names for feature in feature_names),
        *feature_names,
    )
    return LinearBlend(
        names=names,
        feature_names=feature_names,
        columns=columns,
        weights=w.cpu().numpy(),
        intercept=float(b),
        lam=best,
        cv=cv,
        feature_mean=mean,
        feature_std=std,
        clip=clip,
    )


def support_features(rows: Ratings, seen: Ratings) -> pd.DataFrame:
    """``log(1 + support)`` of each row's user and item: their rating counts in ``seen``.

    Parameters
    ----------
    rows : Ratings
        The ratings to describe (validation or test rows).
    seen : Ratings
        The data the models predicting ``rows`` were fit on (same id space).
    """
    if (rows.n_users, rows.n_items) != (seen.n_users, seen.n_items):
        raise ValueError("rows and seen must share one id space (parts of one Ratings)")
    return pd.DataFrame(
        {
            "log_user_support": np.log1p(seen.user_counts())[rows.user],
            "log_item_support": np.log1p(seen.item_counts())[rows.item],
        }
    )


# ---------------------------------------------------------------------- the fold protocol
DETERMINISTIC_MODELS = ("BaselineEstimates-ALS", "ItemKNN")


class SeedBag:
    """One model fit once per seed; predicts the mean of the fits (a "seed bag").

    Averaging a stochastic model over seeds removes part of its variance -- the randomness of
    its initialisation and of the order of its SGD steps -- at the price of one fit per seed.
    The prize teams bagged their members the same way before blending (Töscher, Jahrer & Bell
    2009, §3).

    Parameters
    ----------
    make : callable
        ``make(seed)`` returns an unfitted model with ``fit(ratings)`` and
        ``predict_ratings(ratings)``.
    seeds : sequence of int
        One fit per seed.
    """

    def __init__(self, make: Callable[[int], Any], seeds: Sequence[int]) -> None:
        if len(seeds) == 0:
            raise ValueError("a seed bag needs at least one seed")
        self.make, self.seeds = make, tuple(seeds)
        self.models: list[Any] = []

    def fit(self, ratings: Ratings) -> SeedBag:
        self.models = [self.make(seed) for seed in self.seeds]
        for model in self.models:
            model.fit(ratings)
        return self

    def predict_ratings(self, data: Ratings) -> np.ndarray:
        """The mean of the fits' predictions for every (user, item) row of ``data``."""
        if not self.models:
            raise RuntimeError("call fit() before predict_ratings()")
        # shape: (n_seeds, len(data))
        predictions = np.stack(
            [np.asarray(model.predict_ratings(data), dtype=np.float64) for model in self.models]
        )
        return predictions.mean(axis=0)


def series_model_spec(name: str) -> tuple[type, dict[str, Any], bool]:
    """The class, the options a series name implies, and whether the model takes a seed.

    ``"BiasedMF-SGD"`` is ``(BiasedMF, {"method": "sgd"}, True)``: the names are
    :data:`SERIES_MODELS` and ``FM-ids`` (the factorization machine on ids alone, which the
    explicit benchmark adds), resolved by :func:`mfutils.models.registry.resolve`.
    :func:`series_models` builds every model from it, so a tuned setting
    (:mod:`mfutils.tuning`) means the same model as the defaults.

    Raises
    ------
    ValueError
        An unknown name (the message lists the series' models).
    """
    if name not in (*SERIES_MODELS, *VARIANT_MODELS):
        raise ValueError(f"unknown model {name!r}; choose from {[*SERIES_MODELS, *VARIANT_MODELS]}")
    cls, implied = registry.resolve(name)
    return cls, implied, "seed" in registry.constructor_options(cls)


def series_models(
    names: Sequence[str] | None = None,
    *,
    device: torch.device | str | None = None,
    seed: int = 0,
    n_seeds: int = 1,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Callable[[], Any]]:
    """Factories of the series' explicit models at their defaults (notebooks 01-10).

    Parameters
    ----------
    names : sequence of str, optional
        A subset of :data:`SERIES_MODELS` (default: all), in the order given; ``FM-ids``
        (see :func:`series_model_spec`) may be asked for too.
    device : str or torch.device, optional
    seed : int
        Seed of every stochastic model (the first seed of a bag).
    n_seeds : int
        With ``n_seeds > 1`` every stochastic model becomes a :class:`SeedBag` over the seeds
        ``seed .. seed + n_seeds - 1``; :data:`DETERMINISTIC_MODELS` are fit once.
    options : mapping of str to mapping, optional
        Constructor options per model name (e.g. a tuned setting) on top of the defaults and
        of what the name implies; a ``seed`` given there wins over ``seed``.
    """
    if n_seeds < 1:
        raise ValueError(f"n_seeds={n_seeds} must be >= 1")
    names = list(SERIES_MODELS if names is None else names)
    unknown = [name for name in names if name not in (*SERIES_MODELS, *VARIANT_MODELS)]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(SERIES_MODELS)}")
    seeds = range(seed, seed + n_seeds)

    def factory(name: str) -> Callable[[], Any]:
        cls, implied, seeded = series_model_spec(name)
        extra = dict((options or {}).get(name, {}))

        def make(s: int) -> Any:
            return cls(**{**implied, **({"seed": s} if seeded else {}), **extra}, device=device)

        if n_seeds == 1 or name in DETERMINISTIC_MODELS or "seed" in extra:
            return lambda: make(seed)
        return lambda: SeedBag(make, seeds)

    return {name: factory(name) for name in names}


@dataclass(frozen=True, eq=False)
class FoldPredictions:
    """Every model's predictions on one fold (see :func:`fold_predictions`).

    Attributes
    ----------
    valid : pandas.DataFrame
        Predictions for the validation ratings by models fit on train minus validation.
    valid_target : np.ndarray
    valid_features : pandas.DataFrame
        :func:`support_features` of the validation rows in the data those models saw.
    test : pandas.DataFrame
        Test predictions by the refit models (on all of train) when ``refit``, else by the
        same models as ``valid``.
    test_target : np.ndarray
    test_features : pandas.DataFrame
        :func:`support_features` of the test rows in the data the test models saw.
    fit_seconds : dict of str to float
        Seconds spent fitting and predicting with each model (both fits when refitting).
    """

    valid: pd.DataFrame
    valid_target: np.ndarray
    valid_features: pd.DataFrame
    test: pd.DataFrame
    test_target: np.ndarray
    test_features: pd.DataFrame
    fit_seconds: dict[str, float]


def fold_predictions(
    make_models: Mapping[str, Callable[[], Any]],
    train: Ratings,
    test: Ratings,
    *,
    valid_fraction: float = 0.1,
    seed: int = 0,
    refit: bool = True,
    progress: bool = False,
) -> FoldPredictions:
    """Steps 1, 2 and 4 of the protocol on one fold: validation and test predictions.

    Parameters
    ----------
    make_models : mapping of str to callable
        Each returns an unfitted model with ``fit(ratings)`` and ``predict_ratings(ratings)``.
    train, test : Ratings
        One fold. Models only ever ``fit`` on ``train`` or parts of it; of ``test`` only the
        (user, item, time) rows are read, and its ratings are copied out for scoring.
    valid_fraction : float
        Share of ``train`` held out for learning the blend (random, seeded by ``seed``).
    refit : bool
        Refit every model on all of ``train`` for the test predictions (the probe refit).
    progress : bool
        A progress bar over models.
    """
    fit_part, valid = validation_split(train, fraction=valid_fraction, seed=seed)
    valid_cols, test_cols, seconds = {}, {}, {}
    for name, make in tqdm(
        make_models.items(), desc="models", unit="model", disable=not progress, leave=False
    ):
        start = time.perf_counter()
        model = make()
        model.fit(fit_part)
        valid_cols[name] = np.asarray(model.predict_ratings(valid), dtype=np.float64)
        if refit:
            model = make()
            model.fit(train)
        test_cols[name] = np.asarray(model.predict_ratings(test), dtype=np.float64)
        seconds[name] = time.perf_counter() - start
    return FoldPredictions(
        valid=pd.DataFrame(valid_cols),
        valid_target=valid.rating.copy(),
        valid_features=support_features(valid, fit_part),
        test=pd.DataFrame(test_cols),
        test_target=test.rating.copy(),
        test_features=support_features(test, train if refit else fit_part),
        fit_seconds=seconds,
    )


def blend_folds(
    make_models: Mapping[str, Callable[[], Any]],
    folds: Sequence[tuple[Ratings, Ratings]],
    *,
    fold_names: Sequence[str] | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    refit: bool = True,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, dict[str, LinearBlend]]]:
    """The whole protocol on every fold: each model's and the blends' test RMSE.

    Two blends are learned on each fold's validation part: ``"Blend"`` (one weight per model)
    and ``"Blend + support"`` (weights that depend on the user's and item's support, see
    :func:`support_features`).

    Returns
    -------
    per_fold : pandas.DataFrame
        Rows ``model, fold, rmse, valid_rmse, fit_seconds``. For the blends ``valid_rmse`` is
        the cross-validated RMSE on the validation part and ``fit_seconds`` the models' total.
    blends : dict of str to dict of str to LinearBlend
        ``blends[fold][blend_name]``, the blends learned on each fold.
    """
    fold_names = list(fold_names or [f"u{k}" for k in range(1, len(folds) + 1)])
    rows, blends = [], {}
    for label, (train, test) in tqdm(
        list(zip(fold_names, folds, strict=True)), desc="folds", unit="fold", disable=not progress
    ):
        preds = fold_predictions(
            make_models, train, test, valid_fraction=valid_fraction, seed=seed, refit=refit
        )
        for name in preds.valid:
            rows.append(
                {
                    "model": name,
                    "fold": label,
                    "rmse": rmse(preds.test[name], preds.test_target),
                    "valid_rmse": rmse(preds.valid[name], preds.valid_target),
                    "fit_seconds": preds.fit_seconds[name],
                }
            )
        blends[label] = {}
        for blend_name, use_features in (("Blend", False), ("Blend + support", True)):
            blend = fit_ridge_blend(
                preds.valid,
                preds.valid_target,
                lambdas=lambdas,
                seed=seed,
                features=preds.valid_features if use_features else None,
                clip=train.rating_scale,
            )
            blends[label][blend_name] = blend
            test_pred = blend.predict(preds.test, preds.test_features if use_features else None)
            rows.append(
                {
                    "model": blend_name,
                    "fold": label,
                    "rmse": rmse(test_pred, preds.test_target),
                    "valid_rmse": float(blend.cv["cv_rmse"].min()),
                    "fit_seconds": sum(preds.fit_seconds.values()),
                }
            )
    return pd.DataFrame(rows), blends


def _expand(x: np.ndarray, features: np.ndarray | None) -> np.ndarray:
    """``[x, x_m * f_k for every m, k, f]``, shape (n, m + m q + q); ``x`` without features."""
    if features is None:
        return x
    products = (x[:, :, None] * features[:, None, :]).reshape(len(x), -1)  # shape: (n, m q)
    return np.concatenate([x, products, features], axis=1)


def _design(predictions: Predictions, names: Sequence[str]) -> np.ndarray:
    """The columns ``names`` of ``predictions`` as a float64 matrix, shape (n, len(names))."""
    if len(names) == 0:
        raise ValueError("no predictors to blend")
    missing = [name for name in names if name not in predictions]
    if missing:
        raise ValueError(
            f"predictions lack the columns {missing}; they have {list(predictions.keys())}"
        )
    columns = [np.asarray(predictions[name], dtype=np.float64) for name in names]
    lengths = {name: col.shape for name, col in zip(names, columns, strict=True)}
    if any(len(shape) != 1 for shape in lengths.values()) or len(set(lengths.values())) != 1:
        raise ValueError(f"every prediction column must be 1-d and equally long; got {lengths}")
    x = np.stack(columns, axis=1)
    bad = [name for name, col in zip(names, columns, strict=True) if not np.isfinite(col).all()]
    if bad:
        raise ValueError(f"the prediction columns {bad} contain NaN or inf")
    return x
