"""Bayesian MF by Gibbs sampling: the conjugate draws, the posterior mean, reproducibility."""

import numpy as np
import pytest
import torch

from mfutils.data import make_synthetic
from mfutils.metrics import interval_coverage, rmse
from mfutils.models import (
    BaselineEstimates,
    BayesianFM,
    BayesianMF,
    BiasedMF,
    ExplicitModel,
    bayesian,
)
from mfutils.models.bayesian import (
    OrdinalProbit,
    Partners,
    _normal_gamma,
    _normal_wishart,
    _segment_gram,
    _wishart,
    design_block,
    kept_sweeps,
    sample_block,
)


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
    expected = 7 * (scale**2 + torch.outer(scale.diag(), scale.diag()))
    torch.testing.assert_close(draws.var(0), expected, atol=1.0, rtol=0.1)


def test_hyperparameters_concentrate_on_many_rows():
    torch.manual_seed(1)
    rows = torch.randn(20_000, 3) * torch.tensor([0.5, 1.0, 2.0]) + torch.tensor([1.0, 0, -1])
    mu, precision = _normal_wishart(rows, beta0=2.0)
    torch.testing.assert_close(mu, torch.tensor([1.0, 0.0, -1.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(
        torch.linalg.inv(precision).diag(), torch.tensor([0.25, 1.0, 4.0]), atol=0.0, rtol=0.05
    )


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
    assert bayes < rmse(
        BiasedMF(4, method="als", device="cpu").fit(train).predict_ratings(test), truth
    )
    assert np.isfinite(fitted.history.train_rmse).all() and len(fitted.history) == 60
    lam = fitted.history[["lambda_user", "lambda_item"]]  # the burn-in's trace
    assert np.isfinite(lam).all().all() and (lam > 0).all().all()


def test_prediction_is_the_mean_over_the_kept_samples(split, fitted):
    _, test = split
    net = fitted.net
    assert len(net.user_samples) == len(kept_sweeps(60, 10, 20))
    u = torch.as_tensor(test.user[:50])
    i = torch.as_tensor(test.item[:50])
    per_sample = torch.stack(
        [
            (theta[u, :-1] * phi[i, :-1]).sum(1) + theta[u, -1] + phi[i, -1]
            for theta, phi in zip(net.user_samples, net.item_samples, strict=True)
        ]
    )
    known = fitted.user_known[u] & fitted.item_known[i]
    expected = (fitted.mu + per_sample.mean(0)).clamp(*fitted.rating_scale)[known]
    got = torch.as_tensor(fitted.predict(test.user[:50], test.item[:50]))[known]
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=0)
    scores = fitted.score_items(torch.as_tensor(test.user[:5]))
    torch.testing.assert_close(
        scores[torch.arange(5), torch.as_tensor(test.item[:5])],
        torch.as_tensor(fitted.predict(test.user[:5], test.item[:5])),
        atol=1e-5,
        rtol=0,
    )


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
    np.testing.assert_allclose(got, (fitted.mu + item_bias).clamp(*fitted.rating_scale), atol=1e-5)


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


@pytest.mark.parametrize("model", [BayesianMF, BayesianFM])
def test_chains_pool_their_samples_and_the_first_is_the_single_chain_fit(split, model, tmp_path):
    train, test = split
    options = dict(n_factors=3, sweeps=8, burn_in=2, max_samples=3, device="cpu")
    one = model(**options).fit(train)
    three = model(**options, n_chains=3).fit(train)
    samples = three.net.noise_var
    assert len(samples) == 3 * len(one.net.noise_var)
    # chain 0 replays the single-chain fit's random stream; later chains start elsewhere
    torch.testing.assert_close(samples[:3], one.net.noise_var)
    assert not torch.equal(samples[3:6], samples[:3])
    assert list(three.history.chain.unique()) == [0, 1, 2] and len(three.history) == 3 * 8
    curve = three.sample_curve(test)
    assert list(curve.chain) == [0] * 3 + [1] * 3 + [2] * 3
    assert curve["mean"].iloc[-1] == pytest.approx(rmse(three.predict_ratings(test), test.rating))
    restored = ExplicitModel.load(three.save(tmp_path / "chains.safetensors"), device="cpu")
    np.testing.assert_array_equal(restored.predict_ratings(test), three.predict_ratings(test))
    with pytest.raises(ValueError, match="n_chains=0"):
        model(n_chains=0)


def test_checkpoint_round_trip_keeps_every_sample(split, fitted, tmp_path):
    _, test = split
    path = fitted.save(tmp_path / "bayes.safetensors")
    restored = ExplicitModel.load(path, device="cpu")
    assert isinstance(restored, BayesianMF)
    np.testing.assert_array_equal(restored.predict_ratings(test), fitted.predict_ratings(test))
    mean, std = restored.predict(test.user, test.item, return_std=True)
    np.testing.assert_array_equal(std, fitted.predict(test.user, test.item, return_std=True)[1])
    with pytest.raises(ValueError, match="weights"):
        BayesianMF(2, sweeps=3, burn_in=0, device="cpu").fit(
            split[0], weights=np.ones(len(split[0]))
        )


def test_sample_curve_ends_at_the_prediction_and_averaging_helps(split, fitted):
    _, test = split
    curve = fitted.sample_curve(test)
    assert list(curve.samples) == list(range(1, len(fitted.net.user_samples) + 1))
    assert curve["mean"].iloc[-1] == pytest.approx(
        rmse(fitted.predict_ratings(test), test.rating), abs=1e-5
    )
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


# ---------------------------------------------------------------------- Bayesian FM
def _tiny_block(dtype=torch.float64):
    """Four users with bags over five items (features: 4 ids then 5 bag items), 30 ratings."""
    gen = torch.Generator().manual_seed(0)
    entity = torch.randint(0, 4, (30,), generator=gen)
    rows = torch.cat([torch.arange(4), torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])])
    cols = torch.cat([torch.arange(4), 4 + torch.tensor([0, 1, 1, 2, 3, 0, 3, 4])])
    values = torch.cat([torch.ones(4), torch.full((8,), 0.5)]).to(dtype)
    return design_block("user", entity, rows, cols, values, 4, 9, start=0), gen


