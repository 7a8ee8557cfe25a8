"""Compact id tables in the series' models: biased MF with hashed factors, and the size curves.

:class:`CompactBiasedMF` is biased matrix factorization (Koren, Bell & Volinsky 2009, eq. 5),
``r_hat = mu + b_u + b_i + q_i . p_u``, whose factor tables ``P`` and ``Q`` are any id embedding
of :mod:`mfutils.embeddings` (the biases stay one scalar per id). :func:`ranking_curve` and
:func:`rating_curve` fit a model per (method, size) on one split and return accuracy against
the parameters of the id tables: notebook 13 and ``benchmarks/implicit.py --compact``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from mfutils.data.container import Ratings
from mfutils.embeddings import (
    KINDS,
    CompactEmbedding,
    collision_stats,
    expected_collisions,
    make_embedding,
)
from mfutils.experiments import RankingSplit, evaluate_ranking
from mfutils.metrics import rmse
from mfutils.models.base import ExplicitModel
from mfutils.models.two_tower import TwoTower
from mfutils.train import TrainConfig, fit

__all__ = [
    "METHODS",
    "CompactBiasedMF",
    "CompactMFNet",
    "best_on_valid",
    "collision_table",
    "memory_table",
    "ranking_curve",
    "rating_curve",
    "table_parameters",
]

# Curve methods: a hashed kind of mfutils.embeddings, or "small dim", a full table whose width
# shrinks with the budget (the obvious alternative when every id is known in advance).
METHODS = ("hashing", "hash", "bloom", "small dim")


class CompactMFNet(nn.Module):
    """``mu + b_u + b_i + p_u . q_i`` with compact factor tables and per-row L2 penalties.

    Parameters
    ----------
    n_users, n_items, n_factors : int
    embedding : str
        Kind of the factor tables (:func:`mfutils.embeddings.make_embedding`).
    embedding_options : dict
        Options of ``make_embedding`` (``ratio``, ``k``, ``sign``, ``seed``, ...).
    reg, reg_bias : float
        Penalty weights on the factor vectors and on the biases of a batch's rows (as in
        :class:`mfutils.models.nets.BiasedMFNet`, Koren's eq. 5.2).
    device : str or torch.device, optional
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int,
        *,
        embedding: str,
        embedding_options: dict[str, Any],
        reg: float,
        reg_bias: float,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.reg, self.reg_bias = reg, reg_bias
        self.register_buffer("mu", torch.zeros((), device=device))
        self.user_bias = nn.Embedding(n_users, 1, device=device)
        self.item_bias = nn.Embedding(n_items, 1, device=device)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        options = {"seed": 0, **embedding_options}
        self.user_factors: CompactEmbedding = make_embedding(
            embedding, n_users, n_factors, device=device, **options
        )
        options["seed"] += 1
        self.item_factors: CompactEmbedding = make_embedding(
            embedding, n_items, n_factors, device=device, **options
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user, item = batch["user"], batch["item"]  # shape: (batch,)
        dot = (self.user_factors(user) * self.item_factors(item)).sum(1)  # shape: (batch,)
        return self.mu + self.user_bias(user)[:, 0] + self.item_bias(item)[:, 0] + dot

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row ``(reg (|p_u|^2 + |q_i|^2) + reg_bias (b_u^2 + b_i^2)) / 2``, shape (batch,)."""
        user, item = batch["user"], batch["item"]
        factors = self.user_factors(user).pow(2).sum(1) + self.item_factors(item).pow(2).sum(1)
        biases = self.user_bias(user)[:, 0] ** 2 + self.item_bias(item)[:, 0] ** 2
        return 0.5 * (self.reg * factors + self.reg_bias * biases)


class CompactBiasedMF(ExplicitModel):
    """Biased MF whose factor tables are compact (hashed) embeddings, trained by Adam.

    Parameters
    ----------
    n_factors : int
        Latent dimension ``f``.
    embedding : {"full", "hashing", "hash", "bloom"}
        Kind of the factor tables.
    embedding_options : dict, optional
        Options of :func:`mfutils.embeddings.make_embedding`, e.g. ``{"ratio": 0.25}``.
    epochs, batch_size, lr, reg, reg_bias, patience :
        As :class:`mfutils.models.BiasedMF` with ``method="adam"`` (whose validated defaults
        these are; ``reg_bias`` defaults to ``reg``).
    init_std : float
    seed : int
        Seeds the initialization and the batch order (the hashes have their own seed in
        ``embedding_options``).
    progress : bool
    device : str or torch.device, optional
    clip : bool
    """

    def __init__(
        self,
        n_factors: int = 20,
        *,
        embedding: str = "hash",
        embedding_options: dict[str, Any] | None = None,
        epochs: int = 20,
        batch_size: int = 1024,
        lr: float = 0.005,
        reg: float = 0.15,
        reg_bias: float | None = None,
        init_std: float = 0.1,
        patience: int | None = None,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if embedding not in KINDS:
            raise ValueError(f"embedding={embedding!r}; choose one of {KINDS}")
        options = dict(embedding_options or {})
        self.config.update(
            n_factors=n_factors,
            embedding=embedding,
            embedding_options=options,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            reg=reg,
            reg_bias=reg if reg_bias is None else reg_bias,
            init_std=init_std,
            patience=patience,
            seed=seed,
            progress=progress,
        )

    def _build(self, n_users: int, n_items: int) -> None:
        c = self.config
        torch.manual_seed(c["seed"])
        self.net = CompactMFNet(
            n_users,
            n_items,
            c["n_factors"],
            embedding=c["embedding"],
            embedding_options={"init_std": c["init_std"], **c["embedding_options"]},
            reg=c["reg"],
            reg_bias=c["reg_bias"],
            device=self.device,
        )

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        self.net.mu.fill_(float(self.mu))
        data = train.tensors(self.device)
        columns = ("user", "item", "rating")
        data = {k: v for k, v in data.items() if k in columns}
        if weights is not None:
            data["weight"] = torch.as_tensor(weights, device=self.device)
        config = TrainConfig(
            epochs=c["epochs"],
            batch_size=c["batch_size"],
            optimizer="adam",
            lr=c["lr"],
            loss="mse",
            patience=c["patience"],
            seed=c["seed"],
            progress=c["progress"],
        )
        self.history = fit(
            self.net,
            data,
            config=config,
            valid=None if valid is None else valid.tensors(self.device),
        )

    def _predict_known(self, user, item, user_known, item_known):
        net = self.net
        b_u = net.user_bias.weight[user, 0] * user_known  # shape: (n,)
        b_i = net.item_bias.weight[item, 0] * item_known  # shape: (n,)
        dot = (net.user_factors(user) * net.item_factors(item)).sum(1)  # shape: (n,)
        return self.mu + b_u + b_i + dot * (user_known & item_known)

    @property
    def n_parameters(self) -> int:
        """Parameters of the two factor tables (the biases add ``n_users + n_items``)."""
        return self.net.user_factors.n_parameters + self.net.item_factors.n_parameters


def table_parameters(net: nn.Module) -> int:
    """Learned scalars of a net's user and item id tables (``user_emb``/``item_emb`` or
    ``user_factors``/``item_factors``)."""
    tables = [
        getattr(net, name)
        for name in ("user_emb", "item_emb", "user_factors", "item_factors")
        if hasattr(net, name)
    ]
    return sum(p.numel() for table in tables for p in table.parameters())


def _settings(
    methods: Sequence[str],
    ratios: Sequence[float],
    dim: int,
    options: dict[str, dict[str, Any]],
    widths: dict[str, Sequence[int]],
) -> list[tuple[str, float, int, str, dict]]:
    """(method, ratio, width, embedding kind, embedding options) of every curve point.

    ``ratio`` is the budget as a share of the full ``dim``-wide tables; a hashed table of
    width ``w`` then gets ``ratio * dim / w`` of its own full size (widths that would need more
    rows than ids are skipped).
    """
    points = [("full", 1.0, dim, "full", {})]
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"method {method!r}; choose from {METHODS}")
        for ratio in ratios:
            if method == "small dim":
                points.append((method, ratio, max(1, round(dim * ratio)), "full", {}))
                continue
            for width in widths.get(method, (dim,)):
                own = ratio * dim / width
                if own <= 1.0:
                    points.append(
                        (method, ratio, width, method, {**options.get(method, {}), "ratio": own})
                    )
    return points


def memory_table(
    n_ids: int,
    dim: int,
    *,
    ratios: Sequence[float] = (1.0, 0.5, 0.25, 0.1, 0.05),
    kinds: Sequence[str] = ("hashing", "hash", "bloom"),
    k: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Size of one id table per kind and budget: pool rows, parameters and bytes.

    ``float32 KiB`` is what training and serving hold (4 bytes a parameter); ``index KiB`` is
    the precomputed ``int64`` rows (and signs / weight rows) of the ``n_ids`` ids, a buffer
    that could be ``int32`` or hashed on the fly instead.
    """
    rows = [
        {
            "kind": "full",
            "ratio": 1.0,
            "pool rows": n_ids,
            "importance rows": 0,
            "parameters": n_ids * dim,
            "float32 KiB": n_ids * dim * 4 / 1024,
            "index KiB": 0.0,
        }
    ]
    for ratio in ratios:
        for kind in kinds:
            if ratio >= 1.0:
                continue
            emb = make_embedding(kind, n_ids, dim, ratio=ratio, k=k, seed=seed)
            index = sum(b.numel() * b.element_size() for b in emb.buffers())
            rows.append(
                {
                    "kind": kind,
                    "ratio": ratio,
                    "pool rows": emb.n_buckets,
                    "importance rows": getattr(emb, "n_weights", 0),
                    "parameters": emb.n_parameters,
                    "float32 KiB": emb.n_parameters * 4 / 1024,
                    "index KiB": index / 1024,
                }
            )
    table = pd.DataFrame(rows)
    table.insert(5, "share", table["parameters"] / (n_ids * dim))
    return table


