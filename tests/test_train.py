"""The shared trainer: Funk steps equal autograd SGD, early stopping, divergence, options."""

import numpy as np
import pytest
import torch

from mfutils.device import get_device
from mfutils.models.nets import BiasedMFNet
from mfutils.train import TrainConfig, TrainingDiverged, batch_loss, fit


def _net(n_factors=4, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return BiasedMFNet(7, 9, n_factors, mu=3.0, reg=0.05, reg_bias=0.02, device="cpu",
                       generator=generator, **kwargs)


def _batch(n=32, seed=1, weights=False):
    g = torch.Generator().manual_seed(seed)
    batch = {
        "user": torch.randint(0, 7, (n,), generator=g),
        "item": torch.randint(0, 9, (n,), generator=g),
        "rating": torch.randint(1, 6, (n,), generator=g).float(),
    }
    if weights:
        batch["weight"] = torch.rand(n, generator=g) + 0.5
    return batch


@pytest.mark.parametrize("weights", [False, True])
def test_funk_step_equals_autograd_sgd_on_summed_objective(weights):
    batch = _batch(weights=weights)
    manual, auto = _net(), _net()
    manual_loss = manual.funk_step(batch, 0.01)
    optimizer = torch.optim.SGD(auto.parameters(), lr=0.01)
    loss = batch_loss(auto, batch).sum()
    loss.backward()
    optimizer.step()
    assert torch.allclose(manual_loss, loss.detach(), atol=1e-5)
    for a, b in zip(manual.parameters(), auto.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_funk_step_with_batch_size_one_is_funks_rule():
    net = _net()
    batch = {k: v[:1] for k, v in _batch().items()}
    u, i, r = int(batch["user"]), int(batch["item"]), float(batch["rating"])
    p, q = net.user_factors.weight[u].detach().clone(), net.item_factors.weight[i].detach().clone()
    b_u, b_i = float(net.user_bias.weight[u].detach()), float(net.item_bias.weight[i].detach())
    err = r - (3.0 + b_u + b_i + float(p @ q))
    net.funk_step(batch, 0.1)
    assert torch.allclose(net.user_factors.weight[u], p + 0.1 * (err * q - 0.05 * p), atol=1e-6)
    assert torch.allclose(net.item_factors.weight[i], q + 0.1 * (err * p - 0.05 * q), atol=1e-6)
    new_b_u = float(net.user_bias.weight[u].detach())
    assert new_b_u == pytest.approx(b_u + 0.1 * (err - 0.02 * b_u), abs=1e-6)


def test_frozen_side_is_not_updated_by_funk_or_autograd():
    for optimizer in ("funk", "adam"):
        net = _net(freeze_items=True)
        before = net.item_factors.weight.clone()
        fit(net, _batch(200), config=TrainConfig(epochs=2, optimizer=optimizer, progress=False))
        assert torch.equal(net.item_factors.weight, before)


def test_divergence_stops_with_advice():
    net = _net()
    config = TrainConfig(epochs=5, optimizer="sgd", lr=1e6, progress=False)
    with pytest.raises(TrainingDiverged, match="Lower the learning rate"):
        fit(net, _batch(200), config=config)


def test_nan_labels_are_rejected_before_training():
    batch = _batch()
    batch["rating"][3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit(_net(), batch, config=TrainConfig(progress=False))


def test_early_stopping_restores_the_best_epoch():
    train, valid = _batch(300, seed=2), _batch(100, seed=3)
    net = _net(n_factors=8)
    config = TrainConfig(epochs=40, optimizer="adam", lr=0.05, patience=3, progress=False)
    history = fit(net, train, config=config, valid=valid)
    best = history["valid"].min()
    assert history.attrs["best_epoch"] == int(history.loc[history["valid"].idxmin(), "epoch"])
    assert len(history) < 40  # stopped early: a 7x9 toy overfits quickly
    from mfutils.train import rmse_metric

    assert rmse_metric(net, valid) == pytest.approx(best, rel=1e-6)
    assert {"epoch", "train_loss", "valid", "lr", "seconds"} <= set(history.columns)


def test_lr_decay_and_history():
    history = fit(_net(), _batch(100), config=TrainConfig(
        epochs=3, optimizer="funk", lr=0.1, lr_decay=0.5, progress=False))
    assert history["lr"].tolist() == pytest.approx([0.1, 0.05, 0.025])


@pytest.mark.parametrize("bad", [
    {"optimizer": "lbfgs"}, {"loss": "hinge"}, {"epochs": 0}, {"lr": -1.0},
    {"reduction": "max"}, {"optimizer": "funk", "loss": "bce"},
])
def test_bad_config_is_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_funk_needs_a_net_with_funk_step():
    net = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="funk_step"):
        fit(net, _batch(), config=TrainConfig(optimizer="funk", progress=False))


def test_device_helper(monkeypatch):
    monkeypatch.setenv("MFUTILS_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")
    monkeypatch.delenv("MFUTILS_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device().type == expected


def test_training_is_reproducible_with_a_seed():
    runs = []
    for _ in range(2):
        net = _net(seed=5)
        fit(net, _batch(300), config=TrainConfig(epochs=3, optimizer="adam", seed=11,
                                                progress=False))
        runs.append(np.concatenate([p.detach().numpy().ravel() for p in net.parameters()]))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adagrad", "sparse_adam"])
def test_every_optimizer_lowers_the_loss(optimizer):
    net = _net(sparse=optimizer == "sparse_adam")
    lr = 0.01 if optimizer == "sgd" else 0.05
    history = fit(net, _batch(400), config=TrainConfig(
        epochs=15, batch_size=64, optimizer=optimizer, lr=lr, weight_decay=0.01,
        progress=False))
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_user_grouped_batches_keep_each_users_rows_together():
    from mfutils.train import _batches

    data = _batch(500, seed=4)
    config = TrainConfig(batch_size=64, batch_by="user", progress=False)
    batches = _batches(data, config, torch.Generator().manual_seed(0))
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(500))
    owners = [set(data["user"][b].tolist()) for b in batches]
    for i, a in enumerate(owners):
        for b in owners[i + 1:]:
            assert not a & b  # a user's rows never straddle two batches
    again = _batches(data, config, torch.Generator().manual_seed(1))
    assert [len(b) for b in again] != [len(b) for b in batches] or not all(
        torch.equal(x, y) for x, y in zip(again, batches, strict=False))
    with pytest.raises(ValueError, match="batch_by"):
        TrainConfig(batch_by="item")
