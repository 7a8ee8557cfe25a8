"""SVD++ and Asymmetric-SVD against slow per-rating references of eqs. 13 and 15."""

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from mfutils.data import Ratings, make_synthetic
from mfutils.features import encode_user_attributes
from mfutils.metrics import rmse
from mfutils.models import BaselineEstimates, ExplicitModel
from mfutils.models.svdpp import SVDPP_WARM_START, AsymmetricSVD, SVDpp
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
    np.testing.assert_allclose(
        model.predict_ratings(test), _reference(model, train, test.user, test.item), atol=1e-4
    )


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
            scores[row],
            model.predict(np.full(train.n_items, u), np.arange(train.n_items)),
            atol=1e-5,
        )


def test_penalty_is_korens_per_rating_sum(split):
    train, _ = split
    model = SVDpp(3, epochs=1, reg=0.2, reg_bias=0.1, reg_implicit=0.05, device="cpu").fit(train)
    net = model.net
    batch = {k: v[:9] for k, v in train.tensors().items()}
    y2 = net.implicit.weight.detach().pow(2).sum(1).numpy()
    expected = []
    for u, i in zip(batch["user"].tolist(), batch["item"].tolist(), strict=True):
        rated = train.item[train.user == u]
        factors = float(
            net.user_factors.weight[u].detach().pow(2).sum()
            + net.item_factors.weight[i].detach().pow(2).sum()
        )
        biases = float(
            net.user_bias.weight[u].detach() ** 2 + net.item_bias.weight[i].detach() ** 2
        )
        expected.append(0.5 * (0.2 * factors + 0.05 * y2[rated].sum() + 0.1 * biases))
    np.testing.assert_allclose(net.penalty(batch).detach().numpy(), expected, rtol=1e-5)
    assert batch_loss(net, batch).shape == (9,)


def test_learns_beyond_the_baseline_and_handles_unknown_ids(split):
    train, test = split
    keep = train.user != 2
    model = SVDpp(3, epochs=30, batch_size=256, device="cpu", clip=False).fit(train.subset(keep))
    baseline = BaselineEstimates(device="cpu").fit(train.subset(keep))
    assert rmse(model.predict_ratings(test), test.rating) < rmse(
        baseline.predict_ratings(test), test.rating
    )
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
    mf = BiasedMF(3, device="cpu", clip=False, **SVDPP_WARM_START).fit(train)
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
    bias = float(
        model.mu + net.user_bias.weight[user, 0].detach() + net.item_bias.weight[item, 0].detach()
    )
    assert bias + table.contribution.sum() == pytest.approx(
        model.predict([user], [item])[0], abs=1e-4
    )


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
        np.r_[train.item[rows], train.item[other]],
        np.r_[train.rating[rows], train.rating[other]],
        np.r_[np.full(5, 71), np.full(5, 70)],
        np.r_[targets[:5], targets[:5]],
    )
    np.testing.assert_allclose(both[5:], fresh[:5], atol=1e-5)
    alone = model.predict_new_user(train.item[other], train.rating[other], targets[:5])
    np.testing.assert_allclose(both[:5], alone, atol=1e-5)


# ---------------------------------------------------------------------- user attributes
ATTRIBUTES = ("age", "gender", "occupation")


@pytest.fixture(scope="module")
def with_attributes(split):
    train, test = split
    keep = ~np.isin(train.user, [2, 5])  # users 2 and 5 have no training rating: cold start
    model = SVDpp(
        4,
        user_attributes=ATTRIBUTES,
        attribute_biases=True,
        reg_attributes=0.001,
        epochs=4,
        batch_size=128,
        device="cpu",
        clip=False,
    ).fit(train.subset(keep))
    return model, train.subset(keep), test


