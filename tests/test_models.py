"""Explicit models: reference computations, fallbacks, recommendations, checkpoints."""

import numpy as np
import pytest
import torch

from mfutils.data import Ratings, make_synthetic
from mfutils.metrics import rmse
from mfutils.models import BaselineEstimates, BiasedMF, CheckpointError, ExplicitModel, als


@pytest.fixture(scope="module")
def synthetic():
    data = make_synthetic(120, 80, 4000, rank=3, seed=0)
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(data)) < 0.2
    return data.subset(~test_mask), data.subset(test_mask)


def _ratings(triples, n_users, n_items):
    arr = np.asarray(triples, dtype=np.float64)
    return Ratings(
        user=arr[:, 0].astype(np.int64),
        item=arr[:, 1].astype(np.int64),
        rating=arr[:, 2].astype(np.float32),
        timestamp=np.zeros(len(arr), dtype=np.int64),
        n_users=n_users,
        n_items=n_items,
        user_ids=np.arange(1, n_users + 1),
        item_ids=np.arange(1, n_items + 1),
    )


# The worked 3x3 example of the seed slides: users 1-3 (rows), items 1-3 (columns).
SLIDES = [(0, 0, 2), (0, 2, 1), (1, 1, 4), (1, 2, 3), (2, 0, 1)]


def test_baseline_worked_example_from_the_slides():
    data = _ratings(SLIDES, 3, 3)
    model = BaselineEstimates(
        method="shrunk", reg_item=0, reg_user=0, device="cpu", clip=False
    ).fit(data)
    assert float(model.mu) == pytest.approx(2.2)
    # item 1 is rated 2 and 1: b_1 = 1.5 - 2.2; user 2's residuals after b_i: (0 + 1) / 2
    assert model.item_bias[0] == pytest.approx(-0.7, abs=1e-6)
    assert model.user_bias[1] == pytest.approx(0.5, abs=1e-6)
    assert model.predict([1], [0])[0] == pytest.approx(2.2 + 0.5 - 0.7, abs=1e-6)


def test_baseline_als_converges_to_regularized_least_squares():
    rng = np.random.default_rng(3)
    triples = {
        (int(u), int(i)): int(r)
        for u, i, r in zip(
            rng.integers(0, 6, 40), rng.integers(0, 5, 40), rng.integers(1, 6, 40), strict=True
        )
    }
    data = _ratings([(u, i, r) for (u, i), r in triples.items()], 6, 5)
    lam = 2.0
    model = BaselineEstimates(
        method="als", reg_item=lam, reg_user=lam, epochs=300, device="cpu", clip=False
    ).fit(data)
    # Direct solve of min sum (r - mu - b_u - b_i)^2 + lam (|b_u|^2 + |b_i|^2).
    design = np.zeros((len(data), 11))
    design[np.arange(len(data)), data.user] = 1
    design[np.arange(len(data)), 6 + data.item] = 1
    target = data.rating - data.rating.mean()
    solution = np.linalg.solve(design.T @ design + lam * np.eye(11), design.T @ target)
    np.testing.assert_allclose(model.user_bias, solution[:6], atol=1e-4)
    np.testing.assert_allclose(model.item_bias, solution[6:], atol=1e-4)


def test_als_sweep_equals_per_user_closed_form(synthetic):
    train, _ = synthetic
    model = BiasedMF(
        3, method="als", epochs=1, reg=0.1, weighted_reg=True, device="cpu", clip=False
    )
    init = BiasedMF(3, method="als", epochs=1, reg=0.1, device="cpu")
    init._build(train.n_users, train.n_items)
    q0 = init.net.item_factors.weight.detach().numpy().astype(np.float64)
    model.fit(train)
    mu = train.rating.mean()
    p = model.user_embeddings
    b_u = model.net.user_bias.weight[:, 0].detach().numpy()
    for u in range(5):  # slow reference: one ridge solve per user against the initial items
        rows = train.user == u
        x = np.hstack([q0[train.item[rows]], np.ones((rows.sum(), 1))])
        y = train.rating[rows] - mu  # item biases start at zero
        theta = np.linalg.solve(x.T @ x + 0.1 * rows.sum() * np.eye(4), x.T @ y)
        np.testing.assert_allclose(p[u], theta[:3], atol=1e-4)
        assert b_u[u] == pytest.approx(theta[3], abs=1e-4)


