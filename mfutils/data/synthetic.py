"""Synthetic MovieLens-like ratings from a known low-rank model, for tests and demonstrations.

Ratings follow ``mu + b_u + b_i + p_u . q_i + noise``, clipped (and rounded) to the scale.
Items have a power-law popularity and users a log-normal activity, as in MovieLens; the
(user, item) pairs are unique. Side tables mimic ML-100K (users) and the MovieLens item tables,
with genres derived from the item factors so that side features carry signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mfutils.data.container import Ratings
from mfutils.data.parsing import ML100K_GENRES

__all__ = ["SyntheticTruth", "make_synthetic", "make_synthetic_with_truth"]

_OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other",
    "programmer", "retired", "salesman", "scientist", "student", "technician", "writer",
)  # fmt: skip
_GENRES = ML100K_GENRES[1:]  # every genre but "unknown"
_DENSE_CELLS = 1 << 22  # up to this many (user, item) cells, pairs are drawn exactly
_ACTIVITY_SIGMA = 1.2  # log-normal spread of user activity
_CHUNK = 1 << 20  # ratings per block when gathering factor rows


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """The model behind :func:`make_synthetic_with_truth`.

    Parameters
    ----------
    mu : float
        Global offset.
    user_bias, item_bias : np.ndarray, shape (n_users,), (n_items,)
    user_factors, item_factors : np.ndarray, shape (n_users, rank), (n_items, rank)
    activity, popularity : np.ndarray, shape (n_users,), (n_items,)
        Sampling probabilities of users and items (each sums to 1).
    noise : float
        Standard deviation of the Gaussian rating noise.
    """

    mu: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    activity: np.ndarray
    popularity: np.ndarray
    noise: float

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Noise-free, unclipped expected rating of each ``(user, item)`` pair, float32."""
        user, item = np.asarray(user), np.asarray(item)
        score = _rowwise_dot(self.user_factors, self.item_factors, user, item)
        return score + np.float32(self.mu) + self.user_bias[user] + self.item_bias[item]


def make_synthetic(
    n_users: int,
    n_items: int,
    n_ratings: int,
    *,
    rank: int = 8,
    seed: int = 0,
    noise: float = 0.5,
    popularity_exponent: float = 1.0,
    rating_scale: tuple[float, float] = (1.0, 5.0),
    integer: bool = True,
    start: str = "1997-09-20",
    days: int = 214,
) -> Ratings:
    """MovieLens-like ratings with name ``"synthetic"``; see :func:`make_synthetic_with_truth`."""
    ratings, _ = make_synthetic_with_truth(
        n_users,
        n_items,
        n_ratings,
        rank=rank,
        seed=seed,
        noise=noise,
        popularity_exponent=popularity_exponent,
        rating_scale=rating_scale,
        integer=integer,
        start=start,
        days=days,
    )
    return ratings


