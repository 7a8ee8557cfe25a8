"""timeSVD++ against a slow per-rating reference of Koren 2009 / Handbook §5.3.3."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from mfutils.data import make_synthetic
from mfutils.models import ExplicitModel
from mfutils.models.svdpp import SVDpp
from mfutils.models.timesvdpp import TIME_PARAMETERS, TimeSVDpp
from mfutils.train import batch_loss

DAY = 86_400
ALL_ON = dict(
    item_bins=3, user_drift=True, user_day_bias=True, scale=True, factor_drift=True, factor_day=True
)
ALL_OFF = dict(
    item_bins=None,
    user_drift=False,
    user_day_bias=False,
    scale=False,
    factor_drift=False,
    factor_day=False,
)
TERMS = ["item_bins", "user_drift", "user_day_bias", "scale", "factor_drift", "factor_day"]


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(40, 30, 1200, rank=3, seed=4)
    rng = np.random.default_rng(0)
    # 60 days of ratings, a few sessions per user, some ratings at fractional times of day
    session = rng.integers(0, 4, len(data))
    day = (data.user * 7 + session * 13) % 60
    data = replace(
        data,
        timestamp=1_000_000_000
        - (1_000_000_000 % DAY)
        + day * DAY
        + rng.integers(0, DAY, len(data)),
    )
    test = rng.random(len(data)) < 0.2
    return data.subset(~test), data.subset(test)


def _fit(train, **options):
    model = TimeSVDpp(
        3, epochs=3, batch_size=128, warm_start="none", device="cpu", clip=False, **options
    )
    model.fit(train)
    net = model.net
    with torch.no_grad():  # give the neutral-initialised time terms visible values
        for name in TIME_PARAMETERS:
            if hasattr(net, name):
                raw = (
                    getattr(net.parametrizations, name).original
                    if parametrize.is_parametrized(net, name)
                    else getattr(net, name)
                )
                raw.add_(torch.randn_like(raw) * 0.3)
    return model


def _reference(model, train, users, items, stamps):
    """Per-rating loops straight from the Handbook §5.3.3 prediction rule."""
    net, c = model.net, model.config
    w = {
        k: getattr(net, k).detach().numpy().astype(np.float64)
        for k in TIME_PARAMETERS
        if hasattr(net, k)
    }
    w.update(
        {
            k: v.weight.detach().numpy().astype(np.float64)
            for k, v in net.named_children()
            if isinstance(v, torch.nn.Embedding)
        }
    )
    day0 = train.timestamp.min() // DAY
    n_days = train.timestamp.max() // DAY - day0 + 1
    pairs = sorted({(u, d) for u, d in zip(train.user, train.timestamp // DAY - day0, strict=True)})
    out = []
    for u, i, s in zip(users, items, stamps, strict=True):
        mask = train.user == u
        t = (s - day0 * DAY) / DAY
        t_u = ((train.timestamp[mask] - day0 * DAY) / DAY).mean()
        dev = np.sign(t - t_u) * abs(t - t_u) ** 0.4
        day = s // DAY - day0
        ud = pairs.index((u, day)) if (u, day) in pairs else None
        b_i = w["item_bias"][i, 0]
        if c["item_bins"]:
            b_i += w["item_bin_bias"][i, min(max(day, 0), n_days - 1) * c["item_bins"] // n_days]
        b_u = w["user_bias"][u, 0]
        scale = 1.0
        p = w["user_factors"][u] + w["implicit"][train.item[mask]].sum(0) / np.sqrt(mask.sum())
        if c["user_drift"]:
            b_u += w["alpha_u"][u] * dev
        if c["scale"]:
            scale = w["c_u"][u] + (w["c_ud"][ud] if ud is not None else 0.0)
        if c["factor_drift"]:
            p = p + w["alpha_uk"][u] * dev
        if ud is not None:
            b_u += w["b_ud"][ud] if c["user_day_bias"] else 0.0
            p = p + (w["p_ud"][ud] if c["factor_day"] else 0.0)
        out.append(float(model.mu) + b_u + b_i * scale + w["item_factors"][i] @ p)
    return np.array(out)


@pytest.mark.parametrize("off", [None, *TERMS])
def test_prediction_matches_the_per_rating_formula(split, off):
    train, test = split
    options = dict(ALL_ON, **({off: None if off == "item_bins" else False} if off else {}))
    model = _fit(train, lr_time=1.0 if off else 3.0, **options)
    for data in (train.subset(np.arange(50)), test):  # seen days and (some) unseen days
        np.testing.assert_allclose(
            model.predict_ratings(data),
            _reference(model, train, data.user, data.item, data.timestamp),
            atol=1e-4,
        )


def test_all_terms_off_is_svdpp(split):
    train, test = split
    model = TimeSVDpp(3, epochs=2, warm_start="mf", device="cpu", **ALL_OFF).fit(train)
    svdpp = SVDpp(3, epochs=1, device="cpu").fit(train)
    svdpp.load_state_dict(model.state_dict(), strict=False)  # same net, fewer buffers
    np.testing.assert_allclose(model.predict_ratings(test), svdpp.predict_ratings(test), atol=1e-5)
    np.testing.assert_allclose(
        model.predict(test.user, test.item), svdpp.predict(test.user, test.item), atol=1e-5
    )


def test_unseen_days_and_out_of_span_times_use_the_defaults(split):
    train, test = split
    model = _fit(train, **ALL_ON)
    far = np.array([train.timestamp.min() - 400 * DAY, train.timestamp.max() + 400 * DAY, 0])
    users, items = np.array([0, 1, 2]), np.array([3, 4, 5])
    pred = model.predict(users, items, timestamps=far)
    assert np.isfinite(pred).all()
    np.testing.assert_allclose(pred, _reference(model, train, users, items, far), atol=1e-4)
    feats = model.net.time_features(torch.as_tensor(users), torch.as_tensor(far))
    assert (feats["user_day"] == -1).all()
    assert feats["bin"].tolist() == [0, 2, 0]


def test_unknown_users_and_items_fall_back(split):
    train, test = split
    keep = train.user != 2
    model = _fit(train.subset(keep), **ALL_ON)
    net, mu = model.net, float(model.mu)
    stamp = int(train.timestamp[0])
    pred = model.predict([2, -1, 999, 0, 5], [5, 5, 5, -1, 999], timestamps=[stamp] * 5)
    feats = net.time_features(torch.tensor([0]), torch.tensor([stamp]))
    b_i = float((net.item_bias.weight[5, 0] + net.item_bin_bias[5, feats["bin"][0]]).detach())
    np.testing.assert_allclose(pred[:3], mu + b_i, atol=1e-5)  # mu + b_i(t), no c_u(t)
    assert np.isfinite(pred).all()
    assert np.isfinite(model.predict([2, -1], [-1, 5])).all()  # no timestamps


def test_batching_invariance_and_static_prediction(split):
    train, test = split
    model = TimeSVDpp(3, epochs=2, batch_size=64, warm_start="none", device="cpu", **ALL_ON).fit(
        train
    )
    whole = model.predict_ratings(test)
    pieces = model.predict(test.user, test.item, timestamps=test.timestamp, batch_size=7)
    np.testing.assert_allclose(pieces, whole, atol=1e-5)
    scores = model.score_items(torch.tensor([0, 3])).numpy()
    np.testing.assert_allclose(
        scores[1], model.predict(np.full(train.n_items, 3), np.arange(train.n_items)), atol=1e-5
    )


def test_penalty_adds_the_time_terms(split):
    train, _ = split
    model = _fit(train, lr_time=3.0, **ALL_ON)
    net = model.net
    batch = model._time_batch(train.subset(np.arange(9)), None)
    base = TimeSVDpp(3, epochs=1, device="cpu", warm_start="none", **ALL_OFF).fit(train).net
    base.load_state_dict({k: v for k, v in net.state_dict().items() if k in base.state_dict()})
    ud, u, i, b = batch["user_day"], batch["user"], batch["item"], batch["bin"]
    s2 = net.dev_scale**2
    time = (
        net.item_bin_bias[i, b] ** 2
        + s2 * net.alpha_u[u] ** 2
        + net.b_ud[ud] ** 2
        + (net.c_u[u] - 1) ** 2
        + net.c_ud[ud] ** 2
    )
    factors = s2 * net.alpha_uk[u].pow(2).sum(1) + net.p_ud[ud].pow(2).sum(1)
    day = net.b_ud[ud] ** 2 + net.c_ud[ud] ** 2 + net.p_ud[ud].pow(2).sum(1)
    shrink = net.reg_day / net.user_day_count[ud]  # the first rows' days are seen
    expected = base.penalty(batch) + 0.5 * (
        net.reg_time * time + net.reg_time_factors * factors + shrink * day
    )
    torch.testing.assert_close(net.penalty(batch), expected)
    assert batch_loss(net, batch).shape == (9,)


def test_checkpoint_round_trip_with_timestamps(split, tmp_path):
    train, test = split
    model = _fit(train, lr_time=3.0, **ALL_ON)
    loaded = ExplicitModel.load(model.save(tmp_path / "t.pt"))
    assert type(loaded) is TimeSVDpp
    np.testing.assert_array_equal(loaded.predict_ratings(test), model.predict_ratings(test))
    np.testing.assert_array_equal(
        loaded.predict(test.user, test.item), model.predict(test.user, test.item)
    )


def test_warm_start_from_svdpp_begins_at_its_fit(split):
    train, test = split
    svdpp = SVDpp(3, device="cpu", clip=False).fit(train)
    still = TimeSVDpp(3, epochs=1, lr=1e-9, device="cpu", clip=False).fit(train)
    np.testing.assert_allclose(still.predict_ratings(test), svdpp.predict_ratings(test), atol=1e-4)
    with pytest.raises(ValueError, match="warm_start"):
        TimeSVDpp(warm_start="als")


def test_epochs_that_hurt_held_out_ratings_are_not_kept(split):
    """The warm start competes as epoch 0: a time phase that only hurts leaves SVD++."""
    train, test = split
    svdpp = SVDpp(3, device="cpu", clip=False).fit(train)
    wild = dict(epochs=2, lr=0.5, lr_time=50.0, reg_time=0.0, reg_day=0.0, device="cpu", clip=False)
    model = TimeSVDpp(3, valid_fraction=0.0, **wild).fit(train, valid=test)
    assert model.epochs_ == 0 and model.history.attrs["best_epoch"] == 0
    np.testing.assert_allclose(model.predict_ratings(test), svdpp.predict_ratings(test), atol=1e-4)
    chosen = TimeSVDpp(3, **wild).fit(train)  # held out of train itself, then refitted
    assert chosen.epochs_ == 0 and len(chosen.history) == 0
    every = TimeSVDpp(3, valid_fraction=0.0, **wild).fit(train)
    assert every.epochs_ == 2 and len(every.history) == 2
    with pytest.raises(ValueError, match="valid_fraction"):
        TimeSVDpp(valid_fraction=1.0)
