# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 14 · Serving the best model: artifact, service, online updates
#
# Notebooks 01–07 compare models offline. The seed project's Part II puts its best model
# behind a training script; here is what a team puts behind a product:
#
# 1. **Pick** the model from the benchmark's results table (every model on the same
#    ML-100K folds, `benchmarks/results/explicit-ml-100k.json`).
# 2. **Train and export** it as a versioned *artifact*: one directory with the model's own
#    checkpoint, its options, the raw-id mappings, titles and genres, the training ratings and
#    the held-out metrics, under a manifest with format version, checksums, created-at and
#    package version. From a shell: `mfutils train BiasedMF-SGD --split u1 --out DIR`.
# 3. **Serve** it from a fresh process — `mfutils serve DIR --host 127.0.0.1 --port 8000`
#    starts a FastAPI app under uvicorn (API docs at `/docs`):
#
# | request | answers |
# |---|---|
# | `GET /health`, `GET /metadata` | liveness; model, options, data, metrics, version, methods |
# | `GET /users/{user}/recommendations?k=10` | top-$K$ for a known user, seen items excluded |
# | `POST /recommendations/new-user` | top-$K$ from `{"ratings": [{"item": 50, "rating": 5}]}` |
# | `GET /items/{item}/similar?k=10` | the most similar items |
# | `POST /ratings` | online update: `{"ratings": [{"user": 1, "item": 50, "rating": 4}]}` |
#
# 4. **Query** it over HTTP, **update** it online, and **measure** latency and throughput on
#    CPU.
#
# A known user's list is the model's own ranking: for biased MF the scores of the whole
# catalogue are one matrix–vector product $\mu + b_u + b + Q p_u$ on the model's device,
# seen items masked, `topk`. A **new user** with ratings $R(u)$ is *folded in* without
# retraining: with the items fixed, $\theta_u = [p_u; b_u]$ solves the same ridge regression as
# the user half of an ALS sweep, with the model's own per-rating penalty,
#
# $$\Big(\sum_{i\in R(u)} x_i x_i^\top + n_u \Lambda\Big)\,\theta_u
#   = \sum_{i\in R(u)} (r_{ui}-\mu-b_i)\,x_i, \qquad x_i = [q_i; 1].$$
#
# An **online update** is the same solve for a known user over all their ratings, old and
# new — only the affected rows change.

# %% tags=["colab", "remove-cell"]
# Colab: clone the series and install mfutils when it is missing (elsewhere: nothing happens)
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("mfutils") is None and "google.colab" in sys.modules:
    clone, url = "/content/mfutils", "https://github.com/mfutils/mfutils"
    if not os.path.isdir(clone):
        git = ["git", "clone", "-q", "--depth", "1", "--branch", "main"]
        subprocess.run([*git, url, clone], check=True)
    import torch  # Colab's CUDA build: the constraint keeps pip from replacing it

    with open("/tmp/keep-torch.txt", "w") as pins:
        pins.write(f"torch=={torch.__version__}\n")
    pip = [sys.executable, "-m", "pip", "install", "-q", "-c", "/tmp/keep-torch.txt"]
    subprocess.run([*pip, "-e", f"{clone}[serve]"], check=True)
    sys.path.insert(0, clone)  # the editable install's path hook loads at the next start
    os.chdir(f"{clone}/notebooks")

# %% tags=["parameters"]
dataset = "ml-100k"
results_dir = None  # the series runner passes a folder; numbers are logged there
device = None  # where training runs: None picks cuda, then mps, then cpu
seed = 0
results_table = "../benchmarks/results/explicit-ml-100k.json"  # ML-100K's model ranking
online_updates = True  # serve the best model that folds in new users and takes updates
train_split = "u1"  # "u1": held-out metrics in the artifact (a random 20% holdout on releases
# without canonical folds); "full": train on every rating
serve_device = "cpu"  # the service's device (latency "on CPU")
n_requests = 300  # top-10 requests for the latency percentiles and the load test
client_threads = 4  # concurrent clients of the load test
showcase_user, other_user = 1, 2  # raw MovieLens user ids (if absent: the first two users)

# %%
import json
import os
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import seaborn as sns

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens
from mfutils.results import ResultsLog
from mfutils.serving import Recommender, pipeline
from mfutils.serving.loadtest import measure_calls, measure_latency, measure_throughput, summarize
from mfutils.serving.runner import ServerProcess

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("14_serving", results_dir)
data = load_movielens(dataset)
if train_split.startswith("u") and data.fold is None:  # u1..u5 are ML-100K's files
    print(f"{dataset} has no canonical folds: split {train_split!r} becomes 'random' (20%)")
    train_split = "random"
if not np.isin([showcase_user, other_user], data.user_ids).all():
    showcase_user, other_user = (int(u) for u in data.user_ids[:2])
    print(f"showcase users: {showcase_user} and {other_user}")
workdir = Path(tempfile.mkdtemp(prefix="mfutils-serving-"))
data, device

