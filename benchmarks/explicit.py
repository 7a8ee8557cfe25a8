"""Explicit-rating benchmark: every model on the same folds, a Markdown table and a JSON file.

    python benchmarks/explicit.py                 # ML-100K u1..u5, the package's models
    python benchmarks/explicit.py --peers         # ... and Surprise on the same folds
    python benchmarks/explicit.py --models BiasedMF-SGD --folds 1
    python benchmarks/explicit.py --task binary   # rating >= 4 -> 1: AUC and log loss
    python benchmarks/explicit.py --split random90 --models NNMF BiasedMF-SGD
    python benchmarks/explicit.py --tune 30       # nested: tuned per fold (Optuna), then tested
    python benchmarks/explicit.py --preset presets/mf-sgd.json --folds 1
    python benchmarks/explicit.py --dataset ml-1m --data-dir /data/replicas
    python benchmarks/explicit.py --peers --folds 1 --seed 0 1 2 3 4 --models myFM-ids

Writes ``benchmarks/results/explicit-<dataset>.json``: one record per model with the RMSE of
every fold, the mean RMSE and MAE and the fit seconds of every fold. Models and peers run in
one process, fold after fold, so their timings are comparable.

``--task binary`` trains the models with a binary head (FM, DeepFM) on the folds' ratings
binarised at ``--like-threshold`` and reports AUC and log loss instead (plus the constant
predictor at the training fold's positive rate). ``--split random90`` replaces ``u1..u5`` by
five random 90% / 10% splits (seeds 0..4, labelled ``r0..r4``): NNMF's protocol (Dziugaite &
Roy 2015). The default output name carries the task and split when they are not the defaults.

``--tune N`` is a clean nested protocol: on every fold, every package model is tuned by
:func:`mfutils.tuning.tune` (N trials, seed 0) on a validation part carved from *that fold's
training part*, refit with the chosen options on the whole training part and tested once; the
options chosen on each fold go into the JSON (output name ``...-tuned``). ``--preset FILE ...``
runs models with the options of ``mfutils tune`` presets (``...-preset``). Peers (Surprise)
stay at their defaults.

``--seed S ...`` seeds the package models at their defaults and the peers with ``S``
(default 0; tuned and preset models keep their own); with several seeds every fold is run
once per seed, labelled ``u1-s0``, ``u1-s1``, ... (the record's mean is over seeds and
folds): how much of a difference between two models is the seed's. The default output name
then carries ``-seed<S>`` or ``-seeds<first>-<last>``.

A model that raises on a fold does not stop the run: the error is recorded in the JSON's
``failures`` (``model, fold, error``) and shown as ``failed (Type)``; the JSON is rewritten
after every model and fold, so a killed run keeps what finished, and the exit status is 1
when anything failed.
"""

from __future__ import annotations

import argparse
import functools
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
from mfutils.data import DATASETS, load_movielens, random_holdout
from mfutils.experiments import evaluate_folds, rating_folds, summarize_folds
from mfutils.features import ITEM_FIELDS, TIME_FIELDS, USER_FIELDS, FieldEncoder
from mfutils.metrics import auc, log_loss
from mfutils.models import DeepFM, FactorizationMachine, registry
from mfutils.models.bayesian import BAGS
from mfutils.results import to_markdown
from mfutils.tuning import TUNABLE_MODELS, load_preset, make_model, tune

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def package_models(device: torch.device, *, seed: int = 0) -> dict[str, Callable[[], object]]:
    """The package's explicit models at their defaults (chosen on validation, notebook 02).

    The series' models of :func:`mfutils.blending.series_models`, plus the FM on ids alone
    (built from the same table, so ``--tune`` and ``--preset`` change only their options).
    """
    return series_models(TUNABLE_MODELS, device=device, seed=seed)


def binary_models(device: torch.device, *, seed: int = 0) -> dict[str, Callable[[], object]]:
    """The models with a binary head (sigmoid, log loss), at the defaults of the rating task."""
    return {
        "FM-ids": lambda: FactorizationMachine(
            fields=("user", "item"), binary=True, seed=seed, device=device
        ),
        "FM-side": lambda: FactorizationMachine(binary=True, seed=seed, device=device),
        "DeepFM": lambda: DeepFM(binary=True, seed=seed, device=device),
    }


