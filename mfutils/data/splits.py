"""Train/test splits of :class:`Ratings`: canonical folds, random, per-user, temporal.

Every split returns :meth:`Ratings.subset` views, so the parts share the id spaces and side
tables of the full data. Per-user splits are vectorized: ratings are ordered by
``(user, key)`` with :func:`numpy.lexsort` and each rating's rank inside its user comes from
cumulative counts, with no loop over users.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mfutils.data.container import Ratings

__all__ = [
    "canonical_folds",
    "random_holdout",
    "kfold",
    "per_user_holdout",
    "temporal_holdout",
    "leave_last_out",
    "validation_split",
    "cold_user_split",
]

Split = tuple[Ratings, Ratings]
_STRATEGIES = ("random", "per_user", "temporal")


def canonical_folds(data: Ratings) -> list[Split]:
    """The canonical ML-100K folds ``u1..u5`` as ``(train, test)`` pairs.

    Parameters
    ----------
    data : Ratings
        Ratings with ``fold`` set, i.e. ML-100K loaded with its ``u{k}.test`` files.

    Returns
    -------
    list of (Ratings, Ratings)
        ``(u{k}.base, u{k}.test)`` for each fold ``k`` in increasing order.

    Raises
    ------
    ValueError
        When ``data.fold`` is ``None``.
    """
    if data.fold is None:
        raise ValueError(
            f"{data.name!r} has no canonical folds (only ML-100K loaded with its u1..u5.test "
            "files has them); use kfold() instead"
        )
    return [_split(data, data.fold == k) for k in np.unique(data.fold)]


def random_holdout(data: Ratings, *, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """A uniformly random ``test_fraction`` of all ratings as test.

    Parameters
    ----------
    data : Ratings
        Ratings to split.
    test_fraction : float
        Share of the ratings in the test part, in ``(0, 1)``; the count is rounded.
    seed : int
        Seed of the random choice.

    Returns
    -------
    (Ratings, Ratings)
        ``(train, test)``, disjoint, together equal to ``data``.
    """
    _check_fraction(test_fraction, "test_fraction")
    n_test = round(test_fraction * len(data))
    if not 0 < n_test < len(data):
        raise ValueError(
            f"test_fraction={test_fraction} of {len(data)} ratings leaves an empty part"
        )
    chosen = np.random.default_rng(seed).permutation(len(data))[:n_test]
    test = np.zeros(len(data), dtype=bool)
    test[chosen] = True
    return _split(data, test)


def kfold(data: Ratings, *, k: int = 5, seed: int = 0) -> list[Split]:
    """``k`` random folds whose test parts partition the ratings.

    Parameters
    ----------
    data : Ratings
        Ratings to split.
    k : int
        Number of folds, ``2 <= k <= len(data)``; fold sizes differ by at most one.
    seed : int
        Seed of the random assignment.

    Returns
    -------
    list of (Ratings, Ratings)
        ``(train, test)`` for each fold.
    """
    if not 2 <= k <= len(data):
        raise ValueError(f"k must lie in [2, {len(data)}] (the number of ratings), got {k}")
    fold = np.empty(len(data), dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(len(data))] = np.arange(len(data)) % k
    return [_split(data, fold == j) for j in range(k)]


def per_user_holdout(data: Ratings, *, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """For every user, a random ``test_fraction`` of their ratings as test.

    The per-user count is rounded, then clipped so that every user with at least two ratings
    keeps one in train and has one in test; users with a single rating stay in train.

    Parameters
    ----------
    data : Ratings
        Ratings to split.
    test_fraction : float
        Share of each user's ratings in the test part, in ``(0, 1)``.
    seed : int
        Seed of the random choice.

    Returns
    -------
    (Ratings, Ratings)
        ``(train, test)``.
    """
    _check_fraction(test_fraction, "test_fraction")
    key = np.random.default_rng(seed).random(len(data))
    n_test = _fraction_counts(data, test_fraction)
    return _split(data, _last_of_each_user(data, key, n_test))


def temporal_holdout(data: Ratings, *, test_fraction: float = 0.2) -> Split:
    """For every user, the latest ``test_fraction`` of their ratings as test.

    Counts are rounded and clipped as in :func:`per_user_holdout`. Ratings with equal
    timestamps are ordered by their position in ``data``, so the split is deterministic and no
    test rating of a user is earlier than any of their train ratings.

    Parameters
    ----------
    data : Ratings
        Ratings to split.
    test_fraction : float
        Share of each user's ratings in the test part, in ``(0, 1)``.

    Returns
    -------
    (Ratings, Ratings)
        ``(train, test)``.
    """
    _check_fraction(test_fraction, "test_fraction")
    n_test = _fraction_counts(data, test_fraction)
    return _split(data, _last_of_each_user(data, data.timestamp, n_test))


def leave_last_out(data: Ratings, *, n: int = 1) -> Split:
    """For every user, their ``n`` latest ratings as test.

    Users with ``n`` ratings or fewer stay entirely in train. Ties in time are broken by the
    position in ``data``.

    Parameters
    ----------
    data : Ratings
        Ratings to split.
    n : int
        Test ratings per user, at least 1.

    Returns
    -------
    (Ratings, Ratings)
        ``(train, test)``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    counts = data.user_counts()
    return _split(data, _last_of_each_user(data, data.timestamp, np.where(counts > n, n, 0)))