def test_als_solve_side_in_blocks_equals_dense_solve(monkeypatch):
    # Blocks of 3 rows, a repeated pair and a row without ratings: the same solution as the
    # dense normal equations sum_i c_i x_i x_i^T + Lambda built rating by rating.
    gen = torch.Generator().manual_seed(0)
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 4, 5, 5, 6, 7, 7, 0])
    cols = torch.tensor([0, 1, 2, 0, 3, 1, 2, 0, 1, 3, 2, 0, 1])  # (0, 1) twice
    conf = torch.rand(len(rows), generator=gen, dtype=torch.float64) + 0.5
    target = torch.randn(len(rows), generator=gen, dtype=torch.float64)
    other = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    monkeypatch.setattr(als, "BLOCK_ELEMENTS", 27)  # (f+1)^2 = 9: three rows a block
    side = als.build_side(rows, cols, 9, 4)
    theta = als.solve_side(
        side, conf, conf * target, other, reg=0.3, reg_bias=0.1, weighted_reg=True
    )
    x = torch.cat([other, torch.ones(4, 1, dtype=torch.float64)], dim=1)
    for u in range(9):
        mask = rows == u
        gram = (conf[mask, None, None] * x[cols[mask], :, None] * x[cols[mask], None, :]).sum(0)
        penalty = torch.tensor([0.3, 0.3, 0.1], dtype=torch.float64) * max(int(mask.sum()), 1)
        rhs = (conf[mask, None] * target[mask, None] * x[cols[mask]]).sum(0)
        expected = torch.linalg.solve(gram + torch.diag(penalty), rhs)
        torch.testing.assert_close(theta[u], expected)
    assert theta[3].abs().max() == 0 and theta[8].abs().max() == 0
    assert side.counts.tolist() == [3, 1, 3, 0, 1, 2, 1, 2, 0]


def test_confidence_weights_scale_the_squared_error_only(synthetic):
    # KBV09 eq. 8: sum c_ui (r_ui - r_hat_ui)^2 + lambda (...). Doubling every c_ui is the same
    # objective as halving lambda, for ALS and for the SGD trainer alike.
    train, test = synthetic
    twos = np.full(len(train), 2.0, dtype=np.float32)
    for method, epochs in (("als", 3), ("sgd", 2)):
        weighted = BiasedMF(4, method=method, epochs=epochs, reg=0.2, lr=0.005, device="cpu").fit(
            train, weights=twos
        )
        plain = BiasedMF(4, method=method, epochs=epochs, reg=0.1, lr=0.01, device="cpu").fit(train)
        np.testing.assert_allclose(
            weighted.predict(test.user, test.item), plain.predict(test.user, test.item), atol=1e-4
        )


@pytest.mark.parametrize("method", ["sgd", "adam", "als"])
def test_biased_mf_learns_low_rank_structure(synthetic, method):
    train, test = synthetic
    baseline = BaselineEstimates(device="cpu").fit(train)
    model = BiasedMF(3, method=method, epochs=40, batch_size=128, device="cpu").fit(train)
    base_rmse = rmse(baseline.predict_ratings(test), test.rating)
    assert rmse(model.predict_ratings(test), test.rating) < base_rmse - 0.02


def test_unknown_ids_fall_back_to_the_baseline(synthetic):
    train, _ = synthetic
    keep = train.user != 5  # user 5 has no training ratings
    model = BiasedMF(3, device="cpu", clip=False).fit(train.subset(keep))
    mu = float(model.mu)
    b_i = model.net.item_bias.weight[:, 0].detach().numpy()
    b_u = model.net.user_bias.weight[:, 0].detach().numpy()
    pred = model.predict([-1, 10_000, 5, 0, -1], [3, 3, 3, 10_000, -7])
    np.testing.assert_allclose(
        pred, [mu + b_i[3], mu + b_i[3], mu + b_i[3], mu + b_u[0], mu], atol=1e-6
    )
    items, _ = model.recommend([-1, 5, 10_000], k=5)
    assert items.shape == (3, 5)
    raw_item = train.item_ids[0]
    assert model.predict_raw([999_999], [raw_item])[0] == pytest.approx(mu + b_i[0], abs=1e-6)


def test_recommend_excludes_training_items_and_matches_predict(synthetic):
    train, _ = synthetic
    model = BiasedMF(3, device="cpu").fit(train)
    users = np.array([0, 1, 2, 1])
    items, scores = model.recommend(users, k=10)
    for row, u in enumerate(users):
        seen = set(train.item[train.user == u])
        assert not seen & set(items[row])
        np.testing.assert_allclose(
            scores[row], model.predict(np.full(10, u), items[row]), atol=1e-5
        )
        assert np.all(np.diff(scores[row]) <= 1e-6)
    with pytest.raises(ValueError, match="k="):
        model.recommend([0], k=0)


