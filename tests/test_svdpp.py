"""SVD++ and Asymmetric-SVD against slow per-rating references of eqs. 13 and 15."""

import numpy as np
import pytest
import torch

from mfutils.data import make_synthetic
from mfutils.metrics import rmse
from mfutils.models import BaselineEstimates, ExplicitModel
from mfutils.models.svdpp import AsymmetricSVD, SVDpp
from mfutils.train import batch_loss


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(60, 40, 1500, rank=3, seed=2)
    test = np.random.default_rng(0).random(len(data)) < 0.2
    return data.subset(~test), data.subset(test)


def _reference(model, train, users, items):
    """Per-rating loops over N(u) = R(u), straight from the equations."""
    net = model.net
    q = net.item_factors.weight.detach().numpy()
    y = net.implicit.weight.detach().numpy()
    b_u = net.user_bias.weight[:, 0].detach().numpy()
    b_i = net.item_bias.weight[:, 0].detach().numpy()
    mu = float(model.mu)
    baseline = BaselineEstimates(device="cpu", clip=False).fit(train)  # the frozen b_uj
    out = []
    for u, i in zip(users, items, strict=True):
        rated = train.item[train.user == u]
        z = y[rated].sum(0) / np.sqrt(len(rated))
        if model.net.asymmetric:
            base = baseline.predict(np.full(len(rated), u), rated)
            residual = train.rating[train.user == u] - base
            x = net.explicit.weight.detach().numpy()
            z = z + (residual[:, None] * x[rated]).sum(0) / np.sqrt(len(rated))
        else:
            z = z + net.user_factors.weight[u].detach().numpy()
        out.append(mu + b_u[u] + b_i[i] + q[i] @ z)
    return np.array(out)


@pytest.mark.parametrize("cls", [SVDpp, AsymmetricSVD])
def test_prediction_matches_the_per_rating_formula(split, cls):
    train, test = split
    model = cls(4, epochs=3, batch_size=128, device="cpu", clip=False).fit(train)
    np.testing.assert_allclose(model.predict_ratings(test),
                               _reference(model, train, test.user, test.item), atol=1e-4)


@pytest.mark.parametrize("cls", [SVDpp, AsymmetricSVD])
def test_batching_and_all_item_scores_agree(split, cls):
    train, test = split
    model = cls(4, epochs=2, device="cpu").fit(train)
    whole = model.predict_ratings(test)
    pieces = model.predict(test.user, test.item, batch_size=7)
    np.testing.assert_allclose(pieces, whole, atol=1e-5)
    scores = model.score_items(torch.tensor([0, 3])).numpy()
    for row, u in enumerate([0, 3]):
        np.testing.assert_allclose(
            scores[row], model.predict(np.full(train.n_items, u), np.arange(train.n_items)),
            atol=1e-5)


def test_penalty_is_korens_per_rating_sum(split):
    train, _ = split
    model = SVDpp(3, epochs=1, reg=0.2, reg_bias=0.1, reg_implicit=0.05, device="cpu").fit(train)
    net = model.net
    batch = {k: v[:9] for k, v in train.tensors().items()}
    y2 = net.implicit.weight.detach().pow(2).sum(1).numpy()
    expected = []
    for u, i in zip(batch["user"].tolist(), batch["item"].tolist(), strict=True):
        rated = train.item[train.user == u]
        factors = float(net.user_factors.weight[u].detach().pow(2).sum()
                        + net.item_factors.weight[i].detach().pow(2).sum())
        biases = float(net.user_bias.weight[u].detach() ** 2
                       + net.item_bias.weight[i].detach() ** 2)
        expected.append(0.5 * (0.2 * factors + 0.05 * y2[rated].sum() + 0.1 * biases))
    np.testing.assert_allclose(net.penalty(batch).detach().numpy(), expected, rtol=1e-5)
    assert batch_loss(net, batch).shape == (9,)


