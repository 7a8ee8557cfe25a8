"""The served model behind the CLI and the HTTP service: raw ids in, ranked raw ids out.

:class:`Recommender` wraps an :class:`~mfutils.serving.artifact.Artifact` and answers four
questions, each with the best method the model allows and a named fallback:

============================  ==================================================================
known user, top-K             the model's own ``recommend`` (``score_items``: one matrix product
                              over the catalogue on the model's device; seen items excluded)
new user from their ratings   ``fold-in``: ridge solve of ``p_u, b_u`` (biased MF, baselines),
                              or iALS's exact user solve (:meth:`ImplicitALS.fold_in`);
                              ``asymmetric-svd``: the model's own ``predict_new_users``;
                              else ``popularity`` (most-rated items)
similar items                 ``item-factors``: cosine of ``q_i`` (factor models, iALS, the
                              two-tower's item tower); else
                              ``co-occurrence``: ``|U(i) & U(j)| / sqrt(|U(i)| |U(j)|)``
online updates                ``apply_ratings`` (:mod:`mfutils.serving.online`) for models that
                              support them; others raise :class:`UnsupportedError`
============================  ==================================================================

Online updates are order-independent within one batch: a batch may rate each ``(user, item)``
pair once, and the ids new to the model get compact ids in sorted raw-id order, so any
permutation of a batch gives the same model, bit for bit. Batches apply in arrival order: each
re-solves its raters against the model as it is then, so splitting the same ratings into
batches in another order gives another model (see :mod:`mfutils.serving.online`). New raw ids
must lie in ``[1, MAX_RAW_ID]`` (``2**31 - 1``: every MovieLens id, and exact in any JSON
client), and :meth:`Recommender.add_ratings` can bound how many new users and items the model
takes since it was loaded.

Concurrency: any number of threads may read at once; an online update takes the lock alone
(a readers-writer lock), so no request ever sees a half-updated model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mfutils.models.ials import ImplicitALS
from mfutils.models.svdpp import AsymmetricSVD
from mfutils.models.two_tower import TwoTower
from mfutils.serving.artifact import Artifact
from mfutils.serving.foldin import fold_in_users, ridge_penalties, score_folded
from mfutils.serving.online import (
    RatingStore,
    UnsupportedError,
    apply_ratings,
    grow,
    supports_updates,
)

MAX_RAW_ID = 2**31 - 1  # largest raw id a new user or item may take


class GrowthLimitError(RuntimeError):
    """Online ratings would add more new users or items than allowed since loading."""


class UnknownIdError(KeyError):
    """Raw ids the served model does not know; ``kind`` is ``"user"`` or ``"item"``."""

    def __init__(self, kind: str, ids: list) -> None:
        super().__init__(
            f"unknown {kind} id{'s' if len(ids) > 1 else ''} "
            f"{', '.join(map(str, ids[:10]))}{' ...' if len(ids) > 10 else ''}"
        )
        self.kind, self.ids = kind, ids

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Ranking:
    """Top-K items for one query: raw ``items`` best first, their ``scores`` and the method."""

    items: np.ndarray
    scores: np.ndarray
    method: str


class ReadWriteLock:
    """Many readers at once, or one writer alone; a waiting writer blocks new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class Recommender:
    """Recommendations by raw id from an artifact, with fallbacks and online updates.

    Parameters
    ----------
    artifact : Artifact or str or Path
        A loaded artifact or its directory.
    device : str or torch.device, optional
        Where the model computes when ``artifact`` is a path; default
        :func:`mfutils.get_device`.

    Attributes
    ----------
    path : Path or None
        The directory the artifact was loaded from (``None`` for an artifact in memory).
    """

    def __init__(
        self, artifact: Artifact | str | Path, *, device: str | torch.device | None = None
    ) -> None:
        self.path = None if isinstance(artifact, Artifact) else Path(artifact)
        if not isinstance(artifact, Artifact):
            artifact = Artifact.load(artifact, device=device)
        self.artifact = artifact
        self.model = artifact.model
        self.items = artifact.items.reset_index(drop=True)
        self.store = RatingStore.from_arrays(artifact.ratings, self.model.device)
        self.lock = ReadWriteLock()
        self.updates = dict(
            artifact.info.get("online_updates", {"ratings": 0, "users": 0, "items": 0})
        )
        self._dirty = False
        self._loaded_sizes = {"user": self.model.n_users, "item": self.model.n_items}
        self._reindex()

    # ------------------------------------------------------------------ description
    @property
    def n_items(self) -> int:
        return self.model.n_items

    @property
    def rating_scale(self) -> tuple[float, float]:
        return tuple(self.model.rating_scale)

    def capabilities(self) -> dict[str, Any]:
        """Which method answers each kind of request for this model."""
        return {
            "known_user": "model",
            "new_user": self._new_user_method(),
            "similar_items": "item-factors"
            if _item_factors(self.model) is not None
            else "co-occurrence",
            "online_updates": supports_updates(self.model),
        }

    def metadata(self) -> dict[str, Any]:
        """The artifact's manifest fields plus the live state (sizes, updates, capabilities)."""
        with self.lock.read():
            return {
                **self.artifact.info,
                "n_users": self.model.n_users,
                "n_items": self.model.n_items,
                "n_ratings": len(self.store),
                "device": str(self.model.device),
                "capabilities": self.capabilities(),
                "online_updates": dict(self.updates),
                "unsaved_updates": self._dirty,
            }

    def describe(self, ranking: Ranking) -> list[dict[str, Any]]:
        """``item, title, genres, score`` records of a ranking (raw ids, metadata joined)."""
        titles, genres = self._metadata  # read once: an update may swap them meanwhile
        rows = self._item_index.get_indexer(ranking.items)
        return [
            {"item": item, "title": titles[row], "genres": list(genres[row]), "score": float(score)}
            for item, score, row in zip(
                ranking.items.tolist(), ranking.scores.tolist(), rows.tolist(), strict=True
            )
        ]

    def frame(self, ranking: Ranking) -> pd.DataFrame:
        """A ranking as a table with titles, for notebooks and the CLI."""
        columns = ["item", "title", "genres", "score"]
        return pd.DataFrame(self.describe(ranking), columns=columns).assign(
            genres=lambda f: f["genres"].map(", ".join)
        )

    # ------------------------------------------------------------------ queries
    def recommend(
        self, users: list[int] | np.ndarray, k: int = 10, *, exclude_seen: bool = True
    ) -> list[Ranking]:
        """Top-``k`` items for known users (raw ids); one matrix product for all of them.

        Raises
        ------
        UnknownIdError
            For raw user ids not in the model (serve them with :meth:`recommend_new_user`).
        ValueError
            For ``k`` outside ``[1, n_items]``.
        """
        self._check_k(k)
        with self.lock.read():
            compact = self._encode("user", users)
            items, scores = self.model.recommend(compact, k, exclude_seen=exclude_seen)
            item_ids = self.model.item_ids
        return [
            _ranking(item_ids, row_items, row_scores, "model")
            for row_items, row_scores in zip(items, scores, strict=True)
        ]

    @torch.no_grad()
    def recommend_new_user(
        self,
        items: list[int] | np.ndarray,
        ratings: list[float] | np.ndarray,
        k: int = 10,
        *,
        exclude_rated: bool = True,
    ) -> Ranking:
        """Top-``k`` items for someone outside the training data, from their ratings alone.

        Fold-in for factor models, Asymmetric-SVD's own eq. 13 sums, else popularity (see the
        module docstring). Unknown raw item ids raise :class:`UnknownIdError`.
        """
        self._check_k(k)
        ratings = np.asarray(ratings, dtype=np.float32)
        low, high = self.rating_scale
        if len(ratings) != len(items) or not len(ratings):
            raise ValueError(
                f"give one rating per item and at least one; got {len(items)} "
                f"items and {len(ratings)} ratings"
            )
        if not np.isfinite(ratings).all() or (ratings < low).any() or (ratings > high).any():
            raise ValueError(f"ratings must lie on the model's scale [{low}, {high}]")
        repeated = pd.Index(items)[pd.Index(items).duplicated()].unique().tolist()
        if repeated:
            raise ValueError(f"items {repeated} are rated more than once")
        with self.lock.read():
            compact = self._encode("item", items)
            device = self.model.device
            item = torch.as_tensor(compact, device=device)
            rating = torch.as_tensor(ratings, device=device)
            method = self._new_user_method()
            if method == "fold-in" and isinstance(self.model, ImplicitALS):
                scores = self.model.item_factors @ self.model.fold_in(item, rating)
            elif method == "fold-in":
                p, b = fold_in_users(self.model, torch.zeros_like(item), item, rating, n_users=1)
                scores = score_folded(self.model, p, b)[0]  # shape: (n_items,)
            elif method == "asymmetric-svd":
                n = self.n_items
                scores = torch.as_tensor(
                    self.model.predict_new_users(
                        np.zeros(len(compact), dtype=np.int64),
                        compact,
                        ratings,
                        np.zeros(n, dtype=np.int64),
                        np.arange(n),
                    ),
                    device=device,
                )
            else:
                scores = self.store.item_counts(self.n_items).float()
            if exclude_rated:
                scores = scores.clone()
                scores[item] = -torch.inf
            return self._top(scores, k, method)

    @torch.no_grad()
    def similar_items(self, item: int, k: int = 10) -> Ranking:
        """The ``k`` items most similar to raw item ``item`` (itself excluded).

        Cosine of the item factors when the model has them, else co-occurrence cosine over
        the stored ratings; an item without any training rating gets popularity.
        """
        self._check_k(k)
        with self.lock.read():
            i = int(self._encode("item", [item])[0])
            model = self.model
            factors = _item_factors(model)
            if not bool(model.item_known[i]):
                scores, method = self.store.item_counts(self.n_items).float(), "popularity"
            elif factors is not None:
                q = factors * model.item_known[:, None]  # shape: (n_items, f)
                norms = q.norm(dim=1).clamp_min(1e-12)  # shape: (n_items,)
                scores, method = (q @ q[i]) / (norms * norms[i]), "item-factors"
            else:
                scores, method = self._co_occurrence(i), "co-occurrence"
            scores = scores.masked_fill(~model.item_known, -torch.inf)
            scores[i] = -torch.inf
            return self._top(scores, k, method)

    # ------------------------------------------------------------------ online updates
    def add_ratings(
        self,
        users: list[int] | np.ndarray,
        items: list[int] | np.ndarray,
        ratings: list[float] | np.ndarray,
        *,
        update: str = "users",
        allow_new: bool = True,
        max_new_users: int | None = None,
        max_new_items: int | None = None,
    ) -> dict[str, Any]:
        """Apply one batch of new ratings (raw ids) to the served model in place; see
        :func:`mfutils.serving.online.apply_ratings`.

        Raw ids the model has never seen become new users / items when ``allow_new``, else
        raise :class:`UnknownIdError`; they must lie in ``[1, MAX_RAW_ID]``. The batch is a set:
        each ``(user, item)`` pair at most once, and its order does not matter. Returns which
        raw users and items were re-solved.

        Parameters
        ----------
        max_new_users, max_new_items : int, optional
            At most this many users / items new to the model since it was loaded (this batch
            included); default unbounded.

        Raises
        ------
        GrowthLimitError
            If the batch would pass ``max_new_users`` or ``max_new_items``; nothing changes.
        """
        if not supports_updates(self.model):
            raise UnsupportedError(
                f"{type(self.model).__name__} takes no online updates (only models with a "
                "biased-MF net, BiasedMF and BaselineEstimates, do): retrain and export again"
            )
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        ratings = np.asarray(ratings, dtype=np.float32)
        if not len(users) == len(items) == len(ratings) or not len(ratings):
            raise ValueError(
                f"users, items and ratings must be equally long and not empty; "
                f"got {len(users)}, {len(items)}, {len(ratings)}"
            )
        low, high = self.rating_scale
        if not np.isfinite(ratings).all() or (ratings < low).any() or (ratings > high).any():
            raise ValueError(f"ratings must lie on the model's scale [{low}, {high}]")
        pairs = pd.MultiIndex.from_arrays([users, items])
        if pairs.has_duplicates:
            user, item = pairs[pairs.duplicated()][0]
            raise ValueError(
                f"user {user} rates item {item} more than once in this batch: send "
                "each pair once (a later batch replaces a rating)"
            )
        with self.lock.write():
            new_users = self._unseen(self._user_index, users)
            new_items = self._unseen(self._item_index, items)
            if not allow_new and (len(new_users) or len(new_items)):
                raise UnknownIdError(
                    "user" if len(new_users) else "item",
                    list(new_users if len(new_users) else new_items),
                )
            self._check_new("user", new_users, max_new_users)
            self._check_new("item", new_items, max_new_items)
            grow(self.model, new_user_ids=new_users, new_item_ids=new_items)
            if len(new_items):
                extra = pd.DataFrame(
                    {
                        "item_id": new_items,
                        "title": None,
                        "year": None,
                        "genres": [[] for _ in new_items],
                    }
                )
                self.items = pd.concat([self.items, extra], ignore_index=True)
            self._reindex()
            device = self.model.device
            solved = apply_ratings(
                self.model,
                self.store,
                torch.as_tensor(self._user_index.get_indexer(users), device=device),
                torch.as_tensor(self._item_index.get_indexer(items), device=device),
                torch.as_tensor(ratings, device=device),
                update=update,
            )
            self.updates = {
                "ratings": self.updates["ratings"] + len(ratings),
                "users": self.updates["users"] + len(new_users),
                "items": self.updates["items"] + len(new_items),
            }
            self._dirty = True
            return {
                "ratings": len(ratings),
                "new_users": new_users.tolist(),
                "new_items": new_items.tolist(),
                "users": self.model.user_ids[solved["users"].cpu().numpy()].tolist(),
                "items": self.model.item_ids[solved["items"].cpu().numpy()].tolist(),
            }

    def snapshot(self) -> Artifact:
        """The current state as an artifact: the loaded one, or its next version if updated."""
        with self.lock.read():
            if not self._dirty:
                return self.artifact
            return self.artifact.next_version(
                self.model, self.items.copy(), self.store.arrays(), dict(self.updates)
            )

    def save(self, path: str | Path, *, overwrite: bool = False) -> Artifact:
        """Write the current state (a new version after online updates) to ``path``."""
        with self.lock.write():  # no update may land between snapshot and write
            artifact = self.artifact
            if self._dirty:
                artifact = artifact.next_version(
                    self.model, self.items.copy(), self.store.arrays(), dict(self.updates)
                )
            artifact.save(path, overwrite=overwrite)
            self.artifact, self._dirty = artifact, False
        return artifact

    # ------------------------------------------------------------------ helpers
    def _reindex(self) -> None:
        self._user_index = pd.Index(self.model.user_ids)
        self._item_index = pd.Index(self.model.item_ids)
        self._metadata = (self.items["title"].to_list(), self.items["genres"].to_list())

    def raw_id(self, kind: str, text: str) -> int | str:
        """A raw id given as text (a URL, the command line) as the model holds it: an
        integer for a model trained on integer ids when ``text`` is one, else the text."""
        index = self._user_index if kind == "user" else self._item_index
        if pd.api.types.is_integer_dtype(index.dtype) and text.strip().lstrip("+-").isdigit():
            return int(text)
        return text

    def _encode(self, kind: str, raw: list | np.ndarray) -> np.ndarray:
        """Compact ids of raw ids, given as the model holds them or as text: ``"42"`` is the
        integer id 42 of a model trained on integer ids (the CLI's and the URL's form)."""
        index = self._user_index if kind == "user" else self._item_index
        given = np.asarray(raw, dtype=object).reshape(-1)
        if pd.api.types.is_integer_dtype(index.dtype):  # a request's ids, not a hot path
            keys = [_integer(value) for value in given]
            wide = [k for k in keys if k is not None and not -(2**63) <= k < 2**63]
            if wide:
                raise OverflowError(
                    f"{kind} id {wide[0]} is out of range (ids are 64-bit integers)"
                )
            whole = np.array([k is not None for k in keys], dtype=bool)
            found = index.get_indexer(np.array([k or 0 for k in keys], dtype=np.int64))
            compact = np.where(whole, found, -1).astype(np.int64)
        else:
            compact = index.get_indexer(given.astype(str)).astype(np.int64)
        if (compact < 0).any():
            raise UnknownIdError(kind, given[compact < 0].tolist())
        return compact

    @staticmethod
    def _unseen(index: pd.Index, raw: np.ndarray) -> np.ndarray:
        """Raw ids not in ``index``, sorted (so new compact ids do not depend on order)."""
        return np.unique(raw[index.get_indexer(raw) < 0]).astype(np.int64)

    def _check_new(self, kind: str, new: np.ndarray, limit: int | None) -> None:
        """Refuse new raw ids outside ``[1, MAX_RAW_ID]`` or past ``limit`` since loading."""
        bad = new[(new < 1) | (new > MAX_RAW_ID)]
        if len(bad):
            raise ValueError(
                f"new {kind} ids must be integers in [1, {MAX_RAW_ID}]; got "
                f"{', '.join(map(str, bad[:5].tolist()))}"
            )
        added = getattr(self.model, f"n_{kind}s") - self._loaded_sizes[kind]
        if limit is not None and added + len(new) > limit:
            raise GrowthLimitError(
                f"{len(new)} new {kind}s would pass the limit of {limit} new {kind}s since "
                f"start-up ({added} added so far); known {kind}s can still rate"
            )

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k={k} must lie in [1, {self.n_items}] (the catalogue size)")

    def _new_user_method(self) -> str:
        return new_user_method(self.model)

    def _co_occurrence(self, i: int) -> torch.Tensor:
        """``|U(i) & U(j)| / sqrt(|U(i)| |U(j)|)`` for every item ``j``, shape (n_items,)."""
        raters = self.store.user[self.store.item == i]  # shape: (n_i,)
        _, co_items = self.model.train_csr.gather(raters)  # shape: (sum of their counts,)
        co = torch.bincount(co_items, minlength=self.n_items).float()  # shape: (n_items,)
        counts = self.store.item_counts(self.n_items).float()
        return co / (counts * counts[i]).clamp_min(1).sqrt()

    def _top(self, scores: torch.Tensor, k: int, method: str) -> Ranking:
        top = torch.topk(scores, k)
        return _ranking(
            self.model.item_ids, top.indices.cpu().numpy(), top.values.cpu().numpy(), method
        )