def collision_table(
    n_ids: int,
    dim: int,
    *,
    ratios: Sequence[float] = (0.5, 0.25, 0.1, 0.05),
    ks: Sequence[int] = (1, 2, 4),
    seed: int = 0,
) -> pd.DataFrame:
    """Measured and expected collisions of ``n_ids`` ids hashed into ``ratio * n_ids`` rows.

    One row per (ratio, k): :func:`mfutils.embeddings.collision_stats` of Bloom rows with
    ``k`` hashes (``k = 1`` is the hashing trick) beside :func:`expected_collisions`.
    """
    rows = []
    for ratio in ratios:
        for k in ks:
            emb = make_embedding("bloom", n_ids, dim, ratio=ratio, k=k, seed=seed)
            measured = collision_stats(emb.rows, emb.n_buckets)
            expected = expected_collisions(n_ids, emb.n_buckets, k=k)
            rows.append(
                {
                    "ratio": ratio,
                    "rows": emb.n_buckets,
                    "k": k,
                    "shared (measured)": measured["shared_fraction"],
                    "shared (expected)": expected["shared_fraction"],
                    "identical pairs (measured)": measured["identical_pairs"],
                    "identical pairs (expected)": expected["identical_pairs"],
                }
            )
    return pd.DataFrame(rows)


