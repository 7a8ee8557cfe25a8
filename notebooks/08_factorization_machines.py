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
# # 08 · Factorization machines: side features in the model
#
# Biased MF sees a rating as a pair of ids: $\hat r_{ui} = \mu + b_u + b_i + p_u^\top q_i$.
# MovieLens knows more — the user's age, gender, occupation and zip code (ML-100K and ML-1M
# only: the later releases have no user table), the movie's genres and release year, the time
# of the rating — but there is no slot for any of it: every
# parameter belongs to one user or one item. A user without ratings is $\mu + b_i$ however
# much we know about them, and two 25-year-old students share nothing unless their ratings say
# so. Adding side information to MF means hand-writing new terms for each source (Koren, Bell
# & Volinsky 2009, eq. 6) and new update rules for each term.
#
# A **factorization machine** (Rendle 2010) takes a rating as a sparse feature vector
# $x\in\mathbb R^p$ — one-hot ids, one-hot attributes, a multi-hot genre set — and models all
# pairwise interactions through factorized weights:
#
# $$\hat y(x) = w_0 + \sum_{i=1}^p w_i x_i
#   + \sum_{i=1}^p\sum_{j=i+1}^p \langle v_i, v_j\rangle\, x_i x_j .$$
#
# With only the user and item ids active ($x_u = x_i = 1$) this *is* biased MF:
# $w_0 + w_u + w_i + \langle v_u, v_i\rangle$. Every further feature brings a bias and a
# vector that interacts with all the others. The pair sum costs $O(k\,\mathrm{nnz}(x))$ by
# Rendle's identity (eq. 5):
#
# $$\sum_{i<j}\langle v_i,v_j\rangle x_ix_j = \tfrac12\sum_{f=1}^{k}
#   \Big[\Big(\sum_i v_{i,f}x_i\Big)^2 - \sum_i v_{i,f}^2x_i^2\Big].$$
#
# `mfutils.features.FieldEncoder` builds $x$: each field gets a block of rows of one
# embedding table (a per-field offset, as in pytorch-fm), with row 0 of every block reserved
# for values never seen in training. `FactorizationMachine` gathers the rows of a batch's
# active features once and forms both sums from them, each a weighted bag sum (what an
# `EmbeddingBag(mode="sum")` with per-sample weights computes).

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
device = None  # None picks cuda, then mps, then cpu ($MFUTILS_DEVICE overrides)
seed = 0
side_fields = ["age", "gender", "occupation", "zip", "genres", "year", "weekday", "since_first"]
# (the user fields are dropped on releases without a user table)
n_new_users = 100  # users held out of the first training fold for the cold-start comparison
cold_fraction = 0.05  # share of rows copied with the id hidden, to train the newcomer bucket
benchmark = "../benchmarks/results/explicit-ml-100k-features.json"  # u1..u5, all models

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens, validation_split
from mfutils.experiments import evaluate_folds, fold_labels, rating_folds, validation_grid
from mfutils.features import USER_FIELDS, FieldEncoder
from mfutils.metrics import rmse
from mfutils.models import BiasedMF, FactorizationMachine
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("08_factorization_machines", results_dir)
data = load_movielens(dataset)
folds, protocol = rating_folds(data, seed=seed)
fold = fold_labels(protocol)[0]  # u1 on ML-100K, else fold 1 of a seeded 5-fold split
fit_part, valid_part = validation_split(folds[0][0], fraction=0.1, seed=seed)
if data.users is None:  # no demographics in this release: the item and time fields remain
    dropped = [f for f in side_fields if f in USER_FIELDS]
    side_fields = [f for f in side_fields if f not in USER_FIELDS]
    print(f"{dataset} has no user table: without the user fields {dropped}")
data, device, protocol

# %% [markdown]
# ## One rating as a feature vector
# The fields, their cardinalities (reserved bucket included) and offsets, fit on the
# training part only; `genres` is multi-valued, each of an item's $g$ genres with $x = 1/g$.
# Then the active features of one rating: a global row of the table and its value.

# %%
encoder = FieldEncoder(["user", "item", *side_fields]).fit(fit_part)
row = encoder.transform(valid_part.subset([0]))
active = row["value"][0] > 0
display_row = pd.DataFrame(
    {
        "field": np.asarray(encoder.columns)[active.numpy()],
        "row of the table": row["index"][0][active].numpy(),
        "x": row["value"][0][active].numpy(),
    }
)
encoder.describe().merge(display_row, on="field", how="left")

