"""Bayesian MF by Gibbs sampling: the conjugate draws, the posterior mean, reproducibility."""

import numpy as np
import pytest
import torch

from mfutils.data import make_synthetic
from mfutils.metrics import interval_coverage, rmse
from mfutils.models import BaselineEstimates, BayesianMF, BiasedMF, ExplicitModel
from mfutils.models.bayesian import _normal_wishart, _wishart, kept_sweeps


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(120, 80, 5000, rank=3, seed=1)
    test = np.random.default_rng(0).random(len(data)) < 0.2
    test |= data.user == 5  # user 5 has no training rating
    return data.subset(~test), data.subset(test)


@pytest.fixture(scope="module")
def fitted(split):
    return BayesianMF(4, sweeps=60, burn_in=10, max_samples=20, device="cpu").fit(split[0])


def test_wishart_draws_have_the_wishart_mean_and_variance():
    torch.manual_seed(0)
    scale = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=torch.float64)
    draws = torch.stack([_wishart(scale, df=7) for _ in range(4000)])  # shape: (4000, 3, 3)
    torch.testing.assert_close(draws.mean(0), 7 * scale, atol=0.25, rtol=0.05)
    # Var(W_ij) = df (s_ij^2 + s_ii s_jj)
    expected = 7 * (scale ** 2 + torch.outer(scale.diag(), scale.diag()))
    torch.testing.assert_close(draws.var(0), expected, atol=1.0, rtol=0.1)


def test_hyperparameters_concentrate_on_many_rows():
    torch.manual_seed(1)
    rows = torch.randn(20_000, 3) * torch.tensor([0.5, 1.0, 2.0]) + torch.tensor([1.0, 0, -1])
    mu, precision = _normal_wishart(rows, beta0=2.0)
    torch.testing.assert_close(mu, torch.tensor([1.0, 0.0, -1.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(torch.linalg.inv(precision).diag(),
                               torch.tensor([0.25, 1.0, 4.0]), atol=0.0, rtol=0.05)


def test_kept_sweeps_are_bounded_thinned_and_end_on_the_last():
    kept = kept_sweeps(200, 20, 50)
    assert len(kept) <= 50 and kept[-1] == 199 and kept[0] >= 20
    assert len(set(np.diff(kept))) == 1  # evenly thinned
    assert kept_sweeps(10, 0, 100) == list(range(10))
    with pytest.raises(ValueError, match="burn_in"):
        BayesianMF(sweeps=10, burn_in=10)


def test_posterior_mean_beats_the_point_estimates(split, fitted):
    train, test = split
    truth = test.rating
    bayes = rmse(fitted.predict_ratings(test), truth)
    assert bayes < rmse(BaselineEstimates(device="cpu").fit(train).predict_ratings(test), truth)
    assert bayes < rmse(BiasedMF(4, method="als", device="cpu").fit(train)
                        .predict_ratings(test), truth)
    assert np.isfinite(fitted.history.train_rmse).all() and len(fitted.history) == 60


def test_prediction_is_the_mean_over_the_kept_samples(split, fitted):
    _, test = split
    net = fitted.net
    assert len(net.user_samples) == len(kept_sweeps(60, 10, 20))
    u = torch.as_tensor(test.user[:50])
    i = torch.as_tensor(test.item[:50])
    per_sample = torch.stack([
        (theta[u, :-1] * phi[i, :-1]).sum(1) + theta[u, -1] + phi[i, -1]
        for theta, phi in zip(net.user_samples, net.item_samples, strict=True)])
    known = fitted.user_known[u] & fitted.item_known[i]
    expected = (fitted.mu + per_sample.mean(0)).clamp(*fitted.rating_scale)[known]
    got = torch.as_tensor(fitted.predict(test.user[:50], test.item[:50]))[known]
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=0)
    scores = fitted.score_items(torch.as_tensor(test.user[:5]))
    torch.testing.assert_close(scores[torch.arange(5), torch.as_tensor(test.item[:5])],
                               torch.as_tensor(fitted.predict(test.user[:5], test.item[:5])),
                               atol=1e-5, rtol=0)


def test_predictive_intervals_cover_about_their_share(split, fitted):
    _, test = split
    mean, std = fitted.predict(test.user, test.item, return_std=True)
    assert mean.shape == std.shape == (len(test),) and (std > 0).all()
    coverage = np.mean(np.abs(test.rating - mean) <= 1.645 * std)
    assert 0.8 < coverage < 0.98, coverage


def test_unknown_users_fall_back_to_the_sampled_item_biases(split, fitted):
    _, test = split
    items = test.item[test.user == 5][:5]
    got = fitted.predict(np.full(len(items), 5), items)
    item_bias = fitted.net.item_samples[:, torch.as_tensor(items), -1].mean(0)
    np.testing.assert_allclose(got, (fitted.mu + item_bias).clamp(*fitted.rating_scale),
                               atol=1e-5)


def test_seeded_fits_are_reproducible_and_leave_the_global_rng_alone(split):
    train, test = split
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    one = BayesianMF(3, sweeps=12, burn_in=2, seed=3, device="cpu").fit(train)
    assert torch.rand(1) == before  # the sampler ran on a forked RNG
    two = BayesianMF(3, sweeps=12, burn_in=2, seed=3, device="cpu").fit(train)
    other = BayesianMF(3, sweeps=12, burn_in=2, seed=4, device="cpu").fit(train)
    np.testing.assert_array_equal(one.predict_ratings(test), two.predict_ratings(test))
    assert not np.array_equal(one.predict_ratings(test), other.predict_ratings(test))


def test_checkpoint_round_trip_keeps_every_sample(split, fitted, tmp_path):
    _, test = split
    path = fitted.save(tmp_path / "bayes.safetensors")
    restored = ExplicitModel.load(path, device="cpu")
    assert isinstance(restored, BayesianMF)
    np.testing.assert_array_equal(restored.predict_ratings(test), fitted.predict_ratings(test))
    mean, std = restored.predict(test.user, test.item, return_std=True)
    np.testing.assert_array_equal(std, fitted.predict(test.user, test.item, return_std=True)[1])
    with pytest.raises(ValueError, match="weights"):
        BayesianMF(2, sweeps=3, burn_in=0, device="cpu").fit(split[0],
                                                             weights=np.ones(len(split[0])))


def test_sample_curve_ends_at_the_prediction_and_averaging_helps(split, fitted):
    _, test = split
    curve = fitted.sample_curve(test)
    assert list(curve.samples) == list(range(1, len(fitted.net.user_samples) + 1))
    assert curve["mean"].iloc[-1] == pytest.approx(rmse(fitted.predict_ratings(test),
                                                        test.rating), abs=1e-5)
    assert curve["mean"].iloc[-1] < curve["single"].mean()


def test_interval_coverage_of_calibrated_gaussians():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=20_000)
    std = rng.uniform(0.5, 2.0, size=20_000)
    target = mean + std * rng.normal(size=20_000)
    table = interval_coverage(mean, std, target, levels=(0.5, 0.9))
    np.testing.assert_allclose(table.coverage, [0.5, 0.9], atol=0.01)
    assert table.width.iloc[1] > table.width.iloc[0]
    with pytest.raises(ValueError, match="level"):
        interval_coverage(mean, std, target, levels=(1.0,))
