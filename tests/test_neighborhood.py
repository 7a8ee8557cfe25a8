"""Neighbourhood models: similarity and predictors against slow per-pair / per-rating references."""

import math

import numpy as np
import pytest
import torch

from mfutils.data import Ratings, make_synthetic, validation_split
from mfutils.metrics import rmse
from mfutils.models import (
    BaselineEstimates,
    ExplicitModel,
    GlobalNeighborhood,
    ItemKNN,
    shrunk_pearson,
)
from mfutils.models.neighborhood import GlobalNeighborhoodNet, residual_matrix
from mfutils.train import batch_loss


@pytest.fixture(scope="module")
def synthetic():
    data = make_synthetic(60, 40, 1200, rank=3, seed=0)
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(data)) < 0.2
    return data.subset(~test_mask), data.subset(test_mask)


def _slow_pearson(z, mask, lam, form="koren08"):
    m, n = z.shape
    sim = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            both = [u for u in range(m) if mask[u, i] and mask[u, j]]
            if i == j or len(both) < 2:
                continue
            num = sum(z[u, i] * z[u, j] for u in both)
            den = math.sqrt(sum(z[u, i] ** 2 for u in both) * sum(z[u, j] ** 2 for u in both))
            rho = num / den if den > 0 else 0.0
            n_ij = len(both) if form == "koren08" else len(both) - 1
            sim[i, j] = n_ij / (n_ij + lam) * rho
    return sim


@pytest.mark.parametrize("form", ["koren08", "handbook"])
def test_shrunk_pearson_matches_per_pair_reference(form):
    rng = np.random.default_rng(1)
    mask = rng.random((9, 6)) < 0.7
    mask[:, 5] = False
    mask[0, 5] = True  # item 5 has one rater: no pair reaches n_ij >= 2
    z = rng.normal(size=(9, 6)) * mask
    expected = _slow_pearson(z, mask, 3.0, form)
    got = shrunk_pearson(
        torch.tensor(z, dtype=torch.float32), torch.tensor(mask), shrinkage=3.0, form=form
    )
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    chunked = shrunk_pearson(
        torch.tensor(z, dtype=torch.float32),
        torch.tensor(mask),
        shrinkage=3.0,
        form=form,
        chunk_size=4,
    )
    np.testing.assert_allclose(chunked.numpy(), got.numpy(), atol=1e-6)
    assert np.all(got.numpy()[5] == 0) and np.all(np.diag(got.numpy()) == 0)


def _baseline(train):
    return BaselineEstimates(method="als", device="cpu", clip=False).fit(train)


def _slow_knn(train, model, users, items):
    base = _baseline(train)
    z, mask = (t.numpy() for t in residual_matrix(train, base))
    sim = model.similarity.numpy()
    c = model.config
    out = []
    for u, i in zip(users, items, strict=True):
        b_ui = float(base.predict([u], [i])[0])
        rated = sorted(np.flatnonzero(mask[u]), key=lambda j: -sim[i, j])[: c["k"]]
        pairs = [(sim[i, j], z[u, j]) for j in rated if sim[i, j] > 0 or not c["positive_only"]]
        den = sum(s for s, _ in pairs) + c["denominator_reg"]
        out.append(b_ui + (sum(s * r for s, r in pairs) / den if den > 0 else 0.0))
    return np.array(out)


@pytest.mark.parametrize(
    "options", [dict(k=5), dict(k=3, denominator_reg=0.5), dict(k=8, positive_only=False)]
)
def test_item_knn_matches_per_rating_reference(synthetic, options):
    train, test = synthetic
    model = ItemKNN(shrinkage=10.0, device="cpu", clip=False, **options).fit(train)
    expected = _slow_knn(train, model, test.user, test.item)
    np.testing.assert_allclose(model.predict(test.user, test.item), expected, atol=1e-4)


