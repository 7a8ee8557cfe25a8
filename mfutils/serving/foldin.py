"""Fold-in: a user (or item) row solved from its ratings against the fixed other side.

For a factor model ``r_hat_ui = mu + b_u + b_i + q_i^T p_u`` (:class:`~mfutils.models.BiasedMF`;
:class:`~mfutils.models.BaselineEstimates` is the case ``f = 0``) a user who was not in the
training data -- or a known user with new ratings -- gets ``theta_u = [p_u; b_u]`` from one ridge
regression with the item side fixed, the user half of an ALS sweep (Hu, Koren & Volinsky 2008
and Zhou et al. 2008 use the same solve to "fold in" new users without retraining):

    (sum_{i in R(u)} x_i x_i^T + Lambda_u) theta_u = sum_{i in R(u)} (r_ui - mu - b_i) x_i,
    x_i = [q_i; 1],  Lambda_u = n_u diag(lambda, ..., lambda, lambda_b)  (per-rating penalty)

with the model's own penalties: SGD/Adam-trained models penalise every rating, so their ridge
weight grows with ``n_u`` (ALS-WR's weighted lambda); ALS-trained ones use their
``weighted_reg`` option; the shrunk-mean baselines use ``lambda_3`` (users) / ``lambda_2``
(items) unweighted. All rows are solved together by :func:`mfutils.models.als.solve_side`
(sparse Gram products, batched Cholesky solves in blocks of rows). The item side is the mirror
image.

Items the model never saw in training carry untrained factors: they are left out of the solve,
exactly as :meth:`ExplicitModel.score_items` leaves them out of the scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mfutils.models import als
from mfutils.models.base import ExplicitModel
from mfutils.models.baseline import BaselineEstimates
from mfutils.models.mf import BiasedMF


@dataclass(frozen=True)
class Ridge:
    """Penalties of one side's ridge solve (see the module docstring)."""

    reg: float
    reg_bias: float
    weighted: bool


def ridge_penalties(model: ExplicitModel) -> dict[str, Ridge] | None:
    """The ``{"user": Ridge, "item": Ridge}`` penalties matching how ``model`` was trained.

    ``None`` for models without a ``mu + b_u + b_i + q_i^T p_u`` net (or with a logistic
    output, which a least-squares solve does not fit): they cannot be folded in this way.
    Depends on the class and options only, so it also answers for an unfitted model.
    """
    c = model.config
    if isinstance(model, BiasedMF):
        if c["binary"]:
            return None
        weighted = c["weighted_reg"] if c["method"] == "als" else True
        side = Ridge(c["reg"], c["reg_bias"], weighted)
        return {"user": side, "item": side}
    if isinstance(model, BaselineEstimates):
        if c["method"] == "sgd":
            side = Ridge(c["reg"], c["reg"], True)
            return {"user": side, "item": side}
        return {"user": Ridge(0.0, c["reg_user"], False), "item": Ridge(0.0, c["reg_item"], False)}
    return None


@torch.no_grad()
def solve_rows(
    rows: torch.Tensor,
    cols: torch.Tensor,
    target: torch.Tensor,
    other: torch.Tensor,
    *,
    n_rows: int,
    ridge: Ridge,
) -> torch.Tensor:
    """``[factors, bias]`` of ``n_rows`` rows from their ratings against fixed ``other``.

    Parameters
    ----------
    rows : Tensor, shape (n,)
        Row (``0 .. n_rows-1``) of every rating on the side being solved.
    cols : Tensor, shape (n,)
        Index into ``other`` of every rating.
    target : Tensor, shape (n,)
        ``r - mu - b_other``: the rating with the fixed side's terms removed.
    other : Tensor, shape (n_other, f)
        Factors of the fixed side (``f`` may be 0).
    n_rows : int
    ridge : Ridge

    Returns
    -------
    Tensor, shape (n_rows, f + 1)
        Rows without ratings get zeros.
    """
    side = als.build_side(rows, cols, n_rows, len(other))
    theta = als.solve_side(
        side,
        torch.ones_like(target),
        target,
        other,
        reg=ridge.reg,
        reg_bias=ridge.reg_bias,
        weighted_reg=ridge.weighted,
    )  # shape: (n_rows, f+1)
    return theta * (side.counts > 0)[:, None]


@torch.no_grad()
def fold_in_users(
    model: ExplicitModel,
    users: torch.Tensor,
    items: torch.Tensor,
    ratings: torch.Tensor,
    *,
    n_users: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``p_u, b_u`` of ``n_users`` users (labels ``0 .. n_users-1``) from their ratings alone.

    Parameters
    ----------
    model : BiasedMF or BaselineEstimates
        Fitted; its item side stays fixed.
    users, items, ratings : Tensor, shape (n,)
        Ratings of the users to fold in; ``items`` are compact ids of ``model``. Ratings of
        items unknown to the model are ignored.
    n_users : int

    Returns
    -------
    p, b : Tensor, shape (n_users, f), (n_users,)
    """
    ridge = _penalties(model)["user"]
    net = model.net
    keep = (items >= 0) & (items < model.n_items)
    users, items, ratings = users[keep], items[keep], ratings[keep]
    keep = model.item_known[items]
    users, items, ratings = users[keep], items[keep], ratings[keep]
    q = net.item_factors.weight * model.item_known[:, None]  # shape: (n_items, f)
    b_i = net.item_bias.weight[:, 0] * model.item_known  # shape: (n_items,)
    target = ratings - model.mu - b_i[items]  # shape: (n,)
    theta = solve_rows(users, items, target, q, n_rows=n_users, ridge=ridge)
    return theta[:, :-1], theta[:, -1]


@torch.no_grad()
def score_folded(model: ExplicitModel, p: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Every item's score for folded-in users, one matrix product, shape (U, n_items).

    The same formula (and output clipping) as ``model.score_items`` for a known user.
    """
    net = model.net
    q = net.item_factors.weight * model.item_known[:, None]  # shape: (n_items, f)
    b_i = net.item_bias.weight[:, 0] * model.item_known  # shape: (n_items,)
    return model._output(model.mu + b[:, None] + b_i[None, :] + p @ q.T)  # shape: (U, n_items)


def _penalties(model: ExplicitModel) -> dict[str, Ridge]:
    penalties = ridge_penalties(model)
    if penalties is None:
        raise TypeError(
            f"{type(model).__name__} has no mu + b_u + b_i + q_i.p_u rating net to "
            "fold users into (BiasedMF and BaselineEstimates have)"
        )
    return penalties
