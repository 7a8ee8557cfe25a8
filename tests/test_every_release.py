"""Every explicit model of the series at its defaults on a release it was not tuned on.

The defaults were chosen on ML-100K. An ml-latest-small-shaped replica (half stars, a user
with 2.7% of all ratings, a third of the movies rated once, no user table) is where they
broke before: SGD warm starts diverged on the heavy users, FM and DeepFM asked for a user
table. Each model must fit, predict finite ratings on the scale and beat the baseline.
"""

import numpy as np
import pytest

from mfutils.blending import series_models
from mfutils.data import random_holdout
from mfutils.metrics import rmse
from mfutils.models import FactorizationMachine

MODELS = {**series_models(device="cpu"),
          "FM-ids": lambda: FactorizationMachine(fields=("user", "item"), device="cpu")}


@pytest.fixture(scope="module")
def split(latest_small_replica):
    return random_holdout(latest_small_replica, test_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def baseline_rmse(split):
    train, test = split
    model = MODELS["BaselineEstimates-ALS"]().fit(train)
    return rmse(model.predict_ratings(test), test.rating)


def test_the_replica_has_the_shape_that_broke_the_defaults(latest_small_replica):
    data = latest_small_replica
    assert data.users is None
    assert set(np.unique(data.rating)) == set(np.arange(1, 11) / 2)
    counts = np.bincount(data.user)
    assert counts.max() * 4096 / len(data) > 100  # > 100 rows of one user per batch of 4,096


@pytest.mark.parametrize("name", [name for name in MODELS if name != "BaselineEstimates-ALS"])
def test_model_fits_at_defaults_and_beats_the_baseline(name, split, baseline_rmse):
    train, test = split
    model = MODELS[name]().fit(train)
    pred = model.predict_ratings(test)
    assert np.isfinite(pred).all()
    assert pred.min() >= 0.5 and pred.max() <= 5.0
    assert rmse(pred, test.rating) < baseline_rmse, (name, rmse(pred, test.rating),
                                                     baseline_rmse)