def validation_split(
    train: Ratings, *, fraction: float = 0.1, seed: int = 0, strategy: str = "random"
) -> Split:
    """Carve a validation part out of a training set, for early stopping and tuning.

    Tune hyper-parameters and stop training on this validation part, never on the test part:
    a test set that guided any choice no longer estimates the error on new data.

    Parameters
    ----------
    train : Ratings
        The training part of a train/test split; the test part is never touched.
    fraction : float
        Share of ``train`` that goes to validation, in ``(0, 1)``.
    seed : int
        Seed of the random choice (unused by ``"temporal"``).
    strategy : {"random", "per_user", "temporal"}
        :func:`random_holdout`, :func:`per_user_holdout` or :func:`temporal_holdout`.

    Returns
    -------
    (Ratings, Ratings)
        ``(fit, valid)``, disjoint, together equal to ``train``.
    """
    if strategy == "random":
        return random_holdout(train, test_fraction=fraction, seed=seed)
    if strategy == "per_user":
        return per_user_holdout(train, test_fraction=fraction, seed=seed)
    if strategy == "temporal":
        return temporal_holdout(train, test_fraction=fraction)
    raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")


def cold_user_split(
    train: Ratings, test: Ratings, *, n_users: int = 200, max_train: int = 5, seed: int = 0
) -> Split:
    """Make ``n_users`` random test users (nearly) new: they keep at most ``max_train`` ratings.

    A cold-start protocol on top of any ``(train, test)`` split. Users are drawn at random
    (seeded) among those with test ratings; each keeps ``k_u`` of their training ratings,
    chosen at random, with ``k_u`` uniform on ``0..max_train`` (at most what they have). Their
    other training ratings move to the test part, so a cold user's test ratings are all their
    ratings but the ``k_u`` they "gave" (the given-``k`` protocol). Every other user keeps
    their training and test ratings, so one test part compares users with 0, 1, ...,
    ``max_train`` and with many training ratings.

    Parameters
    ----------
    train, test : Ratings
        A split of one data set (e.g. ML-100K ``u1.base``, ``u1.test``, or a validation split
        carved from a training part).
    n_users : int
        Number of cold users, at least 1 and at most the number of users in ``test``.
    max_train : int
        Largest number of training ratings a cold user keeps (>= 0).
    seed : int
        Seed of the choice of users, of ``k_u`` and of the kept ratings.

    Returns
    -------
    (Ratings, Ratings)
        The reduced training part and the enlarged test part (``test``'s rows first).
    """
    test_users = np.unique(test.user)
    if not 1 <= n_users <= len(test_users):
        raise ValueError(
            f"n_users={n_users} must lie in [1, {len(test_users)}] (the users with test ratings)"
        )
    if max_train < 0:
        raise ValueError(f"max_train={max_train} must be >= 0")
    rng = np.random.default_rng(seed)
    cold = rng.choice(test_users, size=n_users, replace=False)  # shape: (n_users,)
    counts = train.user_counts()  # shape: (n_users_total,)
    keep = np.minimum(rng.integers(0, max_train + 1, size=n_users), counts[cold])
    n_drop = np.zeros(train.n_users, dtype=np.int64)
    n_drop[cold] = counts[cold] - keep
    drop = _last_of_each_user(train, rng.random(len(train)), n_drop)  # shape: (n,)
    moved = train.subset(drop)
    joined = replace(
        test,
        **{
            name: np.concatenate([getattr(test, name), getattr(moved, name)])
            for name in ("user", "item", "rating", "timestamp")
        },
        fold=None
        if test.fold is None or moved.fold is None
        else np.concatenate([test.fold, moved.fold]),
    )
    return train.subset(~drop), joined


# ---------------------------------------------------------------------- helpers
def _split(data: Ratings, test: np.ndarray) -> Split:
    return data.subset(~test), data.subset(test)


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")


def _fraction_counts(data: Ratings, fraction: float) -> np.ndarray:
    """Per-user test counts: rounded share, at least 1 and at most count - 1 (0 below 2)."""
    counts = data.user_counts()
    wanted = np.clip(np.rint(fraction * counts), 1, np.maximum(counts - 1, 1))
    return np.where(counts >= 2, wanted, 0).astype(np.int64)


def _last_of_each_user(data: Ratings, key: np.ndarray, n_last: np.ndarray) -> np.ndarray:
    """Mask of each user's ``n_last[user]`` ratings with the largest ``key``.

    Ties in ``key`` are broken by position in ``data``.
    """
    order = np.lexsort((np.arange(len(data)), key, data.user))  # shape: (n,)
    counts = data.user_counts()
    starts = np.cumsum(counts) - counts  # shape: (n_users,)
    rank = np.empty(len(data), dtype=np.int64)
    rank[order] = np.arange(len(data)) - np.repeat(starts, counts)
    return rank >= counts[data.user] - n_last[data.user]
