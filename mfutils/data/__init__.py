"""MovieLens loading, your own ratings (:func:`load_ratings`), the shared data container,
splits, implicit views, synthetic data and synthetic replicas of the MovieLens releases."""

from mfutils.data.container import Ratings, UserItemCSR
from mfutils.data.implicit import to_implicit, user_item_csr
from mfutils.data.movielens import DATASETS, DatasetInfo, load_movielens
from mfutils.data.own_data import load_ratings
from mfutils.data.parsing import DataFormatError
from mfutils.data.replicas import RELEASE_SHAPES, ReleaseShape, write_release
from mfutils.data.splits import (
    canonical_folds,
    kfold,
    leave_last_out,
    per_user_holdout,
    random_holdout,
    temporal_holdout,
    validation_split,
)
from mfutils.data.synthetic import SyntheticTruth, make_synthetic, make_synthetic_with_truth

__all__ = [
    "Ratings",
    "UserItemCSR",
    "load_movielens",
    "load_ratings",
    "DATASETS",
    "DatasetInfo",
    "DataFormatError",
    "canonical_folds",
    "random_holdout",
    "kfold",
    "per_user_holdout",
    "temporal_holdout",
    "leave_last_out",
    "validation_split",
    "to_implicit",
    "user_item_csr",
    "make_synthetic",
    "make_synthetic_with_truth",
    "SyntheticTruth",
    "write_release",
    "RELEASE_SHAPES",
    "ReleaseShape",
]