def _integer(value: object) -> int | None:
    """An integer id from an int or its decimal text; ``None`` for anything else."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    return int(text) if text.lstrip("+-").isdigit() else None


def new_user_method(model: nn.Module) -> str:
    """How a user outside the training data is answered (the module docstring's table);
    depends on the class and options only, so it also answers for an unfitted model."""
    if isinstance(model, ImplicitALS) or ridge_penalties(model) is not None:
        return "fold-in"
    if isinstance(model, AsymmetricSVD):
        return "asymmetric-svd"
    return "popularity"


def _ranking(item_ids: np.ndarray, items: np.ndarray, scores: np.ndarray, method: str) -> Ranking:
    """Raw ids of a top-K row; items ranked ``-inf`` (seen, or no candidate left) dropped."""
    keep = np.isfinite(scores)
    return Ranking(item_ids[items[keep]], scores[keep], method)


def _item_factors(model: nn.Module) -> torch.Tensor | None:
    """The ``q_i`` table of a factor model (biased MF, the SVD++ family, the integrated
    model's factor tier, iALS, the two-tower's item tower); ``None`` for baselines,
    neighbourhood models, EASE and popularity."""
    if isinstance(model, ImplicitALS):
        return model.item_factors
    if isinstance(model, TwoTower):
        return model.item_embeddings()
    net = getattr(model, "net", None)
    for owner in (net, getattr(net, "factors", None)):
        table = getattr(owner, "item_factors", None)
        if isinstance(table, nn.Embedding) and table.embedding_dim > 0:
            return table.weight
    return None
