"""The base shared by the models whose user vector sums the items they rated: SVD++ and
Asymmetric-SVD (:mod:`mfutils.models.svdpp`) and timeSVD++ (:mod:`mfutils.models.timesvdpp`).

:class:`ItemBagModel` warm-starts from biased MF, optionally adds the user attributes
``A(u)`` (:func:`mfutils.features.encode_user_attributes`), trains :class:`ItemBagNet` with
whole-user batches and chooses its epochs on held-out ratings; the formulas are in
:mod:`mfutils.models.svdpp`.
"""

from __future__ import annotations

import abc
import copy
from typing import Any

import numpy as np
import pandas as pd
import torch

from mfutils.data.container import Ratings, UserItemCSR
from mfutils.features import USER_ATTRIBUTES, available_user_attributes, encode_user_attributes
from mfutils.models.base import ExplicitModel
from mfutils.models.mf import BiasedMF
from mfutils.models.nets import ItemBagNet
from mfutils.train import TrainConfig, fit, rmse_metric


class ItemBagModel(ExplicitModel):
    """The shared fitting and prediction of SVD++, Asymmetric-SVD and timeSVD++.

    A subclass says whether a user is only the bag of their items (:attr:`asymmetric`,
    Asymmetric-SVD) or also has a free vector ``p_u`` (SVD++, timeSVD++).
    """

    @property
    @abc.abstractmethod
    def asymmetric(self) -> bool:
        """``True``: no ``p_u``, the user's rated items alone describe them (Koren 2008 eq. 13)."""

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
        self.config["warm_start_options"] = dict(warm_start_options or {})
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
    ) -> ItemBagModel:
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
