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
# # 00 · MovieLens: the data behind the series
#
# This series builds matrix-factorization recommenders step by step on MovieLens: baseline
# estimates, biased matrix factorization, SVD++ and timeSVD++, factorization machines and
# DeepFM, then implicit-feedback ranking losses. Every notebook follows the same rhythm:
# intuition, equation, a short call into the tested `mfutils` package, the result and a plot.
#
# Before any model, this notebook looks at the data: how big and how sparse the rating matrix
# is, how ratings spread over values, movies, users and time, who the users are, and which
# train/test splits the later notebooks use, and why.

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
dataset = "ml-100k"  # any release known to mfutils.data.load_movielens, e.g. "ml-1m"
results_dir = None  # the series runner passes a folder; this notebook logs no model metrics
seed = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mfutils import plotting
from mfutils.data import load_movielens, splits
from mfutils.experiments import fold_labels, rating_folds

plotting.set_style()
pd.set_option("display.precision", 4)

# %% [markdown]
# ## Loading the data
#
# MovieLens is collected by [GroupLens](https://grouplens.org/datasets/movielens/) at the
# University of Minnesota: people rated movies on the MovieLens web site, on a 1–5 star scale
# (ML-100K, ML-1M) or in half stars from 0.5 to 5 (ML-10M and the later releases).
# Its license forbids redistribution, so the repository ships no data. `load_movielens`
# looks for the files in `$MFUTILS_DATA_DIR/<name>/` (or a per-user cache folder when the
# variable is unset) and, when they are absent, downloads the official archive from GroupLens,
# checks its published MD5 and extracts it there. On Colab it simply downloads.
#
# The result is a `Ratings` container: parallel arrays `user, item, rating, timestamp` with
# **compact ids** `0 .. m-1` and `0 .. n-1` (they index the embedding tables of every model;
# `data.user_ids[u]` is the original id), plus side tables of users and items.

# %%
data = load_movielens(dataset)
data

# %%
data.to_frame(original_ids=True).head()

# %%
data.items.head(3)

# %% [markdown]
# ## Size and sparsity
#
# With $m$ users, $n$ items and the set $\mathcal K = \{(u, i) : r_{ui} \text{ known}\}$ of
# observed ratings, the **density** of the rating matrix is
#
# $$\text{density} = \frac{|\mathcal K|}{m \cdot n}.$$
#
# A model has to fill in every other cell. Matrix factorization does it with a rank-$f$
# approximation $\hat r_{ui} = p_u^\top q_i$ with $(m + n) f$ parameters; the last row of the
# table compares that count at $f = 50$ with the number of ratings. Near or above one
# parameter per rating, the fit is only as good as its regularization.

# %%
user_counts, item_counts = data.user_counts(), data.item_counts()
pd.Series(
    {
        "ratings |K|": len(data),
        "users m": data.n_users,
        "items n": data.n_items,
        "density |K| / (m n)": round(data.density, 4),
        "mean rating mu": round(data.global_mean, 3),
        "median ratings per user": np.median(user_counts),
        "median ratings per item": np.median(item_counts),
        "items without ratings": int((item_counts == 0).sum()),
        "parameters at f = 50, per rating": round(
            (data.n_users + data.n_items) * 50 / len(data), 2
        ),
    },
    dtype=object,
).to_frame(dataset)

# %% [markdown]
# ## Rating values
#
# Ratings lean positive: people mostly rate movies they chose to watch. The global mean $\mu$
# is the first and crudest predictor; predicting $\mu$ for every pair has an RMSE equal to the
# standard deviation of the ratings, the yardstick every later model must beat.

# %%
plotting.plot_rating_distribution(data.rating)
plt.show()
print(f"mu = {data.global_mean:.3f}; RMSE of always predicting mu: {data.rating.std():.3f}")

# %% [markdown]
# ## Popularity: a long tail
#
# Sorting the movies by their number of ratings gives the classic long tail: a few
# blockbusters collect a large share of all ratings while most movies have a handful. For the
# models this means the item biases and factors of tail movies rest on very few ratings (they
# must be shrunk towards zero), and top-K recommenders are tempted to recommend the head.

# %%
share_top20 = plotting.top_share(item_counts, 0.2)
plotting.plot_long_tail(item_counts, top=(0.1, 0.2), what="movies")
plt.show()
print(
    f"the top 20% of movies hold {share_top20:.1%} of the ratings; "
    f"{(item_counts < 5).mean():.1%} of movies have fewer than 5"
)