def test_attribute_encoding_buckets_age_and_offsets_fields(split):
    train, _ = split
    ids, labels = encode_user_attributes(train.users, ATTRIBUTES)
    assert ids.shape == (train.n_users, 3)
    for column, name in enumerate(ATTRIBUTES):  # each attribute has its own block of ids
        assert all(labels[i].startswith(f"{name}:") for i in np.unique(ids[:, column]))
    age = train.users["age"].to_numpy()
    expected = np.select(
        [age < 18, age < 25, age < 35, age < 45, age < 50, age < 56],
        ["<18", "18-24", "25-34", "35-44", "45-49", "50-55"],
        "56+",
    )
    assert [labels[i] for i in ids[:, 0]] == [f"age:{e}" for e in expected]


def test_attribute_prediction_matches_the_per_rating_formula(with_attributes):
    model, train, test = with_attributes
    net = model.net
    y_a = net.attribute_factors.weight.detach().numpy()
    b_a = net.attribute_bias.weight[:, 0].detach().numpy()
    ids = net.attributes.numpy()
    users = np.r_[test.user, 2, 5]
    items = np.r_[test.item, 3, 4]
    expected = _reference_svdpp_without_attributes(model, train, users, items)
    q = net.item_factors.weight.detach().numpy()
    for row, (u, i) in enumerate(zip(users, items, strict=True)):
        expected[row] += b_a[ids[u]].sum() + q[i] @ y_a[ids[u]].sum(0)  # + sum b_a + q_i^T sum y_a
    np.testing.assert_allclose(model.predict(users, items), expected, atol=1e-4)
    scores = model.score_items(torch.tensor([2, 0])).numpy()
    np.testing.assert_allclose(
        scores[0], model.predict(np.full(train.n_items, 2), np.arange(train.n_items)), atol=1e-5
    )


def _reference_svdpp_without_attributes(model, train, users, items):
    """mu + b_u + b_i + q_i^T (p_u + |N(u)|^-1/2 sum y_j); users without ratings: mu + b_i."""
    net = model.net
    q, y = net.item_factors.weight.detach().numpy(), net.implicit.weight.detach().numpy()
    p = net.user_factors.weight.detach().numpy()
    b_u, b_i = net.user_bias.weight[:, 0].detach().numpy(), net.item_bias.weight[:, 0].detach()
    out = []
    for u, i in zip(users, items, strict=True):
        rated = train.item[train.user == u]
        if len(rated) == 0:
            out.append(float(model.mu) + float(b_i[i]))
            continue
        z = p[u] + y[rated].sum(0) / np.sqrt(len(rated))
        out.append(float(model.mu) + b_u[u] + float(b_i[i]) + q[i] @ z)
    return np.array(out)


def test_cold_users_are_scored_through_their_attributes(with_attributes):
    model, _, _ = with_attributes
    b_i = model.net.item_bias.weight[:, 0].detach().numpy()
    cold = model.predict([2, 2, 5], [0, 1, 7])
    assert np.isfinite(cold).all()
    assert np.abs(cold - (float(model.mu) + b_i[[0, 1, 7]])).max() > 1e-3  # not mu + b_i
    # ids outside the id space still get mu + b_i
    np.testing.assert_allclose(
        model.predict([-1, 999], [7, 7]), float(model.mu) + b_i[7], atol=1e-6
    )


def test_one_sgd_step_on_an_attribute_vector(with_attributes):
    """d loss / d y_a = -(e_ui q_i - lambda_a y_a) and d loss / d b_a = -(e_ui - lambda_a b_a)
    for a in A(u): Koren's SGD rules for y_a (and the attribute biases)."""
    model, train, _ = with_attributes
    net = model.net
    batch = {k: v[:1] for k, v in train.tensors().items() if k != "timestamp"}
    u, i = int(batch["user"][0]), int(batch["item"][0])
    net.zero_grad()
    batch_loss(net, batch).sum().backward()
    with torch.no_grad():
        err = float(batch["rating"][0] - net(batch)[0])
        a = net.attributes[u]
        y_a = net.attribute_factors.weight[a]  # shape: (3, f)
        expected = -(err * net.item_factors.weight[i] - net.reg_attributes * y_a)
        b_a = net.attribute_bias.weight[a, 0]  # shape: (3,)
    np.testing.assert_allclose(
        net.attribute_factors.weight.grad[a].numpy(), expected.numpy(), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        net.attribute_bias.weight.grad[a, 0].numpy(),
        (-(err - net.reg_attributes * b_a)).numpy(),
        rtol=1e-4,
        atol=1e-6,
    )
    net.zero_grad()