def make_synthetic_with_truth(
    n_users: int,
    n_items: int,
    n_ratings: int,
    *,
    rank: int = 8,
    seed: int = 0,
    noise: float = 0.5,
    popularity_exponent: float = 1.0,
    rating_scale: tuple[float, float] = (1.0, 5.0),
    integer: bool = True,
    start: str = "1997-09-20",
    days: int = 214,
) -> tuple[Ratings, SyntheticTruth]:
    """MovieLens-like ratings from a known low-rank model, and that model.

    Parameters
    ----------
    n_users, n_items : int
        Sizes of the id spaces (ids ``0 .. n-1``, also the raw ids).
    n_ratings : int
        Number of distinct (user, item) pairs rated, at most ``n_users * n_items``. When it is
        at least ``n_users + n_items``, every user and every item has a rating.
    rank : int
        Rank of the interaction term ``p_u . q_i``.
    seed : int
        Seed; equal arguments give identical data.
    noise : float
        Standard deviation of the Gaussian noise added to each rating (before rounding).
    popularity_exponent : float
        Item ``k`` (in a random popularity order) is drawn with weight ``(k + 1) ** -exponent``;
        0 gives uniform popularity.
    rating_scale : tuple of float
        ``(min, max)``; ratings are clipped to it.
    integer : bool
        Round ratings to whole stars within the scale.
    start : str
        First day of the rating period (UTC).
    days : int
        Length of the rating period; each user starts at a random day and rates afterwards.

    Returns
    -------
    ratings : Ratings
        Named ``"synthetic"``, with a ``users`` table (``age, gender, occupation, zip``) and an
        ``items`` table (``title, year, genre_*``); ``age`` and ``gender`` depend on the user
        factors and the genres on the item factors.
    truth : SyntheticTruth
        The biases, factors and sampling probabilities used.
    """
    _check_arguments(n_users, n_items, n_ratings, rank, noise, rating_scale, days)
    rng = np.random.default_rng(seed)
    truth = _draw_model(rng, n_users, n_items, rank, noise, popularity_exponent, rating_scale)
    keys = rng.permutation(_sample_pairs(rng, truth.activity, truth.popularity, n_ratings))
    user, item = np.divmod(keys, n_items)
    del keys
    ratings = Ratings(
        user=user,
        item=item,
        rating=_ratings(rng, truth, user, item, rating_scale, integer=integer),
        timestamp=_timestamps(rng, user, n_users, start, days),
        n_users=n_users,
        n_items=n_items,
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        users=_user_table(rng, truth.user_factors),
        items=_item_table(rng, truth.item_factors),
        name="synthetic",
        rating_scale=(float(rating_scale[0]), float(rating_scale[1])),
    )
    return ratings, truth


def _check_arguments(
    n_users: int,
    n_items: int,
    n_ratings: int,
    rank: int,
    noise: float,
    rating_scale: tuple[float, float],
    days: int,
) -> None:
    if n_users < 1 or n_items < 1:
        raise ValueError(f"n_users and n_items must be positive, got {n_users} and {n_items}")
    if not 1 <= n_ratings <= n_users * n_items:
        raise ValueError(
            f"n_ratings must lie in [1, n_users * n_items = {n_users * n_items}], got {n_ratings}"
        )
    if rank < 1 or noise < 0 or days < 1:
        raise ValueError(f"need rank >= 1, noise >= 0, days >= 1; got {rank}, {noise}, {days}")
    if not rating_scale[0] < rating_scale[1]:
        raise ValueError(f"rating_scale must be (min, max) with min < max, got {rating_scale}")


# ---------------------------------------------------------------------- the model
def _draw_model(
    rng: np.random.Generator,
    n_users: int,
    n_items: int,
    rank: int,
    noise: float,
    popularity_exponent: float,
    rating_scale: tuple[float, float],
) -> SyntheticTruth:
    """Biases and factors sized to the scale, as in MovieLens (mean near 3.5 of 1..5)."""
    low, high = rating_scale
    width = high - low
    factor_std = np.sqrt(0.15 * width / np.sqrt(rank))  # p.q has std ~ 0.15 * width
    activity = np.exp(_ACTIVITY_SIGMA * rng.standard_normal(n_users))
    popularity = np.empty(n_items)
    popularity[rng.permutation(n_items)] = np.arange(1, n_items + 1) ** -popularity_exponent
    return SyntheticTruth(
        mu=low + 0.63 * width,
        user_bias=(0.1 * width * rng.standard_normal(n_users)).astype(np.float32),
        item_bias=(0.12 * width * rng.standard_normal(n_items)).astype(np.float32),
        user_factors=(factor_std * rng.standard_normal((n_users, rank))).astype(np.float32),
        item_factors=(factor_std * rng.standard_normal((n_items, rank))).astype(np.float32),
        activity=activity / activity.sum(),
        popularity=popularity / popularity.sum(),
        noise=noise,
    )