# %%
data.items.assign(ratings=item_counts).nlargest(5, "ratings")[["title", "ratings"]]

# %% [markdown]
# ## User activity
#
# Ratings per user are spread over more than an order of magnitude, hence the log axis.
# GroupLens kept only users with at least 20 ratings in its releases (ML-100K, ML-1M, …), and
# the minimum below shows it straight from the data (a scaled-down replica may break the rule):
# the data set has no true cold-start users, unlike a live system.

# %%
plotting.plot_user_activity(user_counts)
plt.show()
pd.Series(user_counts).describe().round(1).to_frame("ratings per user").T

# %% [markdown]
# ## Ratings over time
#
# Koren's timeSVD++ (a later notebook) lets biases and user factors drift with time, e.g. a
# user bias $b_u(t) = b_u + \alpha_u\,\mathrm{dev}_u(t) + b_{u,t}$ with
# $\mathrm{dev}_u(t) = \mathrm{sign}(t - t_u)\,|t - t_u|^{\beta}$ around the user's mean date
# $t_u$, and a per-day term $b_{u,t}$. That only helps when users rate over a long period.

# %%
when = pd.to_datetime(data.timestamp, unit="s")
span_days = (when.max() - when.min()).total_seconds() / 86_400
plotting.plot_ratings_over_time(data.timestamp, freq="W")
plt.show()
print(f"{when.min():%Y-%m-%d} to {when.max():%Y-%m-%d}: {span_days:.1f} days")