# %% [markdown]
# ## With ids only, an FM is biased MF
# The same objective (squared error plus per-rating penalties), the same optimizer (Adam) and
# regularization: an FM over `user` and `item` and `BiasedMF(method="adam")` land on about the
# same validation error, and their predictions differ by far less than either's error.

# %%
fm_ids = FactorizationMachine(fields=["user", "item"], seed=seed, device=device).fit(fit_part)
mf_adam = BiasedMF(method="adam", seed=seed, device=device).fit(fit_part)
pred_fm, pred_mf = fm_ids.predict_ratings(valid_part), mf_adam.predict_ratings(valid_part)
pd.Series(
    {
        "FM (user, item)": rmse(pred_fm, valid_part.rating),
        "BiasedMF Adam": rmse(pred_mf, valid_part.rating),
        "between the two": rmse(pred_fm, pred_mf),
    },
    name="validation RMSE",
).round(4)

# %% [markdown]
# ## Ablation: adding each field
# Each side field added alone to the ids, then all of them, then the package's default
# (`DEFAULT_FIELDS`: every field but age and zip, those the data has), on the validation split
# carved from the first training fold (`u1.base` on ML-100K) — the test fold is not looked at.


# %%
def make_fm(**options):
    return FactorizationMachine(seed=seed, device=device, **options)


ids_rmse = rmse(pred_fm, valid_part.rating)
labels = {("user", "item", f): f"+ {f}" for f in side_fields}
labels |= {("user", "item", *side_fields): "all fields"}
ablation = validation_grid(
    make_fm,
    [{"fields": f} for f in labels] + [{}],  # {}: the default
    fit_part,
    valid_part,
)
ablation["added"] = ablation.fields.map(
    lambda f: labels[tuple(f)] if isinstance(f, list | tuple) else "default fields"
)
ablation["change"] = ablation.valid_rmse - ids_rmse
ablation[["added", "valid_rmse", "change"]].round(4)  # best first

# %% [markdown]
# On ML-100K, alone, only genres and the release year help; each demographic or time field costs a
# little — a user with dozens of ratings is described better by them than by their age.
# Together the fields do better than any one of them: the FM also learns gender × genre,
# occupation × year or weekday × item. Dropping the two fields that cost most alone, age and
# zip (the largest demographic tables), gives the best validation error of all: that set is
# the package's default, `DEFAULT_FIELDS`.

# %% [markdown]
# ## Test error: biased MF, FM with ids, FM with side features
# The first fold here (u1 on ML-100K); ML-100K's five folds come from `benchmarks/explicit.py`
# (the committed JSON).

# %%
models = {
    "BiasedMF SGD": lambda: BiasedMF(seed=seed, device=device),
    "FM ids only": lambda: make_fm(fields=["user", "item"]),
    "FM side features": lambda: make_fm(),  # DEFAULT_FIELDS, those the data has
}
first = pd.concat(
    [evaluate_folds(make, folds[:1], name=name, fold_names=[fold]) for name, make in models.items()]
)
first.round(4)

# %%
if dataset == "ml-100k":
    bench = pd.DataFrame(json.loads(Path(benchmark).read_text())["models"]).set_index("model")
    bench = bench.rename(
        index={
            "BiasedMF-SGD": "BiasedMF SGD",
            "FM-ids": "FM ids only",
            "FM-side": "FM side features",
        }
    )
    all_folds = pd.DataFrame(bench.rmse.tolist(), index=bench.index, columns=bench.folds.iloc[0])
    display_table = all_folds.assign(mean=bench.rmse_mean).loc[list(models)].round(4)
else:
    display_table = None
    print(f"the committed five-fold table ({benchmark}) is ML-100K's; skipped on {dataset}")
display_table

# %% [markdown]
# ## Cold users: few ratings, or none
# Hold `n_new_users` users (seeded; at most a quarter of the users) entirely out of the first
# training fold (`u1.base` on ML-100K) and fit on the rest. For the held-out users, biased MF
# and the ids-only FM can only answer with the item's terms; an FM keeps whatever fields the
# user has (all of them in "FM all fields": age, gender, occupation, zip code, where the release
# has a user table). The user's id row of an unseen user is the field's reserved bucket, which
# is zero unless trained: with `cold_fraction`, a small share of the training rows is copied
# with the user id (and, separately, the item id) hidden, so the bucket learns "a newcomer" and
# the other fields learn to stand in for the id.

