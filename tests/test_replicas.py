"""Synthetic MovieLens replicas: every release's format loads, shapes, seeds, atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mfutils.data import DATASETS, RELEASE_SHAPES, Ratings, load_movielens, write_release

# the smallest scales at which each release keeps its shape (users need 20+ distinct movies)
SMALL_SCALES = {
    "ml-100k": 0.1,
    "ml-1m": 0.1,
    "ml-10m": 0.03,
    "ml-20m": 0.012,
    "ml-25m": 0.006,
    "ml-latest-small": 0.2,
}
HAS_USERS = {"ml-100k", "ml-1m"}


def shares(data: Ratings) -> dict[str, float]:
    per_user = np.sort(data.user_counts())[::-1]
    per_item = data.item_counts()
    rated = per_item[per_item > 0]
    return {
        "top10": per_user[:10].sum() / len(data),
        "max_user": per_user[0] / len(data),
        "single": float(np.mean(rated == 1)),
        "unrated": int((per_item == 0).sum()),
    }


@pytest.fixture(scope="module", params=sorted(SMALL_SCALES))
def replica(request, tmp_path_factory) -> tuple[str, Ratings]:
    name = request.param
    root = tmp_path_factory.mktemp(name)
    folder = write_release(root, name, scale=SMALL_SCALES[name], seed=3)
    assert folder == root / RELEASE_SHAPES[name].folder and folder.is_dir()
    return name, load_movielens(name, data_dir=root, download=False)


def test_every_release_format_loads_as_that_release(replica):
    name, data = replica
    shape, info = RELEASE_SHAPES[name], DATASETS[name]
    scale = SMALL_SCALES[name]
    assert data.name == name and data.rating_scale == info.rating_scale
    assert data.n_users == round(shape.n_users * scale)
    assert len(data) == round(shape.n_ratings * scale)
    assert len(np.unique(data.user * data.n_items + data.item)) == len(data)
    assert (data.users is not None) == (name in HAS_USERS)
    assert (data.fold is not None) == (name == "ml-100k")
    assert data.items["title"].str.match(r".+ \(\d{4}\)$").mean() > 0.99
    assert data.items.filter(like="genre_").shape[1] >= 18


def test_ratings_lie_on_the_release_grid_with_its_histogram(replica):
    name, data = replica
    shape = RELEASE_SHAPES[name]
    low, high = DATASETS[name].rating_scale
    grid = np.linspace(low, high, len(shape.histogram))
    values, counts = np.unique(data.rating, return_counts=True)
    assert np.array_equal(values, grid)  # every grid value used, nothing off the grid
    expected = np.asarray(shape.histogram) / sum(shape.histogram)
    assert np.abs(counts / len(data) - expected).max() < 1e-3


def test_every_user_has_twenty_ratings_and_ids_have_gaps(replica):
    name, data = replica
    assert data.user_counts().min() >= 20
    assert (data.item_counts() > 0).any()
    if name != "ml-100k":  # the real ML-100K numbers its movies 1..1682 without gaps
        assert data.item_ids[-1] > data.n_items
    if name in ("ml-1m", "ml-20m", "ml-25m"):  # releases that list movies nobody rated
        assert shares(data)["unrated"] > 0
    if name == "ml-10m":
        assert data.user_ids[-1] > data.n_users


def test_side_tables(replica):
    name, data = replica
    if name == "ml-1m":
        assert set(data.users["age"]) <= {1, 18, 25, 35, 45, 50, 56}
        assert data.users["occupation"].between(0, 20).all()
    if name == "ml-100k":
        assert set(data.users["gender"]) == {"M", "F"} and len(data.users) == data.n_users
        assert np.array_equal(np.bincount(data.fold)[1:], [len(data) // 5] * 5)


def test_ml100k_folds_split_each_user_by_fifths(tmp_path):
    data = load_movielens("ml-100k", data_dir=_written(tmp_path, "ml-100k", 0.1), download=False)
    per_fold = pd.crosstab(data.user, data.fold).to_numpy()
    assert (per_fold.max(axis=1) - per_fold.min(axis=1) <= 1).all()
    folder = tmp_path / "ml-100k"
    ua = pd.read_csv(folder / "ua.test", sep="\t", header=None)
    assert (ua.groupby(0).size() == 10).all() and ua[0].nunique() == data.n_users


def _written(root, name, scale, seed=0):
    write_release(root, name, scale=scale, seed=seed)
    return root


def test_csv_files_have_the_release_layout(latest_small_replica_dir):
    folder = latest_small_replica_dir / "ml-latest-small"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.txt",
        "links.csv",
        "movies.csv",
        "ratings.csv",
        "tags.csv",
    ]
    lines = (folder / "ratings.csv").read_text().splitlines()
    assert lines[0] == "userId,movieId,rating,timestamp"
    assert lines[1].split(",")[2] in {f"{0.5 * k:.1f}" for k in range(1, 11)}
    movies = (folder / "movies.csv").read_text()
    assert movies.startswith("movieId,title,genres\n") and ", The (" in movies
    assert '"' in movies and "(no genres listed)" in movies
    tags = pd.read_csv(folder / "tags.csv")
    assert list(tags.columns) == ["userId", "movieId", "tag", "timestamp"]
    assert len(tags) == round(3683 * 0.2)
    links = pd.read_csv(folder / "links.csv", dtype={"imdbId": str})
    assert list(links.columns) == ["movieId", "imdbId", "tmdbId"]
    assert (links["imdbId"].str.len() == 7).all()


@pytest.mark.parametrize("scale", [0.2, 1.0])
def test_latest_small_keeps_its_shape(tmp_path, latest_small_replica, scale):
    if scale == 0.2:
        data = latest_small_replica
    else:
        data = load_movielens(
            "ml-latest-small", data_dir=_written(tmp_path, "ml-latest-small", 1.0), download=False
        )
        assert (data.n_users, data.n_items, len(data)) == (610, 9742, 100_836)
        assert (data.item_counts() > 0).sum() == 9724
        per_user, per_item = data.user_counts(), data.item_counts()
        assert abs(np.median(per_user) - 70.5) < 0.15 * 70.5
        assert abs(np.median(per_item[per_item > 0]) - 3) <= 1
        assert abs(per_item.max() - 329) < 0.15 * 329
    measured = shares(data)
    assert measured["top10"] == pytest.approx(0.16, rel=0.05)
    assert measured["max_user"] == pytest.approx(2698 / 100_836, rel=0.05)
    assert measured["single"] == pytest.approx(3446 / 9724, rel=0.05)
    _, counts = np.unique(data.rating, return_counts=True)
    histogram = np.asarray(RELEASE_SHAPES["ml-latest-small"].histogram)
    assert np.abs(counts / len(data) - histogram / histogram.sum()).max() < 1e-3


def test_ratings_carry_low_rank_signal(latest_small_replica):
    """Rank-8 soft-impute SVD of the residuals of the biases beats the biases on test.

    The singular values are shrunk by the noise level (the ninth one): at the replica's
    realistic difficulty an unshrunk (hard-impute) fit overfits, as it would on the real data.
    """
    data = latest_small_replica
    test = np.random.default_rng(0).random(len(data)) < 0.2
    user, item, rating = data.user[~test], data.item[~test], data.rating[~test]
    mean = rating.mean()
    item_bias = np.bincount(item, rating - mean, data.n_items) / (
        np.bincount(item, minlength=data.n_items) + 5
    )
    user_bias = np.bincount(user, rating - mean - item_bias[item], data.n_users) / (
        np.bincount(user, minlength=data.n_users) + 5
    )

    def biases(u, i):
        return mean + user_bias[u] + item_bias[i]

    observed = np.zeros((data.n_users, data.n_items), dtype=bool)
    observed[user, item] = True
    residual = np.zeros(observed.shape)
    residual[user, item] = rating - biases(user, item)
    low_rank = np.zeros(observed.shape)
    for _ in range(15):
        u, s, vt = np.linalg.svd(np.where(observed, residual, low_rank), full_matrices=False)
        low_rank = (u[:, :8] * (s[:8] - s[8])) @ vt[:8]
    u, i, truth = data.user[test], data.item[test], data.rating[test]
    base = np.sqrt(np.mean((biases(u, i) - truth) ** 2))
    fitted = np.sqrt(np.mean((np.clip(biases(u, i) + low_rank[u, i], 0.5, 5) - truth) ** 2))
    assert fitted < 0.995 * base  # measured: 1.2% lower


def test_latest_small_replica_is_as_hard_as_the_real_release(latest_small_replica):
    """Like the real ml-latest-small, MF gains little over the biases (real: 1.1%), not 11%."""
    from mfutils.blending import series_models
    from mfutils.experiments import rating_folds
    from mfutils.metrics import rmse

    train, test = rating_folds(latest_small_replica, seed=0)[0][0]
    models = series_models(["BaselineEstimates-ALS", "BiasedMF-ALS"], device="cpu")
    score = {
        name: rmse(make().fit(train).predict_ratings(test), test.rating)
        for name, make in models.items()
    }
    baseline, mf = score["BaselineEstimates-ALS"], score["BiasedMF-ALS"]
    assert 0.8 < baseline < 0.95  # real: 0.8632 at full scale
    assert 0 < 1 - mf / baseline < 0.05


def test_same_seed_gives_identical_files_and_no_temporary_folder(tmp_path):
    first = write_release(tmp_path / "a", "ml-latest-small", scale=0.2, seed=7)
    second = write_release(tmp_path / "b", "ml-latest-small", scale=0.2, seed=7)
    other = write_release(tmp_path / "c", "ml-latest-small", scale=0.2, seed=8)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "ratings.csv").read_bytes() != (other / "ratings.csv").read_bytes()
    for root in ("a", "b", "c"):
        assert [p.name for p in (tmp_path / root).iterdir()] == ["ml-latest-small"]


def test_existing_release_is_left_alone(tmp_path):
    folder = write_release(tmp_path, "ml-100k", scale=0.1)
    before = (folder / "u.data").read_bytes()
    with pytest.raises(FileExistsError):
        write_release(tmp_path, "ml-100k", scale=0.1, seed=1)
    assert (folder / "u.data").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ml-100k"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from mfutils.data import replicas

    def broken(folder, release):
        (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
        raise OSError("disk full")

    monkeypatch.setitem(replicas._WRITERS, "csv", broken)
    with pytest.raises(OSError, match="disk full"):
        write_release(tmp_path, "ml-latest-small", scale=0.2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "scale"), [("ml-oops", 0.5), ("ml-100k", 0.0), ("ml-100k", 1.5), ("ml-25m", 1e-4)]
)
def test_invalid_arguments(tmp_path, name, scale):
    with pytest.raises(ValueError):
        write_release(tmp_path, name, scale=scale)
    assert list(tmp_path.iterdir()) == []
