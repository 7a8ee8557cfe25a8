"""The ``mfutils`` command line: train / evaluate / recommend / serve, and its error messages."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from mfutils.cli import main
from mfutils.data import load_movielens, make_synthetic
from mfutils.models import registry
from mfutils.serving import Artifact, Recommender, pipeline
from mfutils.serving.runner import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--dataset", "ml-100k", "--no-download", "-p", "n_factors=4", "-p", "epochs=3"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """An ML-100K-shaped folder (u.data, u.item, u.user, u1..u5.test) of synthetic ratings."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "ml-100k"
    folder.mkdir()
    data = make_synthetic(50, 30, 900, seed=1)
    lines = [
        f"{u + 1}\t{i + 1}\t{int(r)}\t{t}"
        for u, i, r, t in zip(data.user, data.item, data.rating, data.timestamp, strict=True)
    ]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    fold = np.random.default_rng(0).integers(0, 5, len(lines))
    for k in range(5):
        (folder / f"u{k + 1}.test").write_text(
            "".join(f"{line}\n" for line, f in zip(lines, fold, strict=True) if f == k)
        )
    genres = data.items.filter(like="genre_").to_numpy()
    (folder / "u.item").write_text(
        "".join(
            f"{i + 1}|{data.items.loc[i, 'title']}|01-Jan-1995|||0|{'|'.join(map(str, row))}\n"
            for i, row in enumerate(genres)
        ),
        encoding="latin-1",
    )
    (folder / "u.user").write_text("".join(f"{u + 1}|30|M|other|12345\n" for u in range(50)))
    return root


