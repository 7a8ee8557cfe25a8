"""Tuning with Optuna on a validation part of the training data, presets, and the explicit
benchmark's nested protocol and failure survival (tiny synthetic data, few trials)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from mfutils import tuning
from mfutils.blending import series_model_spec, series_models
from mfutils.data import make_synthetic, random_holdout
from mfutils.metrics import rmse
from mfutils.models.registry import constructor_options
from mfutils.serving import pipeline
from mfutils.train import epoch_callback
from mfutils.tuning import TUNABLE_MODELS, load_preset, make_model, search_space, tune

ROOT = Path(__file__).resolve().parents[1]
FAST = {"n_factors": 4}


@pytest.fixture(scope="module")
def data():
    return make_synthetic(60, 40, 1500, seed=0)


@pytest.mark.parametrize("name", TUNABLE_MODELS)
def test_every_tunable_model_has_a_space_around_its_defaults(name):
    cls, implied, _ = series_model_spec(name)
    space = search_space(name)
    assert space and not set(space) & set(implied)
    assert set(space) <= set(constructor_options(cls)), f"{name}: not constructor options"
    model = make_model(name, device="cpu")
    for key, spec in space.items():
        default = model.config[key]
        if spec[0] == "choice":
            assert default in spec[1:], (name, key)
        else:
            assert spec[1] <= default <= spec[2], f"{name}: {key}={default} outside {spec}"
    # The same model as the benchmark's and the CLI's default of that name.
    assert model.config == series_models([name], device="cpu")[name]().config
    assert model.config == pipeline.build_model(name, device="cpu").config


def test_search_space_rejects_malformed_specs(monkeypatch):
    from mfutils.models import ItemKNN

    monkeypatch.setattr(ItemKNN, "SEARCH_SPACE", {"k": ("log", 0, 10)})
    with pytest.raises(ValueError, match=r"ItemKNN.SEARCH_SPACE\['k'\]"):
        search_space("ItemKNN")
    with pytest.raises(ValueError, match="unknown model"):
        search_space("NoSuchModel")


def test_tune_is_reproducible_and_its_options_reproduce_the_score(data):
    first = tune("BiasedMF-SGD", data, trials=3, seed=0, fixed=FAST, progress=False, device="cpu")
    again = tune("BiasedMF-SGD", data, trials=3, seed=0, fixed=FAST, progress=False, device="cpu")
    assert first.options == again.options and first.value == again.value
    assert first.n_trials == 3 and len(first.trials) == 3 and first.options["n_factors"] == 4
    assert first.value == first.trials["value"].min()
    # A refit with a trial's options (epochs = the restored best epoch) is the scored model.
    fit, valid = tuning.validation_split(data, fraction=0.1, seed=0)
    for row in first.trials.itertuples():
        model = make_model("BiasedMF-SGD", row.options, device="cpu").fit(fit)
        assert rmse(model.predict_ratings(valid), valid.rating) == pytest.approx(
            row.value, abs=1e-5
        )


def test_tune_reads_only_the_data_it_is_given(data, monkeypatch):
    train, test = random_holdout(data, test_fraction=0.2, seed=3)
    seen = []

    def spy(name, options=None, **kwargs):
        model = make_model(name, options, **kwargs)
        fit, predict = model.fit, model.predict_ratings

        def fit_spy(part, **kw):
            seen.append(part)
            if kw.get("valid") is not None:
                seen.append(kw["valid"])
            return fit(part, **kw)

        def predict_spy(part):
            seen.append(part)
            return predict(part)

        model.fit, model.predict_ratings = fit_spy, predict_spy
        return model

    monkeypatch.setattr(tuning, "make_model", spy)
    tune("BiasedMF-ALS", train, trials=2, fixed=FAST, progress=False, device="cpu")

    def rows(part):
        return set(
            zip(part.user.tolist(), part.item.tolist(), part.timestamp.tolist(), strict=True)
        )

    train_rows, test_rows = rows(train), rows(test)
    assert seen and all(rows(part) <= train_rows for part in seen)
    assert not any(rows(part) & test_rows for part in seen)
    fit, valid = seen[0], seen[1]
    assert len(fit) + len(valid) == len(train) and not rows(fit) & rows(valid)


def test_tune_resumes_from_sqlite_storage(data, tmp_path):
    storage, kw = f"sqlite:///{tmp_path / 'tune.db'}", {"fixed": FAST, "progress": False}
    first = tune("BiasedMF-ALS", data, trials=2, storage=storage, study_name="s", **kw)
    assert first.n_trials == 2
    resumed = tune("BiasedMF-ALS", data, trials=3, storage=storage, study_name="s", **kw)
    assert resumed.n_trials == 3 and len(resumed.trials) == 3
    assert resumed.value <= first.value
    again = tune("BiasedMF-ALS", data, trials=3, storage=storage, study_name="s", **kw)
    assert len(again.trials) == 3  # nothing left to run


def test_preset_round_trip_and_errors(data, tmp_path):
    result = tune("BiasedMF-ALS", data, trials=2, fixed=FAST, progress=False)
    path = result.save(tmp_path / "p" / "mf.json")
    preset = json.loads(path.read_text())
    assert preset["model"] == "BiasedMF-ALS" and preset["trials"] == 2 and preset["seed"] == 0
    assert preset["protocol"] == "validation part (10%) of the training data"
    assert preset["metric"] == "rmse" and preset["value"] == result.value
    assert load_preset(path) == ("BiasedMF-ALS", result.options)

    fm = tuning.TuneResult(
        name="FM-ids",
        options={"fields": ("user", "item"), "lr": 0.02},
        value=1.0,
        metric="rmse",
        trials=result.trials,
        n_trials=1,
        seed=0,
        dataset="synthetic",
        valid_fraction=0.1,
    )
    assert load_preset(fm.save(tmp_path / "fm.json"))[1]["fields"] == ("user", "item")

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**preset, "options": {"bogus": 1}}))
    with pytest.raises(ValueError, match=r"bad\.json.*'bogus'"):
        load_preset(bad)
    bad.write_text(json.dumps({**preset, "extra": 1}))
    with pytest.raises(ValueError, match=r"bad\.json.*'extra'"):
        load_preset(bad)
    bad.write_text(json.dumps({**preset, "options": {"n_factors": 0}}))
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_preset(bad)


def test_preset_options_gathers_presets_by_model(data, tmp_path):
    result = tune("BiasedMF-ALS", data, trials=1, fixed=FAST, progress=False)
    path = result.save(tmp_path / "mf.json")
    assert tuning.preset_options(None) == {}
    assert tuning.preset_options(str(path)) == {"BiasedMF-ALS": result.options}
    assert tuning.preset_options([path]) == {"BiasedMF-ALS": result.options}
    with pytest.raises(ValueError, match="both for BiasedMF-ALS"):
        tuning.preset_options([path, path])


def test_epoch_callback_sees_the_validation_curve(data):
    fit, valid = tuning.validation_split(data, fraction=0.1, seed=0)
    calls = []
    with epoch_callback(lambda epoch, record: calls.append((epoch, record["valid"]))):
        make_model("BiasedMF-SGD", {**FAST, "epochs": 4}, device="cpu").fit(fit, valid=valid)
        make_model("BiasedMF-SGD", {**FAST, "epochs": 4}, device="cpu").fit(fit)  # no curve
    assert [epoch for epoch, _ in calls] == [1, 2, 3, 4]
    assert all(np.isfinite(value) for _, value in calls)
    calls.clear()
    make_model("BiasedMF-SGD", {**FAST, "epochs": 2}, device="cpu").fit(fit, valid=valid)
    assert not calls  # outside the block


class PruneAfterFirst(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.number > 0


def test_pruner_stops_trials_through_the_hook(data):
    result = tune(
        "BiasedMF-SGD",
        data,
        trials=3,
        fixed=FAST,
        progress=False,
        device="cpu",
        pruner=PruneAfterFirst(),
    )
    assert result.trials["state"].tolist() == ["COMPLETE", "PRUNED", "PRUNED"]
    assert result.n_trials == 3 and result.value == result.trials.loc[0, "value"]


# ---------------------------------------------------------------------- the benchmark
def _benchmark(monkeypatch, data):
    spec = importlib.util.spec_from_file_location(
        "explicit_bench", ROOT / "benchmarks" / "explicit.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "load_movielens", lambda name, data_dir=None: data)
    return module


def test_benchmark_survives_a_failing_model(data, tmp_path, monkeypatch):
    bench = _benchmark(monkeypatch, data)
    models = bench.package_models

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(
        bench, "package_models", lambda device, **kw: {**models(device, **kw), "Broken": broken}
    )
    out = tmp_path / "bench.json"
    summary = bench.main(
        [
            "--models",
            "BaselineEstimates-ALS",
            "Broken",
            "ItemKNN",
            "--folds",
            "1",
            "2",
            "--device",
            "cpu",
            "--output",
            str(out),
        ]
    )
    payload = json.loads(out.read_text())
    assert [r["model"] for r in payload["models"]] == ["BaselineEstimates-ALS", "ItemKNN"]
    assert all(r["folds"] == ["u1", "u2"] for r in payload["models"])
    assert payload["failures"] == [
        {"model": "Broken", "fold": f, "error": "RuntimeError: boom"} for f in ("u1", "u2")
    ]
    status = dict(zip(summary["model"], summary["status"], strict=True))
    assert status["Broken"] == "u1 failed (RuntimeError), u2 failed (RuntimeError)"
    assert status["ItemKNN"] == "ok" and len(summary.attrs["failures"]) == 2


def test_benchmark_runs_every_fold_once_per_seed(data, tmp_path, monkeypatch):
    bench = _benchmark(monkeypatch, data)
    seeds = []
    models = bench.package_models

    def spy(device, *, seed):
        seeds.append(seed)
        return models(device, seed=seed)

    monkeypatch.setattr(bench, "package_models", spy)
    out = tmp_path / "seeds.json"
    args = ["--models", "BiasedMF-SGD", "--folds", "1", "--seed", "3", "4", "--device", "cpu"]
    bench.main([*args, "--output", str(out)])
    payload = json.loads(out.read_text())
    (record,) = payload["models"]
    assert record["folds"] == ["u1-s3", "u1-s4"] and payload["meta"]["seeds"] == [3, 4]
    assert record["rmse"][0] != record["rmse"][1] and set(seeds) == {3, 4}


def test_benchmark_nested_tuning_uses_each_training_fold_only(data, tmp_path, monkeypatch):
    bench = _benchmark(monkeypatch, data)
    tuned_on = []

    def spy(name, train, **kwargs):
        tuned_on.append(len(train))
        return tune(name, train, **{**kwargs, "fixed": FAST})

    monkeypatch.setattr(bench, "tune", spy)
    out = tmp_path / "tuned.json"
    bench.main(
        [
            "--tune",
            "2",
            "--models",
            "BiasedMF-ALS",
            "--folds",
            "1",
            "--device",
            "cpu",
            "--output",
            str(out),
        ]
    )
    payload = json.loads(out.read_text())
    folds, _ = bench.rating_folds(data, seed=0)
    assert tuned_on == [len(folds[0][0])]
    record = payload["models"][0]
    assert record["options"][0]["n_factors"] == 4 and len(record["valid_rmse"]) == 1
    assert (
        "nested: tuned per fold on a validation part of its training data (2 trials)"
        in (payload["meta"]["protocol"])
    )
    assert "failures" not in payload


def test_benchmark_runs_presets(data, tmp_path, monkeypatch):
    bench = _benchmark(monkeypatch, data)
    result = tune("BiasedMF-ALS", data, trials=1, fixed=FAST, progress=False)
    preset = result.save(tmp_path / "als.json")
    out = tmp_path / "preset.json"
    bench.main(["--preset", str(preset), "--folds", "1", "--device", "cpu", "--output", str(out)])
    record = json.loads(out.read_text())["models"][0]
    assert record["model"] == "BiasedMF-ALS" and record["options"] == [
        tuning._jsonable(result.options)
    ]
