"""NNMF: shapes, the paper's objective, alternating optimisation, fallbacks, the stacked base."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from mfutils.data import make_synthetic
from mfutils.metrics import rmse
from mfutils.models import NNMF, ExplicitModel
from mfutils.train import TrainConfig, capped_batch_size, fit


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(120, 80, 5000, rank=3, seed=0)
    test = np.random.default_rng(0).random(len(data)) < 0.2
    test |= data.user == 4  # user 4 has no training rating
    return data.subset(~test), data.subset(test)


@pytest.fixture(scope="module")
def fitted(split):
    train, _ = split
    return NNMF(
        n_factors=3,
        prime_dim=5,
        hidden=(8, 8),
        reg=1.0,
        epochs=40,
        batch_size=256,
        lr=3e-3,
        patience=8,
        base=None,  # the paper's model
        device="cpu",
    ).fit(train)


SMALL = {"n_factors": 3, "prime_dim": 5, "hidden": (8, 8), "reg": 1.0, "batch_size": 256}


@pytest.fixture(scope="module")
def stacked(split):
    train, _ = split
    return NNMF(**SMALL, epochs=40, lr=3e-3, patience=8, device="cpu").fit(train)


def test_network_input_is_u_v_and_the_elementwise_product(fitted):
    net = fitted.net
    assert net.mlp[0].in_features == 2 * 3 + 5  # 2D + D'
    user, item = torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7])
    u, v = net.user_latent(user), net.item_latent(item)
    up, vp = net.user_prime(user), net.item_prime(item)
    expected = net.mlp(torch.cat([u, v, up * vp], 1))[:, 0]  # K = 1: U'_n * V'_m
    torch.testing.assert_close(net({"user": user, "item": item}), expected)


def test_rank_k_prime_block_is_d_prime_inner_products():
    net = NNMF(n_factors=2, prime_dim=4, prime_rank=3, hidden=(5,), device="cpu")
    net._build(6, 7)
    inner = net.net
    u_p, v_p = torch.randn(2, 12), torch.randn(2, 12)
    with torch.no_grad():
        out = inner.predict_from(torch.zeros(2, 2), torch.zeros(2, 2), u_p, v_p)
        prime = torch.einsum("bdk,bdk->bd", u_p.view(2, 4, 3), v_p.view(2, 4, 3))
        ref = inner.mlp(torch.cat([torch.zeros(2, 4), prime], 1))[:, 0]
    torch.testing.assert_close(out, ref)


def test_penalty_over_an_epoch_is_the_papers_regularizer(split, fitted):
    train, _ = split
    net = copy.deepcopy(fitted.net)  # the fitted net's shares count its 98% fit part
    user_counts = torch.as_tensor(train.user_counts()).float()
    item_counts = torch.as_tensor(train.item_counts()).float()
    with torch.no_grad():
        net.user_share.copy_(1 / user_counts.clamp(min=1))
        net.item_share.copy_(1 / item_counts.clamp(min=1))
        total = net.penalty(train.tensors()).sum()
        rated_u, rated_i = user_counts > 0, item_counts > 0
        users = net.user_latent.weight.pow(2).sum(1) + net.user_prime.weight.pow(2).sum(1)
        items = net.item_latent.weight.pow(2).sum(1) + net.item_prime.weight.pow(2).sum(1)
        paper = net.reg * (users[rated_u].sum() + items[rated_i].sum())
    torch.testing.assert_close(total, 0.5 * paper, rtol=1e-4, atol=1e-4)


class _Product(nn.Module):
    """``a * b`` for the alternating-step check."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(1.0)), nn.Parameter(torch.tensor(2.0))

    def forward(self, batch):
        return self.a * self.b * batch["x"]

    def parameter_blocks(self):
        return [[self.a], [self.b]]


def test_alternating_steps_update_one_block_after_the_other():
    net = _Product()
    data = {
        "user": torch.zeros(1, dtype=torch.long),
        "x": torch.ones(1),
        "rating": torch.tensor([3.0]),
    }
    fit(
        net,
        data,
        config=TrainConfig(epochs=1, optimizer="sgd", lr=0.1, alternate=True, progress=False),
    )
    a0, b0, lr = 1.0, 2.0, 0.1
    a1 = a0 + lr * (3 - a0 * b0) * b0  # step on a with b fixed
    b1 = b0 + lr * (3 - a1 * b0) * a1  # then on b with the new a, loss recomputed
    assert float(net.a.detach()) == pytest.approx(a1)
    assert float(net.b.detach()) == pytest.approx(b1)
    with pytest.raises(ValueError, match="parameter_blocks"):
        fit(nn.Linear(1, 1), data, config=TrainConfig(alternate=True, progress=False))


