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

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from mfutils.data.container import Ratings
from mfutils.features import AGE_EDGES
from mfutils.models.baseline import BaselineEstimates
from mfutils.models.item_bags import ItemBagModel

REG_ATTRIBUTES = 0.1
SVDPP_WARM_START = {"epochs": 10, "lr": 0.03, "batch_size": 4096}  # BiasedMF (SGD) options


class SVDpp(ItemBagModel):
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

    asymmetric = False

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
        user_attributes: Sequence[str] | None = None,
        reg_attributes: float = REG_ATTRIBUTES,
        age_edges: Sequence[float] = AGE_EDGES,
        attribute_biases: bool = False,
        attribute_ridge: float = 100.0,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        if warm_start_options is None:
            warm_start_options = SVDPP_WARM_START
        super().__init__(
            n_factors,
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
            warm_start_options=warm_start_options,
            patience=patience,
            valid_fraction=valid_fraction,
            seed=seed,
            progress=progress,
            device=device,
            clip=clip,
        )
        if isinstance(user_attributes, str) and user_attributes != "auto":
            raise ValueError(
                f"user_attributes={user_attributes!r} must be a sequence of column "
                f"names, e.g. ({user_attributes!r},), or 'auto'"
            )
        if user_attributes is not None and user_attributes != "auto":
            user_attributes = tuple(user_attributes)
        self.config.update(user_attributes=user_attributes, age_edges=tuple(age_edges))


class AsymmetricSVD(ItemBagModel):
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