# %% [markdown]
# ## Which model to serve
# The results table ranks every model by mean RMSE over ML-100K's u1..u5 (the committed
# benchmark; on another release the choice made there is trained on that release's data). The
# most accurate ones (timeSVD++, SVD++, the integrated model) describe a user through their
# rated items and time terms; the service can rank with them, but it can fold a *new* user into
# them only by popularity, and it cannot update them online without retraining. With
# `online_updates = True` we serve the best model that does all three; the columns `new_user`
# and `online_updates` say what each model would get.

# %%
choice, table = pipeline.choose_model(results_table, online_updates=online_updates)
print(f"serving {choice}")
table.drop(columns=["params", "folds"]).round(4) if len(table) else table

# %% [markdown]
# ## Train and export the artifact
# `train_artifact` is what `mfutils train` runs: `load_movielens`, the split, `model.fit`,
# RMSE / MAE and full-ranking recall / NDCG@10 on the held-out part.

# %%
artifact = pipeline.train_artifact(choice, data, split=train_split, seed=seed, device=device)
path = artifact.save(workdir / "model")
print(
    f"same as: mfutils train {choice} --dataset {dataset} --split {train_split} "
    f"--seed {seed} --out {path}"
)
pd.Series(artifact.info["metrics"], name=artifact.info["protocol"], dtype=float).round(4)

# %%
manifest = json.loads((path / "manifest.json").read_text())
print(
    {
        key: manifest[key]
        for key in ("format", "format_version", "version", "created_at", "mfutils_version")
    }
)
pd.DataFrame(manifest["files"]).T.assign(sha256=lambda f: f["sha256"].str[:16] + "...")

# %% [markdown]
# ## Serve it from a fresh process
# The documented command, run as a subprocess on a free loopback port; the notebook talks to
# it over HTTP only, with `--allow-updates` for the online update below (writes are off by
# default; `--token` would limit them to bearers of a token). `Recommender` loads the same
# artifact here, to check the answers.

# %%
server = ServerProcess(path, args=["--device", serve_device, "--allow-updates"]).start()
api = httpx.Client(base_url=server.url, timeout=30)
local = Recommender(path, device=serve_device)
capabilities = api.get("/metadata").json()["capabilities"]
api.get("/health").json(), capabilities


# %%
def show(body: dict) -> pd.DataFrame:
    """A response's items as a table."""
    return pd.DataFrame(body["items"]).assign(genres=lambda f: f["genres"].str.join(", "))


served = api.get(f"/users/{showcase_user}/recommendations", params={"k": 10}).json()
show(served)

# %% [markdown]
# The served lists equal the model's own `recommend()` in this process, for a sample of users:

# %%
sample = np.random.default_rng(seed).choice(local.model.user_ids, 50, replace=False)
same = [
    [row["item"] for row in api.get(f"/users/{u}/recommendations?k=10").json()["items"]]
    == local.recommend([u], 10)[0].items.tolist()
    for u in sample
]
print(f"{sum(same)} of {len(same)} users get identical top-10 lists")

# %% [markdown]
# ## A new user, and similar items
# Someone who just signed up rates the original Star Wars trilogy 5 stars (in a release
# without those titles: its three most rated movies); the service folds them in (the
# response's `method`) and recommends from those three ratings alone.

# %%
titles = local.items.set_index("item_id")["title"].dropna()
trilogy = [
    titles.index[titles.str.startswith(name)]
    for name in ("Star Wars", "Empire Strikes Back", "Return of the Jedi")
]
if all(len(found) for found in trilogy):
    trilogy = [int(found[0]) for found in trilogy]
else:
    trilogy = [int(i) for i in data.item_ids[np.argsort(-data.item_counts(), kind="stable")[:3]]]
    print(
        "no Star Wars trilogy here: the three most rated movies instead,",
        titles.reindex(trilogy).tolist(),
    )
fan = {"ratings": [{"item": item, "rating": 5} for item in trilogy], "k": 10}
new = api.post("/recommendations/new-user", json=fan).json()
print(f"method: {new['method']}")
show(new)

# %%
similar = api.get(f"/items/{trilogy[0]}/similar", params={"k": 8}).json()
print(f"method: {similar['method']}")
show(similar)

# %% [markdown]
# Bad input gets a 4xx with a message that says what is wrong:

# %%
bad = {
    "unknown user": api.get("/users/999999/recommendations"),
    "k out of range": api.get(f"/users/{showcase_user}/recommendations", params={"k": 0}),
    "unknown item": api.post(
        "/recommendations/new-user", json={"ratings": [{"item": 999999, "rating": 4}]}
    ),
    "malformed JSON": api.post(
        "/recommendations", content=b'{"users": [1,', headers={"content-type": "application/json"}
    ),
}
pd.DataFrame(
    {
        "status": {k: r.status_code for k, r in bad.items()},
        "detail": {k: r.json()["detail"] for k, r in bad.items()},
    }
)

