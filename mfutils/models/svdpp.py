"""SVD++ and Asymmetric-SVD: users described through the items they rated (Koren 2008, §4).

SVD++ (Koren 2008 eq. 15) adds the implicit feedback of *which* items a user rated:

    r_hat_ui = mu + b_u + b_i + q_i^T ( p_u + |N(u)|^{-1/2} sum_{j in N(u)} y_j ),

and Asymmetric-SVD (eq. 13) drops ``p_u`` and describes a user only by their items:

    r_hat_ui = b_ui + q_i^T ( |R(u)|^{-1/2} sum_{j in R(u)} (r_uj - b_uj) x_j
                              + |N(u)|^{-1/2} sum_{j in N(u)} y_j ),

with ``b_uj`` a fixed, precomputed baseline (:class:`BaselineEstimates`). On ML-100K
``N(u) = R(u)``, taken from the training fold only.

SVD++ optionally adds the user's attributes ``A(u)`` (Koren, Bell & Volinsky 2009, eq. 6),
one vector ``y_a`` per attribute value -- on ML-100K the age bucket, gender and occupation:

    r_hat_ui = mu + b_u + b_i + q_i^T ( p_u + |N(u)|^{-1/2} sum_{j in N(u)} y_j
                                        + sum_{a in A(u)} y_a ),

so a user without a single training rating is still scored, through ``mu + b_i + q_i^T sum
y_a`` (:func:`encode_user_attributes` builds ``A(u)`` from the users table).

The sums run as one ``embedding_bag`` over the CSR rows of the *distinct* users of a batch, and
training batches hold all ratings of a group of users (``TrainConfig(batch_by="user")``), so
each user's sum is built once per batch and its gradient accumulated over all that user's
ratings -- the per-user loop of Koren's Handbook pseudo-code, vectorised.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mfutils.data.container import Ratings, UserItemCSR
from mfutils.models.base import ExplicitModel
from mfutils.models.baseline import BaselineEstimates
from mfutils.models.mf import BiasedMF
from mfutils.train import TrainConfig, fit, rmse_metric

AGE_EDGES = (18, 25, 35, 45, 50, 56)  # the age groups of ML-1M: <18, 18-24, ..., 56+
# ``user_attributes="auto"``: those of these columns the training data's users table carries.
USER_ATTRIBUTES = ("age", "gender", "occupation")
REG_ATTRIBUTES = 0.1
SVDPP_WARM_START = {"epochs": 10, "lr": 0.03, "batch_size": 4096}  # BiasedMF (SGD) options

logger = logging.getLogger(__name__)


def available_user_attributes(
    users: pd.DataFrame | None, attributes: Sequence[str] = USER_ATTRIBUTES
) -> tuple[str, ...]:
    """The columns of ``attributes`` that ``users`` carries (present, with a value).

    Each one left out is logged at INFO on ``mfutils.models.svdpp``, one line naming the
    attribute and the missing table or column. Without a users table (ml-latest-small and the
    other releases after ML-1M) the result is empty.
    """
    kept = []
    for name in attributes:
        if users is None:
            reason = "the Ratings has no users side table"
        elif name not in users.columns:
            reason = f"the users side table has no {name!r} column"
        elif not users[name].notna().any():
            reason = f"the users side table's {name!r} column holds no value"
        else:
            kept.append(name)
            continue
        logger.info("user attribute %r left out: %s", name, reason)
    return tuple(kept)


def encode_user_attributes(
    users: pd.DataFrame | None, attributes: Sequence[str], *, age_edges: Sequence[float] = AGE_EDGES
) -> tuple[np.ndarray, list[str]]:
    """Each user's attribute values ``A(u)`` as ids into one table of all values.

    ``age`` is bucketed at ``age_edges`` (ML-100K's exact ages, or ML-1M's group codes,
    fall into the ML-1M groups); any other column is categorical. Every attribute gets its
    own block of ids (field offsets), and a missing value is a value of its own.

    Parameters
    ----------
    users : pandas.DataFrame or None
        The users table of a :class:`Ratings` (one row per compact user id).
    attributes : sequence of str
        Columns of ``users``, e.g. ``("age", "gender", "occupation")``.
    age_edges : sequence of float
        Left edges of the age buckets after the first.

    Returns
    -------
    ids : np.ndarray of int64, shape (n_users, len(attributes))
    labels : list of str
        ``labels[id]``, e.g. ``"age:25-34"``, ``"gender:F"``.

    Raises
    ------
    ValueError
        Without a users table, or for a column it does not have; the message names
        ``user_attributes``.
    """
    if users is None:
        raise ValueError(
            f"user_attributes={tuple(attributes)!r} needs a users table, and these "
            "ratings have none (ML-100K and ML-1M have one); pass "
            "user_attributes=None or 'auto'"
        )
    missing = [name for name in attributes if name not in users.columns]
    if missing or not len(attributes):
        raise ValueError(
            f"user_attributes={tuple(attributes)!r}: the users table has no column "
            f"{missing}; it has {list(users.columns)}"
        )
    ids, labels = [], []
    for name in attributes:
        column = users[name]
        if name == "age":
            edges = list(age_edges)
            names = (
                [f"<{edges[0]:g}"]
                + [f"{lo:g}-{hi - 1:g}" for lo, hi in zip(edges, edges[1:], strict=False)]
                + [f"{edges[-1]:g}+"]
            )
            codes = np.digitize(column.to_numpy(dtype=float), edges)  # shape: (n_users,)
            codes = np.where(column.isna().to_numpy(), len(names), codes)
            names = names + ["missing"]
        else:
            codes, uniques = pd.factorize(column, sort=True)
            names = [str(value) for value in uniques] + ["missing"]
            codes = np.where(codes < 0, len(names) - 1, codes)
        ids.append(codes.astype(np.int64) + len(labels))
        labels.extend(f"{name}:{value}" for value in names)
    return np.stack(ids, axis=1), labels


class ItemBagNet(nn.Module):
    """The net behind :class:`SVDpp` (``asymmetric=False``) and :class:`AsymmetricSVD`.

    Parameters
    ----------
    n_users, n_items, n_factors : int
    csr : UserItemCSR
        ``N(u) = R(u)`` of the training fold; its ``values`` are the residuals
        ``r_uj - b_uj`` used by the asymmetric ``x`` term.
    mu : float
    reg, reg_bias, reg_implicit : float
        Per-rating penalties: ``reg`` on ``p_u, q_i`` (Koren's lambda_6), ``reg_bias`` on
        ``b_u, b_i`` (lambda_5) and ``reg_implicit`` on every ``y_j`` (and ``x_j``) of the
        user's bag (lambda_6 in Koren's paper, which uses one constant for all factors).
    asymmetric : bool
        Asymmetric-SVD: no ``p_u``; add the residual-weighted ``x`` bag.
    attributes : Tensor of long, shape (n_users, n_attributes), optional
        ``A(u)`` as ids into a table of ``n_attribute_values`` vectors ``y_a`` whose sum joins
        the user vector (KBV09 eq. 6); see :func:`encode_user_attributes`.
    reg_attributes : float
        Per-rating penalty on the ``y_a`` (and ``b_a``) of the rating's user.
    attribute_biases : bool
        Also a bias ``b_a`` per attribute value, added to ``b_u`` (an extension of eq. 6).
    init_std : float
    generator : torch.Generator, optional
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int,
        *,
        csr: UserItemCSR,
        mu: float,
        reg: float,
        reg_bias: float,
        reg_implicit: float,
        asymmetric: bool = False,
        attributes: torch.Tensor | None = None,
        n_attribute_values: int = 0,
        reg_attributes: float = 0.0,
        attribute_biases: bool = False,
        init_std: float = 0.1,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.reg, self.reg_bias, self.reg_implicit = reg, reg_bias, reg_implicit
        self.reg_attributes = reg_attributes
        self.asymmetric = asymmetric
        self.register_buffer("mu", torch.tensor(float(mu), device=device))
        self.register_buffer("indptr", csr.indptr.to(device))
        self.register_buffer("indices", csr.indices.to(device))
        self.register_buffer("residuals", csr.values.to(device))
        counts = csr.counts().to(device)
        self.register_buffer("norm", counts.clamp(min=1).float().rsqrt())  # shape: (n_users,)
        self.user_bias = nn.Embedding(n_users, 1, device=device)
        self.item_bias = nn.Embedding(n_items, 1, device=device)
        self.item_factors = nn.Embedding(n_items, n_factors, device=device)
        self.implicit = nn.Embedding(n_items, n_factors, device=device)  # y_j
        tables = [self.item_factors, self.implicit]
        if asymmetric:
            self.explicit = nn.Embedding(n_items, n_factors, device=device)  # x_j
            tables.append(self.explicit)
        else:
            self.user_factors = nn.Embedding(n_users, n_factors, device=device)  # p_u
            tables.append(self.user_factors)
        self.has_attributes = attributes is not None
        self.attribute_biases = attribute_biases and attributes is not None
        if self.attribute_biases:
            self.attribute_bias = nn.Embedding(n_attribute_values, 1, device=device)  # b_a
            with torch.no_grad():
                self.attribute_bias.weight.zero_()
        if attributes is not None:
            self.register_buffer("attributes", attributes.to(device))  # shape: (n_users, A)
            self.attribute_factors = nn.Embedding(
                n_attribute_values, n_factors, device=device
            )  # y_a
            tables.append(self.attribute_factors)
        with torch.no_grad():
            self.user_bias.weight.zero_()
            self.item_bias.weight.zero_()
            for table in tables:
                table.weight.normal_(0.0, init_std, generator=generator)

    def _bag(
        self, users: torch.Tensor, table: torch.Tensor, weights: torch.Tensor | None
    ) -> torch.Tensor:
        """``sum_{j in N(u)} w_uj table_j`` for distinct ``users``, shape (U, table.shape[1]).

        A segment sum: the rows of every user's items gathered with ``index_select`` and
        added per user with ``index_add`` (on a CPU both directions are about twice as fast as
        ``embedding_bag`` here).
        """
        csr = UserItemCSR(self.indptr, self.indices, self.residuals, len(table))
        position, entry = csr.positions(users)  # shape: (nnz_U,) entries, grouped by user
        rows = table.index_select(0, self.indices[entry])  # shape: (nnz_U, f)
        if weights is not None:
            rows = rows * weights[entry][:, None]
        out = torch.zeros(len(users), table.shape[1], device=table.device, dtype=table.dtype)
        return out.index_add(0, position, rows)  # shape: (U, f)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``p_u + |N(u)|^{-1/2} sum y_j [+ sum_{A(u)} y_a]`` (SVD++) or the two bags
        (Asymmetric-SVD), shape (U, f)."""
        norm = self.norm[users][:, None]  # shape: (U, 1)
        vectors = norm * self._bag(users, self.implicit.weight, None)  # shape: (U, f)
        if self.asymmetric:
            vectors = vectors + norm * self._bag(users, self.explicit.weight, self.residuals)
        else:
            vectors = vectors + self.user_factors(users)
        if self.has_attributes:
            vectors = vectors + self.attribute_vectors(users)
        return vectors

    def attribute_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``sum_{a in A(u)} y_a`` (KBV09 eq. 6), shape (U, f)."""
        return self.attribute_factors(self.attributes[users]).sum(1)  # shape: (U, f)

    def attribute_bias_sum(self, users: torch.Tensor) -> torch.Tensor:
        """``sum_{a in A(u)} b_a``, 0 without attribute biases, shape (U,)."""
        if not self.attribute_biases:
            return torch.zeros(users.shape, device=users.device)
        return self.attribute_bias(self.attributes[users]).sum((1, 2))  # shape: (U,)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user, item = batch["user"], batch["item"]  # shape: (B,)
        users, inverse = torch.unique(user, return_inverse=True)  # shape: (U,), (B,)
        z = self.user_vectors(users).index_select(0, inverse)  # shape: (B, f)
        dot = (self.item_factors.weight.index_select(0, item) * z).sum(1)  # shape: (B,)
        b_u = _rows(self.user_bias.weight[:, 0], user) + self.attribute_bias_sum(user)
        return self.mu + b_u + _rows(self.item_bias.weight[:, 0], item) + dot

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per rating: ``reg_bias (b_u^2 + b_i^2) + reg (|q_i|^2 [+ |p_u|^2])
        + reg_implicit sum_j (|y_j|^2 [+ |x_j|^2]) [+ reg_attributes sum_{A(u)} |y_a|^2]``,
        halved; shape (B,)."""
        user, item = batch["user"], batch["item"]
        users, inverse = torch.unique(user, return_inverse=True)
        bag_tables = [self.implicit.weight] + ([self.explicit.weight] if self.asymmetric else [])
        squares = sum(t.pow(2).sum(1, keepdim=True) for t in bag_tables)  # shape: (n_items, 1)
        bag = self._bag(users, squares, None)[inverse, 0]  # shape: (B,)
        # Squared norms of whole tables, then one scalar per row: the same per-rating penalty
        # as gathering the rows first, with a cheaper backward.
        factors = _rows(self.item_factors.weight.pow(2).sum(1), item)  # shape: (B,)
        if not self.asymmetric:
            factors = factors + _rows(self.user_factors.weight.pow(2).sum(1), user)
        biases = _rows(self.user_bias.weight[:, 0] ** 2, user) + _rows(
            self.item_bias.weight[:, 0] ** 2, item
        )  # shape: (B,)
        out = 0.5 * (self.reg * factors + self.reg_implicit * bag + self.reg_bias * biases)
        if self.has_attributes:
            squares = self.attribute_factors.weight.pow(2).sum(1)  # shape: (n_values,)
            if self.attribute_biases:
                squares = squares + self.attribute_bias.weight[:, 0] ** 2
            out = out + 0.5 * self.reg_attributes * squares[self.attributes[user]].sum(1)
        return out


def _rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` by ``index_select`` (a faster backward than ``nn.Embedding``)."""
    return values.index_select(0, index)