@pytest.fixture(scope="module")
def artifact(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "mf"
    assert (
        main(
            [
                "train",
                "BiasedMF-ALS",
                *TRAIN,
                "--data-dir",
                str(data_dir),
                "--split",
                "u1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_train_writes_an_evaluated_artifact(artifact, data_dir, capsys):
    loaded = Artifact.load(artifact)
    info = loaded.info
    assert info["model"]["name"] == "BiasedMF-ALS" and info["data"]["split"] == "u1"
    assert info["model"]["config"]["method"] == "als" and info["model"]["params"] == {
        "n_factors": 4,
        "epochs": 3,
    }
    assert set(info["metrics"]) == {"rmse", "mae", "recall@10", "ndcg@10"}
    assert 0.3 < info["metrics"]["rmse"] < 2.0
    data = load_movielens("ml-100k", data_dir=data_dir, download=False)
    train, test, _ = pipeline.make_split(data, "u1")
    assert info["metrics"]["rmse"] == pytest.approx(
        pipeline.evaluate(loaded.model, test)["rmse"], abs=1e-6
    )
    assert loaded.items.loc[0, "title"] == data.items.loc[0, "title"]


def test_evaluate_prints_metrics_and_warns_off_split(artifact, data_dir, capsys):
    assert main(["evaluate", str(artifact), "--data-dir", str(data_dir), "--split", "u1"]) == 0
    out, err = capsys.readouterr()
    assert "| rmse |" in out and "canonical u1.base / u1.test" in out and not err
    main(["evaluate", str(artifact), "--data-dir", str(data_dir), "--split", "u2", "--no-topk"])
    out, err = capsys.readouterr()
    assert "not held-out" in err and "recall@10" not in out


def test_recommend_known_user_new_user_and_similar(artifact, capsys):
    rec = Recommender(artifact, device="cpu")
    assert main(["recommend", str(artifact), "--user", "1", "-k", "3", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [row["item"] for row in body["items"]] == rec.recommend([1], 3)[0].items.tolist()
    assert main(["recommend", str(artifact), "--rated", "1=5", "2=1", "-k", "4"]) == 0
    assert "method: fold-in" in capsys.readouterr().out
    assert main(["recommend", str(artifact), "--similar-to", "3", "-k", "2"]) == 0
    assert "method: item-factors" in capsys.readouterr().out


def test_a_ranking_model_trains_evaluates_recommends_and_serves(data_dir, tmp_path, capsys):
    out = tmp_path / "ials"
    assert (
        main(
            [
                "train",
                "iALS",
                "--dataset",
                "ml-100k",
                "--no-download",
                "--data-dir",
                str(data_dir),
                "--split",
                "per-user",
                "-p",
                "n_factors=8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    info = Artifact.load(out).info
    assert info["model"]["class"] == "ImplicitALS" and info["data"]["split"] == "per-user"
    assert set(info["metrics"]) == {"recall@10", "ndcg@10", "recall@20", "ndcg@20"}
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data-dir", str(data_dir), "--split", "per-user"]) == 0
    assert "| ndcg@20 |" in capsys.readouterr().out
    assert main(["recommend", str(out), "--user", "1", "-k", "3"]) == 0
    assert "method: model" in capsys.readouterr().out
    rec = Recommender(out, device="cpu")
    new = rec.recommend_new_user([1, 2, 3], [5, 4, 5], k=4)
    assert new.method == "fold-in" and len(new.items) == 4 and not {1, 2, 3} & set(new.items)
    model = rec.model  # the fold-in of a trained user's items is close to its trained factors
    items = model.train_csr.gather(torch.tensor([0]))[1]
    torch.testing.assert_close(model.fold_in(items), model.user_factors[0], rtol=0.05, atol=0.02)
    assert rec.similar_items(int(rec.model.item_ids[0]), k=3).method == "item-factors"
    assert rec.capabilities()["online_updates"] is False
    with pytest.raises(Exception, match="takes no online updates"):
        rec.add_ratings([1], [2], [4.0])
    assert pipeline.capabilities(registry.get("ImplicitALS")) == {
        "new_user": "fold-in",
        "online_updates": False,
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "Foo", "--out", "x"],
            "unknown model 'Foo'; registered models: AsymmetricSVD, "
            "BaselineEstimates, BayesianFM, BayesianMF, BiasedMF",
        ),
        (
            ["train", "BiasedMF", "-p", "n_factor=3", "--out", "x"],
            "BiasedMF has no parameter 'n_factor'; valid: n_factors",
        ),
        (
            ["train", "BiasedMF", "-p", "n_factors=many", "--out", "x"],
            "parameter 'n_factors' expects an int (default 20); got 'many'",
        ),
        (
            ["train", "BiasedMF", "-p", "method=newton", "--out", "x"],
            "method='newton'; choose one of",
        ),
        (["train", "BiasedMF", "-p", "reg", "--out", "x"], "'reg' is not of the form name=value"),
        (["train", "ItemKNN-ALS", "--out", "x"], "ItemKNN has no 'method' option"),
        (["train", "BiasedMF", "--split", "u9", "--out", "x"], "invalid choice: 'u9'"),
        (["recommend", "nowhere", "--user", "1"], "nowhere is not an artifact directory"),
        (["serve", "nowhere"], "nowhere is not an artifact directory"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_queries_name_the_problem(artifact, capsys):
    for argv, message in [
        (["--user", "999"], "unknown user id 999"),
        (["--user", "1", "-k", "0"], "k=0 must lie in [1, 30]"),
        (["--rated", "1=five"], "'1=five' is not of the form ITEM=RATING"),
        (["--rated", "1=9"], "scale [1.0, 5.0]"),
    ]:
        with pytest.raises(SystemExit):
            main(["recommend", str(artifact), *argv])
        assert message in capsys.readouterr().err


def test_existing_out_needs_overwrite(artifact, data_dir, capsys):
    with pytest.raises(SystemExit):
        main(["train", "BiasedMF", *TRAIN, "--data-dir", str(data_dir), "--out", str(artifact)])
    assert "pass --overwrite" in capsys.readouterr().err


def test_random_split_on_a_release_without_folds(data_dir, tmp_path):
    out = tmp_path / "baseline"
    assert (
        main(
            [
                "train",
                "BaselineEstimates",
                "--data-dir",
                str(data_dir),
                "--no-download",
                "--split",
                "random",
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    info = Artifact.load(out).info
    assert info["protocol"] == "random 20% holdout, seed 3"


def test_serve_command_in_a_fresh_process(artifact):
    """The documented command, as a subprocess on a free loopback port."""
    with ServerProcess(artifact, env={"OMP_NUM_THREADS": "1"}) as server:
        body = httpx.get(f"{server.url}/users/2/recommendations", params={"k": 4}).json()
        meta = httpx.get(f"{server.url}/metadata").json()
        update = httpx.post(
            f"{server.url}/ratings", json={"ratings": [{"user": 2, "item": 1, "rating": 4}]}
        )
    expected = Recommender(artifact, device="cpu").recommend([2], 4)[0]
    assert [row["item"] for row in body["items"]] == expected.items.tolist()
    assert meta["model"]["name"] == "BiasedMF-ALS"
    assert update.status_code == 403 and "--allow-updates" in update.json()["detail"]


def test_serve_options_reach_the_service(artifact):
    """Growth limit, body limit, extra host and the token from $MFUTILS_TOKEN, end to end."""
    args = [
        "--max-new-users",
        "1",
        "--max-body-bytes",
        "2000",
        "--allowed-hosts",
        "recs.example,10.9.8.7",
    ]
    env = {"OMP_NUM_THREADS": "1", "MFUTILS_TOKEN": "s3cret"}
    token = {"authorization": "Bearer s3cret"}
    with (
        ServerProcess(artifact, args=args, env=env) as server,
        httpx.Client(base_url=server.url, timeout=30) as session,
    ):

        def rate(user, headers=token):
            body = {"ratings": [{"user": user, "item": 1, "rating": 4}]}
            return session.post("/ratings", json=body, headers=headers).status_code

        codes = [rate(900), rate(901), rate(2, headers={})]
        large = session.post("/recommendations", json={"users": [2] * 1000}).status_code
        hosts = [
            session.get("/health", headers={"host": host}).status_code
            for host in ("recs.example", "evil.example")
        ]
    assert codes == [200, 409, 401] and large == 413 and hosts == [200, 400]


def test_serve_refuses_to_save_into_the_served_artifact(artifact, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(artifact), "--save-dir", str(artifact)])
    assert exit_info.value.code == 2
    assert "would overwrite the served artifact" in capsys.readouterr().err


def test_results_table_names_resolve_to_models():
    table = pipeline.results_table(ROOT / "benchmarks" / "results" / "explicit-ml-100k.json")
    assert table["rmse_mean"].is_monotonic_increasing
    rows = table.set_index("model")
    assert rows.loc["BiasedMF-SGD", "params"] == {"method": "sgd"}
    assert rows.loc["BiasedMF-SGD", "online_updates"] and rows.loc["SVDpp", "new_user"] == (
        "popularity"
    )
    assert rows.loc["AsymmetricSVD", "new_user"] == "asymmetric-svd"
    assert pd.isna(rows.loc["Surprise SVD", "class"])


def test_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mfutils"] == "mfutils.cli:main"


def test_tune_writes_a_preset_that_train_reads(data_dir, tmp_path, capsys):
    preset = tmp_path / "mf.json"
    assert (
        main(
            [
                "tune",
                "BiasedMF-ALS",
                "--dataset",
                "ml-100k",
                "--no-download",
                "--data-dir",
                str(data_dir),
                "--split",
                "u1",
                "--trials",
                "2",
                "--out",
                str(preset),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    saved = json.loads(preset.read_text())
    assert saved["model"] == "BiasedMF-ALS" and saved["trials"] == 2
    assert saved["dataset"] == "ml-100k" and saved["split"] == "u1"
    assert "best validation rmse" in printed and f"wrote {preset}" in printed
    # Tuned on u1.base only: the validation part is 10% of it, the test part never enters.
    data = load_movielens("ml-100k", data_dir=data_dir, download=False)
    train, _, _ = pipeline.make_split(data, "u1")
    assert len(train) < len(data)

    out = tmp_path / "artifact"
    assert (
        main(
            [
                "train",
                "BiasedMF-ALS",
                "--preset",
                str(preset),
                "-p",
                "n_factors=3",
                "--dataset",
                "ml-100k",
                "--no-download",
                "--data-dir",
                str(data_dir),
                "--no-topk",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    params = Artifact.load(out).info["model"]["params"]
    assert params == {**saved["options"], "n_factors": 3}  # -p overrides the preset
    out2 = tmp_path / "artifact2"
    assert (
        main(
            [
                "train",
                "--preset",
                str(preset),
                "--dataset",
                "ml-100k",
                "--no-download",
                "--data-dir",
                str(data_dir),
                "--no-topk",
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    assert Artifact.load(out2).info["model"]["params"] == saved["options"]


def test_train_refuses_a_preset_for_another_model(data_dir, tmp_path, capsys):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"model": "BiasedMF-ALS", "options": {"n_factors": 4}}))
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "SVDpp",
                "--preset",
                str(preset),
                "--data-dir",
                str(data_dir),
                "--out",
                str(tmp_path / "x"),
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"--preset {preset} is for BiasedMF-ALS, not SVDpp")
    preset.write_text(json.dumps({"model": "BiasedMF-ALS", "options": {"bogus": 1}}))
    with pytest.raises(SystemExit):
        main(["train", "--preset", str(preset), "--out", str(tmp_path / "x")])
    assert "'bogus'" in capsys.readouterr().err


def test_tune_rejects_unknown_models_and_half_a_storage(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["tune", "NoSuch", "--trials", "1", "--out", str(tmp_path / "p.json")])
    assert "tunable models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "tune",
                "SVDpp",
                "--trials",
                "1",
                "--out",
                str(tmp_path / "p.json"),
                "--storage",
                "sqlite:///x.db",
            ]
        )
    assert "--study-name" in capsys.readouterr().err


def test_svdpp_takes_its_base_options_by_name():
    cls, _ = pipeline.resolve_model("SVDpp")
    assert pipeline.parse_params(cls, ["lr=0.01", "reg=0.1"]) == {"lr": 0.01, "reg": 0.1}
    assert pipeline.resolve_model("FM-ids")[1] == {"fields": ("user", "item")}
