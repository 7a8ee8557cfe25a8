"""The shared trainer: Funk steps equal autograd SGD, early stopping, divergence, options."""

import numpy as np
import pytest
import torch

from mfutils.device import get_device
from mfutils.models.nets import BiasedMFNet
from mfutils.train import (
    TrainConfig,
    TrainingDiverged,
    batch_loss,
    fit,
    sequential_step_scale,
    step_workspace,
)


def _net(n_factors=4, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return BiasedMFNet(
        7,
        9,
        n_factors,
        mu=3.0,
        reg=0.05,
        reg_bias=0.02,
        device="cpu",
        generator=generator,
        **kwargs,
    )


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
    g = torch.Generator().manual_seed(2)  # no user or item repeats: plain summed SGD
    batch["user"] = torch.randperm(7, generator=g)
    batch["item"] = torch.randperm(9, generator=g)[:7]
    batch = {key: value[:7] for key, value in batch.items()}
    manual, auto = _net(), _net()
    manual_loss = manual.funk_step(batch, 0.01)
    optimizer = torch.optim.SGD(auto.parameters(), lr=0.01)
    loss = batch_loss(auto, batch).sum()
    loss.backward()
    optimizer.step()
    assert torch.allclose(manual_loss, loss.detach(), atol=1e-5)
    for a, b in zip(manual.parameters(), auto.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_funk_step_scales_a_repeated_row_to_sequential_sgd():
    # Biases only, items frozen: user 0's bias sees k equal ratings. k sequential Funk steps
    # contract its gap to the optimum by (1 - lr h)^k, h = 1 + reg_bias; the batch step must
    # land on exactly that point, where the plain sum of the k steps overshoots.
    net = BiasedMFNet(1, 9, 0, mu=3.0, reg=0.05, reg_bias=0.02, device="cpu", freeze_items=True)
    k, lr, rating = 200, 0.03, 4.5
    batch = {
        "user": torch.zeros(k, dtype=torch.long),
        "item": torch.arange(k) % 9,
        "rating": torch.full((k,), rating),
    }
    optimum = (rating - 3.0) / (1 + 0.02)
    net.funk_step(batch, lr)
    expected = optimum * (1 - (1 - lr * 1.02) ** k)
    assert float(net.user_bias.weight[0, 0].detach()) == pytest.approx(expected, rel=1e-5)
    plain = lr * k * (rating - 3.0)  # what summing the k steps at once would give
    assert plain > 2 * optimum  # it overshoots the optimum by more than its own distance


def test_sequential_step_scale_is_one_for_single_rows_and_leaves_the_workspace_zero():
    index = torch.tensor([0, 1, 1, 2])
    curvature = torch.tensor([[1.0, 3.0], [1.0, 1.0], [1.0, 3.0], [1.0, 2.0]])
    workspace = step_workspace(3)
    scale = sequential_step_scale(index, curvature, 0.1, workspace=workspace)
    torch.testing.assert_close(scale[[0, 3]], torch.ones(2, 2))  # rows 0 and 2 occur once
    assert float(scale[1, 0]) == pytest.approx((1 - 0.9**2) / (2 * 0.1))
    assert float(scale[2, 1]) == pytest.approx((1 - 0.7**2) / (2 * 0.3))
    assert (workspace == 0).all()


def test_heavy_user_batches_converge_like_per_rating_sgd(monkeypatch):
    """A user with 800 of 1,980 ratings: summing their steps in one batch goes astray, the
    scaled step ends where per-rating SGD (batch size 1) does."""
    from mfutils.data.container import Ratings
    from mfutils.metrics import rmse
    from mfutils.models import BiasedMF, nets

    rng = np.random.default_rng(0)
    user = np.concatenate([np.zeros(800, np.int64), np.repeat(np.arange(1, 60), 20)])
    item = np.concatenate(
        [rng.choice(1000, 800, replace=False)]
        + [rng.choice(1000, 20, replace=False) for _ in range(59)]
    )
    p, q = rng.normal(0, 0.5, (60, 4)), rng.normal(0, 0.5, (1000, 4))
    score = 3.6 + (p[user] * q[item]).sum(1) + rng.normal(0, 0.5, len(user)) + 0.8 * (user == 0)
    data = Ratings(
        user=user,
        item=item,
        rating=np.clip(np.round(score), 1, 5).astype(np.float32),
        timestamp=np.zeros(len(user), np.int64),
        n_users=60,
        n_items=1000,
        user_ids=np.arange(60),
        item_ids=np.arange(1000),
    )

    def train_rmse(batch_size):
        model = BiasedMF(4, method="sgd", lr=0.03, batch_size=batch_size, epochs=3, device="cpu")
        return rmse(model.fit(data).predict_ratings(data), data.rating)

    sequential, batched = train_rmse(1), train_rmse(4096)
    assert abs(batched - sequential) < 0.01, (batched, sequential)
    monkeypatch.setattr(nets, "sequential_step_scale", lambda index, c, lr, **_: torch.ones_like(c))
    try:
        plain = train_rmse(4096)
    except TrainingDiverged:
        plain = np.inf
    assert plain > sequential + 0.3, (plain, sequential)


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
    with pytest.raises(TrainingDiverged, match="repeated k times in a batch.*a lower lr"):
        fit(net, _batch(200), config=config)
    config = TrainConfig(epochs=5, optimizer="funk", lr=1e6, progress=False)
    with pytest.raises(TrainingDiverged, match="step is too large.*Lower the learning rate"):
        fit(_net(), _batch(200), config=config)


def test_divergence_from_a_negative_penalty_names_it():
    generator = torch.Generator().manual_seed(0)
    net = BiasedMFNet(7, 9, 4, mu=3.0, reg=-50.0, reg_bias=0.02, device="cpu", generator=generator)
    config = TrainConfig(epochs=50, optimizer="funk", lr=0.05, progress=False)
    with pytest.raises(TrainingDiverged, match=r"negative penalty \(reg=-50\)"):
        fit(net, _batch(200), config=config)


def test_models_refuse_negative_penalties_before_training():
    from mfutils.data import make_synthetic
    from mfutils.models import BiasedMF, SVDpp

    data = make_synthetic(20, 15, 150, seed=0)
    with pytest.raises(ValueError, match=r"BiasedMF: reg=-0.1 must be a finite number >= 0"):
        BiasedMF(reg=-0.1, device="cpu").fit(data)
    with pytest.raises(ValueError, match=r"warm_start_options.reg=-1"):
        SVDpp(warm_start_options={"reg": -1}, device="cpu").fit(data)


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
    history = fit(
        _net(),
        _batch(100),
        config=TrainConfig(epochs=3, optimizer="funk", lr=0.1, lr_decay=0.5, progress=False),
    )
    assert history["lr"].tolist() == pytest.approx([0.1, 0.05, 0.025])


@pytest.mark.parametrize(
    "bad",
    [
        {"optimizer": "lbfgs"},
        {"loss": "hinge"},
        {"epochs": 0},
        {"lr": -1.0},
        {"reduction": "max"},
        {"optimizer": "funk", "loss": "bce"},
    ],
)
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
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else ("mps" if torch.backends.mps.is_available() else "cpu")
    )
    assert get_device().type == expected


def test_training_is_reproducible_with_a_seed():
    runs = []
    for _ in range(2):
        net = _net(seed=5)
        fit(
            net,
            _batch(300),
            config=TrainConfig(epochs=3, optimizer="adam", seed=11, progress=False),
        )
        runs.append(np.concatenate([p.detach().numpy().ravel() for p in net.parameters()]))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adagrad", "sparse_adam"])
def test_every_optimizer_lowers_the_loss(optimizer):
    net = _net(sparse=optimizer == "sparse_adam")
    lr = 0.01 if optimizer == "sgd" else 0.05
    history = fit(
        net,
        _batch(400),
        config=TrainConfig(
            epochs=15, batch_size=64, optimizer=optimizer, lr=lr, weight_decay=0.01, progress=False
        ),
    )
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
        for b in owners[i + 1 :]:
            assert not a & b  # a user's rows never straddle two batches
    again = _batches(data, config, torch.Generator().manual_seed(1))
    assert [len(b) for b in again] != [len(b) for b in batches] or not all(
        torch.equal(x, y) for x, y in zip(again, batches, strict=False)
    )
    with pytest.raises(ValueError, match="batch_by"):
        TrainConfig(batch_by="item")