def _dense_conditional(block, target, other, noise, mean, precision):
    """The block's Gaussian conditional by the slow dense formula: one design row per rating,
    ``d yhat_n / d Theta = F[e_n]^T h_n^T`` flattened."""
    design = block.design.to_dense()  # shape: (n_e, n_f)
    h = torch.cat([other, torch.ones(len(other), 1, dtype=other.dtype)], 1)  # shape: (N, f+1)
    x = (design[block.entity][:, :, None] * h[:, None, :]).flatten(1)  # shape: (N, n_f (f+1))
    p = noise * x.T @ x + torch.diag(precision.flatten())
    cov = torch.linalg.inv(p)
    return cov @ (noise * x.T @ target + (precision * mean).flatten()), cov


def test_block_draws_have_the_dense_conditional_moments():
    block, gen = _tiny_block()
    assert not block.separable
    other = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    target = torch.randn(30, generator=gen, dtype=torch.float64)
    theta = torch.zeros(9, 3, dtype=torch.float64)
    mean = torch.randn(9, 3, generator=gen, dtype=torch.float64) * 0.1
    precision = torch.rand(9, 3, generator=gen, dtype=torch.float64) + 0.5
    want_mean, want_cov = _dense_conditional(block, target, other, 2.0, mean, precision)
    torch.manual_seed(0)
    draws = torch.stack(
        [
            sample_block(
                block,
                theta,
                target,
                other,
                noise=2.0,
                prior_mean=mean,
                prior_precision=precision,
                cg_steps=200,
                cg_tol=1e-10,
            )[0].flatten()
            for _ in range(6000)
        ]
    )  # shape: (6000, 27)
    torch.testing.assert_close(draws.mean(0), want_mean, atol=0.03, rtol=0)
    scale = want_cov.diag().sqrt()
    error = (torch.cov(draws.T) - want_cov) / torch.outer(scale, scale)  # shape: (27, 27)
    assert float(error.abs().max()) < 5 / 6000**0.5, error.abs().max()  # ~ 5 standard errors
    ratio = torch.cov(draws.T).diag() / want_cov.diag()
    assert float((ratio - 1).abs().max()) < 0.1, ratio