def _ratings(
    rng: np.random.Generator,
    truth: SyntheticTruth,
    user: np.ndarray,
    item: np.ndarray,
    rating_scale: tuple[float, float],
    *,
    integer: bool,
) -> np.ndarray:
    rating = truth.predict(user, item)
    rating += (truth.noise * rng.standard_normal(len(user))).astype(np.float32)
    low, high = rating_scale
    if integer:
        return np.clip(np.rint(rating), np.ceil(low), np.floor(high)).astype(np.float32)
    return np.clip(rating, low, high).astype(np.float32)


def _rowwise_dot(
    left: np.ndarray, right: np.ndarray, left_rows: np.ndarray, right_rows: np.ndarray
) -> np.ndarray:
    """``(left[left_rows] * right[right_rows]).sum(1)`` in blocks, to bound memory."""
    out = np.empty(len(left_rows), dtype=np.float32)
    for begin in range(0, len(left_rows), _CHUNK):
        block = slice(begin, begin + _CHUNK)
        out[block] = np.einsum("ij,ij->i", left[left_rows[block]], right[right_rows[block]])
    return out


# ---------------------------------------------------------------------- which pairs are rated
def _sample_pairs(
    rng: np.random.Generator, activity: np.ndarray, popularity: np.ndarray, n_ratings: int
) -> np.ndarray:
    """``n_ratings`` distinct keys ``user * n_items + item``, drawn ~ ``activity x popularity``.

    One pair per user and per item is forced in first (when they fit), so no id is left empty.
    """
    forced = _covering_pairs(rng, activity, popularity)
    if len(forced) >= n_ratings:
        return rng.choice(forced, n_ratings, replace=False)
    if len(activity) * len(popularity) <= _DENSE_CELLS:
        return _exact_pairs(rng, activity, popularity, n_ratings, forced)
    return _rejection_pairs(rng, activity, popularity, n_ratings, forced)


def _covering_pairs(
    rng: np.random.Generator, activity: np.ndarray, popularity: np.ndarray
) -> np.ndarray:
    """One pair for each user (item by popularity) and each item (user by activity)."""
    n_users, n_items = len(activity), len(popularity)
    by_user = np.arange(n_users) * n_items + rng.choice(n_items, n_users, p=popularity)
    by_item = rng.choice(n_users, n_items, p=activity) * n_items + np.arange(n_items)
    return np.union1d(by_user, by_item)


def _exact_pairs(
    rng: np.random.Generator,
    activity: np.ndarray,
    popularity: np.ndarray,
    n_ratings: int,
    forced: np.ndarray,
) -> np.ndarray:
    """Weighted sampling without replacement over all cells (Gumbel top-k)."""
    score = np.log(activity)[:, None] + np.log(popularity)[None, :]
    score = (score + rng.gumbel(size=score.shape)).ravel()
    score[forced] = np.inf
    return np.argpartition(-score, n_ratings - 1)[:n_ratings].astype(np.int64)


def _rejection_pairs(
    rng: np.random.Generator,
    activity: np.ndarray,
    popularity: np.ndarray,
    n_ratings: int,
    forced: np.ndarray,
) -> np.ndarray:
    """Draw pairs with replacement and drop repeats until enough are distinct.

    Each round draws what is missing divided by the share of new pairs of the previous round;
    the surplus of the last round is dropped at random (never a forced pair).
    """
    keys, new_share = forced, 1.0
    while len(keys) < n_ratings:
        draws = int(1.05 * (n_ratings - len(keys)) / max(new_share, 0.01)) + 1024
        grown = _merge_unique(keys, _draw_keys(rng, activity, popularity, draws))
        new_share = (len(grown) - len(keys)) / draws
        keys = grown
    extra = np.setdiff1d(keys, forced, assume_unique=True)
    dropped = rng.choice(len(extra), len(keys) - n_ratings, replace=False)
    return np.concatenate([forced, np.delete(extra, dropped)])


