"""Splits (canonical, random, k-fold, per-user, temporal, validation) and implicit views."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from mfutils.data import (
    Ratings,
    canonical_folds,
    kfold,
    leave_last_out,
    make_synthetic,
    per_user_holdout,
    random_holdout,
    temporal_holdout,
    to_implicit,
    user_item_csr,
    validation_split,
)
from mfutils.data.splits import cold_user_split


@pytest.fixture(scope="module")
def data() -> Ratings:
    ratings = make_synthetic(300, 200, 6000, seed=3)
    # coarse timestamps so that ties in time occur and must be broken deterministically
    return dataclasses.replace(ratings, timestamp=ratings.timestamp // 86_400)


def keys(part: Ratings) -> np.ndarray:
    return part.user * part.n_items + part.item


def assert_partition(data: Ratings, train: Ratings, test: Ratings) -> None:
    assert len(train) + len(test) == len(data)
    assert len(np.intersect1d(keys(train), keys(test))) == 0
    assert np.array_equal(np.sort(np.concatenate([keys(train), keys(test)])), np.sort(keys(data)))
    assert train.n_users == test.n_users == data.n_users
    assert train.n_items == test.n_items == data.n_items


def per_user(part: Ratings, values: np.ndarray, how: str) -> pd.Series:
    return pd.Series(values).groupby(part.user).agg(how)


# ---------------------------------------------------------------------- canonical folds
@pytest.mark.slow
def test_canonical_folds_match_the_base_files(ml100k, shared_data_dir):
    folds = canonical_folds(ml100k)
    assert len(folds) == 5
    for k, (train, test) in enumerate(folds, start=1):
        assert (len(train), len(test)) == (80_000, 20_000)
        assert_partition(ml100k, train, test)
        base = pd.read_csv(shared_data_dir / "ml-100k" / f"u{k}.base", sep="\t", header=None)
        expected = ml100k.encode_users(base[0]) * ml100k.n_items + ml100k.encode_items(base[1])
        assert np.array_equal(np.sort(keys(train)), np.sort(expected))
    all_tests = np.concatenate([keys(test) for _, test in folds])
    assert np.array_equal(np.sort(all_tests), np.sort(keys(ml100k)))


def test_canonical_folds_need_fold_labels(data):
    with pytest.raises(ValueError, match="no canonical folds.*kfold"):
        canonical_folds(data)


# ---------------------------------------------------------------------- random splits
def test_random_holdout(data):
    train, test = random_holdout(data, test_fraction=0.25, seed=1)
    assert len(test) == 1500
    assert_partition(data, train, test)
    again = random_holdout(data, test_fraction=0.25, seed=1)[1]
    assert np.array_equal(keys(again), keys(test))
    assert not np.array_equal(keys(random_holdout(data, test_fraction=0.25, seed=2)[1]), keys(test))


def test_kfold_tests_partition_the_data(data):
    folds = kfold(data, k=4, seed=0)
    assert len(folds) == 4
    for train, test in folds:
        assert_partition(data, train, test)
        assert len(test) == 1500
    all_tests = np.concatenate([keys(test) for _, test in folds])
    assert np.array_equal(np.sort(all_tests), np.sort(keys(data)))
    again = kfold(data, k=4, seed=0)
    assert all(np.array_equal(keys(a[1]), keys(b[1])) for a, b in zip(folds, again, strict=True))


@pytest.mark.parametrize(
    "call",
    [
        lambda d: random_holdout(d, test_fraction=0.0),
        lambda d: random_holdout(d, test_fraction=1.0),
        lambda d: random_holdout(d.subset(np.arange(3)), test_fraction=0.01),
        lambda d: kfold(d, k=1),
        lambda d: kfold(d.subset(np.arange(3)), k=4),
        lambda d: per_user_holdout(d, test_fraction=-0.1),
        lambda d: temporal_holdout(d, test_fraction=1.5),
        lambda d: leave_last_out(d, n=0),
        lambda d: validation_split(d, strategy="by_item"),
    ],
)
def test_invalid_arguments(data, call):
    with pytest.raises(ValueError):
        call(data)


# ---------------------------------------------------------------------- per-user splits
def test_per_user_holdout_counts(data):
    train, test = per_user_holdout(data, test_fraction=0.2, seed=0)
    assert_partition(data, train, test)
    counts = data.user_counts()
    n_test, n_train = test.user_counts(), train.user_counts()
    several = counts >= 2
    assert (n_test[several] >= 1).all() and (n_train[several] >= 1).all()
    assert (n_test[~several] == 0).all()
    expected = np.clip(np.rint(0.2 * counts), 1, np.maximum(counts - 1, 1))
    assert np.array_equal(n_test[several], expected[several])
    again = per_user_holdout(data, test_fraction=0.2, seed=0)[1]
    assert np.array_equal(keys(again), keys(test))


def test_temporal_holdout_puts_the_latest_ratings_in_test(data):
    train, test = temporal_holdout(data, test_fraction=0.3)
    assert_partition(data, train, test)
    latest_train = per_user(train, train.timestamp, "max")
    earliest_test = per_user(test, test.timestamp, "min")
    both = earliest_test.index.intersection(latest_train.index)
    assert len(both) > 0 and (earliest_test[both] >= latest_train[both]).all()
    assert np.array_equal(keys(temporal_holdout(data, test_fraction=0.3)[1]), keys(test))


def test_leave_last_out(data):
    train, test = leave_last_out(data, n=2)
    assert_partition(data, train, test)
    counts = data.user_counts()
    assert np.array_equal(test.user_counts(), np.where(counts > 2, 2, 0))
    latest_train = per_user(train, train.timestamp, "max")
    earliest_test = per_user(test, test.timestamp, "min")
    assert (earliest_test >= latest_train[earliest_test.index]).all()


@pytest.mark.parametrize("strategy", ["random", "per_user", "temporal"])
def test_validation_split_stays_inside_train(data, strategy):
    train, test = random_holdout(data, seed=0)
    fit, valid = validation_split(train, fraction=0.1, seed=0, strategy=strategy)
    assert_partition(train, fit, valid)
    assert len(np.intersect1d(keys(valid), keys(test))) == 0
    assert abs(len(valid) - 0.1 * len(train)) < 0.05 * len(train)


def test_cold_user_split_keeps_few_ratings_of_chosen_users(data):
    train, test = random_holdout(data, seed=1)
    cold_train, cold_test = cold_user_split(train, test, n_users=40, max_train=3, seed=2)
    assert_partition(data, cold_train, cold_test)
    assert np.array_equal(keys(cold_test)[: len(test)], keys(test))  # the test part grows
    before, after = train.user_counts(), cold_train.user_counts()
    changed = np.flatnonzero(after != before)
    assert 0 < len(changed) <= 40 and np.isin(changed, test.user).all()
    assert (after[changed] <= 3).all()
    assert set(after[changed]) == {0, 1, 2, 3}  # the cold users that lost ratings keep 0..3
    moved = np.setdiff1d(keys(cold_test), keys(test))
    assert np.isin(moved // data.n_items, changed).all()
    again, _ = cold_user_split(train, test, n_users=40, max_train=3, seed=2)
    assert np.array_equal(keys(again), keys(cold_train))
    with pytest.raises(ValueError, match="n_users"):
        cold_user_split(train, test, n_users=10_000)
    with pytest.raises(ValueError, match="max_train"):
        cold_user_split(train, test, max_train=-1)


# ---------------------------------------------------------------------- implicit views
def test_to_implicit(data):
    positives = to_implicit(data, threshold=4)
    assert len(positives) == int((data.rating >= 4).sum())
    assert (positives.rating == 1.0).all() and positives.rating.dtype == np.float32
    assert positives.rating_scale == (0.0, 1.0) and positives.n_items == data.n_items
    assert len(to_implicit(data)) == len(data)


def test_user_item_csr(data):
    csr = user_item_csr(data)
    assert csr.n_users == data.n_users and int(csr.indptr[-1]) == len(data)
    assert np.array_equal(csr.counts().numpy(), data.user_counts())
