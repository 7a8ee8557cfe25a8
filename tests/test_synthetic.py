"""Synthetic ratings: shapes, unique pairs, scale, reproducibility, low-rank signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mfutils.data import Ratings, make_synthetic, make_synthetic_with_truth


@pytest.fixture(scope="module")
def generated() -> tuple:
    return make_synthetic_with_truth(400, 300, 12_000, rank=4, seed=0)


def pair_keys(data: Ratings) -> np.ndarray:
    return data.user * data.n_items + data.item


def test_shapes_and_unique_pairs(generated):
    data, _ = generated
    assert (data.n_users, data.n_items, len(data), data.name) == (400, 300, 12_000, "synthetic")
    assert len(np.unique(pair_keys(data))) == len(data)
    assert data.user.min() >= 0 and data.user.max() < 400
    assert (data.user_counts() > 0).all() and (data.item_counts() > 0).all()
    assert np.array_equal(data.user_ids, np.arange(400))
    assert data.rating.dtype == np.float32 and data.timestamp.dtype == np.int64


def test_integer_ratings_on_the_scale(generated):
    data, _ = generated
    assert set(np.unique(data.rating)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.0 < data.global_mean < 4.0
    assert data.rating_scale == (1.0, 5.0)


def test_continuous_ratings_are_clipped_to_a_custom_scale():
    data = make_synthetic(50, 40, 500, rating_scale=(0.5, 5.0), integer=False, noise=2.0)
    assert data.rating.min() >= 0.5 and data.rating.max() <= 5.0
    assert not np.allclose(data.rating, np.rint(data.rating))
    assert data.rating_scale == (0.5, 5.0)


def test_popularity_is_skewed(generated):
    counts = np.sort(generated[0].item_counts())[::-1]
    assert counts[:30].sum() > 4 * counts[-30:].sum()


def test_reproducible_with_seed():
    first, second = make_synthetic(80, 60, 900, seed=5), make_synthetic(80, 60, 900, seed=5)
    for name in ("user", "item", "rating", "timestamp"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    pd.testing.assert_frame_equal(first.items, second.items)
    assert not np.array_equal(pair_keys(first), pair_keys(make_synthetic(80, 60, 900, seed=6)))


def test_ratings_follow_the_low_rank_truth(generated):
    data, truth = generated
    expected = truth.predict(data.user, data.item)
    assert np.corrcoef(expected, data.rating)[0, 1] > 0.7
    assert truth.user_factors.shape == (400, 4) and truth.item_factors.shape == (300, 4)
    assert np.isclose(truth.activity.sum(), 1.0) and np.isclose(truth.popularity.sum(), 1.0)


def test_timestamps_lie_in_the_period(generated):
    data, _ = generated
    first = pd.Timestamp("1997-09-20").value // 10**9
    assert data.timestamp.min() >= first and data.timestamp.max() < first + 214 * 86_400


def test_side_tables(generated):
    data, _ = generated
    assert list(data.users.columns) == ["age", "gender", "occupation", "zip"]
    assert len(data.users) == 400 and set(data.users["gender"]) == {"M", "F"}
    genres = data.items.filter(like="genre_")
    assert len(data.items) == 300 and genres.shape[1] == 18
    assert (genres.sum(axis=1) >= 1).all() and data.items["year"].dtype == "Int64"
    assert data.items.loc[0, "title"].startswith("Synthetic Movie 0 (")


def test_large_sparse_id_space_uses_rejection_sampling():
    data = make_synthetic(3000, 1500, 40_000, seed=1)  # 4.5M cells: the sparse path
    assert len(data) == 40_000 and len(np.unique(pair_keys(data))) == 40_000
    assert (data.user_counts() > 0).all() and (data.item_counts() > 0).all()


def test_fully_dense_and_tiny():
    assert len(np.unique(pair_keys(make_synthetic(10, 7, 70)))) == 70
    assert len(make_synthetic(30, 30, 5)) == 5  # fewer ratings than ids: no full coverage


@pytest.mark.parametrize(
    "arguments",
    [
        {"n_users": 0, "n_items": 5, "n_ratings": 1},
        {"n_users": 5, "n_items": 5, "n_ratings": 26},
        {"n_users": 5, "n_items": 5, "n_ratings": 5, "rank": 0},
        {"n_users": 5, "n_items": 5, "n_ratings": 5, "rating_scale": (5.0, 1.0)},
    ],
)
def test_invalid_arguments(arguments):
    with pytest.raises(ValueError):
        make_synthetic(**arguments)
