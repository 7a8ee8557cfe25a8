"""The interface every implicit-feedback model shares: ``fit`` on interactions, rank items.

An implicit model learns from *which* items a user interacted with (a :class:`Ratings` whose
ratings are all 1, see :func:`mfutils.data.to_implicit`) and scores every item for a user with
:meth:`RankingModel.score_items`, the ``score_fn`` of :func:`mfutils.metrics.topk_metrics`.
Users without training interactions (out of range, or in range with an empty history) are
answered deliberately with the popularity ranking, never with an ``IndexError`` or with an
untrained random vector.

This module also holds the two non-learned references of the series: :class:`MostPopular`
and :class:`EASE` (Steck 2019), the closed-form item-item model.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch

from mfutils.data.container import Ratings
from mfutils.models.base import Model

__all__ = ["EASE", "MostPopular", "RankingModel"]


class RankingModel(Model):
    """Base class of implicit-feedback (item-ranking) models.

    Subclasses create their parameters in
    :meth:`_build` (empty: ``fit`` and :meth:`load` fill them), learn in :meth:`_fit` and score
    known users in :meth:`_score_known`; ``recommend``, ``save`` and ``load`` come from
    :class:`mfutils.models.base.Model`.

    Parameters
    ----------
    device : str or torch.device, optional
        Where parameters live and computation happens; default :func:`mfutils.get_device`.
    """

    kind: ClassVar[str] = "ranking"
    FIT_BUFFERS: ClassVar[tuple[str, ...]] = ("popularity", "user_known")

    def fit(self, train: Ratings, *, valid: Ratings | None = None) -> RankingModel:
        """Learn from the interactions in ``train``.

        Parameters
        ----------
        train : Ratings
            Interactions (every row one (user, item) event; the rating column is ignored
            except by models that use it as a confidence, which say so).
        valid : Ratings, optional
            Held-out interactions carved from training data, for early stopping; never the
            test set.
        """
        if len(train) == 0:
            raise ValueError("cannot fit on an empty Ratings")
        if valid is not None and (valid.n_users, valid.n_items) != (train.n_users, train.n_items):
            raise ValueError("valid must share train's id space (split one Ratings)")
        self._set_id_space(train)
        counts = torch.as_tensor(train.item_counts(), dtype=torch.float32, device=self.device)
        self.register_buffer("popularity", counts)  # shape: (n_items,)
        self.register_buffer(
            "user_known", torch.as_tensor(train.user_counts() > 0, device=self.device)
        )  # shape: (n_users,)
        self._build(self.n_users, self.n_items)
        self._fit(train, valid=valid)
        self.eval()
        return self

    @property
    def item_known(self) -> torch.Tensor:
        """Items with training interactions, shape (n_items,) (as an explicit model's)."""
        return self.popularity > 0

    @abc.abstractmethod
    def _fit(self, train: Ratings, *, valid: Ratings | None) -> None:
        """Learn the parameters (``train_csr``, ``popularity`` and ``user_known`` are set)."""

    @abc.abstractmethod
    def _score_known(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for in-range users with training data, shape (B, n_items)."""

    @torch.no_grad()
    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for compact user ids, shape (len(users), n_items).

        Users unknown to the model get the item popularity as their scores.
        """
        self._require_fitted()
        users = torch.as_tensor(users, dtype=torch.long, device=self.device)
        known = (users >= 0) & (users < self.n_users)
        known[known.clone()] = self.user_known[users[known]]
        scores = self.popularity.expand(len(users), -1).clone()  # shape: (B, n_items)
        if bool(known.any()):
            scores[known] = self._score_known(users[known]).to(scores.dtype)
        return scores


class MostPopular(RankingModel):
    """Every user gets the items ranked by their number of training interactions.

    The non-personalised yardstick of implicit feedback; on MovieLens it is hard to beat by
    much because interactions concentrate on popular movies.
    """

    def _build(self, n_users: int, n_items: int) -> None:
        pass  # the popularity buffer set by fit() is the whole model

    def _fit(self, train: Ratings, *, valid: Ratings | None) -> None:
        pass

    def _score_known(self, users: torch.Tensor) -> torch.Tensor:
        return self.popularity.expand(len(users), -1)  # shape: (B, n_items)


class EASE(RankingModel):
    r"""Embarrassingly Shallow Autoencoder (Steck, WWW 2019), a closed-form item-item model.

    Minimises :math:`\|X - XB\|_F^2 + \lambda\|B\|_F^2` subject to :math:`\mathrm{diag}(B)=0`,
    solved by :math:`P=(X^\top X+\lambda I)^{-1}`, :math:`B_{ij}=-P_{ij}/P_{jj}` (Steck eq. 8),
    and scores a user by :math:`x_u B`. One ``n_items`` x ``n_items`` inverse, so it suits
    catalogues up to a few tens of thousands of items.

    Parameters
    ----------
    reg : float
        The L2 weight :math:`\lambda` (Steck uses a few hundred on ML-20M-sized data).
    device : str or torch.device, optional
    """

    def __init__(self, *, reg: float = 250.0, device: str | torch.device | None = None) -> None:
        super().__init__(device=device)
        if not reg > 0:
            raise ValueError(f"reg={reg} must be positive")
        self.config["reg"] = float(reg)

    # the n_items x n_items weights come from _fit (or the checkpoint), never pre-allocated
    FIT_BUFFERS: ClassVar[tuple[str, ...]] = (*RankingModel.FIT_BUFFERS, "weights")

    def _build(self, n_users: int, n_items: int) -> None:
        pass

    def _fit(self, train: Ratings, *, valid: Ratings | None) -> None:
        x = self.train_csr.to_dense().to(torch.float32)  # shape: (n_users, n_items)
        gram = x.T @ x  # shape: (n_items, n_items)
        gram.diagonal().add_(self.config["reg"])
        p = torch.linalg.inv(gram)  # shape: (n_items, n_items)
        weights = -p / p.diagonal()[None, :]  # shape: (n_items, n_items) B_ij = -P_ij / P_jj
        weights.diagonal().zero_()
        self.register_buffer("weights", weights)

    def _score_known(self, users: torch.Tensor) -> torch.Tensor:
        rows, items = self.train_csr.gather(users)
        x = torch.zeros(len(users), self.n_items, device=self.device)  # shape: (B, n_items)
        x[rows, items] = 1.0
        return x @ self.weights  # shape: (B, n_items)