class _BagModel(ExplicitModel):
    """Shared fitting and prediction of SVD++ and Asymmetric-SVD."""

    asymmetric = False

    def __init__(
        self,
        n_factors: int = 20,
        *,
        epochs: int = 8,
        lr: float = 0.005,
        lr_decay: float = 1.0,
        reg: float = 0.15,
        reg_bias: float = 0.15,
        reg_implicit: float = 0.01,
        batch_size: int = 8192,
        optimizer: str = "adam",
        init_std: float = 0.1,
        warm_start: bool = True,
        warm_start_options: dict[str, Any] | None = None,
        patience: int | None = None,
        valid_fraction: float = 0.1,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if n_factors < 1:
            raise ValueError(f"n_factors={n_factors} must be >= 1")
        if not 0 <= valid_fraction < 1:
            raise ValueError(f"valid_fraction={valid_fraction} must lie in [0, 1)")
        self.config.update(
            n_factors=n_factors,
            epochs=epochs,
            lr=lr,
            lr_decay=lr_decay,
            reg=reg,
            reg_bias=reg_bias,
            reg_implicit=reg_implicit,
            batch_size=batch_size,
            optimizer=optimizer,
            init_std=init_std,
            warm_start=warm_start,
            warm_start_options=dict(warm_start_options or {}),
            patience=patience,
            valid_fraction=valid_fraction,
            seed=seed,
            progress=progress,
        )
        TrainConfig(optimizer=optimizer, lr=lr, epochs=epochs)  # validate the options now

    def _build(self, n_users: int, n_items: int) -> None:
        c = self.config
        empty = UserItemCSR.empty(n_users, n_items, device=self.device)
        attributes, n_values = None, 0
        names = self._attribute_names()
        if names:
            attributes = getattr(self, "_attributes", None)
            if attributes is None or len(attributes) != n_users:  # placeholder until _fit
                attributes = torch.zeros(n_users, len(names), dtype=torch.long)
            attributes = torch.as_tensor(attributes, device=self.device)
            n_values = getattr(self, "_n_attribute_values", 1)
        self.net = ItemBagNet(
            n_users,
            n_items,
            c["n_factors"],
            csr=getattr(self, "_bag_csr", empty),
            mu=0.0,
            reg=c["reg"],
            reg_bias=c["reg_bias"],
            reg_implicit=c["reg_implicit"],
            asymmetric=self.asymmetric,
            attributes=attributes,
            n_attribute_values=n_values,
            reg_attributes=c.get("reg_attributes", 0.0),
            attribute_biases=c.get("attribute_biases", False),
            init_std=c["init_std"],
            device=self.device,
            generator=torch.Generator(device=self.device).manual_seed(c["seed"]),
        )

    def _resolved_config(self) -> dict[str, Any]:
        config = super()._resolved_config()
        if config.get("user_attributes") == "auto":
            config["user_attributes"] = self.user_attributes_
        return config

    def _attribute_names(self) -> tuple[str, ...] | None:
        """The attribute columns in use: the resolved ones of ``"auto"``, else the option."""
        names = self.config.get("user_attributes")
        if names == "auto":
            return getattr(self, "user_attributes_", None)
        return names

    def _restore(self, ckpt, path) -> None:
        state = ckpt["state"]
        self._bag_csr = UserItemCSR(
            state["net.indptr"], state["net.indices"], state["net.residuals"], ckpt["n_items"]
        )
        if self.config.get("user_attributes") == "auto":
            codes = state["attribute_columns"]
            self.register_buffer("attribute_columns", codes.clone())
            self.user_attributes_ = tuple(USER_ATTRIBUTES[k] for k in codes.tolist())
        if "net.attributes" in state:
            self._attributes = state["net.attributes"]
            self._n_attribute_values = len(state["net.attribute_factors.weight"])
        super()._restore(ckpt, path)

    def fit(
        self, train: Ratings, *, valid: Ratings | None = None, weights: np.ndarray | None = None
    ) -> _BagModel:
        """As :meth:`ExplicitModel.fit`; with ``user_attributes``, ``train.users`` gives
        ``A(u)`` for every user of the id space, including those without training ratings
        (``"auto"``: the columns of :data:`USER_ATTRIBUTES` it carries, see
        :attr:`user_attributes_`)."""
        attributes = self.config.get("user_attributes")
        if attributes == "auto":
            attributes = available_user_attributes(train.users)
            self.user_attributes_ = attributes
            # Saved with the model, so a checkpoint reloads with the same resolved columns.
            self.register_buffer(
                "attribute_columns",
                torch.as_tensor(
                    [USER_ATTRIBUTES.index(name) for name in attributes], dtype=torch.long
                ),
            )
        if attributes:
            ids, self.attribute_labels = encode_user_attributes(
                train.users, attributes, age_edges=self.config["age_edges"]
            )
            if len(ids) != train.n_users:
                raise ValueError(
                    f"user_attributes: the users table has {len(ids)} rows for "
                    f"{train.n_users} users"
                )
            self._attributes = torch.as_tensor(ids)
            self._n_attribute_values = len(self.attribute_labels)
        return super().fit(train, valid=valid, weights=weights)

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        epochs = self._epochs_to_run(train, valid, weights)
        residual = train.rating - self._baseline(train)  # r_uj - b_uj, the x-bag weights
        self._bag_csr = UserItemCSR.from_pairs(
            train.user,
            train.item,
            n_users=train.n_users,
            n_items=train.n_items,
            values=residual,
            device=self.device,
        )
        self._build(train.n_users, train.n_items)
        self.net.mu.fill_(float(self.mu))
        if c["warm_start"]:
            self._warm_start(train)
        data = {k: v for k, v in train.tensors(self.device).items() if k != "timestamp"}
        if weights is not None:
            data["weight"] = torch.as_tensor(weights, device=self.device)
        self._train_from_start(data, None if valid is None else valid.tensors(self.device), epochs)

    def _epochs_to_run(
        self, train: Ratings, valid: Ratings | None, weights: np.ndarray | None
    ) -> int:
        """``epochs``, or without ``valid`` (and ``valid_fraction > 0``) the number of them,
        0 included, that predicts a held-out part of ``train`` best (:attr:`epochs_` of a
        probe fit, :meth:`ExplicitModel._held_out_probe`)."""
        c = self.config
        if valid is None and c["valid_fraction"] > 0 and c["epochs"] > 0:
            return self._held_out_probe(train, weights).epochs_
        return c["epochs"]

    def _train_from_start(
        self, data: dict[str, torch.Tensor], valid: dict[str, torch.Tensor] | None, epochs: int
    ) -> None:
        """Up to ``epochs`` of Adam (whole-user batches) from the warm start, which competes
        as epoch 0 on ``valid``: a phase that only moves away from a better start is undone.
        Sets ``history`` and :attr:`epochs_` (the epochs kept)."""
        c, net = self.config, self.net
        if valid is not None:
            with torch.no_grad():
                start_rmse = float(rmse_metric(net, valid))
            start_state = copy.deepcopy(net.state_dict())
        self.history = (
            fit(
                net,
                data,
                config=TrainConfig(
                    epochs=epochs,
                    batch_size=c["batch_size"],
                    optimizer=c["optimizer"],
                    lr=c["lr"],
                    lr_decay=c["lr_decay"],
                    patience=c["patience"],
                    batch_by="user",
                    seed=c["seed"],
                    progress=c["progress"],
                ),
                valid=valid,
            )
            if epochs
            else pd.DataFrame()
        )
        self.epochs_ = int(self.history.attrs.get("best_epoch", 0))
        if valid is not None and (not epochs or start_rmse <= self.history["valid"].min()):
            net.load_state_dict(start_state)
            self.epochs_ = 0
        self.history.attrs.update(
            best_epoch=self.epochs_, valid_start=None if valid is None else start_rmse
        )

    def _baseline(self, train: Ratings) -> np.ndarray:
        return np.zeros(len(train), dtype=np.float32)

    @torch.no_grad()
    def _warm_start(self, train: Ratings) -> None:
        """Start from a biased MF fit (SVD++ with empty bags is biased MF): copy its biases and
        factors, zero the bag tables, so training only has to learn what the bags add."""
        mf = BiasedMF(
            self.config["n_factors"],
            seed=self.config["seed"],
            device=self.device,
            **self.config.get("warm_start_options", {}),
        )
        mf.fit(train)
        net = self.net
        pairs = [
            (net.item_factors, mf.net.item_factors),
            (net.user_bias, mf.net.user_bias),
            (net.item_bias, mf.net.item_bias),
        ]
        if not self.asymmetric:
            pairs.append((net.user_factors, mf.net.user_factors))
        for table, fitted in pairs:
            table.weight.copy_(fitted.weight)
        net.implicit.weight.zero_()
        if self.asymmetric:
            net.explicit.weight.zero_()
        if net.has_attributes:
            self._split_user_factors(train)

    @torch.no_grad()
    def _split_user_factors(self, train: Ratings) -> None:
        """Warm start of ``y_a`` (and ``b_a``): the ridge regression of the users' ``p_u``
        (and ``b_u``) on their attributes, ``min sum_u |p_u - sum_{A(u)} y_a|^2 + lambda
        sum_a |y_a|^2`` over the users with training ratings; ``p_u`` then keeps only the rest,
        ``p_u - sum y_a``. The predictions are unchanged and a new user starts from the mean
        taste of their groups."""
        net = self.net
        users = torch.nonzero(torch.as_tensor(train.user_counts() > 0, device=self.device))[:, 0]
        ids = net.attributes[users]  # shape: (U, A)
        n_values = net.attribute_factors.num_embeddings
        design = torch.zeros(len(ids), n_values, device=self.device)  # shape: (U, V)
        design.scatter_(1, ids, 1.0)
        gram = design.T @ design + self.config["attribute_ridge"] * torch.eye(
            n_values, device=self.device
        )  # shape: (V, V)
        tables = [(net.user_factors, net.attribute_factors)]
        if net.attribute_biases:
            tables.append((net.user_bias, net.attribute_bias))
        for per_user, per_value in tables:
            target = per_user.weight[users]  # shape: (U, f) or (U, 1)
            per_value.weight.copy_(torch.linalg.solve(gram, design.T @ target))
            per_user.weight[users] -= per_value(ids).sum(1)

    def _vectors(
        self, users: torch.Tensor, known: torch.Tensor, in_range: torch.Tensor
    ) -> torch.Tensor:
        """One user vector per entry of (safe, repeatable) ``users``: the full one where
        ``known`` (training ratings), ``sum_{A(u)} y_a`` for the other users of the id space
        (``in_range``) when attributes are used -- cold start -- and 0 otherwise; (n, f)."""
        distinct, inverse = torch.unique(users, return_inverse=True)  # shape: (U,), (n,)
        z = self.net.user_vectors(distinct)[inverse] * known[:, None]  # shape: (n, f)
        if self.net.has_attributes:
            cold = in_range & ~known  # shape: (n,)
            z = z + self.net.attribute_vectors(distinct)[inverse] * cold[:, None]
        return z

    @torch.no_grad()
    def predict_tensor(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Predicted ratings for compact id tensors (see :meth:`ExplicitModel.predict`);
        with user attributes, users without training ratings get ``mu + b_i + q_i^T sum
        y_a``."""
        self._require_fitted()
        safe_user, safe_item, user_known, item_known = self._known(user, item)
        in_range = (user >= 0) & (user < self.n_users)
        return self._output(
            self._predict_rows(safe_user, safe_item, user_known, item_known, in_range)
        )

    def _predict_known(self, user, item, user_known, item_known):
        return self._predict_rows(user, item, user_known, item_known, user_known)

    def _user_biases(
        self, users: torch.Tensor, known: torch.Tensor, in_range: torch.Tensor
    ) -> torch.Tensor:
        """``b_u`` of known users plus ``sum_{A(u)} b_a`` of every user of the id space (with
        attribute biases), 0 for the others; shape (n,)."""
        net = self.net
        return net.user_bias.weight[users, 0] * known + net.attribute_bias_sum(users) * in_range

    def _predict_rows(self, user, item, user_known, item_known, user_in):
        z = self._vectors(user, user_known, user_in)  # shape: (n, f)
        net = self.net
        dot = (net.item_factors.weight[item] * z).sum(1) * item_known  # shape: (n,)
        return (
            self.mu
            + self._user_biases(user, user_known, user_in)
            + net.item_bias.weight[item, 0] * item_known
            + dot
        )

    @torch.no_grad()
    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Every item's score for ``users`` as one matrix product, shape (B, n_items)."""
        self._require_fitted()
        safe, known = self._known_users(users)  # shape: (B,), (B,)
        users = users.to(self.device)
        in_range = (users >= 0) & (users < self.n_users)
        net = self.net
        z = self._vectors(safe, known, in_range)  # shape: (B, f)
        q = net.item_factors.weight * self.item_known[:, None]  # shape: (n_items, f)
        b_i = net.item_bias.weight[:, 0] * self.item_known  # shape: (n_items,)
        b_u = self._user_biases(safe, known, in_range)  # shape: (B,)
        return self._output(self.mu + b_u[:, None] + b_i[None, :] + z @ q.T)


class SVDpp(_BagModel):
    """SVD++ (Koren 2008 eq. 15) with ``fit`` / ``predict`` / ``recommend``.

    Parameters
    ----------
    n_factors, epochs, lr, lr_decay, batch_size, optimizer, patience, seed, progress
        Training schedule through :func:`mfutils.train.fit` with whole-user batches.
    valid_fraction : float
        When ``fit`` gets no ``valid``: the share of the training ratings held out to choose
        how many of the ``epochs`` Adam epochs to run after the warm start, ``0`` (the warm
        start alone) included; the model is then refitted on all ratings for that many
        (:attr:`epochs_`; twice the fit time). With ``valid`` given, the warm start competes
        as epoch 0 there. ``0``: all ``epochs``. Adam's first steps move every parameter by
        about ``lr`` whatever its gradient: on an ML-1M-shaped replica (1M ratings) they only
        moved SVD++ away from its warm start (held-out RMSE 0.8385 at the start, 0.848 after
        one epoch, 0.871 after ten), and Asymmetric-SVD's was best after one; ML-100K keeps
        (nearly) all of them.
    reg, reg_bias, reg_implicit : float
        Per-rating penalties on ``p_u, q_i``, on ``b_u, b_i`` and on every ``y_j`` of the
        user's bag (Koren uses one lambda_6 for all factors and lambda_5 for the biases).
    init_std : float
        Standard deviation of the factor initialization.
    warm_start : bool
        Start from a :class:`BiasedMF` fit (SVD++ with empty bags *is* biased MF) with the bag
        tables at zero, so training only learns what the implicit feedback adds.
    warm_start_options : dict, optional
        Options of that :class:`BiasedMF` fit; default :data:`SVDPP_WARM_START`, a short
        per-rating SGD run (10 passes, 4096 ratings per step, ``gamma = 0.03``).

    user_attributes : sequence of str or "auto", optional
        Columns of the training data's users table whose values join the user vector as
        ``sum_{a in A(u)} y_a`` (Koren, Bell & Volinsky 2009 eq. 6), e.g. ``("age", "gender",
        "occupation")`` on ML-100K; ``age`` is bucketed at ``age_edges``. Users of the id
        space without training ratings are then predicted as ``mu + b_i + q_i^T sum y_a``
        instead of ``mu + b_i``. A column named here that the data lacks is an error at
        ``fit``. ``"auto"``: the columns of :data:`USER_ATTRIBUTES` that the training data
        carries, resolved in ``fit`` (all three on ML-100K and ML-1M; none, i.e. plain SVD++,
        without a users table), each one left out logged at INFO; the columns used are
        :attr:`user_attributes_` after ``fit``. The default ``None`` uses no attributes.
    reg_attributes : float
        Per-rating penalty on the ``y_a`` (and ``b_a``) of the rating's user.
    attribute_biases : bool
        Also a bias ``b_a`` per attribute value in ``b_u + sum_{A(u)} b_a`` (not in eq. 6; a
        new user then also gets their groups' rating offset).
    attribute_ridge : float
        Penalty of the warm start of ``y_a`` (and ``b_a``): the ridge regression of the
        biased-MF user factors (and biases) on the attributes.
    age_edges : sequence of float
        Bucket edges of ``age`` (default: the ML-1M age groups <18, 18-24, ..., 56+).

    Notes
    -----
    Koren's Netflix constants (per-rating SGD, gamma 0.007 cut by 10% per epoch, lambda_5
    0.005, lambda_6 0.015) diverge when one step sums the gradients of all of a user's
    ratings. The defaults (warm start, Adam at 0.005 on batches of ~8192 ratings, 10 epochs,
    reg 0.15, reg_bias 0.15, reg_implicit 0.01) are the best of small grids on a validation
    split carved from ML-100K ``u1.base``. The short warm start with 10 epochs validates as well
    as a full biased-MF fit (20 passes at 1024 ratings per step) with 8 epochs, on random 10%
    validation splits of ``u1.base`` and ``u4.base`` (0.9191 / 0.9076 against 0.9192 / 0.9079)
    at about half the fitting time. The attribute defaults (``reg_attributes=0.1``,
    ``attribute_ridge=100``) are the best of a small grid on cold-start validation splits
    (:func:`mfutils.data.splits.cold_user_split` of random 10% validation splits of ``u1.base``
    and ``u4.base``, 200 users keeping 0-5 ratings); the attributes change the RMSE of users
    without ratings there by only a few thousandths (notebook 04).
    """

    # Search space of mfutils.tuning (Optuna): option -> ("log" | "float", low, high),
    # ("int", low, high[, "log"]) or ("choice", value, ...); around the defaults.
    SEARCH_SPACE = {
        "n_factors": ("int", 8, 64, "log"),
        "lr": ("log", 0.0005, 0.02),
        "reg": ("log", 0.015, 1.0),
        "reg_bias": ("log", 0.015, 1.0),
        "reg_implicit": ("log", 0.001, 0.1),
        "epochs": ("int", 4, 30),
    }

    def __init__(
        self,
        n_factors: int = 20,
        *,
        epochs: int = 10,
        warm_start_options: dict[str, Any] | None = None,
        user_attributes: Sequence[str] | None = None,
        reg_attributes: float = REG_ATTRIBUTES,
        age_edges: Sequence[float] = AGE_EDGES,
        attribute_biases: bool = False,
        attribute_ridge: float = 100.0,
        **options: Any,
    ) -> None:
        super().__init__(
            n_factors,
            epochs=epochs,
            warm_start_options=SVDPP_WARM_START
            if warm_start_options is None
            else warm_start_options,
            **options,
        )
        if isinstance(user_attributes, str) and user_attributes != "auto":
            raise ValueError(
                f"user_attributes={user_attributes!r} must be a sequence of column "
                f"names, e.g. ({user_attributes!r},), or 'auto'"
            )
        if user_attributes is not None and user_attributes != "auto":
            user_attributes = tuple(user_attributes)
        self.config.update(
            user_attributes=user_attributes,
            reg_attributes=reg_attributes,
            age_edges=tuple(age_edges),
            attribute_biases=attribute_biases,
            attribute_ridge=attribute_ridge,
        )


class AsymmetricSVD(_BagModel):
    """Asymmetric-SVD (Koren 2008 eq. 13): a user is the sum of their items' ``x_j, y_j``.

    The residuals ``r_uj - b_uj`` use a :class:`BaselineEstimates` (ALS, the package defaults)
    fitted on the same training data and then frozen.
    """

    asymmetric = True

    # Search space of mfutils.tuning (Optuna): option -> ("log" | "float", low, high),
    # ("int", low, high[, "log"]) or ("choice", value, ...); around the defaults.
    SEARCH_SPACE = {
        "n_factors": ("int", 8, 64, "log"),
        "lr": ("log", 0.0005, 0.02),
        "reg": ("log", 0.015, 1.0),
        "reg_bias": ("log", 0.015, 1.0),
        "reg_implicit": ("log", 0.001, 0.1),
        "epochs": ("int", 4, 24),
    }

    def _build(self, n_users: int, n_items: int) -> None:
        super()._build(n_users, n_items)
        self.register_buffer("base_item", torch.zeros(n_items, device=self.device))
        self.register_buffer("base_reg_user", torch.zeros((), device=self.device))

    def _baseline(self, train: Ratings) -> np.ndarray:
        baseline = BaselineEstimates(device=self.device, clip=False).fit(train)
        self._frozen = (baseline.item_bias, baseline.config["reg_user"])
        return baseline.predict_ratings(train)

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        super()._fit(train, valid=valid, weights=weights)
        item_bias, reg_user = self._frozen
        self.base_item.copy_(torch.as_tensor(item_bias, device=self.device))
        self.base_reg_user.fill_(reg_user)

    @torch.no_grad()
    def explain(self, user: int, item: int) -> pd.DataFrame:
        """Which of the user's ratings drive ``r_hat_ui``: one row per rated item ``j``.

        ``contribution_j = q_i^T (|R(u)|^{-1/2} (r_uj - b_uj) x_j + |N(u)|^{-1/2} y_j)``; the
        contributions plus ``mu + b_u + b_i`` give the (unclipped) prediction.
        """
        self._require_fitted()
        net = self.net
        start, stop = int(net.indptr[user]), int(net.indptr[user + 1])
        items = net.indices[start:stop]  # shape: (n_u,)
        residual = net.residuals[start:stop]  # shape: (n_u,)
        vectors = net.norm[user] * (
            residual[:, None] * net.explicit.weight[items] + net.implicit.weight[items]
        )  # shape: (n_u, f)
        contribution = vectors @ net.item_factors.weight[item]  # shape: (n_u,)
        return pd.DataFrame(
            {
                "item": items.cpu().numpy(),
                "residual": residual.cpu().numpy(),
                "contribution": contribution.cpu().numpy(),
            }
        ).sort_values("contribution", key=abs, ascending=False, ignore_index=True)

    def predict_new_user(
        self,
        items: np.ndarray | list[int],
        ratings: np.ndarray | list[float],
        target_items: np.ndarray | list[int],
    ) -> np.ndarray:
        """Predictions for one user who is not in the training data, from their ratings alone.

        See :meth:`predict_new_users`; this is the single-user case.
        """
        n, m = len(np.asarray(items)), len(np.asarray(target_items))
        return self.predict_new_users(
            np.zeros(n, dtype=np.int64), items, ratings, np.zeros(m, dtype=np.int64), target_items
        )

    @torch.no_grad()
    def predict_new_users(
        self,
        users: np.ndarray,
        items: np.ndarray | list[int],
        ratings: np.ndarray | list[float],
        target_users: np.ndarray,
        target_items: np.ndarray | list[int],
    ) -> np.ndarray:
        """Predictions for users outside the training data, from their ratings, no retraining.

        Parameters
        ----------
        users, items, ratings : array, shape (n,)
            The new users' ratings; ``users`` are any integer labels of the new users.
        target_users, target_items : array, shape (m,)
            The pairs to predict, with the same labels.

        Each user's bias is the frozen baseline's shrunk mean
        ``b_u = sum (r_uj - mu - b_j) / (lambda_3 + n_u)`` and their vector is eq. 13's two sums
        over the given items, all users at once. Items outside the training catalogue are
        ignored; a user with no usable rating gets ``mu + b_i``.
        """
        self._require_fitted()
        device = self.device
        user = torch.tensor(np.asarray(users), dtype=torch.long, device=device)
        item = torch.tensor(np.asarray(items), dtype=torch.long, device=device)
        rating = torch.tensor(np.asarray(ratings), dtype=torch.float32, device=device)
        if not user.shape == item.shape == rating.shape:
            raise ValueError(
                f"users, items and ratings differ in length: {tuple(user.shape)}, "
                f"{tuple(item.shape)}, {tuple(rating.shape)}"
            )
        target_user = torch.tensor(np.asarray(target_users), dtype=torch.long, device=device)
        target = torch.tensor(np.asarray(target_items), dtype=torch.long, device=device)
        labels, index = torch.unique(torch.cat([user, target_user]), return_inverse=True)
        user, target_user = index[: len(user)], index[len(user) :]  # shape: (n,), (m,)
        keep = (item >= 0) & (item < self.n_items)
        user, item, rating = user[keep], item[keep], rating[keep]
        count = torch.bincount(user, minlength=len(labels)).float()  # shape: (U,)
        offset = rating - self.mu - self.base_item[item]  # shape: (n,)
        b_u = torch.zeros(len(labels), device=device).index_add_(0, user, offset) / (
            self.base_reg_user + count
        )  # shape: (U,)
        net = self.net
        terms = (offset - b_u[user])[:, None] * net.explicit.weight[item] + net.implicit.weight[
            item
        ]  # shape: (n, f)
        z = torch.zeros(len(labels), terms.shape[1], device=device).index_add_(0, user, terms)
        z = z * count.clamp(min=1).rsqrt()[:, None]  # shape: (U, f)
        known = (target >= 0) & (target < self.n_items)
        safe = torch.where(known, target, torch.zeros_like(target))
        known = known & self.item_known[safe]
        dot = (net.item_factors.weight[safe] * z[target_user]).sum(1)  # shape: (m,)
        pred = self.mu + b_u[target_user] + (net.item_bias.weight[safe, 0] + dot) * known
        return self._output(pred).cpu().numpy()