def test_attributes_need_a_users_table_and_survive_a_checkpoint(with_attributes, tmp_path):
    model, train, test = with_attributes
    toy = Ratings.from_triples([(0, 0, 4.0), (1, 1, 3.0), (1, 0, 5.0)])
    with pytest.raises(ValueError, match="user_attributes"):
        SVDpp(2, user_attributes=ATTRIBUTES, epochs=1, device="cpu").fit(toy)
    with pytest.raises(ValueError, match="user_attributes.*zipcode"):
        SVDpp(2, user_attributes=("zipcode",), epochs=1, device="cpu").fit(train)
    with pytest.raises(ValueError, match="user_attributes"):
        SVDpp(2, user_attributes="age")
    loaded = ExplicitModel.load(model.save(tmp_path / "attributes.pt"))
    users = np.r_[test.user, 2]
    items = np.r_[test.item, 0]
    np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))


def test_attribute_warm_start_keeps_the_biased_mf_predictions(split):
    """y_a, b_a start as the regression of p_u, b_u on A(u); p_u, b_u keep the rest."""
    from mfutils.models import BiasedMF

    train, test = split
    mf = BiasedMF(3, device="cpu", clip=False, **SVDPP_WARM_START).fit(train)
    still = SVDpp(
        3,
        user_attributes=ATTRIBUTES,
        attribute_biases=True,
        epochs=1,
        lr=1e-9,
        device="cpu",
        clip=False,
    ).fit(train)
    np.testing.assert_allclose(still.predict_ratings(test), mf.predict_ratings(test), atol=1e-4)
    assert float(still.net.attribute_factors.weight.detach().abs().max()) > 1e-3
    plain = SVDpp(3, user_attributes=ATTRIBUTES, epochs=1, device="cpu").fit(train)
    assert not hasattr(plain.net, "attribute_bias")


def test_auto_attributes_are_those_the_users_table_carries(split, caplog, tmp_path):
    train, test = split
    options = dict(epochs=1, batch_size=128, device="cpu")
    auto = SVDpp(3, user_attributes="auto", **options).fit(train)
    explicit = SVDpp(3, user_attributes=ATTRIBUTES, **options).fit(train)
    assert auto.user_attributes_ == ATTRIBUTES
    np.testing.assert_array_equal(auto.predict_ratings(test), explicit.predict_ratings(test))
    with caplog.at_level(logging.INFO, logger="mfutils.features"):
        bare = SVDpp(3, user_attributes="auto", **options).fit(replace(train, users=None))
    assert bare.user_attributes_ == () and not bare.net.has_attributes
    assert [r.getMessage() for r in caplog.records if r.name == "mfutils.features"] == [
        f"user attribute {a!r} left out: the Ratings has no users side table" for a in ATTRIBUTES
    ]
    plain = SVDpp(3, **options).fit(train)  # the default: no attributes
    np.testing.assert_array_equal(bare.predict_ratings(test), plain.predict_ratings(test))
    partial = SVDpp(3, user_attributes="auto", **options).fit(
        replace(train, users=train.users.drop(columns="age"))
    )
    assert partial.user_attributes_ == ("gender", "occupation")
    for model in (auto, bare, partial):
        loaded = ExplicitModel.load(model.save(tmp_path / "auto.pt"))
        assert loaded.user_attributes_ == model.user_attributes_
        assert loaded.config["user_attributes"] == "auto"
        np.testing.assert_array_equal(
            loaded.predict(np.r_[test.user, 2], np.r_[test.item, 0]),
            model.predict(np.r_[test.user, 2], np.r_[test.item, 0]),
        )
