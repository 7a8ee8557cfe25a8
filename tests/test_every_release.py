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
# penalty as well -- NNMF 0.8624 (no bias terms; the paper's model) and TimeSVDpp 0.8619
# (SVD++ 0.8585: restarting from the warm start and per-user time terms learned from 1.2
# ratings per user and day). NNMF stays above the baseline however it is set: tuned on the
# fold's training data (12 Optuna trials, mfutils.tuning.tune) 0.8626; with learned user and
# item biases added to f_theta 0.8619; with the latents shrunk towards learned means instead
# of zero 0.8624. It loses most on the rarely rated movies (one training rating: 0.959 vs
# the baseline's 0.923) and a little even on movies with 21+ (0.8328 vs 0.8314): the network
# fits noise where the factors explain ~1% over the biases. The run on the real
# release found the same (NNMF 0.8645, baseline 0.8632). On a validation tenth of the fold's
# training data (baseline 0.8647, BiasedMF-ALS 0.8580, NNMF 0.8691, best after ~4 epochs while
# its training loss falls on): a penalty on f_theta's weights too (the paper penalises only the
# latents, which a larger theta undoes) gives 0.8657 at its best (300 on the summed error);
# reg 100-1000 on the latents 0.874-0.884; a linear skip from f_theta's inputs to its output
# (biased MF inside NNMF, at zero or at the dot product) 0.869-0.870; init_std 0.01 0.8678.
WEAK = {"NNMF"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                reason="defaults not yet robust on weak-signal data; see WEAK", strict=False
            ),
        )
        if name in WEAK
        else name
        for name in MODELS
        if name != "BaselineEstimates-ALS"
    ],
)
def test_model_fits_at_defaults_and_beats_the_baseline(name, split, baseline_rmse):
    train, test = split
    model = MODELS[name]().fit(train)
    pred = model.predict_ratings(test)
    assert np.isfinite(pred).all()
    assert pred.min() >= 0.5 and pred.max() <= 5.0
    assert rmse(pred, test.rating) < baseline_rmse, (name, rmse(pred, test.rating), baseline_rmse)