# %%
train, test = folds[0]
train_users = np.unique(train.user)
n_new = min(n_new_users, len(train_users) // 4)
newcomers = np.random.default_rng(seed).choice(train_users, size=n_new, replace=False)
known_train = train.subset(~np.isin(train.user, newcomers))
is_new = np.isin(test.user, newcomers)
all_fields = ["user", "item", *side_fields]
cold = {
    "BiasedMF SGD": BiasedMF(seed=seed, device=device),
    "FM ids only": make_fm(fields=["user", "item"]),
    "FM side features": make_fm(),
    "FM all fields": make_fm(fields=all_fields),
    "FM all fields, cold_fraction": make_fm(fields=all_fields, cold_fraction=cold_fraction),
}
squared = pd.DataFrame(
    {
        name: (m.fit(known_train).predict_ratings(test) - test.rating) ** 2
        for name, m in cold.items()
    }
)
cold_rmse = squared[is_new].mean().pow(0.5).rename(f"new users ({is_new.sum()} ratings)")
cold_rmse.round(4)

# %% [markdown]
# On ML-100K, side fields alone do not rescue a newcomer: trained only on rows where the user id is
# present, the demographic weights were fitted *next to* a user bias and factor, and without
# them the sum is off — the side-feature FMs can even do worse than biased MF's item terms.
# Training the reserved bucket on id-hidden copies (`cold_fraction`; on a cold split
# carved from `u1.base`, 5-10% did best for the newcomers and 5% cost the other users
# nothing) lowers the newcomers' error clearly. Against biased MF's
# $\mu + b_i$ the gain is small and not robust: on that validation draw of 100 users,
# biased MF was still ahead. Demographics say little about taste on ML-100K.
#
# The other users of the test part (`u1.test`), by how many training ratings they have: the side
# features help the lightest users most.

# %%
activity = pd.cut(known_train.user_counts()[test.user[~is_new]], [0, 30, 60, 120, np.inf])
by_activity = squared[~is_new].groupby(activity, observed=True)
by_activity.mean().pow(0.5).assign(test_ratings=by_activity.size()).round(4)

# %% [markdown]
# ## Results

# %%
fields_used = "/".join(cold["FM side features"].encoder.fields)  # the defaults the data has
where = fold if protocol == "u1..u5" else f"{fold} of {protocol}"
for r in first.itertuples():
    log.add(
        r.model,
        "rmse",
        r.rmse,
        dataset=dataset,
        protocol=f"{where}, seed {seed}, FM fields {fields_used}",
    )
for name, value in cold_rmse.items():
    log.add(
        f"{name} (new users)",
        "rmse",
        value,
        dataset=dataset,
        protocol=f"{where}, {n_new} users held out of its train part (seed {seed})",
    )
log.save()
log.frame()

# %%
rmse_of = first.set_index("model").rmse
assert np.isfinite(rmse_of).all() and np.isfinite(cold_rmse).all(), (rmse_of, cold_rmse)
# with ids only, an FM is biased MF: the two agree far better than either fits the data
assert rmse(pred_fm, pred_mf) < min(
    rmse(pred_fm, valid_part.rating), rmse(pred_mf, valid_part.rating)
), (pred_fm, pred_mf)
assert cold_rmse["FM all fields, cold_fraction"] < cold_rmse["FM all fields"], cold_rmse
if dataset == "ml-100k":
    assert rmse_of["FM side features"] <= rmse_of["FM ids only"], rmse_of
    assert rmse_of["FM side features"] <= rmse_of["BiasedMF SGD"], rmse_of
    assert rmse_of["FM side features"] <= 0.925, rmse_of  # u1; the five folds: see above

# %% [markdown]
# ## What to try next
# * An implicit field, "the other movies $u$ rated" with $x = 1/\sqrt{|N(u)|}$: the FM then
#   holds SVD++ (Rendle 2010, §V.B).
# * Field-aware FMs (one vector per field pair) and per-field regularization.
# * Notebook 09 puts a deep network on the same embeddings (DeepFM).
