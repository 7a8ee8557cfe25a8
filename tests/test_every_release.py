"""Every explicit model of the series at its defaults on a release it was not tuned on.

The defaults were chosen on ML-100K. An ml-latest-small-shaped replica at full size (100,836
half-star ratings, a user with 2.7% of them, a third of the movies rated once, no user table,
the real release's difficulty: biased MF gains about 1% over the baseline) is where they broke
before: SGD warm starts diverged on the heavy users, FM and DeepFM asked for a user table. Each
model must fit, predict finite ratings on the scale and beat the baseline on fold 1 of the
seeded 5-fold split, the benchmark's protocol.
"""

import numpy as np
import pytest

from mfutils.blending import series_models
from mfutils.experiments import rating_folds
from mfutils.metrics import rmse
from mfutils.models import FactorizationMachine

MODELS = {
    **series_models(device="cpu"),
    "FM-ids": lambda: FactorizationMachine(fields=("user", "item"), device="cpu"),
}


@pytest.fixture(scope="module")
def split(latest_small_full_replica):
    return rating_folds(latest_small_full_replica, seed=0)[0][0]


@pytest.fixture(scope="module")
def baseline_rmse(split):
    train, test = split
    model = MODELS["BaselineEstimates-ALS"]().fit(train)
    return rmse(model.predict_ratings(test), test.rating)


def test_the_replica_has_the_shape_that_broke_the_defaults(latest_small_full_replica):
    data = latest_small_full_replica
    assert data.users is None
    assert set(np.unique(data.rating)) == set(np.arange(1, 11) / 2)
    counts = np.bincount(data.user)
    assert counts.max() * 4096 / len(data) > 100  # > 100 rows of one user per batch of 4,096


# Measured on this replica (fold 1; baseline 0.8599): DeepFM 0.8841 -- its validation curve
# is best after two epochs and still above the baseline, with ids only, a smaller MLP or more
# penalty as well -- and TimeSVDpp 0.8619 (SVD++ 0.8585: restarting from the warm start and
# per-user time terms learned from 1.2 ratings per user and day) before their second phases
# were sized on held-out data. The paper's NNMF (``base=None``) stays above the baseline however
# it is set (0.8624; tuned on the fold's training data 0.8626; with learned biases in f_theta
# 0.8619; latents shrunk to learned means 0.8624; on a validation tenth of the fold's training
# data a penalty on theta 0.8657 vs the baseline's 0.8647, a linear skip 0.869-0.870, init_std
# 0.01 0.8678): it loses most on movies rated once (0.959 vs 0.923), fitting noise where the
# factors explain ~1% over the biases. The default stacks f_theta on a frozen BiasedMF-SGD,
# which competes as epoch 0: 0.8563 (BiasedMF-SGD 0.8567; on BiasedMF-ALS 0.8507).


@pytest.mark.parametrize("name", [name for name in MODELS if name != "BaselineEstimates-ALS"])
def test_model_fits_at_defaults_and_beats_the_baseline(name, split, baseline_rmse):
    train, test = split
    model = MODELS[name]().fit(train)
    pred = model.predict_ratings(test)
    assert np.isfinite(pred).all()
    assert pred.min() >= 0.5 and pred.max() <= 5.0
    assert rmse(pred, test.rating) < baseline_rmse, (name, rmse(pred, test.rating), baseline_rmse)