def _draw_keys(
    rng: np.random.Generator, activity: np.ndarray, popularity: np.ndarray, draws: int
) -> np.ndarray:
    """Sorted keys of ``draws`` independent pairs, user ~ activity and item ~ popularity.

    Multinomial counts expanded with ``np.repeat`` (items then shuffled) are much faster than
    ``rng.choice(..., p=...)`` for tens of millions of draws.
    """
    user = np.repeat(np.arange(len(activity)), rng.multinomial(draws, activity))
    item = np.repeat(np.arange(len(popularity)), rng.multinomial(draws, popularity))
    keys = user * len(popularity) + rng.permutation(item)
    keys.sort()
    return keys


def _merge_unique(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Sorted distinct values of two sorted arrays (a stable sort merges the two runs)."""
    merged = np.concatenate([left, right])
    merged.sort(kind="stable")
    keep = np.ones(len(merged), dtype=bool)
    np.not_equal(merged[1:], merged[:-1], out=keep[1:])
    return merged[keep]


# ---------------------------------------------------------------------- times and side tables
def _timestamps(
    rng: np.random.Generator, user: np.ndarray, n_users: int, start: str, days: int
) -> np.ndarray:
    """Each user joins on a random day and rates mostly soon after joining."""
    first = pd.Timestamp(start).value // 10**9
    span = days * 86_400
    joined = rng.uniform(0, span, n_users)  # shape: (n_users,)
    offset = joined[user] + (span - joined[user]) * rng.random(len(user)) ** 2
    return first + offset.astype(np.int64)


def _user_table(rng: np.random.Generator, factors: np.ndarray) -> pd.DataFrame:
    n_users = len(factors)
    trait = factors[:, :2] / factors[:, :2].std(axis=0).clip(1e-6)  # shape: (n_users, <=2)
    age = 33 + 6 * trait[:, 0] + 9 * rng.standard_normal(n_users)
    gender_score = trait[:, -1] + rng.standard_normal(n_users)
    zip_code = rng.integers(0, 100_000, n_users)
    table = pd.DataFrame(
        {
            "age": np.clip(np.rint(age), 7, 73).astype(np.int64),
            "gender": np.where(gender_score > np.quantile(gender_score, 0.29), "M", "F"),
            "occupation": np.asarray(_OCCUPATIONS)[rng.integers(0, len(_OCCUPATIONS), n_users)],
            "zip": pd.Series(zip_code).astype(str).str.zfill(5),
        }
    )
    table.index.name = "user"
    return table


def _item_table(rng: np.random.Generator, factors: np.ndarray) -> pd.DataFrame:
    n_items = len(factors)
    year = np.clip(1998 - np.rint(rng.exponential(10, n_items)), 1922, 1998).astype(np.int64)
    ids = pd.Series(np.arange(n_items)).astype(str)
    title = "Synthetic Movie " + ids + " (" + pd.Series(year).astype(str) + ")"
    genres = pd.DataFrame(_genre_flags(rng, factors), columns=[f"genre_{g}" for g in _GENRES])
    table = pd.concat(
        [pd.DataFrame({"title": title, "year": pd.array(year, dtype="Int64")}), genres], axis=1
    )
    table.index.name = "item"
    return table


def _genre_flags(
    rng: np.random.Generator, factors: np.ndarray, n_genres: int = len(_GENRES)
) -> np.ndarray:
    """Multi-hot genres: the ~12% highest projections of the factors per genre, at least one."""
    score = factors @ rng.standard_normal((factors.shape[1], n_genres))
    score += 0.5 * score.std() * rng.standard_normal(score.shape)
    flags = score > np.quantile(score, 0.88, axis=0)  # shape: (n_items, n_genres)
    flags[np.arange(len(factors)), score.argmax(axis=1)] = True
    return flags.astype(np.int8)