@pytest.mark.parametrize("ids", [True, False], ids=["ids and bags", "bags alone"])
def test_eliminating_own_features_then_cg_gives_the_dense_solve(monkeypatch, ids):
    """The large-block path (each entity's own feature eliminated, CG on the rest) solves
    the same perturbed system as the dense path: with the same random numbers, one draw."""
    gen = torch.Generator().manual_seed(2)
    entity = torch.randint(0, 4, (30,), generator=gen)
    rows = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    cols = torch.tensor([0, 1, 1, 2, 0, 2, 3, 2])  # item 3 in user 3's bag alone
    values = torch.full((8,), 0.5, dtype=torch.float64)
    if ids:
        rows, cols = torch.cat([torch.arange(4), rows]), torch.cat([torch.arange(4), 4 + cols])
        values = torch.cat([torch.ones(4, dtype=torch.float64), values])
    n_features = int(cols.max()) + 1
    block = design_block("user", entity, rows, cols, values, 4, n_features, start=0)
    # ids: every user's own feature is its id (user 3's lone bag item stays shared); bags
    # alone: only user 3 has one, item 3
    assert block.own.tolist() == ([0, 1, 2, 3] if ids else [-1, -1, -1, 3])
    assert not block.separable
    other = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    target = torch.randn(30, generator=gen, dtype=torch.float64)
    theta = torch.randn(n_features, 3, generator=gen, dtype=torch.float64)
    mean = torch.randn(n_features, 3, generator=gen, dtype=torch.float64) * 0.1
    precision = torch.rand(n_features, 3, generator=gen, dtype=torch.float64) + 0.5
    options = dict(
        noise=2.0, prior_mean=mean, prior_precision=precision, cg_steps=200, cg_tol=1e-13
    )
    torch.manual_seed(3)
    dense, _ = sample_block(block, theta, target, other, **options)
    monkeypatch.setattr(bayesian, "DENSE_LIMIT", 0)
    torch.manual_seed(3)
    solved, residual = sample_block(block, theta, target, other, **options)
    assert float(residual) < 1e-10
    torch.testing.assert_close(solved, dense, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("n_blocks", [2, 3])
def test_partner_grams_equal_the_sum_over_ratings(n_blocks):
    """Each block's Gram matrices from the other blocks' entities (the count matrices and
    the cross terms over entity pairs) equal the sum of ``h_n h_n^T`` over the ratings."""
    gen = torch.Generator().manual_seed(4)
    sizes = (6, 7, 3)[:n_blocks]  # users, items, contexts
    blocks, start = [], 0
    for name, size in zip(("user", "item", "context")[:n_blocks], sizes, strict=True):
        entity = torch.randint(0, size, (50,), generator=gen)
        ids = torch.arange(size)
        block = design_block(
            name, entity, ids, ids, torch.ones(size, dtype=torch.float64), size, size, start
        )
        blocks.append(block)
        start = block.stop
    vectors = [torch.randn(size, 4, generator=gen, dtype=torch.float64) for size in sizes]
    for k, block in enumerate(blocks):
        partners = Partners.of(blocks, k)
        other = sum(vectors[j][blocks[j].entity] for j in partners.others)  # shape: (50, 4)
        h = torch.cat([other, torch.ones(50, 1, dtype=torch.float64)], 1)
        want = _segment_gram(block.members, h)
        torch.testing.assert_close(partners.gram(vectors), want, atol=1e-12, rtol=1e-12)


def test_a_block_of_ids_is_drawn_exactly_without_cg_steps():
    gen = torch.Generator().manual_seed(1)
    entity = torch.randint(0, 5, (40,), generator=gen)
    block = design_block(
        "item",
        entity,
        torch.arange(5),
        torch.arange(5),
        torch.ones(5, dtype=torch.float64),
        5,
        5,
        start=0,
    )
    assert block.separable
    other = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    target = torch.randn(40, generator=gen, dtype=torch.float64)
    mean = torch.zeros(5, 3, dtype=torch.float64)
    precision = torch.ones(5, 3, dtype=torch.float64)
    rows, residual = sample_block(
        block,
        mean,
        target,
        other,
        noise=1.5,
        prior_mean=mean,
        prior_precision=precision,
        cg_steps=1,
        cg_tol=0.5,
    )
    assert float(residual) < 1e-10
    want_mean, _ = _dense_conditional(block, target, other, 1.5, mean, precision)
    assert rows.shape == (5, 3) and torch.isfinite(rows).all()
    assert float((rows.flatten() - want_mean).abs().max()) < 5  # a draw near the mean


def test_group_hyperparameters_concentrate_on_many_rows():
    torch.manual_seed(2)
    theta = torch.cat([torch.randn(20_000, 2) * 0.5 + 1.0, torch.randn(20_000, 2) * 2.0])
    group = torch.cat([torch.zeros(20_000, dtype=torch.long), torch.ones(20_000, dtype=torch.long)])
    group[:10] = -1  # rows without data take no part
    mean = torch.zeros(2, 2)
    for _ in range(3):  # precision given the current mean, then the mean: a few Gibbs rounds
        mean, precision = _normal_gamma(theta, group, 2, mean, shape=1.0, gamma0=1.0)
    torch.testing.assert_close(mean, torch.tensor([[1.0, 1.0], [0.0, 0.0]]), atol=0.05, rtol=0)
    torch.testing.assert_close(
        precision, torch.tensor([[4.0, 4.0], [0.25, 0.25]]), rtol=0.05, atol=0
    )


@pytest.fixture(scope="module")
def bfm(split):
    return BayesianFM(4, sweeps=40, burn_in=10, max_samples=15, date_bins=4, device="cpu").fit(
        split[0]
    )


def test_bayesian_fm_learns_and_keeps_its_samples(split, bfm):
    train, test = split
    got = rmse(bfm.predict_ratings(test), test.rating)
    assert got < rmse(BaselineEstimates(device="cpu").fit(train).predict_ratings(test), test.rating)
    assert len(bfm.net.w0) == len(kept_sweeps(40, 10, 15))
    assert np.isfinite(bfm.history.train_rmse).all() and (bfm.history.cg_residual < 1).all()
    assert {"user", "item", "weekday", "since_first"} <= set(bfm.fields_)  # the defaults
    lam = bfm.history[[f"lambda_{g}" for g in (*bfm.fields_, "bag_user", "bag_item", "date_bin")]]
    assert np.isfinite(lam).all().all() and (lam > 0).all().all()  # every prior group traced
    curve = bfm.sample_curve(test)
    assert curve["mean"].iloc[-1] == pytest.approx(got, abs=1e-5)
    mean, std = bfm.predict_ratings(test, return_std=True)
    assert (std > 0).all() and np.allclose(mean, bfm.predict_ratings(test))


def test_bayesian_fm_without_timestamps_leaves_the_context_out(split, bfm):
    _, test = split
    with_time = bfm.predict_ratings(test)
    without = bfm.predict(test.user, test.item)
    assert not np.allclose(with_time, without)
    scores = bfm.score_items(torch.as_tensor(test.user[:4]))
    torch.testing.assert_close(
        scores[torch.arange(4), torch.as_tensor(test.item[:4])],
        torch.as_tensor(without[:4]),
        atol=1e-5,
        rtol=0,
    )


def test_bayesian_fm_round_trip_and_reproducibility(split, bfm, tmp_path):
    train, test = split
    restored = ExplicitModel.load(bfm.save(tmp_path / "bfm.safetensors"), device="cpu")
    assert isinstance(restored, BayesianFM) and restored.fields_ == bfm.fields_
    np.testing.assert_array_equal(restored.predict_ratings(test), bfm.predict_ratings(test))
    again = BayesianFM(4, sweeps=40, burn_in=10, max_samples=15, date_bins=4, device="cpu").fit(
        train
    )
    np.testing.assert_array_equal(again.predict_ratings(test), bfm.predict_ratings(test))


def test_bayesian_fm_on_ids_alone_is_bayesian_biased_mf(split):
    train, test = split
    ids = BayesianFM(
        4, fields=("user", "item"), bags=(), sweeps=60, burn_in=10, max_samples=20, device="cpu"
    ).fit(train)
    bpmf = BayesianMF(4, sweeps=60, burn_in=10, max_samples=20, device="cpu").fit(train)
    assert (ids.history.cg_residual < 1e-4).all()  # two separable blocks: exact draws
    assert (
        abs(
            rmse(ids.predict_ratings(test), test.rating)
            - rmse(bpmf.predict_ratings(test), test.rating)
        )
        < 0.02
    )


def test_bayesian_fm_rejects_bad_options():
    with pytest.raises(ValueError, match="bags"):
        BayesianFM(bags=("users",))
    with pytest.raises(ValueError, match="cg_tol"):
        BayesianFM(cg_tol=0)
    with pytest.raises(ValueError, match="burn_in"):
        BayesianFM(sweeps=5, burn_in=5)


def test_ordinal_probit_recovers_cutpoints_and_draws_latents_inside_them():
    torch.manual_seed(3)
    fm = torch.randn(20_000, dtype=torch.float64)
    truth = torch.tensor([-1.0, 0.0, 1.2], dtype=torch.float64)
    levels = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    rating = levels[torch.searchsorted(truth, fm + torch.randn_like(fm))]
    probit = OrdinalProbit(rating, levels)
    draws = []
    for sweep in range(300):
        latent = probit.update(fm, adapt=sweep < 100)
        if sweep >= 100:
            draws.append(probit.cutpoints(probit.coords))
    torch.testing.assert_close(torch.stack(draws).mean(0), truth, atol=0.05, rtol=0)
    low, high = probit._bounds(probit.cutpoints(probit.coords))
    assert bool(((latent.double() > low - 1e-4) & (latent.double() <= high + 1e-4)).all())
    probs = OrdinalProbit.probabilities(fm[:5], truth)
    torch.testing.assert_close(probs.sum(1), torch.ones(5, dtype=torch.float64))


def test_ordinal_bayesian_fm_predicts_expected_ratings(split, tmp_path):
    train, test = split
    model = BayesianFM(
        4,
        fields=("user", "item"),
        output="ordinal",
        sweeps=40,
        burn_in=10,
        max_samples=10,
        device="cpu",
    ).fit(train)
    pred = model.predict_ratings(test)
    low, high = train.rating_scale
    assert ((pred >= low) & (pred <= high)).all()
    assert rmse(pred, test.rating) < rmse(
        BaselineEstimates(device="cpu").fit(train).predict_ratings(test), test.rating
    )
    assert (model.cutpoints.diff(dim=1) > 0).all()
    assert model.levels.tolist() == sorted(set(train.rating.tolist()))
    restored = ExplicitModel.load(model.save(tmp_path / "ordinal.safetensors"), device="cpu")
    np.testing.assert_array_equal(restored.predict_ratings(test), pred)
    with pytest.raises(ValueError, match="output"):
        BayesianFM(output="probit")
