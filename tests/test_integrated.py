"""The integrated model (Koren 2008 eq. 16) against its two tiers computed separately."""

import numpy as np
import pytest
import torch

from mfutils.data import make_synthetic
from mfutils.models import ExplicitModel
from mfutils.models.integrated import IntegratedModel
from mfutils.train import batch_loss

OPTIONS = {"svdpp_options": {"epochs": 2}, "neighborhood_options": {"epochs": 2}}


@pytest.fixture(scope="module")
def fitted():
    data = make_synthetic(60, 40, 1500, rank=3, seed=5)
    test = np.random.default_rng(1).random(len(data)) < 0.2
    train = data.subset(~test)
    model = IntegratedModel(
        3, k=10, epochs=2, batch_size=256, device="cpu", clip=False, **OPTIONS
    ).fit(train)
    return model, train, data.subset(test)


def test_prediction_is_the_sum_of_the_three_tiers(fitted):
    model, train, test = fitted
    factors, neighbors = model.net.factors, model.net.neighbors
    user = torch.as_tensor(test.user)
    item = torch.as_tensor(test.item)
    with torch.no_grad():
        z = factors.user_vectors(user)  # p_u + |N(u)|^-1/2 sum y_j, one row per rating
        expected = (
            float(model.mu)
            + factors.user_bias.weight[user, 0]
            + factors.item_bias.weight[item, 0]
            + (factors.item_factors.weight[item] * z).sum(1)
            + neighbors.neighborhood(user, item)
        )
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


def test_stagewise_fit_starts_at_svdpp(fitted):
    """With a vanishing step 2 and no joint passes the model is the SVD++ fit of step 1."""
    from mfutils.models import SVDpp

    _, train, test = fitted
    still = IntegratedModel(
        3,
        k=10,
        neighbor_epochs=1,
        neighbor_lr=1e-12,
        device="cpu",
        clip=False,
        svdpp_options={"epochs": 2},
    ).fit(train)
    svdpp = SVDpp(3, epochs=2, device="cpu", clip=False).fit(train)
    np.testing.assert_allclose(still.predict_ratings(test), svdpp.predict_ratings(test), atol=1e-4)
    assert list(still.history.stage.unique()) == ["neighbourhood"]


def test_step_two_is_korens_rule_on_the_svdpp_offset(fitted):
    """One funk step with a fixed offset and frozen biases equals autograd SGD on
    0.5 (r - offset - nbr)^2 + penalty: only w and c move."""
    model, train, _ = fitted
    net = model.net.neighbors
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    rows = torch.as_tensor(np.unique(train.item, return_index=True)[1][:16])  # distinct items
    batch = {k: v[rows] for k, v in train.tensors().items() if k in ("user", "item", "rating")}
    batch["offset"] = torch.linspace(3.0, 4.0, 16)
    loss = batch_loss(net, batch).sum()
    grads = dict(
        zip(
            ("weights", "implicit"),
            torch.autograd.grad(loss, [net.weights, net.implicit]),
            strict=True,
        )
    )
    net.funk_step(batch, 0.05)
    for name, p in net.named_parameters():
        expected = before[name] - 0.05 * grads[name] if name in grads else before[name]
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        net.weights.copy_(before["weights"])
        net.implicit.copy_(before["implicit"])


def test_tiers_schedule_and_bad_options():
    data = make_synthetic(40, 30, 700, rank=2, seed=1)
    model = IntegratedModel(2, k=5, schedule="tiers", epochs=1, device="cpu", **OPTIONS).fit(data)
    assert list(model.history.stage.unique()) == ["joint"]
    assert np.isfinite(model.predict_ratings(data)).all()
    with pytest.raises(ValueError, match="schedule"):
        IntegratedModel(schedule="joint")
    with pytest.raises(ValueError, match="user_attributes"):
        IntegratedModel(svdpp_options={"user_attributes": ("age",)})