# %%
frame = data.to_frame().assign(day=data.timestamp // 86_400)  # calendar day (UTC)
days_per_user = frame.groupby("user")["day"].nunique()
seconds = frame.groupby("user")["timestamp"]
single_day = int((days_per_user == 1).sum())
print(
    f"{single_day} of {data.n_users} users ({single_day / data.n_users:.0%}) rated on a "
    f"single day; the median user's ratings span "
    f"{((seconds.max() - seconds.min()) / 86_400).median():.3f} days; "
    f"{frame.groupby(['user', 'day']).ngroups:,} (user, day) pairs in all"
)

# %% [markdown]
# ML-100K covers about seven months, and most of its users gave all their ratings in one
# sitting (the numbers above are those of the release loaded; the later releases span years).
# A drift term $\alpha_u\,\mathrm{dev}_u(t)$ cannot be learned from one session, and the
# per-day bias $b_{u,t}$ becomes a per-session bias. Keep that in mind when timeSVD++ gains
# little on ML-100K compared with the Netflix data it was designed for.
#
# ## Who rates, and what
#
# ML-100K and ML-1M also describe their users (age, gender, occupation, zip code; ML-1M codes
# age and occupation as integers); the later releases have no user table. Every release
# describes its movies (title, year, genre flags). Factorization machines and DeepFM use these
# as extra fields.

# %%
if data.users is not None:
    plotting.plot_demographics(data.users)
    plt.show()
else:
    print(f"{dataset} has no user table (no demographics): skipping the demographic plots")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
plotting.plot_genre_counts(data.items, ax=axes[0])
plotting.plot_genre_counts(data.items, weights=item_counts, ax=axes[1])
plt.show()
genres_per_movie = data.items.filter(like="genre_").sum(axis=1)
print(f"a movie has {genres_per_movie.mean():.2f} genre flags on average")

# %% [markdown]
# ## The splits used in this series, and why
#
# A model is fitted on a **train** part and scored on a **test** part it never saw.
# Hyperparameters (factors, regularization, epochs) are chosen on a **validation** part carved
# out of the train part, never on the test part: a test set that guided a choice no longer
# estimates the error on new data.
#
# - **Canonical folds u1..u5** (ML-100K): five 80/20 splits with disjoint test parts, shipped
#   with the data. Papers report the mean RMSE/MAE over them, so do we for every rating
#   model; every model in a comparison sees the same folds.
# - **Random holdout** and **k-fold**: the same idea for releases without canonical folds;
#   there, a seeded random 5-fold split replaces u1..u5 in every notebook
#   (`mfutils.experiments.rating_folds`), and its folds are called "fold 1" … "fold 5".
# - **Per-user holdout**: a share of *each* user's ratings, so every user appears in test;
#   the natural split for per-user top-K metrics.
# - **Temporal holdout** and **leave-last-out**: each user's latest ratings are the test part,
#   so a model predicts the future from the past, as a deployed recommender must. This is more
#   realistic, but since most ML-100K users rated in a single session, "the future" there is
#   usually the same evening.
# - **Validation split**: 10% of a training part, for early stopping and tuning.

# %%
folds, protocol = rating_folds(data, seed=seed)  # u1..u5 on ML-100K, else a seeded 5-fold
fold = fold_labels(protocol)[0]
canonical = protocol == "u1..u5"
examples = {
    "random holdout 80/20": splits.random_holdout(data, test_fraction=0.2, seed=seed),
    "k-fold, k = 5 (fold 1)": splits.kfold(data, k=5, seed=seed)[0],
    "per-user holdout 20%": splits.per_user_holdout(data, test_fraction=0.2, seed=seed),
    "temporal holdout, last 20%": splits.temporal_holdout(data, test_fraction=0.2),
    "leave-last-out, n = 1": splits.leave_last_out(data, n=1),
    f"validation, 10% of {fold} train": splits.validation_split(
        folds[0][0], fraction=0.1, seed=seed
    ),
}
if canonical:
    examples = {"canonical u1..u5 (u1)": folds[0], **examples}
print(f"rating folds of the series on {dataset}: {protocol}")


# %%
def describe(train, test):
    """Sizes of one split and how much of its test part lies in each user's future."""
    last_train = pd.Series(train.timestamp).groupby(train.user).max()
    future = test.timestamp >= last_train.reindex(test.user, fill_value=-1).to_numpy()
    return {
        "train": len(train),
        "test": len(test),
        "test users": np.unique(test.user).size,
        "test items unseen in train": np.setdiff1d(test.item, train.item).size,
        "test after user's train (share)": future.mean(),
    }


# %%
used_for = ["headline RMSE/MAE of every rating model (01 onward)"] * canonical + [
    "quick checks; releases without canonical folds",
    "cross-validation on releases without canonical folds (e.g. ML-1M)"
    + ("" if canonical else ": the headline RMSE/MAE of every rating model here"),
    "per-user top-K ranking metrics (implicit feedback, 11-13)",
    "timeSVD++ (06): predicting each user's later ratings",
    "next-item top-K evaluation (implicit feedback, 11-12)",
    "early stopping and hyperparameter grids (01 onward)",
]
table = pd.DataFrame.from_dict({k: describe(*v) for k, v in examples.items()}, orient="index")
table.assign(**{"used for": used_for})

# %% [markdown]
# Two things stand out in the table. On ML-100K, the canonical test part `u1.test` covers far
# fewer users than a random 20%: the five folds are consecutive blocks of the file `u.data`,
# whose order roughly follows the user ids, so fold results differ partly because they test
# different users (other releases have no canonical folds, and their random folds test almost
# every user). And only the temporal splits put every test rating after the user's training
# ratings; in a random split a model may "predict" a rating from ratings the user gave later.

# %% [markdown]
# ## Checks
#
# The facts the narrative relies on, recomputed from the data (these also run in CI).

# %%
assert 0 < data.density < 1 and item_counts.sum() == user_counts.sum() == len(data)
assert all(len(a) + len(b) == len(data) for k, (a, b) in examples.items() if k[:5] != "valid")
assert all(len(a) + len(b) == len(data) for a, b in folds)
temporal = ["temporal holdout, last 20%", "leave-last-out, n = 1"]
assert table.loc[temporal, "test after user's train (share)"].eq(1.0).all()
if dataset == "ml-100k":
    assert len(data) == 100_000 and data.n_users == 943 and data.n_items == 1682
    assert data.density < 0.1
    assert user_counts.min() >= 20 and share_top20 > 0.5
    assert single_day > data.n_users / 2 and span_days < 220
    assert all(len(test) == 20_000 for _, test in folds)

# %% [markdown]
# ## What to try next
#
# - Set `dataset = "ml-1m"` in the parameters cell: a million ratings from 6,040 users. Is it
#   denser or sparser, and is its long tail longer? (ML-1M codes age and occupation as
#   integers.)
# - Call `plotting.plot_long_tail(user_counts, what="users")`: how concentrated is activity
#   among users compared with popularity among movies?
# - Compare the mean rating of movies with fewer than 10 ratings with that of the top 100.
#   Which estimate would you trust, and how should a model shrink the others?
# - `mfutils.data.to_implicit(data, threshold=4)` keeps only the ratings of 4 or 5 stars, the
#   implicit view of the ranking notebooks: how do the density and the long tail change?
# - Redo the session analysis with days in US time zones (MovieLens is based in Minnesota):
#   how many users still rated on a single day?