def _slow_global(model, train, users, items):
    net = model.net
    base = _baseline(train)
    z, mask = (t.numpy() for t in residual_matrix(train, base))
    nb = net.neighbors.numpy()
    w, c = net.weights.detach().numpy(), net.implicit.detach().numpy()
    b_u, b_i = net.user_bias.detach().numpy(), net.item_bias.detach().numpy()
    out = []
    for u, i in zip(users, items, strict=True):
        slots = [s for s, j in enumerate(nb[i]) if mask[u, j]]
        pred = float(net.mu) + b_u[u] + b_i[i]
        if slots:
            scale = len(slots) ** -0.5
            pred += scale * sum(z[u, nb[i, s]] * w[i, s] for s in slots)
            pred += scale * sum(c[i, s] for s in slots)
        out.append(pred)
    return np.array(out)


def test_global_neighborhood_matches_per_rating_reference(synthetic):
    train, test = synthetic
    model = GlobalNeighborhood(6, epochs=3, lr=0.02, device="cpu", clip=False).fit(train)
    assert np.abs(model.net.weights.detach().numpy()).max() > 0  # training moved w
    # S^k(i): the k most similar other items by the shrunk Pearson similarity.
    base = _baseline(train)
    sim = shrunk_pearson(*residual_matrix(train, base)).numpy()
    np.fill_diagonal(sim, -np.inf)
    top = np.sort(sim, axis=1)[:, ::-1][:, :6]
    chosen = np.take_along_axis(sim, model.neighbors, axis=1)
    np.testing.assert_allclose(chosen, top, atol=1e-6)
    expected = _slow_global(model, train, test.user, test.item)
    np.testing.assert_allclose(model.predict(test.user, test.item), expected, atol=1e-4)


def _net(seed=0):
    gen = torch.Generator().manual_seed(seed)
    n_users, n_items, k = 7, 6, 3
    user = torch.randint(0, n_users, (40,), generator=gen)
    item = torch.randint(0, n_items, (40,), generator=gen)
    keys = torch.unique(user * n_items + item)  # shape: (nnz,) sorted
    net = GlobalNeighborhoodNet(
        torch.stack([torch.randperm(n_items, generator=gen)[:k] for _ in range(n_items)]),
        keys,
        torch.randn(len(keys), generator=gen),
        n_users=n_users,
        mu=3.0,
        reg=0.05,
        reg_bias=0.02,
    )
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3, generator=gen)
    batch = {
        "user": torch.randint(0, n_users, (25,), generator=gen),
        "item": torch.randint(0, n_items, (25,), generator=gen),
        "rating": torch.randint(1, 6, (25,), generator=gen).float(),
    }
    return net, batch


@pytest.mark.parametrize("weights", [False, True])
def test_funk_step_equals_autograd_sgd(weights):
    manual, batch = _net()
    auto, _ = _net()
    # No user or item repeats (repeats are scaled to sequential SGD, see test_train.py).
    gen = torch.Generator().manual_seed(3)
    batch = {
        "user": torch.randperm(7, generator=gen)[:6],
        "item": torch.randperm(6, generator=gen),
        "rating": batch["rating"][:6],
    }
    if weights:
        batch["weight"] = torch.linspace(0.5, 2.0, 6)
    manual_loss = manual.funk_step(batch, 0.05)
    optimizer = torch.optim.SGD(auto.parameters(), lr=0.05)
    loss = batch_loss(auto, batch).sum()
    loss.backward()
    optimizer.step()
    assert torch.allclose(manual_loss, loss.detach(), atol=1e-5)
    for a, b in zip(manual.parameters(), auto.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_funk_step_with_one_rating_is_korens_rule():
    net, batch = _net(seed=3)
    batch = {key: value[:1] for key, value in batch.items()}
    u, i, r = int(batch["user"]), int(batch["item"]), float(batch["rating"])
    rated, res, norm = (t.detach().clone() for t in net.lookup(batch["user"], batch["item"]))
    w, c = net.weights[i].detach().clone(), net.implicit[i].detach().clone()
    b_u = float(net.user_bias[u].detach())
    err = r - float(net(batch).detach())
    net.funk_step(batch, 0.1)
    n = float(norm[0])
    expected_w = torch.where(rated[0], w + 0.1 * (n * err * res[0] - 0.05 * w), w)
    expected_c = torch.where(rated[0], c + 0.1 * (n * err - 0.05 * c), c)
    assert torch.allclose(net.weights[i], expected_w, atol=1e-6)
    assert torch.allclose(net.implicit[i], expected_c, atol=1e-6)
    new_b_u = float(net.user_bias[u].detach())
    assert new_b_u == pytest.approx(b_u + 0.1 * (err - 0.02 * b_u), abs=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ItemKNN(5, shrinkage=10.0, device="cpu"),
        lambda: GlobalNeighborhood(6, epochs=2, device="cpu"),
    ],
)
def test_predictions_do_not_depend_on_batching(synthetic, make):
    train, test = synthetic
    model = make().fit(train)
    full = model.predict(test.user, test.item)
    np.testing.assert_allclose(model.predict(test.user, test.item, batch_size=7), full, atol=1e-6)
    if isinstance(model, ItemKNN):
        model.config["predict_batch"] = 3
        np.testing.assert_allclose(model.predict(test.user, test.item), full, atol=1e-6)