class ConstantRate:
    """Predicts the training fold's positive rate for every row (the log-loss floor to beat)."""

    def fit(self, train) -> ConstantRate:
        self.rate = float(np.mean(train.rating))
        return self

    def predict_ratings(self, test) -> np.ndarray:
        return np.full(len(test), self.rate)


def evaluate_binary_folds(
    make_model: Callable[[], object], folds, *, name: str, fold_names: list[str], threshold: float
) -> pd.DataFrame:
    """Fit on each training part binarised at ``threshold``; AUC and log loss on its test."""
    rows = []
    for label, (train, test) in zip(fold_names, folds, strict=True):
        model = make_model()
        start = time.perf_counter()
        model.fit(train.with_ratings(train.rating >= threshold))
        seconds = time.perf_counter() - start
        prob = model.predict_ratings(test)
        liked = (test.rating >= threshold).astype(np.float64)
        rows.append(
            {
                "model": name,
                "fold": label,
                "auc": auc(prob, liked) if np.ptp(prob) > 0 else 0.5,
                "logloss": log_loss(prob, liked),
                "fit_seconds": seconds,
            }
        )
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

        frame = (
            train.to_frame()[["user", "item", "rating"]]
            .astype({"rating": "float64"})
            .sort_values(["user", "item"])
        )  # the order Surprise runs fastest on
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


class MyFMPeer:
    """myFM's Gibbs-sampled factorization machine (Ohtsuki 2020) on the features of
    :class:`mfutils.models.BayesianFM`, behind ``fit`` / ``predict_ratings``.

    The same :class:`mfutils.features.FieldEncoder` fields and training bags: the user-side
    columns and :math:`N(u)` form one ``RelationBlock`` indexed by user, the item side and
    :math:`N(i)` another (so myFM computes them once per user and item, its fastest form),
    the time fields one-hot per rating; one prior group per field and per bag, as ours.
    Users and items without training ratings carry no feature, as in ours. ``fit_seconds``
    is myFM's own ``fit``; building its matrices is not counted.
    """

    def __init__(
        self,
        *,
        fields=None,
        bags=("user", "item"),
        rank: int = 10,
        output: str = "regression",
        n_iter: int = 200,
        burn_in: int = 20,
        seed: int = 0,
    ) -> None:
        self.fields, self.bags, self.rank, self.output = fields, tuple(bags), rank, output
        self.n_iter, self.burn_in, self.seed = n_iter, burn_in, seed

    def _side(self, name, index, value, offset, size, n, seen, train):
        import scipy.sparse as sps

        other = train.item if name == "user" else train.user
        own = train.user if name == "user" else train.item
        n_other = train.n_items if name == "user" else train.n_users
        rows = np.repeat(np.arange(n), index.shape[1])
        cols, vals = index.reshape(-1) - offset, value.reshape(-1) * seen[rows]
        shapes = [
            self.encoder.field_sizes[f]
            for f in self.encoder.fields
            if (f in USER_FIELDS) == (name == "user") and f not in TIME_FIELDS
        ]
        if name in self.bags:
            counts = np.maximum(np.bincount(own, minlength=n), 1)
            rows = np.concatenate([rows, own])
            cols = np.concatenate([cols, size + other])
            vals = np.concatenate([vals, 1 / np.sqrt(counts[own])])
            shapes.append(n_other)
        return sps.csr_matrix((vals, (rows, cols)), shape=(n, sum(shapes))), shapes

    def _design(self, data):
        import scipy.sparse as sps
        from myfm import RelationBlock

        enc = self.encoder
        tensors = data.tensors("cpu")
        encoded = enc.encode(tensors["user"], tensors["item"], tensors["timestamp"])
        n_time = sum(f in TIME_FIELDS for f in enc.fields)
        time_start = enc.n_features - sum(
            enc.field_sizes[f] for f in enc.fields if f in TIME_FIELDS
        )
        cols = encoded["index"][:, encoded["index"].shape[1] - n_time :].numpy() - time_start
        rows = np.repeat(np.arange(len(data)), n_time)
        x = sps.csr_matrix(
            (np.ones(rows.size), (rows, cols.reshape(-1))),
            shape=(len(data), enc.n_features - time_start),
        )
        user = np.where(self.user_seen[data.user], data.user, 0)
        item = np.where(self.item_seen[data.item], data.item, 0)
        blank_u = ~self.user_seen[data.user]
        blank_i = ~self.item_seen[data.item]
        # myFM has no "unknown": an unseen id points at an all-zero row appended below
        user[blank_u], item[blank_i] = len(self.user_seen), len(self.item_seen)
        return x, [RelationBlock(user, self.user_block), RelationBlock(item, self.item_block)]

    def fit(self, train) -> MyFMPeer:
        import scipy.sparse as sps
        from myfm import MyFMOrderedProbit, MyFMRegressor

        self.encoder = FieldEncoder(self.fields).fit(train)
        enc = self.encoder
        self.user_seen, self.item_seen = train.user_counts() > 0, train.item_counts() > 0
        item_start = sum(enc.field_sizes[f] for f in enc.fields if f in USER_FIELDS)
        time_start = item_start + sum(enc.field_sizes[f] for f in enc.fields if f in ITEM_FIELDS)
        user_block, user_shapes = self._side(
            "user",
            enc.user_index.numpy(),
            enc.user_value.numpy(),
            0,
            item_start,
            train.n_users,
            self.user_seen,
            train,
        )
        item_block, item_shapes = self._side(
            "item",
            enc.item_index.numpy(),
            enc.item_value.numpy(),
            item_start,
            time_start - item_start,
            train.n_items,
            self.item_seen,
            train,
        )
        self.user_block = sps.vstack(
            [user_block, sps.csr_matrix((1, user_block.shape[1]))], format="csr"
        )
        self.item_block = sps.vstack(
            [item_block, sps.csr_matrix((1, item_block.shape[1]))], format="csr"
        )
        time_shapes = [enc.field_sizes[f] for f in enc.fields if f in TIME_FIELDS]
        x, rel = self._design(train)
        if self.output == "ordinal":  # classes 0..K-1 of the distinct training ratings
            self.fm = MyFMOrderedProbit(rank=self.rank, random_seed=self.seed)
            self.levels = np.unique(train.rating)
            target = np.searchsorted(self.levels, train.rating)
        else:
            self.fm = MyFMRegressor(rank=self.rank, random_seed=self.seed)
            target = train.rating.astype(np.float64)
        start = time.perf_counter()
        self.fm.fit(
            x,
            target,
            X_rel=rel,
            n_iter=self.n_iter,
            n_kept_samples=self.n_iter - self.burn_in,
            group_shapes=time_shapes + user_shapes + item_shapes,
        )
        self.fit_seconds = time.perf_counter() - start
        return self

    def predict_ratings(self, test) -> np.ndarray:
        x, rel = self._design(test)
        if self.output == "ordinal":  # the expected rating, as BayesianFM predicts
            return self.fm.predict_proba(x, X_rel=rel) @ self.levels
        return self.fm.predict(x, X_rel=rel)


