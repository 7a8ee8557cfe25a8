"""Ridge blending: recovers known weights, never fits on test, survives collinear columns."""

import numpy as np
import pandas as pd
import pytest
import torch

from mfutils.blending import (
    SERIES_MODELS,
    SeedBag,
    blend_folds,
    fit_ridge_blend,
    fold_predictions,
    ridge_solve,
    series_models,
    support_features,
)
from mfutils.data import make_synthetic, random_holdout
from mfutils.models import BaselineEstimates, BiasedMF


def _predictions(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    preds = pd.DataFrame({name: 3.5 + rng.normal(0, 0.8, n) for name in ("a", "b", "c")})
    target = 0.3 + 0.5 * preds["a"] + 0.2 * preds["b"] - 0.1 * preds["c"]
    return preds, (target + rng.normal(0, 0.05, n)).to_numpy()


def test_ridge_blend_recovers_known_weights():
    preds, target = _predictions()
    blend = fit_ridge_blend(preds, target)
    np.testing.assert_allclose(blend.weights, [0.5, 0.2, -0.1], atol=0.01)
    assert blend.intercept == pytest.approx(0.3, abs=0.05)
    assert blend.lam < 1e-2  # little noise: cross-validation picks a small penalty
    assert np.sqrt(np.mean((blend.predict(preds) - target) ** 2)) < 0.06
    assert list(blend.frame()["column"]) == ["a", "b", "c", "(intercept)"]


def test_ridge_solve_matches_least_squares_and_shrinks():
    preds, target = _predictions(n=500)
    x, y = torch.tensor(preds.to_numpy()), torch.tensor(target)
    weights, intercept = ridge_solve(x, y, 0.0)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    expected = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    torch.testing.assert_close(torch.cat([weights, intercept[None]]), expected)
    shrunk, _ = ridge_solve(x, y, 10.0)
    assert shrunk.norm() < weights.norm()


def test_constant_and_duplicate_columns_are_handled_by_the_penalty():
    preds, target = _predictions()
    preds["same_as_a"] = preds["a"]
    preds["constant"] = 3.0
    blend = fit_ridge_blend(preds, target)
    weights = dict(zip(blend.names, blend.weights, strict=True))
    assert np.isfinite(blend.weights).all()
    assert weights["constant"] == pytest.approx(0.0, abs=1e-9)
    assert weights["a"] == pytest.approx(weights["same_as_a"], abs=1e-6)  # the weight is split
    assert weights["a"] + weights["same_as_a"] == pytest.approx(0.5, abs=0.01)


def test_feature_dependent_weights_are_recovered():
    preds, _ = _predictions()
    rng = np.random.default_rng(2)
    features = pd.DataFrame({"s": rng.normal(2.0, 0.5, len(preds))})
    s = (features["s"] - features["s"].mean()) / features["s"].std(ddof=0)
    target = (0.6 + 0.2 * s) * preds["a"] + 0.4 * preds["b"] - 0.3 * s + 0.1
    plain = fit_ridge_blend(preds, target.to_numpy())
    blend = fit_ridge_blend(preds, target.to_numpy(), features=features)
    weights = dict(zip(blend.columns, blend.weights, strict=True))
    assert weights["a x s"] == pytest.approx(0.2, abs=1e-3)
    assert weights["s"] == pytest.approx(-0.3, abs=1e-2)
    assert weights["b x s"] == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(blend.predict(preds, features), target, atol=1e-2)
    assert blend.cv["cv_rmse"].min() < plain.cv["cv_rmse"].min()
    with pytest.raises(ValueError, match="pass them"):
        blend.predict(preds)


def test_support_features_count_the_seen_ratings():
    train, test = _toy_fold()
    features = support_features(test, train)
    expected = np.log1p(np.bincount(train.user, minlength=train.n_users))[test.user]
    np.testing.assert_allclose(features["log_user_support"], expected)
    assert len(features) == len(test)


def test_prediction_selects_columns_by_name():
    preds, target = _predictions()
    blend = fit_ridge_blend(preds, target)
    shuffled = preds[["c", "a", "b"]].assign(extra=0.0)
    np.testing.assert_allclose(blend.predict(shuffled), blend.predict(preds))
    clipped = fit_ridge_blend(preds, target, clip=(1.0, 5.0)).predict(preds * 10)
    assert clipped.min() >= 1.0 and clipped.max() <= 5.0


def test_misaligned_inputs_raise_clear_errors():
    preds, target = _predictions(n=100)
    with pytest.raises(ValueError, match="target has shape"):
        fit_ridge_blend(preds, target[:-1])
    with pytest.raises(ValueError, match="equally long"):
        fit_ridge_blend({"a": preds["a"].to_numpy(), "b": preds["b"].to_numpy()[:-1]}, target)
    with pytest.raises(ValueError, match="NaN"):
        fit_ridge_blend(preds.assign(a=np.nan), target)
    blend = fit_ridge_blend(preds, target)
    with pytest.raises(ValueError, match=r"lack the columns \['c'\]"):
        blend.predict(preds[["a", "b"]])
    with pytest.raises(ValueError, match="lambdas"):
        fit_ridge_blend(preds, target, lambdas=[])


def _toy_fold(seed=0):
    data = make_synthetic(150, 100, 6000, seed=seed)
    return random_holdout(data, test_fraction=0.2, seed=seed)


MODELS = {
    "baseline": lambda: BaselineEstimates(method="als", device="cpu"),
    "mf": lambda: BiasedMF(4, method="als", epochs=3, device="cpu"),
}


@pytest.mark.parametrize("refit", [True, False])
def test_blend_never_fits_on_the_test_ratings(refit):
    train, test = _toy_fold()
    garbled = test.with_ratings(
        np.random.default_rng(1).uniform(1, 5, len(test)).astype(np.float32)
    )
    table, blends = blend_folds(MODELS, [(train, test)], refit=refit, progress=False)
    _, garbled_blends = blend_folds(MODELS, [(train, garbled)], refit=refit, progress=False)
    for name in ("Blend", "Blend + support"):
        np.testing.assert_array_equal(
            blends["u1"][name].weights, garbled_blends["u1"][name].weights
        )
    assert set(table["model"]) == {"baseline", "mf", "Blend", "Blend + support"}
    rmse = table.set_index("model")["rmse"]
    assert rmse["Blend"] <= min(rmse["baseline"], rmse["mf"]) + 0.01


def test_fold_predictions_hold_out_validation_and_refit():
    train, test = _toy_fold()
    preds = fold_predictions(MODELS, train, test, valid_fraction=0.2, refit=True)
    assert len(preds.valid) == len(preds.valid_target) == pytest.approx(0.2 * len(train), abs=1)
    assert len(preds.test) == len(preds.test_target) == len(test)
    assert list(preds.valid.columns) == list(preds.test.columns) == list(MODELS)
    once = fold_predictions(MODELS, train, test, valid_fraction=0.2, refit=False)
    pd.testing.assert_frame_equal(once.valid, preds.valid)  # the same validation models
    assert not np.allclose(once.test["mf"], preds.test["mf"])  # refit on all of train


def test_series_models_are_fresh_factories_in_the_order_asked():
    factories = series_models(["SVDpp", "BiasedMF-SGD"], device="cpu", seed=4)
    assert list(factories) == ["SVDpp", "BiasedMF-SGD"]
    first, second = factories["BiasedMF-SGD"](), factories["BiasedMF-SGD"]()
    assert first is not second and type(first).__name__ == "BiasedMF"
    assert list(series_models()) == list(SERIES_MODELS)
    with pytest.raises(ValueError, match="unknown models"):
        series_models(["NoSuchModel"])


def test_seed_bag_predicts_the_mean_of_one_fit_per_seed():
    train, test = _toy_fold()
    make = lambda seed: BiasedMF(4, method="sgd", epochs=2, seed=seed, device="cpu")  # noqa: E731
    bag = SeedBag(make, [3, 4]).fit(train)
    singles = [make(seed).fit(train).predict_ratings(test) for seed in (3, 4)]
    np.testing.assert_allclose(bag.predict_ratings(test), np.mean(singles, axis=0), atol=1e-6)
    assert not np.allclose(singles[0], singles[1])
    with pytest.raises(RuntimeError, match="fit"):
        SeedBag(make, [0]).predict_ratings(test)
    with pytest.raises(ValueError, match="at least one seed"):
        SeedBag(make, [])


def test_series_models_bag_only_the_stochastic_models():
    factories = series_models(["ItemKNN", "SVDpp"], device="cpu", seed=2, n_seeds=3)
    assert type(factories["ItemKNN"]()).__name__ == "ItemKNN"
    bag = factories["SVDpp"]()
    assert isinstance(bag, SeedBag) and bag.seeds == (2, 3, 4)
    assert type(series_models(["SVDpp"], n_seeds=1)["SVDpp"]()).__name__ == "SVDpp"
    with pytest.raises(ValueError, match="n_seeds"):
        series_models(["SVDpp"], n_seeds=0)