def test_funk_and_autograd_training_agree(synthetic):
    train, _ = synthetic
    small = train.subset(np.arange(200))  # batches of one rating: no row repeats in a batch
    funk = GlobalNeighborhood(4, epochs=1, batch_size=1, device="cpu").fit(small)
    auto = GlobalNeighborhood(4, epochs=1, batch_size=1, optimizer="sgd", device="cpu").fit(small)
    for a, b in zip(funk.net.parameters(), auto.net.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cls", [ItemKNN, GlobalNeighborhood])
def test_unknown_ids_and_users_without_neighbours_fall_back(cls):
    # users 0-2 rate items 0-2; user 3 rates only item 3 (no co-raters: no similarity);
    # user 4 and item 4 have no training ratings.
    triples = [(u, i, 1 + (u + 2 * i) % 5) for u in range(3) for i in range(3)] + [(3, 3, 4)]
    data = Ratings.from_triples(triples, n_users=5, n_items=5)
    options = {"epochs": 2} if cls is GlobalNeighborhood else {}
    model = cls(2, device="cpu", **options).fit(data)
    base = _baseline(data)
    pred = model.predict([3, 4, 0, -1, 4, 99], [0, 0, 4, 0, 4, 0])
    assert np.isfinite(pred).all()
    if cls is ItemKNN:  # no neighbours: exactly the fixed baseline b_ui
        np.testing.assert_allclose(pred[:3], base.predict([3, 4, 0], [0, 0, 4]), atol=1e-5)
    mu = float(model.mu)
    assert pred[4] == pytest.approx(mu)  # unknown user and item
    assert pred[1] == pytest.approx(pred[3]) and pred[5] == pytest.approx(pred[3])
    items, scores = model.recommend([3, 4], k=2)
    assert np.isfinite(scores).all() and 3 not in items[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ItemKNN(5, shrinkage=10.0, denominator_reg=0.1, device="cpu"),
        lambda: GlobalNeighborhood(6, epochs=2, device="cpu"),
    ],
)
def test_checkpoint_round_trip(synthetic, make, tmp_path):
    train, test = synthetic
    model = make().fit(train)
    path = model.save(tmp_path / "model.pt")
    loaded = ExplicitModel.load(path, device="cpu")
    assert type(loaded) is type(model) and loaded.config == model.config
    np.testing.assert_array_equal(
        loaded.predict(test.user, test.item), model.predict(test.user, test.item)
    )


def test_quality_on_ml100k_u1(ml100k):
    train, test = ml100k.subset(ml100k.fold != 1), ml100k.subset(ml100k.fold == 1)
    baseline = rmse(BaselineEstimates(device="cpu").fit(train).predict_ratings(test), test.rating)
    knn = rmse(ItemKNN(device="cpu").fit(train).predict_ratings(test), test.rating)
    assert knn < baseline - 0.02 and knn < 0.935
    fit_part, valid_part = validation_split(train, fraction=0.1, seed=0)
    assert len(fit_part) + len(valid_part) == len(train)