def test_checkpoint_round_trip_and_mismatches(synthetic, tmp_path):
    train, test = synthetic
    model = BiasedMF(3, method="sgd", epochs=3, device="cpu").fit(train)
    path = model.save(tmp_path / "mf.pt")
    loaded = ExplicitModel.load(path)
    assert isinstance(loaded, BiasedMF)
    np.testing.assert_array_equal(loaded.predict_ratings(test), model.predict_ratings(test))
    np.testing.assert_array_equal(loaded.recommend([0, 1], k=5)[0], model.recommend([0, 1], k=5)[0])
    same = BiasedMF(3, method="sgd", epochs=3, device="cpu").restore(path)
    np.testing.assert_array_equal(same.predict_ratings(test), model.predict_ratings(test))
    with pytest.raises(CheckpointError, match="another configuration"):
        BiasedMF(5, method="sgd", epochs=3, device="cpu").restore(path)
    with pytest.raises(CheckpointError, match="not a BaselineEstimates"):
        BaselineEstimates.load(path)
    with pytest.raises(CheckpointError, match="BiasedMF checkpoint"):
        BaselineEstimates(device="cpu").restore(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        ExplicitModel.load(garbage)
    assert not list(tmp_path.glob("*.tmp"))


def test_pretrained_and_frozen_embeddings(synthetic):
    train, _ = synthetic
    items = np.random.default_rng(0).normal(size=(train.n_items, 3)).astype(np.float32)
    model = BiasedMF(3, item_embeddings=items, freeze_items=True, epochs=3, device="cpu").fit(train)
    np.testing.assert_array_equal(model.item_embeddings, items)
    with pytest.raises(ValueError, match="item_embeddings has shape"):
        BiasedMF(4, item_embeddings=items, device="cpu").fit(train)


def test_logistic_output_for_binary_preferences(synthetic):
    train, test = synthetic
    liked = train.with_ratings(train.rating >= 4)
    model = BiasedMF(3, method="adam", binary=True, epochs=10, device="cpu").fit(liked)
    prob = model.predict_ratings(test)
    assert np.all((prob > 0) & (prob < 1))
    assert model.history["train_loss"].iloc[-1] < model.history["train_loss"].iloc[0]
    with pytest.raises(ValueError, match="binary=True"):
        BiasedMF(3, method="als", binary=True)


def test_bad_options_are_named(synthetic):
    train, _ = synthetic
    with pytest.raises(ValueError, match="method="):
        BiasedMF(method="svd")
    with pytest.raises(ValueError, match="weights has shape"):
        BiasedMF(3, device="cpu").fit(train, weights=np.ones(3))
    with pytest.raises(RuntimeError, match="not fitted"):
        BiasedMF(3, device="cpu").predict([0], [0])
    with pytest.raises(ValueError, match="equally long"):
        BiasedMF(3, epochs=1, device="cpu").fit(train).predict([0, 1], [0])


def test_models_run_on_the_default_device(synthetic):
    train, test = synthetic
    model = BiasedMF(3, epochs=2).fit(train)  # cuda or mps when present, else cpu
    assert model.net.user_factors.weight.device.type == model.device.type
    assert model.predict_ratings(test).shape == (len(test),)
    scores = model.score_items(torch.arange(4))
    assert scores.shape == (4, train.n_items)


def test_quality_on_ml100k_u1(ml100k):
    """Accuracy thresholds on the real fold u1 (the notebooks assert the u1..u5 means)."""
    from mfutils.data import canonical_folds

    train, test = canonical_folds(ml100k)[0]
    expected = {
        BaselineEstimates(device="cpu"): 0.955,
        BiasedMF(method="sgd", device="cpu"): 0.930,
        BiasedMF(method="als", device="cpu"): 0.932,
    }
    for model, threshold in expected.items():
        score = rmse(model.fit(train).predict_ratings(test), test.rating)
        assert score <= threshold, (type(model).__name__, model.config.get("method"), score)


@pytest.mark.parametrize(
    "make", [lambda: BaselineEstimates(device="cpu"), lambda: BiasedMF(3, epochs=2, device="cpu")]
)
def test_score_items_matches_predict_for_every_item(synthetic, make):
    train, _ = synthetic
    model = make().fit(train.subset(train.user != 4))
    users = torch.tensor([0, 4, -1, 10_000])
    scores = model.score_items(users).numpy()
    generic = ExplicitModel.score_items(model, users).numpy()  # the base class's default path
    np.testing.assert_allclose(generic, scores, atol=1e-5)
    for row, u in enumerate(users.tolist()):
        np.testing.assert_allclose(
            scores[row],
            model.predict(np.full(train.n_items, u), np.arange(train.n_items)),
            atol=1e-5,
        )
