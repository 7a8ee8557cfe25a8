"""Train, evaluate and export any registered model: the code paths behind ``mfutils train``.

The same calls the notebooks make -- :func:`mfutils.data.load_movielens`, the splits of
:mod:`mfutils.data.splits`, ``model.fit``, :func:`mfutils.metrics.rmse` / ``mae`` /
``topk_metrics`` -- wrapped so that a command line (or a notebook) names a model, its options
and a split by strings and gets an :class:`~mfutils.serving.artifact.Artifact` back.

Model names are those of :mod:`mfutils.models.registry`: class names (``BiasedMF``,
``SVDpp``, ...; case-insensitive), ``Class-METHOD`` (``BiasedMF-SGD`` =
``BiasedMF(method="sgd")``) and the presets (``FM-side``, ``FM-ids``), so the rows of
``benchmarks/results/explicit-ml-100k.json`` can be trained by name.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import mfutils.models  # noqa: F401 - importing registers every model class
from mfutils.data.container import Ratings, UserItemCSR
from mfutils.data.splits import canonical_folds, per_user_holdout, random_holdout, temporal_holdout
from mfutils.device import get_device
from mfutils.metrics import mae, rmse, topk_metrics
from mfutils.models import registry
from mfutils.models.base import ExplicitModel, Model
from mfutils.models.registry import constructor_options
from mfutils.serving.artifact import Artifact
from mfutils.serving.foldin import ridge_penalties
from mfutils.serving.recommender import new_user_method

SPLITS = ("u1", "u2", "u3", "u4", "u5", "random", "per-user", "temporal", "full")


def registered_models(kind: str | None = "explicit") -> dict[str, type]:
    """Every concrete model class of ``kind`` by name, sorted (:mod:`mfutils.models.registry`;
    ``None``: explicit and ranking)."""
    return {name: registry.get(name) for name in registry.names(kind=kind)}


def resolve_model(name: str) -> tuple[type[Model], dict[str, Any]]:
    """The class and implied options of a model name (``"BiasedMF-SGD"`` -> BiasedMF, sgd;
    ``"iALS"`` -> ImplicitALS; :func:`mfutils.models.registry.resolve`).

    Raises
    ------
    ValueError
        Unknown name, or a ``-SUFFIX`` on a class without a ``method`` option.
    """
    return registry.resolve(name)


def parse_params(cls: type[ExplicitModel], pairs: list[str]) -> dict[str, Any]:
    """``["n_factors=50", "method=als"]`` as checked constructor options of ``cls``.

    Values are Python literals when they parse (``50``, ``0.1``, ``True``, ``None``,
    ``{"reg_item": 3}``), else strings.

    Raises
    ------
    ValueError
        A pair without ``=``, an option ``cls`` does not take (the message lists the valid
        ones), or a value of the wrong kind for the option's default.
    """
    options = constructor_options(cls)
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"parameter {pair!r} is not of the form name=value")
        if key not in options:
            raise ValueError(
                f"{cls.__name__} has no parameter {key!r}; valid: {', '.join(options)}"
            )
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
            if value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
                value = float(value)
        params[key] = _check_range(cls, key, _check_kind(cls, key, value, options[key]))
    return params


# Option names whose values must be positive (learning rates, sizes, counts) or >= 0
# (penalties), across every model: the one naming convention of the package's options.
_POSITIVE_PREFIXES = ("lr", "n_", "epochs", "batch_size", "prime_dim")
_NON_NEGATIVE_PREFIXES = ("reg", "weight_decay", "dropout")


def _check_range(cls: type, key: str, value: Any) -> Any:
    """Refuse NaN and infinity everywhere, values <= 0 for rates and sizes, < 0 for
    penalties (``-p lr=nan`` would otherwise train a model of NaNs)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if not math.isfinite(value):
        raise ValueError(f"{cls.__name__} parameter {key!r} must be a finite number; got {value!r}")
    if key.startswith(_POSITIVE_PREFIXES) and value <= 0:
        raise ValueError(f"{cls.__name__} parameter {key!r} must be > 0; got {value!r}")
    if key.startswith(_NON_NEGATIVE_PREFIXES) and value < 0:
        raise ValueError(
            f"{cls.__name__} parameter {key!r} must be >= 0 (a penalty); got {value!r}"
        )
    return value


