"""The integrated model (Koren 2008 eq. 16) against its two tiers computed separately."""

import numpy as np
import pytest
import torch

from mfutils.data import make_synthetic
from mfutils.models import ExplicitModel
from mfutils.models.integrated import IntegratedModel

OPTIONS = {"svdpp_options": {"epochs": 2}, "neighborhood_options": {"epochs": 2}}


@pytest.fixture(scope="module")
def fitted():
    data = make_synthetic(60, 40, 1500, rank=3, seed=5)
    test = np.random.default_rng(1).random(len(data)) < 0.2
    train = data.subset(~test)
    model = IntegratedModel(3, k=10, epochs=2, batch_size=256, device="cpu", clip=False,
                            **OPTIONS).fit(train)
    return model, train, data.subset(test)


def test_prediction_is_the_sum_of_the_three_tiers(fitted):
    model, train, test = fitted
    factors, neighbors = model.net.factors, model.net.neighbors
    user = torch.as_tensor(test.user)
    item = torch.as_tensor(test.item)
    with torch.no_grad():
        z = factors.user_vectors(user)  # p_u + |N(u)|^-1/2 sum y_j, one row per rating
        expected = (float(model.mu) + factors.user_bias.weight[user, 0]
                    + factors.item_bias.weight[item, 0]
                    + (factors.item_factors.weight[item] * z).sum(1)
                    + neighbors.neighborhood(user, item))
    np.testing.assert_allclose(model.predict_ratings(test), expected.numpy(), atol=1e-5)


def test_neighbourhood_biases_stay_out_of_training(fitted):
    model, _, _ = fitted
    params = {name for name, p in model.net.named_parameters() if p.requires_grad}
    assert "neighbors.user_bias" not in params and "factors.user_bias.weight" in params
    assert {"neighbors.weights", "neighbors.implicit", "factors.implicit.weight"} <= params


def test_unknown_ids_and_checkpoint_round_trip(fitted, tmp_path):
    model, _, test = fitted
    mu = float(model.mu)
    b_i = model.net.factors.item_bias.weight[:, 0].detach().numpy()
    np.testing.assert_allclose(model.predict([-1, 10_000], [4, 4]), [mu + b_i[4]] * 2, atol=1e-6)
    loaded = ExplicitModel.load(model.save(tmp_path / "integrated.pt"))
    np.testing.assert_array_equal(loaded.predict_ratings(test), model.predict_ratings(test))
    items, _ = loaded.recommend([0, 1], k=5)
    assert items.shape == (2, 5)


def test_all_item_scores_equal_the_predictions(fitted):
    model, train, _ = fitted
    users = torch.tensor([0, 3, 3, -1, 10_000, 7])
    scores = model.score_items(users, chunk_size=4).numpy()  # two chunks
    for row, u in enumerate(users.tolist()):
        expected = model.predict(np.full(train.n_items, u), np.arange(train.n_items))
        np.testing.assert_allclose(scores[row], expected, atol=1e-5)


def test_dense_and_sorted_key_lookups_agree(fitted, monkeypatch):
    from mfutils.models import neighborhood

    model, _, test = fitted
    net = model.net.neighbors
    user, item = torch.as_tensor(test.user), torch.as_tensor(test.item)
    assert net.position is not None  # small data: the dense table
    dense = net.lookup(user, item)
    monkeypatch.setattr(neighborhood, "DENSE_LOOKUP_CELLS", 0)
    net._index_keys()
    assert net.position is None
    for a, b in zip(dense, net.lookup(user, item), strict=True):
        torch.testing.assert_close(a, b)
    cached = net.lookup_columns(user, item, chunk_size=7)
    for a, name in zip(dense, neighborhood.LOOKUP_COLUMNS, strict=True):
        torch.testing.assert_close(a, cached[name])
    monkeypatch.undo()
    net._index_keys()