def best_on_valid(curve: pd.DataFrame, *, metric: str = "valid_ndcg@20") -> pd.DataFrame:
    """Per (method, ratio) the row of the width with the best validation ``metric``."""
    best = curve.loc[curve.groupby(["method", "ratio"], sort=False)[metric].idxmax()]
    return best.reset_index(drop=True)


def ranking_curve(
    split: RankingSplit,
    *,
    model_options: dict[str, Any],
    methods: Sequence[str] = METHODS,
    ratios: Sequence[float] = (0.5, 0.25, 0.1, 0.05),
    embedding_options: dict[str, dict[str, Any]] | None = None,
    widths: dict[str, Sequence[int]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Test NDCG@20 and Recall@20 of :class:`TwoTower` per compact method and table size.

    Every model is fit on ``split.fit`` with early stopping on ``split.valid`` and scored on
    ``split.test`` with all of ``split.train`` masked, so no choice sees the test part.

    Parameters
    ----------
    split : RankingSplit
    model_options : dict
        :class:`TwoTower` options of the full model (``dim``, loss, sampler, ``epochs``, ...).
    methods : sequence of str
        Names of :data:`METHODS`; a ``full`` row (the reference) always comes first.
    ratios : sequence of float
        Id-table sizes as shares of the full tables' ``(n_users + n_items) * dim``.
    embedding_options : dict, optional
        Extra ``make_embedding`` options per method, e.g. ``{"hash": {"k": 4}}``.
    widths : dict, optional
        Vector widths to try per hashed method within each budget, e.g.
        ``{"hash": (64, 32, 16)}`` (default: the full model's ``dim``); pick one per budget
        on validation with :func:`best_on_valid`.
    progress : bool

    Returns
    -------
    pandas.DataFrame
        One row per point: ``method, ratio, dim, parameters`` (of the id tables),
        ``relative`` (parameters / full), ``ndcg@20, recall@20`` (test),
        ``valid_ndcg@20, best_epoch, fit_seconds``.
    """
    dim = model_options.get("n_factors", 64)
    rows = []
    points = _settings(methods, ratios, dim, embedding_options or {}, widths or {})
    for method, ratio, width, kind, options in tqdm(
        points, desc="ranking curve", disable=not progress, leave=False
    ):
        model = TwoTower(
            **{**model_options, "n_factors": width}, embedding=kind, embedding_options=options
        )
        model.fit(split.fit, valid=split.valid)
        valid = evaluate_ranking(model, train=split.fit, test=split.valid, ks=(20,))
        test = evaluate_ranking(model, train=split.train, test=split.test, ks=(20,))
        history = model.history
        rows.append(
            {
                "method": method,
                "ratio": ratio,
                "dim": width,
                "parameters": table_parameters(model.net),
                "ndcg@20": test["ndcg@20"],
                "recall@20": test["recall@20"],
                "valid_ndcg@20": valid["ndcg@20"],
                "best_epoch": history.attrs.get("best_epoch"),
                "fit_seconds": float(history["seconds"].iloc[-1]),
            }
        )
    return _relative(pd.DataFrame(rows))


def rating_curve(
    train: Ratings,
    test: Ratings,
    *,
    model_options: dict[str, Any],
    methods: Sequence[str] = METHODS,
    ratios: Sequence[float] = (0.5, 0.25, 0.1, 0.05),
    embedding_options: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Test RMSE of :class:`CompactBiasedMF` per compact method and factor-table size.

    Parameters are those of :func:`ranking_curve`, with ``model_options`` for
    :class:`CompactBiasedMF` (``n_factors``, ``epochs``, ``lr``, ``reg``, ...). Returns one row
    per point: ``method, ratio, dim, parameters`` (of the factor tables; the biases add
    ``n_users + n_items`` to every row), ``relative``, ``rmse``, ``fit_seconds``.
    """
    dim = model_options.get("n_factors", 20)
    rows = []
    points = _settings(methods, ratios, dim, embedding_options or {}, {})
    for method, ratio, width, kind, options in tqdm(
        points, desc="rating curve", disable=not progress, leave=False
    ):
        model = CompactBiasedMF(
            **{**model_options, "n_factors": width}, embedding=kind, embedding_options=options
        )
        model.fit(train)
        rows.append(
            {
                "method": method,
                "ratio": ratio,
                "dim": width,
                "parameters": model.n_parameters,
                "rmse": rmse(model.predict_ratings(test), test.rating),
                "fit_seconds": float(model.history["seconds"].iloc[-1]),
            }
        )
    return _relative(pd.DataFrame(rows))


def _relative(table: pd.DataFrame) -> pd.DataFrame:
    full = table.loc[table["method"] == "full", "parameters"].iloc[0]
    table.insert(4, "relative", table["parameters"] / full)
    return table
