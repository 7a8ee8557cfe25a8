"""The one data container of the series: explicit ratings with compact integer ids.

Every loader, split and model in :mod:`mfutils` speaks :class:`Ratings`. Ids are compact
(``0 .. n_users-1``, ``0 .. n_items-1``) and are shared by every subset of one data set, so a
train split, a test split and the full data all index the same embedding tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True, eq=False)
class Ratings:
    """Ratings ``(user, item, rating, timestamp)`` plus the id mappings and side tables.

    Parameters
    ----------
    user, item : np.ndarray of int64, shape (n,)
        Compact ids.
    rating : np.ndarray of float32, shape (n,)
    timestamp : np.ndarray of int64, shape (n,)
        Unix seconds (0 where a release has none).
    n_users, n_items : int
        Sizes of the id spaces (may exceed the ids present in a subset).
    user_ids, item_ids : np.ndarray, shape (n_users,), (n_items,)
        Original ids: ``user_ids[u]`` is the raw id of compact user ``u``.
    users, items : pd.DataFrame or None
        Side tables indexed by compact id (``users.loc[u]``), one row per id.
    name : str
        Data set name, e.g. ``"ml-100k"``.
    rating_scale : tuple of float
        ``(min, max)`` of the rating scale; predictions are clipped to it.
    fold : np.ndarray of int8 or None
        For ML-100K, the canonical fold (1..5) in which each rating is a test rating.
    implicit : bool
        The rows are events without ratings (:func:`mfutils.data.load_ratings` without a
        rating column; every ``rating`` is 1): ranking models fit them, explicit ones refuse.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    n_users: int
    n_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    name: str = "ratings"
    rating_scale: tuple[float, float] = (1.0, 5.0)
    fold: np.ndarray | None = field(default=None, repr=False)
    implicit: bool = False

    def __post_init__(self) -> None:
        n = len(self.user)
        for label in ("item", "rating", "timestamp") + (("fold",) if self.fold is not None else ()):
            if len(getattr(self, label)) != n:
                raise ValueError(
                    f"Ratings.{label} has {len(getattr(self, label))} rows; user has {n}"
                )
        for label, size in (("user", self.n_users), ("item", self.n_items)):
            ids = getattr(self, label)
            if n and (ids.min() < 0 or ids.max() >= size):
                raise ValueError(
                    f"{label} ids must lie in [0, {size}); got {ids.min()}..{ids.max()}"
                )

    @classmethod
    def from_triples(
        cls,
        triples: list[tuple[int, int, float]],
        *,
        n_users: int | None = None,
        n_items: int | None = None,
        name: str = "toy",
        rating_scale: tuple[float, float] = (1.0, 5.0),
    ) -> Ratings:
        """Small hand-made data from ``(user, item, rating)`` triples with compact ids."""
        arr = np.asarray(triples, dtype=np.float64).reshape(-1, 3)
        user, item = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
        n_users = int(user.max()) + 1 if n_users is None else n_users
        n_items = int(item.max()) + 1 if n_items is None else n_items
        return cls(
            user=user,
            item=item,
            rating=arr[:, 2].astype(np.float32),
            timestamp=np.zeros(len(arr), dtype=np.int64),
            n_users=n_users,
            n_items=n_items,
            user_ids=np.arange(n_users),
            item_ids=np.arange(n_items),
            name=name,
            rating_scale=rating_scale,
        )

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.user)

    def __repr__(self) -> str:
        return (
            f"Ratings(name={self.name!r}, n_ratings={len(self):,}, n_users={self.n_users:,}, "
            f"n_items={self.n_items:,}, scale={self.rating_scale})"
        )

    @property
    def global_mean(self) -> float:
        """Mean rating ``mu`` of these ratings."""
        return float(self.rating.mean()) if len(self) else float(np.mean(self.rating_scale))

    @property
    def density(self) -> float:
        """Fraction of the ``n_users x n_items`` matrix that is observed."""
        return len(self) / (self.n_users * self.n_items)

    def subset(self, index: np.ndarray) -> Ratings:
        """Rows selected by a boolean mask or an integer index; id spaces are kept."""
        index = np.asarray(index)
        return replace(
            self,
            user=self.user[index],
            item=self.item[index],
            rating=self.rating[index],
            timestamp=self.timestamp[index],
            fold=None if self.fold is None else self.fold[index],
        )

    def with_ratings(self, rating: np.ndarray) -> Ratings:
        """A copy with new rating values (e.g. binarised), everything else kept."""
        return replace(self, rating=np.asarray(rating, dtype=np.float32))

    # ------------------------------------------------------------------ views
    def to_frame(self, *, original_ids: bool = False) -> pd.DataFrame:
        """Ratings as a DataFrame with columns ``user, item, rating, timestamp``."""
        frame = pd.DataFrame(
            {
                "user": self.user,
                "item": self.item,
                "rating": self.rating,
                "timestamp": self.timestamp,
            }
        )
        if original_ids:
            frame["user"] = self.user_ids[self.user]
            frame["item"] = self.item_ids[self.item]
        return frame

    def tensors(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """``user, item, rating, timestamp`` tensors on ``device`` (long, long, float32, long)."""
        return {
            "user": torch.as_tensor(self.user, dtype=torch.long, device=device),
            "item": torch.as_tensor(self.item, dtype=torch.long, device=device),
            "rating": torch.as_tensor(self.rating, dtype=torch.float32, device=device),
            "timestamp": torch.as_tensor(self.timestamp, dtype=torch.long, device=device),
        }

    def user_counts(self) -> np.ndarray:
        """Number of ratings per compact user id, shape (n_users,)."""
        return np.bincount(self.user, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Number of ratings per compact item id, shape (n_items,)."""
        return np.bincount(self.item, minlength=self.n_items)

    def csr(self, device: torch.device | str | None = None) -> UserItemCSR:
        """The user -> items structure of these ratings (see :class:`UserItemCSR`)."""
        return UserItemCSR.from_pairs(
            self.user,
            self.item,
            n_users=self.n_users,
            n_items=self.n_items,
            values=self.rating,
            device=device,
        )

    # ------------------------------------------------------------------ ids
    def encode_users(self, raw_ids: np.ndarray | list) -> np.ndarray:
        """Compact ids for raw user ids; unknown raw ids map to ``-1``."""
        return encode_ids(self.user_ids, raw_ids)

    def encode_items(self, raw_ids: np.ndarray | list) -> np.ndarray:
        """Compact ids for raw item ids; unknown raw ids map to ``-1``."""
        return encode_ids(self.item_ids, raw_ids)


def encode_ids(known: np.ndarray, raw_ids: np.ndarray | list) -> np.ndarray:
    """Positions of ``raw_ids`` in ``known`` (the compact ids); ``-1`` where absent."""
    lookup = pd.Index(known)
    return lookup.get_indexer(pd.Index(np.asarray(raw_ids))).astype(np.int64)


@dataclass(frozen=True, eq=False)
class UserItemCSR:
    """Each user's items in compressed-sparse-row form, as tensors on one device.

    ``indices[indptr[u]:indptr[u+1]]`` are user ``u``'s items (sorted), ``values`` the matching
    ratings. This is what masks seen items in top-K evaluation and what ``EmbeddingBag``
    consumes for SVD++-style sums (``input=indices``, ``offsets=indptr[:-1]``).
    """

    indptr: torch.Tensor  # shape: (n_users + 1,)
    indices: torch.Tensor  # shape: (nnz,)
    values: torch.Tensor  # shape: (nnz,)
    n_items: int

    @classmethod
    def from_pairs(
        cls,
        user: np.ndarray | torch.Tensor,
        item: np.ndarray | torch.Tensor,
        *,
        n_users: int,
        n_items: int,
        values: np.ndarray | torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> UserItemCSR:
        """Build from (user, item[, value]) pairs; duplicate pairs are kept as given."""
        user_t = torch.as_tensor(user, dtype=torch.long, device=device)
        item_t = torch.as_tensor(item, dtype=torch.long, device=device)
        if values is None:
            values_t = torch.ones(len(user_t), dtype=torch.float32, device=user_t.device)
        else:
            values_t = torch.as_tensor(values, dtype=torch.float32, device=user_t.device)
        order = torch.argsort(user_t * n_items + item_t)  # shape: (nnz,)
        counts = torch.bincount(user_t, minlength=n_users)  # shape: (n_users,)
        indptr = torch.zeros(n_users + 1, dtype=torch.long, device=user_t.device)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr=indptr, indices=item_t[order], values=values_t[order], n_items=n_items)

    @classmethod
    def empty(
        cls, n_users: int, n_items: int, *, device: torch.device | str | None = None
    ) -> UserItemCSR:
        """No entries: every one of ``n_users`` users has an empty row."""
        return cls(
            torch.zeros(n_users + 1, dtype=torch.long, device=device),
            torch.zeros(0, dtype=torch.long, device=device),
            torch.zeros(0, device=device),
            n_items,
        )

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def device(self) -> torch.device:
        return self.indptr.device

    def counts(self) -> torch.Tensor:
        """Items per user, shape (n_users,)."""
        return self.indptr[1:] - self.indptr[:-1]

    def to(self, device: torch.device | str) -> UserItemCSR:
        return UserItemCSR(
            self.indptr.to(device), self.indices.to(device), self.values.to(device), self.n_items
        )

    def row_ids(self) -> torch.Tensor:
        """The user of every stored entry, shape (nnz,)."""
        return torch.repeat_interleave(
            torch.arange(self.n_users, device=self.device), self.counts()
        )

    def positions(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For every stored entry of ``users`` (any order, repeats allowed): the user's index in
        ``users`` and the entry's index into :attr:`indices` / :attr:`values`.

        Entries come grouped by user in the order of ``users``. Vectorized, no loop over
        users; ``users`` lives on :attr:`device`.
        """
        starts = self.indptr[users]  # shape: (B,)
        counts = self.indptr[users + 1] - starts  # shape: (B,)
        position = torch.repeat_interleave(
            torch.arange(len(users), device=users.device), counts
        )  # shape: (nnz_B,)
        first = torch.cumsum(counts, 0) - counts  # shape: (B,) output offset of each user
        offset = torch.arange(position.numel(), device=users.device) - first[position]
        return position, starts[position] + offset

    def gather(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries of any set of users as ``(position, item)`` index pairs, which index a
        ``(len(users), n_items)`` block directly: ``block.index_put_((position, item), v)``."""
        position, entry = self.positions(users)
        return position, self.indices[entry]

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries of users ``start..stop-1`` as ``(row - start, item)`` index pairs.

        Suited to ``scores[rows, cols] = -inf`` on a ``(stop - start, n_items)`` score block.
        """
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        local_counts = self.counts()[start:stop]
        rows = torch.repeat_interleave(
            torch.arange(stop - start, device=self.device), local_counts
        )  # shape: (hi - lo,)
        return rows, self.indices[lo:hi]

    def to_dense(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Boolean membership matrix of users ``start..stop-1``, shape (stop-start, n_items)."""
        stop = self.n_users if stop is None else stop
        rows, cols = self.rows(start, stop)
        dense = torch.zeros(stop - start, self.n_items, dtype=torch.bool, device=self.device)
        dense[rows, cols] = True
        return dense