# %% [markdown]
# ## An online update
# The showcase user rates their three top recommendations 1 star. `POST /ratings` re-solves
# their row from all their ratings, in place, under a write lock; the next request sees the
# new list. Another user's list does not move.


# %%
def top10(user: int) -> list[dict]:
    return api.get(f"/users/{user}/recommendations", params={"k": 10}).json()["items"]


before = {user: top10(user) for user in (showcase_user, other_user)}
disliked = [row["item"] for row in before[showcase_user][:3]]
update = api.post(
    "/ratings",
    json={"ratings": [{"user": showcase_user, "item": item, "rating": 1} for item in disliked]},
)
after = {user: top10(user) for user in (showcase_user, other_user)}
print(update.status_code, update.json())
pd.DataFrame(
    {
        "before": [row["title"] for row in before[showcase_user]],
        "after": [row["title"] for row in after[showcase_user]],
    }
)

# %%
old_scores = {row["item"]: row["score"] for row in before[showcase_user]}
rescored = [
    row["score"] != old_scores[row["item"]]
    for row in after[showcase_user]
    if row["item"] in old_scores
]
moved = any(rescored) and not set(disliked) & {row["item"] for row in after[showcase_user]}
unmoved = after[other_user] == before[other_user]
{"showcase user re-scored, disliked items gone": moved, "other user's list unchanged": unmoved}

# %% [markdown]
# ## Latency and throughput on CPU
# `n_requests` top-10 requests for random known users, one after another over a keep-alive
# connection (latency), then split among `client_threads` concurrent clients (throughput).
# Client and server share this machine's cores, so these are end-to-end loopback numbers;
# `in-process recommend()` is the model's own share of a request.

# %%
users = np.random.default_rng(seed).choice(local.model.user_ids, n_requests)
paths = [f"/users/{user}/recommendations?k=10" for user in users]
http_seconds = measure_latency(server.url, paths)
model_seconds = measure_calls(lambda user: local.recommend([user], 10), users)
load = measure_throughput(server.url, paths, threads=client_threads)
latency = pd.DataFrame(
    {
        "HTTP, sequential": summarize(http_seconds),
        f"HTTP, {client_threads} clients": {
            k: load[k] for k in ("requests", "p50_ms", "p99_ms", "mean_ms")
        },
        "in-process recommend()": summarize(model_seconds),
    }
).T
print(
    f"{load['requests_per_s']:.0f} requests/s with {client_threads} client threads, "
    f"{os.cpu_count()} cores"
)
latency.round(2)

# %%
times = pd.DataFrame({"HTTP request": http_seconds * 1e3, "in-process": model_seconds * 1e3})
ax = sns.histplot(
    times.melt(var_name="path", value_name="ms"),
    x="ms",
    hue="path",
    log_scale=True,
    bins=40,
    element="step",
)
ax.set(title=f"top-10 latency, {choice} on {serve_device}", xlabel="milliseconds (log)")

# %%
api.close()
server.stop()

# %% [markdown]
# ## Results

# %%
protocol = (
    f"GET top-10, {n_requests} requests over loopback HTTP, service on "
    f"{serve_device}, {os.cpu_count()} cores shared with the clients"
)
for name, value in artifact.info["metrics"].items():
    log.add(choice, name, value, dataset=dataset, protocol=artifact.info["protocol"])
log.add(
    choice,
    "latency_p50_ms",
    latency.loc["HTTP, sequential", "p50_ms"],
    dataset=dataset,
    protocol=f"{protocol}, sequential",
)
log.add(
    choice,
    "latency_p99_ms",
    latency.loc["HTTP, sequential", "p99_ms"],
    dataset=dataset,
    protocol=f"{protocol}, sequential",
)
log.add(
    choice,
    "requests_per_s",
    load["requests_per_s"],
    dataset=dataset,
    protocol=f"{protocol}, {client_threads} client threads",
)
log.save()
log.frame()

# %%
assert all(same), "the served top-10 differs from the model's own recommend()"
assert new["method"] == capabilities["new_user"] and len(new["items"]) == 10
assert all(response.status_code in (404, 422) for response in bad.values())
if capabilities["online_updates"]:
    assert update.status_code == 200 and moved and unmoved
if dataset == "ml-100k" and train_split == "u1":
    assert artifact.info["metrics"]["rmse"] < 0.95, artifact.info["metrics"]

# %% [markdown]
# ## What to try next
# * `mfutils serve DIR --workers 2`: one process per core, each with its own copy of the
#   model (the service is then read-only: an online update would reach one copy only).
# * `serve_device = "cuda"`: the catalogue scores are one matrix product, so a GPU pays off
#   with large catalogues (ML-25M: 62k items) and batched `POST /recommendations`.
# * `POST /artifact/save` (start with `--save-dir`) writes the updated model as version 2 of
#   the artifact; a nightly retrain replaces it with a fresh version 1.
# * For catalogues of millions of items, replace the exact top-$K$ by an approximate
#   nearest-neighbour index over $Q$ (inner-product search).
