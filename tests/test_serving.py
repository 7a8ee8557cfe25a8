"""Serving: artifacts, fold-in, online updates, and the real HTTP service on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from mfutils.data import make_synthetic
from mfutils.models import AsymmetricSVD, BaselineEstimates, BiasedMF, registry
from mfutils.serving import (
    Artifact,
    ArtifactError,
    GrowthLimitError,
    Recommender,
    UnknownIdError,
    pipeline,
)
from mfutils.serving.foldin import fold_in_users, ridge_penalties
from mfutils.serving.online import RatingStore, UnsupportedError
from mfutils.serving.runner import BackgroundServer
from mfutils.serving.service import (
    LOOPBACK_HOSTS,
    MAX_BODY_BYTES,
    create_app,
    create_app_from_env,
    serving_hosts,
)

N_USERS, N_ITEMS = 60, 40
UNRATED = N_ITEMS - 1  # compact id of an item in the id space without training ratings


@pytest.fixture(scope="module")
def data():
    """Synthetic ratings with raw ids unlike the compact ones (users 1000, 1010, ...)."""
    base = make_synthetic(N_USERS, N_ITEMS, 1500, seed=0)
    shifted = dataclasses.replace(
        base, user_ids=base.user_ids * 10 + 1000, item_ids=base.item_ids * 7 + 500
    )
    return shifted.subset(shifted.item != UNRATED)


def _mf(data, **options):
    options = {"n_factors": 4, "method": "als", "epochs": 4, "seed": 0, "device": "cpu", **options}
    return BiasedMF(**options).fit(data)


@pytest.fixture(scope="module")
def artifact_dir(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("artifacts") / "mf"
    Artifact.from_training(
        _mf(data), data, name="BiasedMF-ALS", split="full", metrics={"rmse": 0.9}
    ).save(path)
    return path


@pytest.fixture(scope="module")
def served(artifact_dir):
    """A read-mostly service on a free loopback port (tests here never update it)."""
    rec = Recommender(artifact_dir, device="cpu")
    with BackgroundServer(create_app(rec)) as server:
        yield server, rec


@pytest.fixture
def client(served):
    with httpx.Client(base_url=served[0].url, timeout=30) as session:
        yield session


def _raw_top(rec, user_raw, k, exclude_seen=True):
    model = rec.model
    user = int(np.flatnonzero(model.user_ids == user_raw)[0])
    items, scores = model.recommend([user], k, exclude_seen=exclude_seen)
    keep = np.isfinite(scores[0])  # the service drops seen items a short list ends with
    return model.item_ids[items[0][keep]].tolist(), scores[0][keep].tolist()


# ---------------------------------------------------------------------- artifacts
def test_artifact_round_trip_preserves_predictions(data, tmp_path):
    model = _mf(data, method="sgd", epochs=3)
    artifact = Artifact.from_training(model, data, name="BiasedMF-SGD", split="full")
    artifact.save(tmp_path / "a")
    loaded = Artifact.load(tmp_path / "a", device="cpu")
    users, items = np.meshgrid(np.arange(N_USERS), np.arange(N_ITEMS))
    assert np.array_equal(
        loaded.model.predict(users.ravel(), items.ravel()),
        model.predict(users.ravel(), items.ravel()),
    )
    assert np.array_equal(
        loaded.model.recommend(np.arange(N_USERS), 5)[0], model.recommend(np.arange(N_USERS), 5)[0]
    )
    assert loaded.items["title"].tolist() == data.items["title"].tolist()
    assert loaded.items.loc[0, "genres"] == [
        g.removeprefix("genre_")
        for g in data.items.columns
        if g.startswith("genre_") and data.items.loc[0, g]
    ]
    assert loaded.info["version"] == 1 and loaded.info["model"]["name"] == "BiasedMF-SGD"
    assert loaded.info["data"]["n_ratings"] == len(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temporary directory left


def test_artifact_refuses_to_overwrite_unless_asked(artifact_dir, data, tmp_path):
    artifact = Artifact.load(artifact_dir)
    artifact.save(tmp_path / "b")
    with pytest.raises(FileExistsError, match="overwrite"):
        artifact.save(tmp_path / "b")
    artifact.save(tmp_path / "b", overwrite=True)
    assert Artifact.load(tmp_path / "b").info["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def _copy(artifact_dir, tmp_path):
    Artifact.load(artifact_dir).save(tmp_path / "copy")
    return tmp_path / "copy"


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_corrupted_file_is_rejected_by_checksum(artifact_dir, tmp_path):
    path = _copy(artifact_dir, tmp_path)
    blob = bytearray((path / "model.safetensors").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match=r"model\.safetensors is corrupted: its SHA-256"):
        Artifact.load(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": 99}, "format version 99, written by a newer mfutils"),
        ({"format_version": 0}, "export the model again"),
        ({"format_version": "1"}, "not an integer"),
        ({"format": "something-else"}, "does not describe an 'mfutils-artifact'"),
    ],
)
def test_format_mismatch_is_rejected(artifact_dir, tmp_path, change, message):
    path = _copy(artifact_dir, tmp_path)
    _edit_manifest(path, **change)
    with pytest.raises(ArtifactError, match=message):
        Artifact.load(path)


def test_missing_or_broken_manifest(artifact_dir, tmp_path):
    with pytest.raises(ArtifactError, match="no such directory"):
        Artifact.load(tmp_path / "nowhere")
    path = _copy(artifact_dir, tmp_path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Artifact.load(path)
    (path / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Artifact.load(path)


def test_id_table_disagreeing_with_the_model_is_rejected(artifact_dir, tmp_path):
    path = _copy(artifact_dir, tmp_path)
    (path / "users.csv").write_text("user_id\n" + "\n".join(map(str, range(N_USERS))) + "\n")
    files = json.loads((path / "manifest.json").read_text())["files"]
    files["users.csv"] = {
        "sha256": hashlib.sha256((path / "users.csv").read_bytes()).hexdigest(),
        "bytes": (path / "users.csv").stat().st_size,
    }
    _edit_manifest(path, files=files)
    with pytest.raises(ArtifactError, match="users.csv .* disagrees with the model"):
        Artifact.load(path)


def test_manifest_declaring_another_model_is_rejected(artifact_dir, tmp_path):
    path = _copy(artifact_dir, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    _edit_manifest(path, model={**manifest["model"], "class": "SVDpp"})
    with pytest.raises(
        ArtifactError, match="declares a SVDpp but model.safetensors holds a BiasedMF"
    ):
        Artifact.load(path)


@pytest.mark.parametrize("name", list(pipeline.registered_models(kind=None)))
def test_every_registered_model_serves_after_a_round_trip(name, data, tmp_path):
    options = (
        {"epochs": 1}
        if "epochs" in registry.constructor_options(pipeline.resolve_model(name)[0])
        else {}
    )
    model = pipeline.build_model(name, options, device="cpu").fit(data)
    Artifact.from_training(model, data).save(tmp_path / "a")
    rec = Recommender(tmp_path / "a", device="cpu")
    users = torch.arange(N_USERS)
    assert torch.equal(rec.model.score_items(users), model.score_items(users))
    assert len(rec.recommend(data.user_ids[:2], 3)) == 2
    assert (
        rec.recommend_new_user(data.item_ids[[1, 2]], [5.0, 2.0], 4).method
        == (rec.capabilities()["new_user"])
    )
    assert len(rec.similar_items(data.item_ids[2], 4).items) == 4


def test_the_service_serves_a_ranking_model(data, tmp_path):
    model = pipeline.build_model("iALS", {"n_factors": 8}, device="cpu").fit(data)
    Artifact.from_training(model, data, split="full").save(tmp_path / "ials")
    rec = Recommender(tmp_path / "ials", device="cpu")
    with (
        BackgroundServer(create_app(rec)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        user = int(data.user_ids[0])
        body = client.get(f"/users/{user}/recommendations", params={"k": 3}).json()
        assert [row["item"] for row in body["items"]] == _raw_top(rec, user, 3)[0]
        new = client.post(
            "/recommendations/new-user",
            json={"ratings": [{"item": int(data.item_ids[1]), "rating": 5.0}], "k": 3},
        )
        assert new.status_code == 200 and new.json()["method"] == "fold-in"
        assert client.get("/metadata").json()["capabilities"]["online_updates"] is False


# ---------------------------------------------------------------------- fold-in
@pytest.mark.parametrize("method", ["sgd", "als"])
def test_fold_in_solves_the_models_ridge_problem(data, method):
    model = _mf(data, method=method, epochs=3, weighted_reg=method == "sgd")
    ridge = ridge_penalties(model)["user"]
    items, ratings = np.array([0, 3, 5, 8, 13, 21]), np.array([5.0, 4, 1, 3, 2, 5])
    p, b = fold_in_users(
        model,
        torch.zeros(6, dtype=torch.long),
        torch.as_tensor(items),
        torch.as_tensor(ratings, dtype=torch.float32),
        n_users=1,
    )
    q = model.item_embeddings[items]
    x = np.hstack([q, np.ones((6, 1))]).astype(np.float64)
    y = ratings - float(model.mu) - model.net.item_bias.weight[items, 0].detach().numpy()
    scale = 6 if ridge.weighted else 1
    penalty = np.diag([ridge.reg] * q.shape[1] + [ridge.reg_bias]) * scale
    expected = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    assert np.allclose(p[0].numpy(), expected[:-1], atol=1e-4)
    assert abs(float(b[0]) - expected[-1]) < 1e-4


def test_baselines_fold_in_as_shrunk_means(data):
    model = BaselineEstimates(method="als", device="cpu").fit(data)
    items, ratings = torch.tensor([0, 1, 2]), torch.tensor([5.0, 5.0, 4.0])
    _, b = fold_in_users(model, torch.zeros(3, dtype=torch.long), items, ratings, n_users=1)
    offset = ratings - model.mu - torch.as_tensor(model.item_bias[:3])
    assert torch.allclose(b, offset.sum() / (model.config["reg_user"] + 3))


def test_new_user_by_asymmetric_svd_and_popularity(data):
    asym = AsymmetricSVD(n_factors=4, epochs=2, device="cpu").fit(data)
    rec = Recommender(Artifact.from_training(asym, data))
    raw, ratings = data.item_ids[[1, 2, 3]], [5.0, 1.0, 4.0]
    ranking = rec.recommend_new_user(raw, ratings, k=5)
    expected = asym.predict_new_user([1, 2, 3], ratings, np.arange(N_ITEMS))
    expected[[1, 2, 3]] = -np.inf
    assert ranking.method == "asymmetric-svd"
    best = np.argsort(-expected, kind="stable")[:5]
    assert ranking.items.tolist() == data.item_ids[best].tolist()
    assert rec.capabilities()["online_updates"] is False
    with pytest.raises(UnsupportedError, match="AsymmetricSVD takes no online updates"):
        rec.add_ratings([data.user_ids[0]], [raw[0]], [3.0])


def test_similar_items_by_factors_and_by_co_occurrence(data):
    rec = Recommender(Artifact.from_training(_mf(data), data))
    q = rec.model.item_embeddings[:UNRATED]
    cos = q @ q[2] / (np.linalg.norm(q, axis=1) * np.linalg.norm(q[2]))
    cos[2] = -np.inf
    ranking = rec.similar_items(data.item_ids[2], k=4)
    assert ranking.method == "item-factors"
    assert ranking.items.tolist() == data.item_ids[np.argsort(-cos)[:4]].tolist()
    assert np.allclose(ranking.scores, np.sort(cos)[::-1][:4], atol=1e-5)

    baseline = Recommender(Artifact.from_training(BaselineEstimates(device="cpu").fit(data), data))
    rated = np.zeros((N_USERS, N_ITEMS))
    rated[data.user, data.item] = 1
    co = rated.T @ rated
    counts = np.diag(co).copy()
    score = co[2] / np.sqrt(np.maximum(counts * counts[2], 1))
    score[[2, UNRATED]] = -np.inf
    ranking = baseline.similar_items(data.item_ids[2], k=4)
    assert ranking.method == "co-occurrence"
    assert np.allclose(ranking.scores, np.sort(score)[::-1][:4], atol=1e-6)
    assert baseline.similar_items(data.item_ids[UNRATED], k=3).method == "popularity"


# ---------------------------------------------------------------------- online updates
def test_rating_store_keeps_the_latest_rating_of_a_pair():
    store = RatingStore(
        torch.tensor([0, 0, 1]), torch.tensor([1, 2, 1]), torch.tensor([3.0, 4.0, 5.0])
    )
    store.add(torch.tensor([0, 2]), torch.tensor([2, 0]), torch.tensor([1.0, 2.0]))
    triples = zip(store.user.tolist(), store.item.tolist(), store.rating.tolist(), strict=True)
    pairs = {(u, i): r for u, i, r in triples}
    assert pairs == {(0, 1): 3.0, (0, 2): 1.0, (1, 1): 5.0, (2, 0): 2.0}


def test_online_update_changes_only_the_affected_user(data):
    rec = Recommender(Artifact.from_training(_mf(data, method="sgd", epochs=3), data))
    before = rec.model.score_items(torch.arange(N_USERS)).clone()
    user = 5
    unseen = np.setdiff1d(np.arange(UNRATED), data.item[data.user == user])[:3]
    report = rec.add_ratings([data.user_ids[user]] * 3, data.item_ids[unseen], [5.0, 5.0, 1.0])
    after = rec.model.score_items(torch.arange(N_USERS))
    others = torch.arange(N_USERS) != user
    assert torch.equal(after[others], before[others])
    assert not torch.allclose(after[user], before[user])
    assert report["users"] == [int(data.user_ids[user])] and report["items"] == []
    top = rec.recommend([data.user_ids[user]], k=N_ITEMS - 1)[0].items
    assert not set(top) & set(data.item_ids[unseen])  # the new ratings count as seen


def test_update_both_moves_the_rated_items(data):
    rec = Recommender(Artifact.from_training(_mf(data), data))
    before = rec.model.score_items(torch.arange(N_USERS)).clone()
    rec.add_ratings([data.user_ids[0]], [data.item_ids[4]], [1.0], update="both")
    after = rec.model.score_items(torch.arange(N_USERS))
    assert not torch.allclose(after[1:, 4], before[1:, 4])
    assert torch.equal(after[1:, 5], before[1:, 5])


def test_new_user_and_new_item_grow_the_model_and_save_as_a_new_version(data, tmp_path):
    rec = Recommender(Artifact.from_training(_mf(data), data))
    with pytest.raises(UnknownIdError):
        rec.recommend([77777], k=3)
    users = [77777, 77777, 77777, int(data.user_ids[0])]
    items = [int(data.item_ids[0]), int(data.item_ids[1]), 88888, 88888]
    report = rec.add_ratings(users, items, [5.0, 4.0, 5.0, 2.0])
    assert report["new_users"] == [77777] and report["new_items"] == [88888]
    assert rec.model.n_users == N_USERS + 1 and rec.model.n_items == N_ITEMS + 1
    ranking = rec.recommend([77777], k=5)[0]
    assert not {int(data.item_ids[0]), int(data.item_ids[1]), 88888} & set(ranking.items)
    saved = rec.save(tmp_path / "v2")
    assert saved.info["version"] == 2 and saved.info["parent"]["version"] == 1
    loaded = Recommender(tmp_path / "v2", device="cpu")
    assert loaded.artifact.info["online_updates"] == {"ratings": 4, "users": 1, "items": 1}
    assert torch.equal(
        loaded.model.score_items(torch.arange(N_USERS + 1)),
        rec.model.score_items(torch.arange(N_USERS + 1)),
    )
    assert loaded.items["title"].iloc[-1] is None


def test_bad_online_input(artifact_dir, data):
    rec = Recommender(artifact_dir, device="cpu")
    with pytest.raises(ValueError, match=r"scale \[1.0, 5.0\]"):
        rec.add_ratings([data.user_ids[0]], [data.item_ids[0]], [9.0])
    with pytest.raises(UnknownIdError, match="unknown user id 5"):
        rec.add_ratings([5], [data.item_ids[0]], [3.0], allow_new=False)
    for bad in (-5, 0, 2**31, 2**63 - 1):
        with pytest.raises(ValueError, match=r"new user ids must be integers in \[1, 2147483647\]"):
            rec.add_ratings([bad], [data.item_ids[0]], [3.0])
    with pytest.raises(ValueError, match="rates item 500 more than once in this batch"):
        rec.add_ratings([data.user_ids[0]] * 2, [500, 500], [3.0, 4.0])
    rec.add_ratings([7, 8], [data.item_ids[0]] * 2, [3.0, 4.0], max_new_users=2)
    with pytest.raises(
        GrowthLimitError,
        match=r"1 new users would pass the limit of 2 new users "
        r"since start-up \(2 added so far\)",
    ):
        rec.add_ratings([9], [data.item_ids[0]], [3.0], max_new_users=2)
    assert rec.model.n_users == N_USERS + 2  # a refused batch changes nothing


def test_a_batch_gives_the_same_model_in_any_order(artifact_dir, data):
    """New users, new items and an item without training ratings, in three orders."""
    rng = np.random.default_rng(0)
    users = np.concatenate([rng.choice(data.user_ids, 60), rng.integers(5000, 5020, 60)])
    items = np.concatenate(
        [
            rng.choice(data.item_ids, 80),
            rng.integers(9000, 9015, 30),
            np.full(10, data.item_ids[UNRATED]),
        ]
    )
    rng.shuffle(items)
    keep = np.unique(users * 100_000 + items, return_index=True)[1]
    users, items = users[keep], items[keep]
    ratings = rng.integers(1, 6, len(users)).astype(float)
    models = []
    for order in (np.arange(len(users)), np.arange(len(users))[::-1], rng.permutation(len(users))):
        rec = Recommender(artifact_dir, device="cpu")
        rec.add_ratings(users[order], items[order], ratings[order])
        models.append(rec.model)
    for model in models[1:]:
        assert np.array_equal(model.user_ids, models[0].user_ids)
        assert np.array_equal(model.item_ids, models[0].item_ids)
        every = torch.arange(model.n_users)
        assert torch.equal(model.score_items(every), models[0].score_items(every))


# ---------------------------------------------------------------------- HTTP
def test_health_and_metadata(client, served):
    assert client.get("/health").json()["status"] == "ok"
    meta = client.get("/metadata").json()
    assert meta["model"]["name"] == "BiasedMF-ALS" and meta["version"] == 1
    assert meta["capabilities"] == {
        "known_user": "model",
        "new_user": "fold-in",
        "similar_items": "item-factors",
        "online_updates": True,
    }
    assert meta["metrics"] == {"rmse": 0.9} and meta["n_items"] == N_ITEMS


def test_known_user_equals_the_models_recommend(client, served, data):
    _, rec = served
    for user in data.user_ids[[0, 7, 33]]:
        body = client.get(f"/users/{user}/recommendations", params={"k": 7}).json()
        items, scores = _raw_top(rec, user, 7)
        assert [row["item"] for row in body["items"]] == items
        assert np.array_equal(np.float32([row["score"] for row in body["items"]]), scores)
        assert body["method"] == "model" and body["items"][0]["title"].startswith("Synthetic")
    seen = client.get(
        f"/users/{data.user_ids[0]}/recommendations", params={"k": N_ITEMS, "exclude_seen": False}
    ).json()
    assert len(seen["items"]) == N_ITEMS


def test_batch_of_users(client, served, data):
    users = data.user_ids[[1, 2, 3]].tolist()
    body = client.post("/recommendations", json={"users": users, "k": 4}).json()
    assert [r["user"] for r in body["results"]] == users
    for result in body["results"]:
        assert [row["item"] for row in result["items"]] == _raw_top(served[1], result["user"], 4)[0]


def test_new_user_fold_in_over_http(client, served, data):
    ratings = [{"item": int(data.item_ids[i]), "rating": r} for i, r in [(0, 5), (3, 4), (9, 1)]]
    body = client.post("/recommendations/new-user", json={"ratings": ratings, "k": 5}).json()
    direct = served[1].recommend_new_user(data.item_ids[[0, 3, 9]], [5.0, 4.0, 1.0], k=5)
    assert body["method"] == "fold-in" and body["user"] is None
    assert [row["item"] for row in body["items"]] == direct.items.tolist()


def test_similar_items_over_http(client, served, data):
    body = client.get(f"/items/{data.item_ids[2]}/similar", params={"k": 3}).json()
    assert [r["item"] for r in body["items"]] == served[1].similar_items(
        data.item_ids[2], 3
    ).items.tolist()


@pytest.mark.parametrize(
    "method, path, payload, status, message",
    [
        ("get", "/users/99999/recommendations", None, 404, "unknown user id 99999: POST their"),
        ("get", "/users/1000/recommendations?k=0", None, 422, "greater than or equal to 1"),
        ("get", f"/users/1000/recommendations?k={N_ITEMS + 1}", None, 422, "catalogue size"),
        ("get", "/users/1000/recommendations?k=ten", None, 422, "query.k: Input should be a valid"),
        ("get", "/users/abc/recommendations", None, 404, "unknown user id abc"),
        ("get", "/items/1/similar", None, 404, "unknown item id 1"),
        ("get", f"/items/{10**30}/similar", None, 422, "out of range"),
        ("post", "/recommendations", {"users": [1000, 4], "k": 3}, 422, "unknown user id 4"),
        ("post", "/recommendations", {"users": []}, 422, "at least 1 item"),
        ("post", "/recommendations", {"users": [1000], "kk": 3}, 422, "body.kk: Extra inputs"),
        (
            "post",
            "/recommendations/new-user",
            {"ratings": [{"item": 3, "rating": 4}]},
            422,
            "unknown item id 3",
        ),
        (
            "post",
            "/recommendations/new-user",
            {"ratings": [{"item": 500, "rating": 7}]},
            422,
            r"scale [1.0, 5.0]",
        ),
        (
            "post",
            "/recommendations/new-user",
            {"ratings": [{"item": 500}]},
            422,
            "body.ratings.0.rating: Field required",
        ),
        (
            "post",
            "/ratings",
            {"ratings": [{"user": 1000, "item": 500, "rating": 3}]},
            403,
            "writes are disabled: start the service with --allow-updates",
        ),
        ("post", "/artifact/save", None, 403, "--allow-updates, or with --token"),
    ],
)
def test_bad_requests_get_clear_4xx(client, method, path, payload, status, message):
    response = client.request(method.upper(), path, json=payload)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.json()


def test_malformed_json_is_a_422(client):
    response = client.post(
        "/recommendations",
        content=b'{"users": [1000,',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert "JSON decode error" in response.json()["detail"]


def test_twenty_parallel_requests(client, served, data):
    users = data.user_ids[:20]
    expected = {int(u): _raw_top(served[1], u, 5)[0] for u in users}

    def call(user):
        with httpx.Client(base_url=served[0].url, timeout=30) as session:
            response = session.get(f"/users/{user}/recommendations", params={"k": 5})
            return int(user), response.status_code, [r["item"] for r in response.json()["items"]]

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(call, users))
    assert all(status == 200 for _, status, _ in results)
    assert {user: items for user, _, items in results} == expected


def test_reads_stay_consistent_during_online_updates(artifact_dir, data):
    """Readers and writers at once: every request answers 200, none sees a half update."""
    rec = Recommender(artifact_dir, device="cpu")
    users = data.user_ids[:10].tolist()
    with BackgroundServer(create_app(rec, allow_updates=True)) as server:

        def read(n):
            response = httpx.get(f"{server.url}/users/{users[n % 10]}/recommendations?k=5")
            return response.status_code

        def write(n):
            rating = {"user": users[n % 10], "item": int(data.item_ids[n % 7]), "rating": 4}
            return httpx.post(f"{server.url}/ratings", json={"ratings": [rating]}).status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(pool.map(lambda n: (write if n % 4 == 0 else read)(n), range(40)))
    assert codes == [200] * 40
    assert rec.metadata()["online_updates"]["ratings"] == 10


def test_online_update_over_http_then_save(artifact_dir, data, tmp_path):
    rec = Recommender(artifact_dir, device="cpu")
    with (
        BackgroundServer(
            create_app(rec, allow_updates=True, save_dir=tmp_path / "saved")
        ) as server,
        httpx.Client(base_url=server.url, timeout=30) as session,
    ):
        user, other = int(data.user_ids[3]), int(data.user_ids[4])
        before = {
            u: session.get(f"/users/{u}/recommendations?k=10&exclude_seen=false").json()
            for u in (user, other)
        }
        worst = before[user]["items"][0]["item"]
        response = session.post(
            "/ratings",
            json={
                "ratings": [
                    {"user": user, "item": worst, "rating": 1},
                    {"user": user, "item": 507, "rating": 1},
                ]
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["users"] == [user]
        after = {
            u: session.get(f"/users/{u}/recommendations?k=10&exclude_seen=false").json()
            for u in (user, other)
        }
        assert after[other] == before[other]
        assert after[user]["items"] != before[user]["items"]
        saved = session.post("/artifact/save").json()
        assert saved["version"] == 2
    reloaded = Recommender(tmp_path / "saved", device="cpu")
    assert torch.equal(
        reloaded.model.score_items(torch.arange(N_USERS)),
        rec.model.score_items(torch.arange(N_USERS)),
    )


def test_read_only_service_refuses_updates_and_saves(artifact_dir):
    app = create_app(artifact_dir, device="cpu", read_only=True, allow_updates=True)
    with BackgroundServer(app) as server:
        update = httpx.post(
            f"{server.url}/ratings", json={"ratings": [{"user": 1000, "item": 500, "rating": 3}]}
        )
        save = httpx.post(f"{server.url}/artifact/save")
    assert update.status_code == 409 and "read-only" in update.json()["detail"]
    assert save.status_code == 409 and "read-only" in save.json()["detail"]


def test_save_without_a_save_dir_is_a_409(artifact_dir):
    with BackgroundServer(create_app(artifact_dir, device="cpu", allow_updates=True)) as server:
        save = httpx.post(f"{server.url}/artifact/save")
    assert save.status_code == 409 and "--save-dir" in save.json()["detail"]


# ---------------------------------------------------------------------- limits and access
RATING = {"ratings": [{"user": 1000, "item": 500, "rating": 3}]}


def _small_json(response, limit=1000):
    """The reply is short and strict JSON (no NaN or Infinity in it)."""
    assert len(response.content) < limit, response.content[:200]
    return json.loads(response.text, parse_constant=lambda name: pytest.fail(name))


def test_oversized_bodies_get_a_quick_small_413(client):
    start = time.perf_counter()
    response = client.post(
        "/recommendations", content=b" " * 2_000_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and time.perf_counter() - start < 5
    assert "262144-byte limit" in _small_json(response)["detail"]
    chunks = (b" " * 100_000 for _ in range(20))  # no Content-Length: counted as it streams
    streamed = client.post(
        "/recommendations", content=chunks, headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413 and "--max-body-bytes" in _small_json(streamed)["detail"]
    assert client.get("/health").status_code == 200  # the connection and server carry on


@pytest.mark.parametrize(
    "body",
    [
        '{"ratings": [{"item": 500, "rating": NaN}]}',
        '{"ratings": [{"item": 500, "rating": Infinity}]}',
        '{"ratings": [{"item": 500, "rating": -Infinity}]}',
        '{"ratings": [{"item": 500, "rating": 1e309}]}',
        '{"ratings": [{"item": 1e309, "rating": 3}]}',
    ],
)
def test_non_finite_numbers_get_a_422(client, body):
    response = client.post(
        "/recommendations/new-user", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "numbers must be finite" in _small_json(response)["detail"]


def test_validation_errors_do_not_echo_large_inputs(client):
    response = client.post("/recommendations", json={"users": ["x" * 200_000], "k" * 50_000: 1})
    assert response.status_code == 422
    body = _small_json(response, limit=3000)
    assert "body.users.0" in body["detail"] and "at most 256 characters" in body["detail"]
    assert all("input" not in error for error in body["errors"])


def test_host_header_is_checked(client, served, artifact_dir):
    assert client.get("/health", headers={"host": "evil.example"}).status_code == 400
    for host in ("localhost:8000", "[::1]:8000", f"127.0.0.1:{served[0].port}"):
        assert client.get("/health", headers={"host": host}).status_code == 200, host
    assert serving_hosts("0.0.0.0") == LOOPBACK_HOSTS
    assert serving_hosts("10.1.2.3", ["recs.example"]) == (
        *LOOPBACK_HOSTS,
        "10.1.2.3",
        "recs.example",
    )
    app = create_app(served[1], allowed_hosts=["*"])
    with BackgroundServer(app) as server:
        assert httpx.get(f"{server.url}/health", headers={"host": "evil.example"}).is_success


def test_token_guards_writes(artifact_dir):
    with (
        BackgroundServer(create_app(artifact_dir, device="cpu", token="s3cret")) as server,
        httpx.Client(base_url=server.url, timeout=30) as session,
    ):
        missing = session.post("/ratings", json=RATING)
        wrong = session.post("/ratings", json=RATING, headers={"authorization": "Bearer s3cre"})
        scheme = session.post("/ratings", json=RATING, headers={"authorization": "Basic s3cret"})
        right = session.post("/ratings", json=RATING, headers={"authorization": "Bearer s3cret"})
    assert missing.status_code == wrong.status_code == scheme.status_code == 401
    assert "Authorization: Bearer TOKEN" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200, right.text


def test_online_growth_is_bounded(artifact_dir, data):
    rec = Recommender(artifact_dir, device="cpu")
    app = create_app(rec, allow_updates=True, max_new_users=3, max_new_items=2)
    known_user, known_item = int(data.user_ids[0]), int(data.item_ids[0])

    def post(pairs, **options):
        ratings = [{"user": u, "item": i, "rating": 3} for u, i in pairs]
        return session.post("/ratings", json={"ratings": ratings, **options})

    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as session:
        assert post([(1, known_item), (2, known_item), (3, known_item)]).status_code == 200
        over = post([(4, known_item)])
        assert over.status_code == 409
        assert "limit of 3 new users since start-up (3 added so far)" in over.json()["detail"]
        assert post([(known_user, 7), (known_user, 8)]).status_code == 200
        assert post([(known_user, 9)]).status_code == 409
        assert post([(known_user, known_item), (1, 7)]).status_code == 200  # known ids go on
        for bad in (-5, 0, 2**31, 2**63 - 1):
            refused = post([(bad, known_item)])
            assert refused.status_code == 422 and "[1, 2147483647]" in refused.json()["detail"]
        assert "out of range" in post([(10**30, known_item)]).json()["detail"]
        assert (
            "body.update: Input should be 'users' or"
            in post([(known_user, known_item)], update="all").json()["detail"]
        )
        meta = session.get("/metadata").json()
    assert (meta["n_users"], meta["n_items"]) == (N_USERS + 3, N_ITEMS + 2)
    assert meta["writes"] == "open" and meta["limits"]["max_new_users"] == 3


def test_save_dir_may_not_overwrite_the_served_artifact(artifact_dir, tmp_path):
    for save_dir in (artifact_dir, artifact_dir / "v2", artifact_dir.parent):
        with pytest.raises(ValueError, match="would overwrite the served artifact"):
            create_app(artifact_dir, device="cpu", save_dir=save_dir)
    link = tmp_path / "saved"
    app = create_app(artifact_dir, device="cpu", allow_updates=True, save_dir=link)
    link.symlink_to(artifact_dir)  # after start-up: caught when the request comes
    before = (artifact_dir / "manifest.json").read_bytes()
    with BackgroundServer(app) as server:
        save = httpx.post(f"{server.url}/artifact/save")
    assert save.status_code == 409 and "would overwrite" in save.json()["detail"]
    assert (artifact_dir / "manifest.json").read_bytes() == before


def test_workers_take_their_options_from_the_environment(artifact_dir, monkeypatch):
    monkeypatch.setenv("MFUTILS_ARTIFACT", str(artifact_dir))
    monkeypatch.setenv("MFUTILS_MAX_BODY_BYTES", "100")
    monkeypatch.setenv("MFUTILS_ALLOWED_HOSTS", "recs.example,127.0.0.1")
    monkeypatch.setenv("MFUTILS_TOKEN", "s3cret")
    with (
        BackgroundServer(create_app_from_env()) as server,
        httpx.Client(base_url=server.url, timeout=30) as session,
    ):
        meta = session.get("/metadata").json()
        large = session.post("/recommendations", json={"users": [1000] * 50})
        host = session.get("/health", headers={"host": "recs.example"})
        evil = session.get("/health", headers={"host": "evil.example"})
    assert meta["writes"] == "token" and meta["limits"]["max_body_bytes"] == 100 < MAX_BODY_BYTES
    assert large.status_code == 413 and host.status_code == 200 and evil.status_code == 400