def build_model(
    name: str,
    params: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> Model:
    """An unfitted model from a name and options; ``seed`` applies unless given in ``params``.

    Raises
    ------
    ValueError
        Unknown name or option, or an option value the model rejects (with its message).
    """
    cls, implied = resolve_model(name)
    options = {**implied, **(params or {})}
    if "seed" in constructor_options(cls):
        options.setdefault("seed", seed)
    try:
        return cls(**options, device=get_device(device))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{cls.__name__}({_call(options)}): {err}") from err


def make_split(
    data: Ratings, split: str, *, seed: int = 0, test_fraction: float = 0.2
) -> tuple[Ratings, Ratings | None, str]:
    """``(train, test, protocol)`` of one named split; ``test`` is ``None`` for ``full``.

    ``u1`` .. ``u5`` are ML-100K's canonical folds; ``random``, ``per-user`` and ``temporal``
    hold out ``test_fraction`` of all ratings, of each user's ratings, or each user's latest.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    pct = f"{test_fraction:.0%}"
    if split == "full":
        return data, None, "all ratings (no held-out test)"
    if split.startswith("u"):
        if data.fold is None:
            raise ValueError(
                f"split {split!r} needs ML-100K's canonical u1..u5 files; "
                f"{data.name!r} has none: use --split random"
            )
        train, test = canonical_folds(data)[int(split[1]) - 1]
        return train, test, f"canonical {split}.base / {split}.test"
    if split == "random":
        train, test = random_holdout(data, test_fraction=test_fraction, seed=seed)
        return train, test, f"random {pct} holdout, seed {seed}"
    if split == "per-user":
        train, test = per_user_holdout(data, test_fraction=test_fraction, seed=seed)
        return train, test, f"per-user {pct} holdout, seed {seed}"
    train, test = temporal_holdout(data, test_fraction=test_fraction)
    return train, test, f"temporal: each user's latest {pct}"


def evaluate(
    model: Model, test: Ratings, *, seen: UserItemCSR | None = None, topk: bool = True
) -> dict[str, float]:
    """Held-out metrics of a fitted model on ``test``.

    Explicit models: ``rmse`` and ``mae``, and with ``topk`` ``recall@10`` and ``ndcg@10``
    over the full catalogue (every test item relevant, ``seen`` items masked). Ranking models
    rank and do not predict ratings: ``recall@10``, ``ndcg@10``, ``recall@20`` and
    ``ndcg@20``, whatever ``topk``.

    ``test`` must index the model's id spaces (the same data set); ``seen`` defaults to the
    model's training items.
    """
    ranking_model = model.kind == "ranking"
    metrics = {}
    if not ranking_model:
        pred = model.predict_ratings(test)
        metrics = {"rmse": rmse(pred, test.rating), "mae": mae(pred, test.rating)}
    if topk or ranking_model:
        device = model.device
        seen = model.train_csr if seen is None else seen
        truth = UserItemCSR.from_pairs(
            test.user, test.item, n_users=model.n_users, n_items=model.n_items, device=device
        )
        ks = (10, 20) if ranking_model else (10,)
        ranking = topk_metrics(model.score_items, train=seen.to(device), test=truth, ks=ks)
        metrics.update(
            {f"{name}@{k}": ranking[f"{name}@{k}"] for k in ks for name in ("recall", "ndcg")}
        )
    return metrics


def train_artifact(
    name: str,
    data: Ratings,
    *,
    params: dict[str, Any] | None = None,
    split: str = "u1",
    seed: int = 0,
    device: str | torch.device | None = None,
    topk: bool = True,
) -> Artifact:
    """Fit ``name`` on the training part of ``split``, evaluate on its test part, package it.

    Returns
    -------
    Artifact
        With ``metrics`` (empty for ``split="full"``) and the split's protocol.
    """
    model = build_model(name, params, seed=seed, device=device)
    train, test, protocol = make_split(data, split, seed=seed)
    model.fit(train)
    metrics = {} if test is None else evaluate(model, test, topk=topk)
    artifact = Artifact.from_training(
        model, train, name=name, split=split, protocol=protocol, metrics=metrics, params=params
    )
    artifact.info["warnings"] = (
        []
        if model.kind == "ranking"
        else fit_warnings(model, train if test is None else test, params)
    )
    return artifact


def fit_warnings(
    model: ExplicitModel, data: Ratings, params: dict[str, Any] | None = None
) -> list[str]:
    """Warnings about a fitted model: today, an RMSE on ``data`` worse than predicting the
    training mean for every rating, the sign of a fit that diverged without reaching NaN
    (e.g. Adam with a huge ``lr``)."""
    pred = model.predict_ratings(data)
    model_rmse = rmse(pred, data.rating)
    mean_rmse = rmse(np.full(len(data), float(model.mu)), data.rating)
    if not model_rmse > mean_rmse:
        return []
    rates = {k: v for k, v in (params or {}).items() if k.startswith("lr")}
    return [
        f"RMSE {model_rmse:.4f} is worse than predicting the training mean "
        f"({mean_rmse:.4f}): training probably diverged"
        + (f" with {_call(rates)}; try a smaller learning rate" if rates else "")
    ]


def check_same_ids(model: ExplicitModel, data: Ratings) -> None:
    """Raise ``ValueError`` unless ``data``'s ids are (a prefix of) the model's id spaces."""
    for kind, ids in (("user", data.user_ids), ("item", data.item_ids)):
        known = getattr(model, f"{kind}_ids")
        if len(known) < len(ids) or not np.array_equal(known[: len(ids)], ids):
            raise ValueError(
                f"{data.name!r} has other {kind} ids than the model was trained "
                "on: evaluate an artifact on the data set it was trained on"
            )


def capabilities(cls: type[Model], params: dict[str, Any] | None = None) -> dict[str, Any]:
    """How the service answers new users and whether it takes online updates, per model."""
    model = cls(**(params or {}), device="cpu")
    return {
        "new_user": new_user_method(model),
        "online_updates": ridge_penalties(model) is not None,
    }


def results_table(path: str | Path) -> pd.DataFrame:
    """The rows of a ``benchmarks/explicit.py`` JSON file, best mean RMSE first, with each
    model's class, implied options and serving capabilities (``None`` for peers that are not
    registered models, e.g. Surprise).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing file, or one without a ``models`` list.
    """
    payload = json.loads(Path(path).read_text())
    if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
        raise ValueError(f"{path}: expected the JSON of benchmarks/explicit.py (a 'models' list)")
    rows = []
    for record in payload["models"]:
        try:
            cls, implied = resolve_model(record["model"])
            serving = capabilities(cls, implied)
        except ValueError:
            cls, implied, serving = None, None, {"new_user": None, "online_updates": None}
        rows.append(
            {
                "model": record["model"],
                "rmse_mean": record["rmse_mean"],
                "folds": ",".join(record.get("folds", [])),
                "class": None if cls is None else cls.__name__,
                "params": implied,
                **serving,
            }
        )
    table = pd.DataFrame(rows).sort_values("rmse_mean", kind="stable", ignore_index=True)
    table.attrs["protocol"] = payload.get("meta", {}).get("protocol")
    return table


def choose_model(
    path: str | Path, *, online_updates: bool = True, fallback: str = "BiasedMF-SGD"
) -> tuple[str, pd.DataFrame]:
    """The best (lowest mean RMSE) registered model of a results file, and the table.

    With ``online_updates`` only models the service can fold new users into and update
    online qualify. A missing or unreadable file, or no qualifying row, gives ``fallback``
    (biased MF by SGD, the package's default) and an empty table.
    """
    try:
        table = results_table(path)
    except (OSError, ValueError) as err:
        print(f"no usable results table ({err}); serving {fallback}")
        return fallback, pd.DataFrame()
    ok = table["class"].notna()
    if online_updates:
        ok &= table["online_updates"].fillna(False).astype(bool)
    return (table.loc[ok, "model"].iloc[0] if ok.any() else fallback), table


def _check_kind(cls: type, key: str, value: Any, default: Any) -> Any:
    """Reject a value whose kind differs from the option's default (bool, int, float, str)."""
    if value is None or default is None or default is inspect.Parameter.empty:
        return value
    kinds = [
        (bool, (bool,), "a bool"),
        (int, (int,), "an int"),
        (float, (int, float), "a number"),
        (str, (str,), "a string"),
    ]
    for kind, accepted, label in kinds:
        if isinstance(default, kind):
            if isinstance(value, accepted) and (kind is bool or not isinstance(value, bool)):
                return float(value) if kind is float else value
            raise ValueError(
                f"{cls.__name__} parameter {key!r} expects {label} "
                f"(default {default!r}); got {value!r}"
            )
    return value


def _call(options: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in options.items())
