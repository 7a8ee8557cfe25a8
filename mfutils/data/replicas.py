"""Synthetic replicas of the MovieLens releases, written in each release's own file format.

:func:`write_release` writes files that :func:`mfutils.data.load_movielens` reads as the named
release, so tests and demonstrations can run the loaders and everything after them without the
real (non-redistributable) data. A replica keeps the release's *shape*: its sizes (times
``scale``), the rating grid and histogram (matched exactly), at least 20 ratings per user, the
heavy-user skew (share of the busiest user and of the ten busiest), the share of movies rated
once, unrated listed movies and raw ids with gaps. Ratings come from a latent score
``b_u + b_i + p_u . q_i + noise`` (rank 8): the scores are ranked and cut at the quantiles of
the release's histogram, so the order carries signal.

Difficulty
----------
A replica is as hard as its release: the spreads of the four terms of the score
(:class:`ReleaseShape`'s ``user_bias_std``, ``item_bias_std``, ``interaction_std`` and
``noise_std``) are calibrated so that, on the replica at ``scale=1, seed=0`` and fold 1 of
:func:`mfutils.experiments.rating_folds` (ML-100K: the replica's own ``u1``), the series'
``BaselineEstimates-ALS`` and ``BiasedMF-ALS`` at their defaults score the real release's
RMSE, and matrix factorization gains over the biases what it gains on the real data:

=================  ==========================  ==========================  ===================
release            spreads (user, item,        BaselineEstimates-ALS       BiasedMF-ALS
                   interaction, noise)         real / replica              real / replica
=================  ==========================  ==========================  ===================
ml-latest-small    0.475, 0.53, 0.50, 0.80     0.8632 / 0.8599             0.8541 / 0.8520
ml-100k (u1)       0.475, 0.53, 0.49, 0.84     0.9531 / 0.9532             0.9288 / 0.9290
ml-1m              0.475, 0.53, 0.52, 0.745    0.909 / 0.9088 (Surprise)   0.873 / 0.8701 (SVD)
=================  ==========================  ==========================  ===================

(gains 0.9%, 2.5% and 4.3%; real 1.1%, 2.5%, 4.0%). ML-1M's reference is Surprise's published
5-fold ``BaselineOnly`` and ``SVD``. ML-10M, ML-20M and ML-25M take ML-1M's spreads, the
defaults of :class:`ReleaseShape`: they are not calibrated (no reference numbers under this
protocol, and too large to fit routinely). The gain is steep in ``interaction_std`` (on
ml-latest-small 0.4 gives -0.9%, 0.5 gives 1.0%, 0.6 gives 4.5%,
with bias spreads 0.45, 0.5 and noise 0.9, 0.8, 0.7).

The neighbourhood models are not calibrated: ``ItemKNN`` scores 0.8618 on the ml-latest-small
replica (real 0.8482), 0.9442 on ML-100K's (real 0.9302) and 0.8528 on ML-1M's (real
``KNNBaseline`` 0.895), so the replicas do not reproduce the real order of neighbourhood and
MF models. A per-user taste for clusters of movies (high-rank, item-item structure) was tried
and left out: at 20-150 movies per cluster it did not lift ``ItemKNN`` above ``BiasedMF-ALS``
on ml-latest-small. Measured with::

    from mfutils.blending import series_models
    from mfutils.data import load_movielens, write_release
    from mfutils.experiments import rating_folds
    from mfutils.metrics import rmse

    write_release(root, name, scale=1.0, seed=0)
    train, test = rating_folds(load_movielens(name, data_dir=root, download=False), seed=0)[0][0]
    models = series_models(["BaselineEstimates-ALS", "BiasedMF-ALS", "ItemKNN"], device="cpu")
    for label, make in models.items():
        print(label, rmse(make().fit(train).predict_ratings(test), test.rating))

Smaller scales are a little harder (fewer ratings per movie): ml-latest-small at ``scale=0.2``
gives 0.8906 and 0.8837 (a 0.8% gain).
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mfutils.data.movielens import DATASETS
from mfutils.data.parsing import ML100K_GENRES
from mfutils.data.synthetic import (
    _OCCUPATIONS,
    _genre_flags,
    _rowwise_dot,
    _timestamps,
    _user_table,
)

__all__ = ["RELEASE_SHAPES", "ReleaseShape", "write_release"]

_MIN_PER_USER = 20  # every MovieLens release keeps only users with at least 20 ratings
_HEAD_USERS = 10  # the busiest users, whose shares are matched explicitly
_RANK = 8  # rank of the interaction term
_MAX_ROUNDS = 12  # popularity-weighted rounds of pair drawing before uniform ones
_NO_GENRE = "(no genres listed)"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Last", "Hidden", "Crimson", "Endless", "Lost", "Wild",
    "Secret", "Midnight", "Frozen", "Electric", "Bitter", "Sweet", "Distant", "Burning", "Quiet",
    "Savage", "Little", "Dark", "Bright", "Forgotten", "Iron", "Paper", "Glass", "Final", "Empty",
)  # fmt: skip
_NOUNS = (
    "River", "Empire", "Garden", "Road", "Summer", "Kingdom", "Island", "Machine", "Heart",
    "Shadow", "City", "Winter", "Promise", "Storm", "Mirror", "Harbor", "Station", "Frontier",
    "Letter", "Dream", "Orchard", "Circus", "Planet", "Witness", "Hunter", "Voyage", "Ghost",
)  # fmt: skip
_TAGS = (
    "funny", "atmospheric", "sci-fi", "twist ending", "dark comedy", "based on a book",
    "thought-provoking", "visually appealing", "quirky", "surreal", "classic", "time travel",
    "Oscar (Best Picture)", "In Netflix queue", "BD-R", "dystopia", "superhero", "psychology",
    "great soundtrack", "stylized", "violence", "romance", "mindfuck", "space", "revenge",
    "heist", "satire", "Disney", "animation", "cult film", "slow, beautiful", "boring",
    "overrated", "philosophical", "war", "nonlinear", "black and white", "remake", "music",
    "comedy, romance",
)  # fmt: skip
# ML-1M and ML-100K say "Children's"; ML-10M and the CSV releases "Children" and add IMAX
_DAT_GENRES = ML100K_GENRES[1:]
_CSV_GENRES = tuple("Children" if g == "Children's" else g for g in _DAT_GENRES) + ("IMAX",)


@dataclass(frozen=True)
class ReleaseShape:
    """The measured shape of one real MovieLens release, which a replica reproduces.

    Parameters
    ----------
    folder : str
        Folder the release extracts to (one that :func:`load_movielens` accepts).
    n_users : int
        Users with ratings.
    user_id_max : int
        Largest raw user id (ids ``1 .. user_id_max``, with gaps where it exceeds ``n_users``).
    n_items : int
        Movies listed in the item file.
    item_id_max : int
        Largest raw movie id (ids with gaps where it exceeds ``n_items``).
    n_rated : int
        Listed movies with at least one rating.
    n_ratings : int
    histogram : tuple of int
        Number of ratings at each value of the grid, lowest first (whole or half stars).
    user_median : float
        Median ratings per user.
    user_max : int
        Ratings of the busiest user.
    top10_share : float
        Share of all ratings held by the ten busiest users.
    single_items : int
        Movies with exactly one rating.
    item_sigma, item_sigma_low, item_knee : float
        Log-normal spread of the popularity of movies rated more than once, above and below
        the normal quantile ``item_knee`` (calibrated so that the ratings per movie median and
        maximum come out close to the release's).
    start, end : str
        First and last day of the rating period.
    n_tags : int
        Rows of the tag file (0 where the release has none).
    user_bias_std, item_bias_std : float
        Spread of the user and movie offsets of the latent score (in stars; only the ratios of
        the four spreads matter, since the scores are ranked and cut at the histogram).
    interaction_std : float
        Spread of the rank-8 term ``p_u . q_i``: what matrix factorization can learn beyond
        the biases.
    noise_std : float
        Spread of the per-rating noise: what no model learns. The defaults are ML-1M's.
    """

    folder: str
    n_users: int
    user_id_max: int
    n_items: int
    item_id_max: int
    n_rated: int
    n_ratings: int
    histogram: tuple[int, ...]
    user_median: float
    user_max: int
    top10_share: float
    single_items: int
    item_sigma: float
    item_sigma_low: float
    item_knee: float
    start: str
    end: str
    n_tags: int = 0
    user_bias_std: float = 0.475  # the defaults are ML-1M's calibration
    item_bias_std: float = 0.53
    interaction_std: float = 0.52
    noise_std: float = 0.745


RELEASE_SHAPES: dict[str, ReleaseShape] = {
    "ml-100k": ReleaseShape(
        "ml-100k",
        943,
        943,
        1682,
        1682,
        1682,
        100_000,
        (6110, 11370, 27145, 34174, 21201),
        user_median=65,
        user_max=737,
        top10_share=0.0551,
        single_items=141,
        item_sigma=0.9,
        item_sigma_low=1.6,
        item_knee=1.2,
        start="1997-09-20",
        end="1998-04-22",
        interaction_std=0.49,
        noise_std=0.84,
    ),
    "ml-1m": ReleaseShape(
        "ml-1m",
        6040,
        6040,
        3883,
        3952,
        3706,
        1_000_209,
        (56174, 107557, 261197, 348971, 226310),
        user_median=96,
        user_max=2314,
        top10_share=0.0158,
        single_items=114,
        item_sigma=1.0,
        item_sigma_low=1.6,
        item_knee=1.1,
        start="2000-04-25",
        end="2003-02-28",
        # the default signal spreads: ML-1M's calibration
    ),
    "ml-10m": ReleaseShape(
        "ml-10M100K",
        69878,
        71567,
        10681,
        65133,
        10677,
        10_000_054,
        (94988, 384180, 118278, 790306, 370178, 2356676, 879764, 2875850, 585022, 1544812),
        user_median=69,
        user_max=7359,
        top10_share=0.0050,
        single_items=126,
        item_sigma=1.0,
        item_sigma_low=1.6,
        item_knee=1.1,
        start="1995-01-09",
        end="2009-01-05",
        n_tags=95580,
        # ML-1M's signal spreads (the defaults): not calibrated, see the module notes
    ),
    "ml-20m": ReleaseShape(
        "ml-20m",
        138493,
        138493,
        27278,
        131262,
        26744,
        20_000_263,
        (239125, 680732, 279252, 1430997, 883398, 4291193, 2200156, 5561926, 1534824, 2898660),
        user_median=68,
        user_max=9254,
        top10_share=0.0033,
        single_items=3972,
        item_sigma=2.0,
        item_sigma_low=2.0,
        item_knee=0.0,
        start="1995-01-09",
        end="2015-03-31",
        n_tags=465564,
        # ML-1M's signal spreads (the defaults): not calibrated, see the module notes
    ),
    "ml-25m": ReleaseShape(
        "ml-25m",
        162541,
        162541,
        62423,
        209171,
        59047,
        25_000_095,
        (393068, 776815, 399490, 1640868, 1262797, 4896928, 3177318, 6639798, 2200539, 3612474),
        user_median=71,
        user_max=32202,
        top10_share=0.0067,
        single_items=10298,
        item_sigma=2.2,
        item_sigma_low=2.6,
        item_knee=0.0,
        start="1995-01-09",
        end="2019-11-21",
        n_tags=1093360,
        # ML-1M's signal spreads (the defaults): not calibrated, see the module notes
    ),
    "ml-latest-small": ReleaseShape(
        "ml-latest-small",
        610,
        610,
        9742,
        193609,
        9724,
        100_836,
        (1370, 2811, 1791, 7551, 5550, 20047, 13136, 26818, 8551, 13211),
        user_median=70.5,
        user_max=2698,
        top10_share=0.16,
        single_items=3446,
        item_sigma=1.4,
        item_sigma_low=2.2,
        item_knee=0.0,
        start="1996-03-29",
        end="2018-09-24",
        n_tags=3683,
        interaction_std=0.5,
        noise_std=0.8,
    ),
}


@dataclass(frozen=True)
class _Sizes:
    """A release's sizes at one ``scale``."""

    n_users: int
    n_items: int
    n_rated: int
    n_single: int
    n_ratings: int
    user_id_max: int
    item_id_max: int
    n_tags: int


def write_release(root: str | Path, name: str, *, scale: float = 1.0, seed: int = 0) -> Path:
    """Write a synthetic replica of MovieLens release ``name`` under ``root/<folder>/``.

    ``load_movielens(name, data_dir=root, download=False)`` then reads it as that release.

    Parameters
    ----------
    root : str or Path
        Data directory to write into (created if absent).
    name : str
        A key of :data:`mfutils.data.DATASETS`: ``"ml-100k"`` (``u.data``, ``u.item``,
        ``u.user``, ``u.info``, ``u.genre``, ``u.occupation``, the ``u1..u5`` and ``ua``/``ub``
        splits), ``"ml-1m"`` (``ratings.dat``, ``movies.dat``, ``users.dat`` with the integer
        age and occupation codes), ``"ml-10m"`` (folder ``ml-10M100K``: ``ratings.dat``,
        ``movies.dat``, ``tags.dat``) or a CSV release ``"ml-20m"``, ``"ml-25m"``,
        ``"ml-latest-small"`` (``ratings.csv``, ``movies.csv``, ``tags.csv``, ``links.csv``).
    scale : float
        Shrinks users, movies, ratings and tags proportionally (1 gives the real sizes). The
        rating histogram, the shares of the busiest user and of the ten busiest users, the share
        of movies rated once and the 20-ratings minimum per user are kept.
    seed : int
        Seed; equal arguments give byte-identical files.

    Returns
    -------
    Path
        The release folder, ``root / RELEASE_SHAPES[name].folder``.

    Raises
    ------
    ValueError
        Unknown ``name``, or ``scale`` so small that the release cannot keep its shape.
    FileExistsError
        The release folder exists already.

    Notes
    -----
    The files are written into a temporary folder beside the target, renamed into place once
    complete: an interrupted call never leaves a half-written release.
    """
    if name not in RELEASE_SHAPES:
        raise ValueError(f"unknown MovieLens release {name!r}; known: {', '.join(DATASETS)}")
    shape = RELEASE_SHAPES[name]
    sizes = _scaled_sizes(shape, scale)
    root = Path(root)
    target = root / shape.folder
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it or write into another root")
    root.mkdir(parents=True, exist_ok=True)
    release = _draw_release(shape, sizes, name, np.random.default_rng(seed))
    staging = Path(tempfile.mkdtemp(prefix=f".{shape.folder}-", dir=root))
    try:
        _WRITERS[DATASETS[name].format](staging, release)
        _write_readme(staging, name, scale, seed)
        staging.chmod(0o755)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------------- sizes
def _scaled_sizes(shape: ReleaseShape, scale: float) -> _Sizes:
    if not 0 < scale <= 1:
        raise ValueError(f"scale must lie in (0, 1], got {scale}")
    n_users = round(shape.n_users * scale)
    n_rated = round(shape.n_rated * scale)
    n_single = round(shape.single_items * scale)
    n_ratings = round(shape.n_ratings * scale)
    if n_users < 2 or n_rated - n_single < 2 * _MIN_PER_USER:
        raise ValueError(
            f"scale={scale} leaves {n_users} users and {n_rated - n_single} movies rated more "
            f"than once; {shape.folder} needs at least 2 and {2 * _MIN_PER_USER}"
        )
    n_items = max(round(shape.n_items * scale), n_rated)
    return _Sizes(
        n_users=n_users,
        n_items=n_items,
        n_rated=n_rated,
        n_single=n_single,
        n_ratings=max(n_ratings, _MIN_PER_USER * n_users, n_single + 2 * (n_rated - n_single)),
        user_id_max=max(round(shape.user_id_max * scale), n_users),
        item_id_max=max(round(shape.item_id_max * scale), n_items),
        n_tags=round(shape.n_tags * scale),
    )


def _user_counts(shape: ReleaseShape, sizes: _Sizes, cap: int) -> np.ndarray:
    """Ratings per user, descending, summing to ``sizes.n_ratings``, each in ``[20, cap]``.

    The ten busiest hold the release's shares (a power law down from the busiest user); the
    others are ``20 + A (exp(sigma z) - exp(sigma z_min))`` over normal quantiles ``z``, with
    ``A`` set by the median and ``sigma`` by the ratings left for them (at small scales, where
    the mean per user is far above the median, ``A`` rises instead).
    """
    n_users, n_ratings = sizes.n_users, sizes.n_ratings
    if n_ratings > n_users * cap:
        raise ValueError(
            f"{n_ratings} ratings do not fit {n_users} users of at most {cap} (the movies "
            f"rated more than once, and a few); use a larger scale for {shape.folder}"
        )
    n_head = min(_HEAD_USERS, n_users // 10)
    ratio = shape.top10_share * shape.n_ratings / shape.user_max  # sum of k ** -decay, k <= 10
    ranks = np.arange(1, _HEAD_USERS + 1)
    decay = _bisect(lambda d: -np.sum(ranks**-d), -ratio, 0, 8)  # the sum falls with decay
    head = shape.user_max / shape.n_ratings * n_ratings * np.arange(1, n_head + 1) ** -decay
    head = np.clip(head, _MIN_PER_USER, cap)
    n_body, left = n_users - n_head, n_ratings - head.sum()
    z = _normal_quantiles(n_body)[::-1]
    base = max(shape.user_median - _MIN_PER_USER, 1.0)

    def body(level: float, sigma: float, z: np.ndarray, top: float) -> np.ndarray:
        extra = level * (np.exp(sigma * z) - np.exp(sigma * z[-1]))  # the last one has 20
        return np.clip(_MIN_PER_USER + extra, _MIN_PER_USER, top)

    top = head[-1] if n_head else cap
    if _MIN_PER_USER * n_body <= left <= body(base, 3, z, top).sum():
        sigma = _bisect(lambda s: body(base, s, z, top).sum(), left, 0, 3)
        counts = np.concatenate([head, body(base, sigma, z, top)])
    elif _MIN_PER_USER * n_body <= left < n_body * top:  # more per user than the median says
        level = _bisect(lambda a: body(a, 1, z, top).sum(), left, base, 1e9)
        counts = np.concatenate([head, body(level, 1, z, top)])
    else:  # too few users for the release's head and median: one log-normal for all
        z = _normal_quantiles(n_users)[::-1]
        level = _bisect(lambda a: body(a, 1, z, cap).sum(), n_ratings, 0, 1e9)
        counts = body(level, 1, z, cap)
    return _integer_parts(counts, n_ratings)


def _bisect(fn, target: float, low: float, high: float) -> float:
    """``x`` in ``[low, high]`` with ``fn(x) ~ target`` for increasing ``fn`` (scalar search)."""
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if fn(middle) < target else (low, middle)
    return 0.5 * (low + high)


def _integer_parts(values: np.ndarray, total: int) -> np.ndarray:
    """Integers near ``values`` summing to ``total`` (largest remainders round up)."""
    whole = np.floor(values).astype(np.int64)
    short = total - int(whole.sum())
    if short > 0:
        order = np.argsort(-(values - whole), kind="stable")
        whole[order[: min(short, len(values))]] += 1
    return whole


def _histogram_counts(shape: ReleaseShape, n_ratings: int) -> np.ndarray:
    share = np.asarray(shape.histogram, dtype=np.float64)
    return _integer_parts(share / share.sum() * n_ratings, n_ratings)


# ---------------------------------------------------------------------- ratings
@dataclass(frozen=True, eq=False)
class _Release:
    """A drawn replica: ratings with raw ids, side tables, tags; ready to be written."""

    user: np.ndarray  # raw ids, per rating
    item: np.ndarray
    rating: np.ndarray  # float64, on the grid
    timestamp: np.ndarray
    grid: np.ndarray
    users: pd.DataFrame  # user (raw id), age, gender, occupation, zip
    items: pd.DataFrame  # item (raw id), title, year, release_date, genre flags
    genres: tuple[str, ...]
    tags: pd.DataFrame  # user, item, tag, timestamp
    rng: np.random.Generator


def _draw_release(
    shape: ReleaseShape, sizes: _Sizes, name: str, rng: np.random.Generator
) -> _Release:
    info = DATASETS[name]
    low, high = info.rating_scale
    grid = np.linspace(low, high, len(shape.histogram))
    n_multi = sizes.n_rated - sizes.n_single
    counts = _user_counts(shape, sizes, cap=int(0.9 * n_multi) + sizes.n_single // 10)
    counts = counts[rng.permutation(sizes.n_users)]
    z = rng.permutation(_normal_quantiles(n_multi)) - shape.item_knee  # two-piece log-normal
    weights = np.exp(np.where(z > 0, shape.item_sigma, shape.item_sigma_low) * z)
    user, rated = _draw_pairs(rng, counts, sizes.n_single, weights / weights.sum())
    # the rated movies (singles first) take random places among the listed ones
    item = rng.permutation(sizes.n_items)[: sizes.n_rated][rated]
    score, user_factors, item_factors = _draw_scores(rng, shape, sizes, user, item)
    level = np.empty(len(user), dtype=np.int64)  # rank the scores, cut at the histogram
    level[np.argsort(score, kind="stable")] = np.repeat(
        np.arange(len(grid)), _histogram_counts(shape, len(user))
    )
    days = (pd.Timestamp(shape.end) - pd.Timestamp(shape.start)).days + 1
    timestamp = _timestamps(rng, user, sizes.n_users, shape.start, days)
    user_ids = _raw_ids(rng, sizes.n_users, sizes.user_id_max)
    item_ids = _raw_ids(rng, sizes.n_items, sizes.item_id_max)
    genres = _DAT_GENRES if info.format in ("ml-100k", "ml-1m") else _CSV_GENRES
    users = _user_table(rng, user_factors).reset_index(drop=True)
    users.insert(0, "user", user_ids)
    items = _movies(rng, item_factors, item_ids, genres, shape, no_genres=len(genres) > 18)
    popularity = np.bincount(item, minlength=sizes.n_items).astype(np.float64)
    tags = _tags(rng, sizes.n_tags, user_ids, counts, item_ids, popularity, shape, days)
    return _Release(
        user=user_ids[user],
        item=item_ids[item],
        rating=grid[level],
        timestamp=timestamp,
        grid=grid,
        users=users,
        items=items,
        genres=genres,
        tags=tags,
        rng=rng,
    )


def _draw_scores(
    rng: np.random.Generator, shape: ReleaseShape, sizes: _Sizes, user: np.ndarray, item: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent score of each rating, and the user and movie factors (for the side tables).

    ``score = b_u + b_i + p_u . q_i + noise``, every term normal with the spread ``shape``
    declares (the factors are unit normals, the product rescaled).
    """
    n_users, n_items = sizes.n_users, sizes.n_items
    user_factors = rng.standard_normal((n_users, _RANK)).astype(np.float32)
    item_factors = rng.standard_normal((n_items, _RANK)).astype(np.float32)
    score = _rowwise_dot(user_factors, item_factors, user, item).astype(np.float64)
    score *= shape.interaction_std / np.sqrt(_RANK)  # unit-normal factors: p.q has std sqrt(rank)
    score += shape.user_bias_std * rng.standard_normal(n_users)[user]
    score += shape.item_bias_std * rng.standard_normal(n_items)[item]
    score += shape.noise_std * rng.standard_normal(len(user))
    return score, user_factors, item_factors


def _normal_quantiles(n: int) -> np.ndarray:
    """The ``(k + 0.5) / n`` quantiles of the standard normal, ascending."""
    return torch.special.ndtri(torch.from_numpy((np.arange(n) + 0.5) / n)).numpy()


def _raw_ids(rng: np.random.Generator, n: int, id_max: int) -> np.ndarray:
    """``n`` sorted distinct ids in ``1 .. id_max`` (``1 .. n`` when ``id_max == n``)."""
    if id_max == n:
        return np.arange(1, n + 1, dtype=np.int64)
    return np.sort(rng.choice(id_max, n, replace=False)).astype(np.int64) + 1


def _draw_pairs(
    rng: np.random.Generator, counts: np.ndarray, n_single: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, rated movie) pairs with exactly ``counts[u]`` movies per user.

    Movies ``0 .. n_single-1`` get exactly one rating and the others (weights ``weights``) at
    least two: those ratings are dealt first, to users in proportion to their counts; the rest
    of each user's ratings are drawn by weight, without repeating a pair.
    """
    n_users, n_multi = len(counts), len(weights)
    n_rated = n_single + n_multi
    seats = rng.permutation(np.repeat(np.arange(n_users), counts))
    first = seats[n_single : n_single + n_multi]
    second = seats[n_single + n_multi : n_single + 2 * n_multi].copy()
    spare = n_single + 2 * n_multi
    clash = np.flatnonzero(first == second)
    while len(clash):  # a movie's two dealt ratings must come from two users
        second[clash] = seats[spare : spare + len(clash)]
        spare += len(clash)
        clash = clash[first[clash] == second[clash]]
    multi = np.arange(n_single, n_rated)
    dealt_user = np.concatenate([seats[:n_single], first, second])
    keys = np.sort(dealt_user * n_rated + np.concatenate([np.arange(n_single), multi, multi]))
    need = counts - np.bincount(dealt_user, minlength=n_users)
    cumulative = np.cumsum(weights)
    for round_ in range(10 * _MAX_ROUNDS):
        if not need.any():
            break
        # draw more than missing, more so each round (busy users repeat pairs more often)
        draws = np.ceil(need * min(1.3 * 1.5**round_, 20.0)).astype(np.int64) + (need > 0)
        who = np.repeat(np.arange(n_users), draws)
        if round_ < _MAX_ROUNDS:  # popularity-weighted; then uniform, to finish saturated users
            what = np.minimum(cumulative.searchsorted(rng.random(len(who))), n_multi - 1)
        else:
            what = rng.integers(0, n_multi, len(who))
        fresh = np.unique(who * n_rated + n_single + what)
        position = np.minimum(keys.searchsorted(fresh), len(keys) - 1)
        fresh = fresh[keys[position] != fresh]
        owner = fresh // n_rated
        order = np.lexsort((rng.random(len(fresh)), owner))
        fresh, owner = fresh[order], owner[order]
        rank = np.arange(len(fresh)) - np.searchsorted(owner, owner)
        taken = fresh[rank < need[owner]]
        keys = np.concatenate([keys, np.sort(taken)])
        keys.sort(kind="stable")  # merges the two sorted runs
        need -= np.bincount(taken // n_rated, minlength=n_users)
    if need.any():
        raise RuntimeError("could not draw enough distinct pairs; use a larger scale")
    keys = rng.permutation(keys)
    return keys // n_rated, keys % n_rated


# ---------------------------------------------------------------------- side tables
def _movies(
    rng: np.random.Generator,
    factors: np.ndarray,
    item_ids: np.ndarray,
    genres: tuple[str, ...],
    shape: ReleaseShape,
    *,
    no_genres: bool,
) -> pd.DataFrame:
    """Movie table: raw id, ``"Title (1995)"``, year, release date, 0/1 genre flags."""
    n = len(item_ids)
    last = pd.Timestamp(shape.end).year
    year = np.clip(last - np.rint(rng.exponential(12, n)), 1902, last).astype(np.int64)
    first_word = pd.Series(np.asarray(_ADJECTIVES)[rng.integers(0, len(_ADJECTIVES), n)])
    noun = pd.Series(np.asarray(_NOUNS)[rng.integers(0, len(_NOUNS), n)])
    article = rng.random(n) < 0.08  # "American President, The (1995)": a comma, quoted in CSV
    name = (first_word + " " + noun).where(~article, noun + " of " + first_word + ", The")
    title = name + " (" + pd.Series(year).astype(str) + ")"
    flags = _genre_flags(rng, factors, len(genres)).astype(bool)
    if no_genres:
        flags[rng.random(n) < 0.004] = False  # "(no genres listed)"
    day = pd.Series(rng.integers(1, 29, n)).astype(str).str.zfill(2)
    month = pd.Series(np.asarray(_MONTHS)[rng.integers(0, 12, n)])
    table = pd.DataFrame(
        {
            "item": item_ids,
            "title": title,
            "year": year,
            "release_date": day + "-" + month + "-" + pd.Series(year).astype(str),
        }
    )
    return pd.concat([table, pd.DataFrame(flags.astype(np.int8), columns=list(genres))], axis=1)


def _genre_text(items: pd.DataFrame, genres: tuple[str, ...]) -> pd.Series:
    """``"Action|Comedy"`` per movie (``"(no genres listed)"`` when it has none)."""
    text = pd.Series("", index=items.index)
    for genre in genres:  # a loop over the ~20 genres, not over movies
        text = text + np.where(items[genre].to_numpy() == 1, genre + "|", "")
    text = text.str[:-1]
    return text.where(text != "", _NO_GENRE)


def _tags(
    rng: np.random.Generator,
    n_tags: int,
    user_ids: np.ndarray,
    counts: np.ndarray,
    item_ids: np.ndarray,
    popularity: np.ndarray,
    shape: ReleaseShape,
    days: int,
) -> pd.DataFrame:
    """Free-text tags by a few users (about one in ten, busy ones first) on popular movies."""
    n_taggers = max(1, round(0.1 * len(user_ids)))
    taggers = rng.choice(len(user_ids), n_taggers, replace=False, p=counts / counts.sum())
    who = taggers[_zipf_draws(rng, n_taggers, n_tags, 1.2)]
    what = np.minimum(
        np.cumsum(popularity / popularity.sum()).searchsorted(rng.random(n_tags)), len(item_ids) - 1
    )
    tag = np.asarray(_TAGS)[_zipf_draws(rng, len(_TAGS), n_tags, 0.8)]
    first = pd.Timestamp(shape.start).value // 10**9
    stamp = first + rng.integers(0, days * 86_400, n_tags)
    order = np.lexsort((stamp, item_ids[what], user_ids[who]))
    return pd.DataFrame(
        {
            "user": user_ids[who][order],
            "item": item_ids[what][order],
            "tag": tag[order],
            "timestamp": stamp[order],
        }
    )


def _zipf_draws(rng: np.random.Generator, n: int, size: int, exponent: float) -> np.ndarray:
    """``size`` draws from ``0 .. n-1`` with weight ``(k + 1) ** -exponent``."""
    weight = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return np.minimum(np.cumsum(weight / weight.sum()).searchsorted(rng.random(size)), n - 1)


# ---------------------------------------------------------------------- writing the files
def _write_table(path: Path, table: pd.DataFrame, sep: str, *, header: bool = False) -> None:
    """Delimited text; ``"::"`` via a one-character stand-in, CSV with minimal quoting."""
    stand_in = "\x1f" if sep == "::" else sep
    text = table.to_csv(
        sep=stand_in,
        header=header,
        index=False,
        lineterminator="\n",
        quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE,
    )
    path.write_bytes(text.replace(stand_in, sep).encode("latin-1" if sep != "," else "utf-8"))


def _rating_frame(release: _Release, labels: list[str], *, by_user: bool) -> pd.DataFrame:
    """user, item, rating (as ``labels`` of the grid), timestamp; sorted by user and item."""
    level = np.rint((release.rating - release.grid[0]) / (release.grid[1] - release.grid[0]))
    frame = pd.DataFrame(
        {
            "user": release.user,
            "item": release.item,
            "rating": pd.Categorical.from_codes(level.astype(np.int64), labels),
            "timestamp": release.timestamp,
        }
    )
    if by_user:
        frame = frame.iloc[np.lexsort((release.item, release.user))].reset_index(drop=True)
    return frame


def _write_ml100k(folder: Path, release: _Release) -> None:
    ratings = _rating_frame(release, [f"{v:g}" for v in release.grid], by_user=False)
    _write_table(folder / "u.data", ratings, "\t")
    items = release.items
    title = items["title"]
    table = pd.DataFrame(
        {
            "item": items["item"],
            "title": title,
            "release_date": items["release_date"],
            "video_release_date": "",
            "imdb_url": "http://us.imdb.com/M/title-exact?" + title.str.replace(" ", "%20"),
            "unknown": 0,
        }
    )
    table = pd.concat([table, items[list(release.genres)]], axis=1)
    _write_table(folder / "u.item", table, "|")
    _write_table(folder / "u.user", release.users, "|")
    n_users, n_items = len(release.users), len(items)
    (folder / "u.info").write_text(
        f"{n_users} users\n{n_items} items\n{len(ratings)} ratings\n", encoding="latin-1"
    )
    genres = pd.DataFrame({"genre": ML100K_GENRES, "code": np.arange(len(ML100K_GENRES))})
    _write_table(folder / "u.genre", genres, "|")
    (folder / "u.occupation").write_text("".join(f"{o}\n" for o in _OCCUPATIONS))
    _write_ml100k_splits(folder, ratings, release.rng)


def _write_ml100k_splits(folder: Path, ratings: pd.DataFrame, rng: np.random.Generator) -> None:
    """``u1..u5``: five disjoint tests of a fifth of each user's ratings (20% of all each);
    ``ua``/``ub``: tests of exactly 10 ratings per user. Files are sorted by user and item."""
    user = ratings["user"].to_numpy()
    within = np.lexsort((rng.random(len(ratings)), user))  # each user's ratings, shuffled
    fold = np.empty(len(ratings), dtype=np.int64)
    fold[within] = np.arange(len(ratings)) % 5 + 1
    rank = np.empty(len(ratings), dtype=np.int64)
    sorted_user = user[within]
    rank[within] = np.arange(len(ratings)) - np.searchsorted(sorted_user, sorted_user)
    by_key = np.lexsort((ratings["item"].to_numpy(), user))
    ordered, fold, rank = ratings.iloc[by_key], fold[by_key], rank[by_key]
    for k in range(1, 6):
        _write_table(folder / f"u{k}.base", ordered[fold != k], "\t")
        _write_table(folder / f"u{k}.test", ordered[fold == k], "\t")
    for split, taken in (("ua", rank < 10), ("ub", (rank >= 10) & (rank < 20))):
        _write_table(folder / f"{split}.base", ordered[~taken], "\t")
        _write_table(folder / f"{split}.test", ordered[taken], "\t")


_ML1M_AGE_CODES = np.array([1, 18, 25, 35, 45, 50, 56])


def _write_ml1m(folder: Path, release: _Release) -> None:
    ratings = _rating_frame(release, [f"{v:g}" for v in release.grid], by_user=True)
    _write_table(folder / "ratings.dat", ratings, "::")
    _write_dat_movies(folder, release)
    users = release.users
    age = _ML1M_AGE_CODES[np.digitize(users["age"].to_numpy(), _ML1M_AGE_CODES[1:])]
    occupation = release.rng.integers(0, 21, len(users))  # ML-1M's codes 0..20
    table = pd.DataFrame(
        {
            "user": users["user"],
            "gender": users["gender"],
            "age": age,
            "occupation": occupation,
            "zip": users["zip"],
        }
    )
    _write_table(folder / "users.dat", table, "::")


def _write_dat_movies(folder: Path, release: _Release) -> None:
    items = release.items
    table = pd.DataFrame(
        {
            "item": items["item"],
            "title": items["title"],
            "genres": _genre_text(items, release.genres),
        }
    )
    _write_table(folder / "movies.dat", table, "::")


def _write_ml10m(folder: Path, release: _Release) -> None:
    ratings = _rating_frame(release, [f"{v:g}" for v in release.grid], by_user=True)
    _write_table(folder / "ratings.dat", ratings, "::")
    _write_dat_movies(folder, release)
    _write_table(folder / "tags.dat", release.tags, "::")


def _write_csv(folder: Path, release: _Release) -> None:
    ratings = _rating_frame(release, [f"{v:.1f}" for v in release.grid], by_user=True)
    ratings.columns = ["userId", "movieId", "rating", "timestamp"]
    _write_table(folder / "ratings.csv", ratings, ",", header=True)
    items = release.items
    movies = pd.DataFrame(
        {
            "movieId": items["item"],
            "title": items["title"],
            "genres": _genre_text(items, release.genres),
        }
    )
    _write_table(folder / "movies.csv", movies, ",", header=True)
    tags = release.tags.set_axis(["userId", "movieId", "tag", "timestamp"], axis=1)
    _write_table(folder / "tags.csv", tags, ",", header=True)
    rng = release.rng
    imdb = np.sort(rng.choice(9_000_000, len(items), replace=False)) + 1
    tmdb = pd.array(rng.choice(600_000, len(items), replace=False) + 1, dtype="Int64")
    tmdb[rng.random(len(items)) < 0.001] = pd.NA
    links = pd.DataFrame(
        {
            "movieId": items["item"],
            "imdbId": pd.Series(imdb).astype(str).str.zfill(7),
            "tmdbId": tmdb,
        }
    )
    _write_table(folder / "links.csv", links, ",", header=True)


_README = {"ml-100k": "README", "ml-1m": "README", "ml-10m": "README.html", "csv": "README.txt"}


def _write_readme(folder: Path, name: str, scale: float, seed: int) -> None:
    """Say that the files are synthetic, where the real release's README would be."""
    text = (
        f"SYNTHETIC replica of the MovieLens release {name}, written by "
        f"mfutils.data.write_release({name!r}, scale={scale!r}, seed={seed!r}).\n"
        "It has the release's file format and shape but no real ratings, movies or users.\n"
    )
    (folder / _README[DATASETS[name].format]).write_text(text, encoding="utf-8")


_WRITERS = {
    "ml-100k": _write_ml100k,
    "ml-1m": _write_ml1m,
    "ml-10m": _write_ml10m,
    "csv": _write_csv,
}