def test_learns_beyond_the_baseline_and_handles_unknown_ids(split):
    train, test = split
    keep = train.user != 2
    model = SVDpp(3, epochs=30, batch_size=256, device="cpu", clip=False).fit(train.subset(keep))
    baseline = BaselineEstimates(device="cpu").fit(train.subset(keep))
    assert rmse(model.predict_ratings(test), test.rating) < rmse(
        baseline.predict_ratings(test), test.rating)
    mu, b_i = float(model.mu), model.net.item_bias.weight[:, 0].detach().numpy()
    np.testing.assert_allclose(model.predict([2, -1, 999], [5, 5, 5]), mu + b_i[5], atol=1e-6)
    assert np.isfinite(model.predict([0], [-3])).all()


@pytest.mark.parametrize("cls", [SVDpp, AsymmetricSVD])
def test_checkpoint_round_trip(split, tmp_path, cls):
    train, test = split
    model = cls(3, epochs=2, device="cpu").fit(train)
    loaded = ExplicitModel.load(model.save(tmp_path / "m.pt"))
    assert type(loaded) is cls
    np.testing.assert_array_equal(loaded.predict_ratings(test), model.predict_ratings(test))


def test_warm_start_begins_at_the_biased_mf_fit(split):
    from mfutils.models import BiasedMF

    train, test = split
    mf = BiasedMF(3, device="cpu", clip=False).fit(train)
    still = SVDpp(3, epochs=1, lr=1e-9, device="cpu", clip=False).fit(train)
    np.testing.assert_allclose(still.predict_ratings(test), mf.predict_ratings(test), atol=1e-4)
    assert float(still.net.implicit.weight.detach().abs().max()) < 1e-6
    cold = SVDpp(3, epochs=1, lr=1e-9, warm_start=False, device="cpu", clip=False).fit(train)
    assert float(cold.net.implicit.weight.detach().abs().max()) > 0.01


def test_asymmetric_explanations_add_up_to_the_prediction(split):
    train, _ = split
    model = AsymmetricSVD(3, epochs=2, device="cpu", clip=False).fit(train)
    user, item = 4, 7
    table = model.explain(user, item)
    assert sorted(table.item) == sorted(train.item[train.user == user])
    net = model.net
    bias = float(model.mu + net.user_bias.weight[user, 0].detach()
                 + net.item_bias.weight[item, 0].detach())
    assert bias + table.contribution.sum() == pytest.approx(model.predict([user], [item])[0],
                                                            abs=1e-4)


def test_asymmetric_new_user_needs_no_retraining(split):
    train, _ = split
    model = AsymmetricSVD(3, epochs=2, device="cpu", clip=False).fit(train)
    user = 6
    rows = train.user == user
    targets = np.arange(train.n_items)
    fresh = model.predict_new_user(train.item[rows], train.rating[rows], targets)
    known = model.predict(np.full(train.n_items, user), targets)
    # Same item vectors and bag; only the user bias differs (learned vs the baseline's estimate),
    # so the two differ by one constant.
    np.testing.assert_allclose(fresh - known, (fresh - known)[0], atol=1e-4)
    assert np.isfinite(model.predict_new_user([], [], [0, 1, -5])).all()
    with pytest.raises(ValueError, match="differ in length"):
        model.predict_new_user([1, 2], [4.0], [0])
    # Several new users at once equal one at a time.
    other = train.user == 9
    both = model.predict_new_users(
        np.r_[np.full(rows.sum(), 70), np.full(other.sum(), 71)],
        np.r_[train.item[rows], train.item[other]], np.r_[train.rating[rows], train.rating[other]],
        np.r_[np.full(5, 71), np.full(5, 70)], np.r_[targets[:5], targets[:5]])
    np.testing.assert_allclose(both[5:], fresh[:5], atol=1e-5)
    alone = model.predict_new_user(train.item[other], train.rating[other], targets[:5])
    np.testing.assert_allclose(both[:5], alone, atol=1e-5)
