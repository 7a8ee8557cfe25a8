"""Online updates: new ratings change the served model in place, on the affected rows only.

What the seeds' incremental collaborative-filtering step does, without retraining from scratch:
new ratings are merged into the stored training ratings (a repeated ``(user, item)`` pair
replaces the old rating), then

* every user who rated gets ``p_u, b_u`` re-solved by ridge against the fixed item side, from
  *all* their ratings (the user half of an ALS sweep, :mod:`mfutils.serving.foldin`);
* items new to the model get ``q_i, b_i`` solved the same way against the (updated) user side;
  with ``update="both"`` every rated item is re-solved, which moves its scores for all users;
* users and items never seen before get new rows (the tables grow) and their raw ids are
  appended to the model's id mappings;
* the model's seen-items structure (``train_csr``) is rebuilt, so recommendations exclude
  the new ratings.

Order: one call is one batch, solved as a whole (users first, then items), so the order of
the ratings within a batch does not matter -- the caller
(:meth:`~mfutils.serving.recommender.Recommender.add_ratings`) sends each ``(user, item)`` pair
once and numbers new ids in sorted order. Successive batches apply in arrival order and do
depend on it: a batch solves its users against the items as they are then, and an item without
training ratings is solved once, from the first batch in which users the model knows rate it,
and afterwards moves only with ``update="both"``. Send ratings that belong together in one
batch (the service takes 1,000 per request), or use ``update="both"``, when that matters.

Only models with a ``mu + b_u + b_i + q_i^T p_u`` net take updates
(:class:`~mfutils.models.BiasedMF`, :class:`~mfutils.models.BaselineEstimates`); everything
here is vectorised over the affected rows (no loop over ratings or users).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mfutils.data.container import UserItemCSR
from mfutils.models.base import ExplicitModel
from mfutils.serving.foldin import ridge_penalties, solve_rows

UPDATES = ("users", "both")


class UnsupportedError(TypeError):
    """The served model cannot do what was asked (e.g. online updates for SVD++)."""


def supports_updates(model: ExplicitModel) -> bool:
    """Whether :func:`apply_ratings` can update ``model`` (it has a biased-MF net)."""
    return ridge_penalties(model) is not None


@dataclass
class RatingStore:
    """The ratings a served model answers to, as tensors on the model's device.

    Compact ``user``, ``item`` (long) and ``rating`` (float32), shape (n,); one row per
    ``(user, item)`` pair.
    """

    user: torch.Tensor
    item: torch.Tensor
    rating: torch.Tensor

    @classmethod
    def from_arrays(cls, ratings: dict[str, np.ndarray], device: torch.device) -> RatingStore:
        return cls(
            torch.as_tensor(ratings["user"], dtype=torch.long, device=device),
            torch.as_tensor(ratings["item"], dtype=torch.long, device=device),
            torch.as_tensor(ratings["rating"], dtype=torch.float32, device=device),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """``user, item, rating`` as NumPy arrays (what an artifact stores)."""
        return {
            "user": self.user.cpu().numpy(),
            "item": self.item.cpu().numpy(),
            "rating": self.rating.cpu().numpy(),
        }

    def __len__(self) -> int:
        return len(self.rating)

    def add(self, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor) -> None:
        """Append ratings; for a repeated ``(user, item)`` pair the latest rating wins."""
        user = torch.cat([self.user, user])  # shape: (n + m,)
        item = torch.cat([self.item, item])
        rating = torch.cat([self.rating, rating])
        n_items = int(item.max()) + 1
        keys, inverse = torch.unique(user * n_items + item, return_inverse=True)
        position = torch.arange(len(user), device=user.device)
        last = torch.full((len(keys),), -1, dtype=torch.long, device=user.device)
        last.scatter_reduce_(0, inverse, position, reduce="amax")  # shape: (n_pairs,)
        self.user, self.item, self.rating = user[last], item[last], rating[last]

    def item_counts(self, n_items: int) -> torch.Tensor:
        """Ratings per item, shape (n_items,)."""
        return torch.bincount(self.item, minlength=n_items)


@torch.no_grad()
def grow(model: ExplicitModel, *, new_user_ids: np.ndarray, new_item_ids: np.ndarray) -> None:
    """Append rows for users and items the model has never seen (raw ids, in order).

    New rows start at zero and unknown (they score like the model's fallback until
    :func:`apply_ratings` solves them); the raw ids extend ``model.user_ids`` /
    ``model.item_ids`` and the compact ids of the new rows follow the existing ones.
    """
    if ridge_penalties(model) is None:
        raise UnsupportedError(f"{type(model).__name__} cannot add users or items online")
    net = model.net
    for side, ids in (("user", new_user_ids), ("item", new_item_ids)):
        extra = len(ids)
        if not extra:
            continue
        for name in (f"{side}_factors", f"{side}_bias"):
            old = getattr(net, name)
            table = nn.Embedding(
                old.num_embeddings + extra, old.embedding_dim, device=old.weight.device
            )
            table.weight.zero_()
            table.weight[: old.num_embeddings] = old.weight
            table.weight.requires_grad_(old.weight.requires_grad)
            setattr(net, name, table)
        known = getattr(model, f"{side}_known")
        model.register_buffer(f"{side}_known", torch.cat([known, known.new_zeros(extra)]))
        raw = getattr(model, f"{side}_ids")
        setattr(model, f"{side}_ids", np.concatenate([raw, np.asarray(ids, dtype=raw.dtype)]))
        setattr(model, f"n_{side}s", getattr(model, f"n_{side}s") + extra)


@torch.no_grad()
def apply_ratings(
    model: ExplicitModel,
    store: RatingStore,
    user: torch.Tensor,
    item: torch.Tensor,
    rating: torch.Tensor,
    *,
    update: str = "users",
) -> dict[str, torch.Tensor]:
    """Merge ratings into ``store`` and re-solve the affected rows of ``model`` in place.

    Parameters
    ----------
    model : BiasedMF or BaselineEstimates
        Fitted; ids of ``user`` / ``item`` must lie in its (possibly grown) id spaces.
    store : RatingStore
        The ratings the model answers to; updated.
    user, item, rating : Tensor, shape (m,)
        The new ratings (compact ids on the model's device).
    update : {"users", "both"}
        ``"users"``: re-solve the users who rated and the items new to the model;
        ``"both"``: also re-solve every rated item.

    Returns
    -------
    dict
        ``users`` and ``items``: the compact ids whose rows were re-solved.
    """
    penalties = ridge_penalties(model)
    if penalties is None:
        raise UnsupportedError(
            f"online updates need a model with a mu + b_u + b_i + q_i.p_u net (BiasedMF, "
            f"BaselineEstimates); {type(model).__name__} has none: retrain it instead"
        )
    if update not in UPDATES:
        raise ValueError(f"update={update!r}; choose one of {UPDATES}")
    store.add(user, item, rating)
    users = torch.unique(user)  # shape: (U,) sorted
    items = torch.unique(item) if update == "both" else torch.unique(item[~model.item_known[item]])
    net = model.net
    _solve(
        model,
        store.user,
        store.item,
        store.rating,
        users,
        penalties["user"],
        rows_side=(net.user_factors, net.user_bias, model.user_known),
        other_side=(net.item_factors, net.item_bias, model.item_known),
    )
    _solve(
        model,
        store.item,
        store.user,
        store.rating,
        items,
        penalties["item"],
        rows_side=(net.item_factors, net.item_bias, model.item_known),
        other_side=(net.user_factors, net.user_bias, model.user_known),
    )
    model.train_csr = UserItemCSR.from_pairs(
        store.user,
        store.item,
        n_users=model.n_users,
        n_items=model.n_items,
        values=store.rating,
        device=model.device,
    )
    return {"users": users, "items": items}


def _solve(
    model: ExplicitModel,
    rows: torch.Tensor,
    cols: torch.Tensor,
    rating: torch.Tensor,
    which: torch.Tensor,
    ridge,
    *,
    rows_side: tuple,
    other_side: tuple,
) -> None:
    """Re-solve the rows ``which`` (sorted ids) of one side from all their stored ratings."""
    if not len(which):
        return
    factors, bias, known = rows_side
    other_factors, other_bias, other_known = other_side
    mask = torch.isin(rows, which) & other_known[cols]  # shape: (n,) ratings of those rows
    local = torch.searchsorted(which, rows[mask])  # shape: (n_sel,) row index in `which`
    col = cols[mask]
    other = other_factors.weight * other_known[:, None]  # shape: (n_other, f)
    target = rating[mask] - model.mu - other_bias.weight[col, 0]  # shape: (n_sel,)
    theta = solve_rows(local, col, target, other, n_rows=len(which), ridge=ridge)
    solved = torch.bincount(local, minlength=len(which)) > 0  # shape: (len(which),)
    factors.weight[which] = theta[:, :-1]
    bias.weight[which, 0] = theta[:, -1]
    known[which] = known[which] | solved