def test_training_beats_the_mean_and_unknown_ids_fall_back(split, fitted):
    train, test = split
    assert (
        rmse(fitted.predict_ratings(test), test.rating)
        < rmse(np.full(len(test), train.global_mean), test.rating) - 0.05
    )
    assert fitted.history["valid"].notna().all()  # 2% held out for early stopping
    pred = fitted.predict([4, -1, 10_000, 0], [0, 0, 0, -1])
    assert np.isfinite(pred).all()
    assert pred[0] == pytest.approx(pred[1]) == pytest.approx(pred[2])  # the average user
    items, _ = fitted.recommend([4, -1], k=5)
    assert items.shape == (2, 5)


def test_checkpoint_round_trip(split, fitted, tmp_path):
    _, test = split
    loaded = ExplicitModel.load(fitted.save(tmp_path / "nnmf.pt"))
    np.testing.assert_array_equal(loaded.predict_ratings(test), fitted.predict_ratings(test))


def test_the_stacked_network_corrects_a_frozen_biased_mf(split, stacked):
    train, test = split
    net = stacked.net
    user, item = torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7])
    base = net.base
    mf = (
        base.mu
        + base.user_bias.weight[user, 0]
        + base.item_bias.weight[item, 0]
        + (base.user_factors.weight[user] * base.item_factors.weight[item]).sum(1)
    )
    f = net.predict_from(
        net.user_latent(user), net.item_latent(item), net.user_prime(user), net.item_prime(item)
    )
    torch.testing.assert_close(net({"user": user, "item": item}), mf + f)
    assert not any(p.requires_grad for p in base.parameters())
    assert stacked.history.attrs["valid_start"] > 0
    assert np.isfinite(stacked.predict([4, -1, 0], [0, 0, -1])).all()
    assert rmse(stacked.predict_ratings(test), test.rating) < rmse(
        np.full(len(test), train.global_mean), test.rating
    )


def test_the_base_alone_is_kept_when_the_network_only_hurts(split):
    train, test = split
    model = NNMF(**SMALL, epochs=2, lr=1e-9, patience=1, clip=False, device="cpu").fit(train)
    assert model.history.attrs["best_epoch"] == 0  # an untrained f_theta: its random output
    assert not model.net.mlp[-1].weight.any() and not model.net.mlp[-1].bias.any()
    user = torch.as_tensor(test.user)
    item = torch.as_tensor(test.item)
    base = model.net.base_score(user, item, model.user_known[user], model.item_known[item])
    np.testing.assert_allclose(model.predict_ratings(test), base.numpy(), rtol=1e-6)


def test_stacked_checkpoint_round_trip(split, stacked, tmp_path):
    _, test = split
    loaded = ExplicitModel.load(stacked.save(tmp_path / "stacked.safetensors"))
    np.testing.assert_array_equal(loaded.predict_ratings(test), stacked.predict_ratings(test))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="prime_dim=0"):
        NNMF(prime_dim=0)
    with pytest.raises(ValueError, match="valid_fraction="):
        NNMF(valid_fraction=1.0)
    with pytest.raises(ValueError, match="reg="):
        NNMF(reg=-1)
    with pytest.raises(ValueError, match="base='svd'"):
        NNMF(base="svd")


def test_batch_size_is_capped_by_the_data_size():
    assert capped_batch_size(80_000, 1024, 64) == 1024  # ML-100K: unchanged
    assert capped_batch_size(16_000, 1024, 64) == 250  # 64 steps, not 16
    assert capped_batch_size(10, 1024, 64) == 1
    assert capped_batch_size(16_000, 1024, None) == 1024
    with pytest.raises(ValueError, match="min_batches=0"):
        NNMF(min_batches=0)
    with pytest.raises(ValueError, match="min_valid="):
        NNMF(min_valid=-1)