def peer_models(*, users: bool, seed: int = 0) -> dict[str, Callable[[], object]]:
    """Surprise 1.1.x at its defaults, and myFM 0.4 on the features of the Bayesian FM
    presets at the same rank and output, 200 sweeps, 20 discarded (optional extra
    ``bench``); ``BayesianFM-side``'s peer only with a users table (``users``); the
    stochastic ones seeded with ``seed``."""
    try:
        import myfm  # noqa: F401
        from surprise import SVD, BaselineOnly, KNNBaseline, SVDpp
    except ImportError:
        sys.exit("--peers needs scikit-surprise and myfm: pip install -e '.[bench]'")
    peers = {
        "Surprise BaselineOnly": lambda: SurprisePeer(lambda: BaselineOnly(verbose=False)),
        "Surprise SVD": lambda: SurprisePeer(lambda: SVD(random_state=seed)),
        "Surprise SVD++": lambda: SurprisePeer(lambda: SVDpp(random_state=seed)),
        "Surprise KNNBaseline": lambda: SurprisePeer(
            lambda: KNNBaseline(
                sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False
            )
        ),
    }
    side = ("BayesianFM-side",) if users else ()
    for preset in (
        "BayesianFM-ids",
        "BayesianFM-flipped",
        *side,
        "BayesianFM",
        "BayesianFM-ordinal",
    ):
        options = registry.PRESETS.get(preset, ("BayesianFM", {}))[1]
        peers["myFM" + preset.removeprefix("BayesianFM")] = functools.partial(
            MyFMPeer,
            fields=options.get("fields"),
            bags=options.get("bags", BAGS),
            rank=options.get("n_factors", 10),
            output=options.get("output", "regression"),
            seed=seed,
        )
    return peers


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the benchmark; returns the summary table (``attrs["failures"]``: the errors)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k", choices=DATASETS)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding <dataset>/ (default $MFUTILS_DATA_DIR)",
    )
    parser.add_argument("--peers", action="store_true", help="also run Surprise")
    parser.add_argument("--models", nargs="*", default=None, help="subset of model names")
    parser.add_argument(
        "--folds", type=int, nargs="*", default=None, help="fold numbers to run (default all)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path to write")
    parser.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[0],
        help="seed of every model and peer; several: every fold once per seed",
    )
    parser.add_argument(
        "--task",
        choices=("rating", "binary"),
        default="rating",
        help="rating: RMSE / MAE; binary: rating >= --like-threshold, AUC",
    )
    parser.add_argument("--like-threshold", type=float, default=4.0)
    parser.add_argument(
        "--split",
        choices=("folds", "random90"),
        default="folds",
        help="folds: the dataset's u1..u5 (or 5 seeded 80/20); random90: 5 "
        "random 90/10 splits, seeds 0..4",
    )
    parser.add_argument(
        "--tune",
        type=int,
        default=0,
        metavar="N",
        help="nested: tune every package model per fold (N Optuna trials) on a "
        "validation part of that fold's training part",
    )
    parser.add_argument(
        "--preset",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="run models with the options of these `mfutils tune` presets",
    )
    args = parser.parse_args(argv)
    if args.tune < 0:
        parser.error(f"--tune {args.tune}: the number of trials must be >= 1")
    if args.tune and args.preset:
        parser.error("--tune and --preset exclude each other")
    if (args.tune or args.preset) and args.task == "binary":
        parser.error("--tune and --preset apply to the rating task")

    device = get_device(args.device)
    data = load_movielens(args.dataset, data_dir=args.data_dir)
    if args.split == "random90":
        folds = [random_holdout(data, test_fraction=0.1, seed=s) for s in range(5)]
        names, protocol = [f"r{s}" for s in range(5)], "random 90/10, seeds 0..4"
    else:
        folds, protocol = rating_folds(data, seed=0)
        names = [f"u{k}" for k in range(1, len(folds) + 1)]
    if args.folds:
        folds, names = [folds[k - 1] for k in args.folds], [names[k - 1] for k in args.folds]
    presets: dict[str, dict] = {}
    for path in args.preset or ():
        try:
            name, options = load_preset(path)
        except (OSError, ValueError) as err:
            parser.error(str(err))
        presets[name] = options
    if args.task == "binary" and args.peers:
        parser.error("--peers has no binary task")
    if args.task == "binary":
        protocol += f", rating >= {args.like_threshold:g} -> 1"
    if args.tune:
        protocol += (
            f"; nested: tuned per fold on a validation part of its training data "
            f"({args.tune} trials)"
        )
    if presets:
        protocol += f"; options from presets {[str(p) for p in args.preset]}"
    if len(args.seed) > 1:
        protocol += f"; every fold once per seed {args.seed}"

    def models_of(seed: int) -> dict[str, Callable[[], object]]:
        if args.task == "binary":
            models = {**binary_models(device, seed=seed), "constant": ConstantRate}
        else:
            models = package_models(device, seed=seed)
            if data.users is not None:  # the defaults less the time fields; needs user fields
                models["BayesianFM-side"] = functools.partial(
                    registry.create, "BayesianFM-side", seed=seed, device=device
                )
            for name, options in presets.items():
                models[name] = functools.partial(make_model, name, options, device=device)
        if args.peers:
            models.update(peer_models(users=data.users is not None, seed=seed))
        if args.models or presets:
            chosen = args.models or list(presets)
            unknown = set(chosen) - set(models)
            if unknown:
                parser.error(f"unknown models {sorted(unknown)}; known: {sorted(models)}")
            models = {name: models[name] for name in chosen}
        return models

    models = models_of(args.seed[0])
    suffix = "".join(
        f"-{v}" for v, default in ((args.task, "rating"), (args.split, "folds")) if v != default
    )
    suffix += "-tuned" if args.tune else "-preset" if presets else ""
    if args.seed != [0]:
        seeds = args.seed
        suffix += f"-seed{seeds[0]}" if len(seeds) == 1 else f"-seeds{seeds[0]}-{seeds[-1]}"
    output = args.output or RESULTS_DIR / f"explicit-{args.dataset}{suffix}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": args.dataset,
        "protocol": protocol,
        "seeds": args.seed,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    if args.tune:
        meta["tune_trials"] = args.tune
    if presets:
        meta["presets"] = {str(p): n for p, n in zip(args.preset, presets, strict=True)}
    metrics = ("auc", "logloss") if args.task == "binary" else ("rmse", "mae")

    def evaluate(make, fold, name, label) -> tuple[pd.DataFrame, dict]:
        extra: dict = {}
        if args.tune and name in TUNABLE_MODELS:  # tuned on this fold's training part only
            train = fold[0]
            start = time.perf_counter()
            result = tune(name, train, trials=args.tune, seed=0, progress=False, device=device)
            extra = {
                "options": result.options,
                "valid_rmse": result.value,
                "tune_seconds": time.perf_counter() - start,
            }
            make = functools.partial(make_model, name, result.options, device=device)
        elif name in presets:
            extra = {"options": presets[name]}
        if args.task == "binary":
            return evaluate_binary_folds(
                make, [fold], name=name, fold_names=[label], threshold=args.like_threshold
            ), extra
        return evaluate_folds(make, [fold], name=name, fold_names=[label]), extra

    # Fold-major order: every model sees fold k before any model sees fold k+1.
    rows, extras, failures = [], {}, []
    runs = [
        (fold, label if len(args.seed) == 1 else f"{label}-s{seed}", models_of(seed))
        for fold, label in zip(folds, names, strict=True)
        for seed in args.seed
    ]
    for fold, label, seeded in runs:
        for name, make in seeded.items():
            try:
                frame, extra = evaluate(make, fold, name, label)
            except Exception as err:  # record it, run the others (the exit status says so)
                failures.append(
                    {"model": name, "fold": label, "error": f"{type(err).__name__}: {err}"}
                )
                print(f"{name} failed on {label}: {type(err).__name__}: {err}", file=sys.stderr)
            else:
                rows.append(frame)
                extras[name, label] = extra
            _write(output, meta, rows, extras, failures, metrics, list(models))

    per_fold = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["model", "fold", *metrics, "fit_seconds"])
    )
    summary = (
        per_fold.groupby("model", sort=False)[[*metrics, "fit_seconds"]].mean().reset_index()
        if args.task == "binary"
        else summarize_folds(per_fold)
    )
    if failures:
        status = {}
        for failure in failures:
            kind = failure["error"].split(":", 1)[0]
            status.setdefault(failure["model"], []).append(f"{failure['fold']} failed ({kind})")
        missing = [name for name in status if name not in set(summary["model"])]
        summary = pd.concat([summary, pd.DataFrame({"model": missing})], ignore_index=True)
        summary["status"] = [", ".join(status.get(name, ["ok"])) for name in summary["model"]]
    summary.attrs["failures"] = failures
    print(
        f"\n{args.dataset}, {protocol} ({', '.join(names)}), device {device}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(to_markdown(summary))
    print(f"\nwrote {output}" + (f"; {len(failures)} model/fold runs failed" if failures else ""))
    return summary


def _write(
    output: Path,
    meta: dict,
    rows: list[pd.DataFrame],
    extras: dict,
    failures: list[dict],
    metrics: tuple[str, ...],
    order: list[str],
) -> None:
    """Rewrite the JSON with every model/fold finished so far (a killed run keeps them)."""
    records = []
    if rows:
        per_fold = pd.concat(rows, ignore_index=True)
        by_model = dict(tuple(per_fold.groupby("model", sort=False)))
        for name in (n for n in order if n in by_model):
            part = by_model[name]
            record = {
                "model": name,
                metrics[0]: part[metrics[0]].tolist(),
                **{f"{m}_mean": part[m].mean() for m in metrics},
                "fit_seconds": part["fit_seconds"].tolist(),
                "folds": part["fold"].tolist(),
            }
            fold_extras = [extras.get((name, fold), {}) for fold in record["folds"]]
            for key in ("options", "valid_rmse", "tune_seconds"):
                if any(key in extra for extra in fold_extras):
                    record[key] = [extra.get(key) for extra in fold_extras]
            records.append(record)
    payload = {"meta": meta, "models": records}
    if failures:
        payload["failures"] = failures
    tmp = output.with_suffix(output.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    tmp.replace(output)


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


if __name__ == "__main__":
    sys.exit(1 if main().attrs["failures"] else 0)
