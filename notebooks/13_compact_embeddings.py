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
# # 13 · Compact embeddings: hashing trick, hash embeddings, Bloom embeddings
#
# Every model so far keeps one vector per user and per item: a table of $n\,d$ numbers. For
# MovieLens that is nothing (943 users, 1,682 movies), but production catalogues have
# $10^8$ ids, new ids arrive every minute, and categorical side features (query tokens, zip
# codes, device ids) have open vocabularies. Three classic answers store a **pool** of
# $B<n$ vectors and map each id to rows of it with fixed hash functions:
#
# * **Hashing trick** (Weinberger et al. 2009): $e_x=\xi(x)\,E[h(x)]$ with a bucket hash
#   $h$ and a sign hash $\xi\in\{\pm1\}$, which makes inner products unbiased under
#   collisions. Parameters: $B\,d$.
# * **Hash embeddings** (Svenstrup et al. 2017, eq. 1): $k$ hashes pick $k$ pool rows, combined
#   with $k$ *learned importance weights* per id,
#   $e_x=\sum_{i=1}^k p_x^i\,E[h_i(x)]$ (optionally $[e_x;p_x]$). Parameters: $B\,d+K\,k$,
#   with $K=n$ weight rows for a known vocabulary.
# * **Bloom embeddings** (Serrà & Karatzoglou 2017; spaCy's `HashEmbed`): the sum of $k$
#   hashed rows, $e_x=\sum_{i=1}^k E[h_i(x)]$ — hash embeddings with $p\equiv1$.
#   Parameters: $B\,d$.
#
# All three are `nn.Module`s of `mfutils.embeddings` with one interface (`forward(ids)`, a
# mean over multi-valued bags, `n_parameters`), built from a parameter budget by
# `make_embedding(kind, n_ids, dim, ratio=...)`. The hashes are universal hashes
# $(a x+b) \bmod (2^{31}-1)$ in `int64` tensors, seeded and identical in every process and
# on every device (unlike Python's salted `hash()`); each table hashes its id range once into
# a buffer, so a lookup is a gather. `TwoTower(embedding=..., embedding_options=...)` swaps
# them in for the user and item tables, and `mfutils.compact.CompactBiasedMF` does the same
# for biased MF's factors.
#
# The question of this notebook: **how much accuracy does each method give up as the tables
# shrink to 50%, 25%, 10% and 5% of their full size?**

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
ratio = 0.25  # the budget refitted live (a share of the full tables' parameters)
curve_file = None  # None: benchmarks/results/compact-<dataset>.json (benchmarks/implicit.py),
# else ML-100K's

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mfutils import get_device, plotting, seed_everything
from mfutils.compact import collision_table, memory_table, ranking_curve, rating_curve
from mfutils.data import load_movielens
from mfutils.experiments import ranking_split, rating_folds
from mfutils.plotting import plot_compact_curves
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("13_compact_embeddings", results_dir)
data = load_movielens(dataset)
split = ranking_split(data, seed=seed)
curve_file = Path(curve_file or f"../benchmarks/results/compact-{dataset}.json")
if not curve_file.is_file():  # only ML-100K's curves are committed
    print(
        f"{curve_file} does not exist: the curves and the settings below are ML-100K's "
        f"(python benchmarks/implicit.py --compact measures them on {dataset}); the live "
        f"refit further down runs on {dataset}"
    )
    curve_file = Path("../benchmarks/results/compact-ml-100k.json")
bench = json.loads(curve_file.read_text())
print(split.protocol)
pd.Series(
    {
        "users": data.n_users,
        "items": data.n_items,
        "full tables, d=64": (data.n_users + data.n_items) * 64,
    },
    name=dataset,
)

# %% [markdown]
# ## What a budget buys
#
# For the movies of the release loaded (1,682 in ML-100K) at $d=64$: the pool rows each method
# gets at each budget, its learned parameters and their float32 size. Hash embeddings spend
# $k=2$ importance weights per id before any pool row ($2n$ numbers, 3% of the full table), so
# their pool is a little smaller; at 5% they share $K<n$ weight rows through another hash. The
# **index** column is the precomputed `int64` rows of every id: not learned, but memory all the
# same — for an open vocabulary one hashes on the fly instead, and the compact table is then
# truly $O(B\,d)$ no matter how many ids exist.

# %%
memory_table(data.n_items, 64).round(3)

# %% [markdown]
# ## Collisions
#
# With $n$ ids in $m$ rows under a uniform hash, an id shares its row with probability
# $1-(1-1/m)^{n-1}$ and $\binom n2/m$ pairs collide; two ids get the *same* multiset of
# $k$ rows with probability about $k!/m^k$. Measured on the package's hashes (movies), beside
# the formulas:

# %%
collisions = collision_table(data.n_items, 64)
collisions.round(3)

# %% [markdown]
# The hash behaves like a uniform one (measured and expected agree). On ML-100K, at 25% almost
# every movie shares its first row ($k=1$: the hashing trick gives ~3,400 pairs of movies the
# very same vector up to sign), while with two rows only ~15 pairs are indistinguishable and
# with four none. That is the whole idea of hash and Bloom embeddings: collisions of single rows
# are unavoidable, collisions of *combinations* are rare. Whether the model can use the
# combinations is the empirical question.
#
# ## Accuracy against parameters
#
# `python benchmarks/implicit.py --compact` fits the series' two-tower model (sampled softmax
# over 1,024 uniform candidates, $d=64$, a setting chosen on the validation part) with each
# compact table at each budget, for users and items alike, and biased MF (Adam, $f=20$) for RMSE
# on the first rating fold (`u1` on ML-100K). Every point trains up to 30 epochs with early
# stopping on the validation NDCG@20 and is scored once on test. A hashed table may also trade
# width for rows within the same budget (width 64 with few rows, or width 16 with four times as
# many); the width is picked on validation. **Small dim** is the full table with a narrower $d$
# at the same budget, the obvious alternative when every id is known in advance.

# %%
ranking = pd.DataFrame(bench["ranking"])
chosen = pd.DataFrame(bench["chosen"])
rating = pd.DataFrame(bench["rating"])
print(bench["meta"]["protocol"], "|", bench["meta"]["ranking_fit"])
fig = plot_compact_curves(chosen, rating)

# %%
curve = chosen.pivot_table(index="method", columns="ratio", values="ndcg_loss", sort=False)
curve.mul(100).round(1).rename_axis(columns="NDCG@20 lost (%) at budget")

# %%
rating.pivot_table(index="method", columns="ratio", values="rmse", sort=False).round(4)

# %% [markdown]
# Three things stand out (in the curves measured on ML-100K).
#
# * **The full $d=64$ tables are far larger than ML-100K needs.** Shrinking the width costs
#   nothing down to 25% ($d=16$) and a few percent at 10% ($d=6$): "small dim" is the upper
#   envelope of every curve, for ranking and for RMSE.
# * **Collisions are expensive in full ranking.** Two movies that share a row are tied (the
#   hashing trick: same vector up to sign), so every relevant movie drags its bucket-mates
#   into the top 20; with two weighted rows per id (hash embeddings) or two summed rows
#   (Bloom) the ties vanish but the vectors stay coupled. At 25%, hash and Bloom embeddings
#   lose about a fifth of NDCG@20, the hashing trick more than 40%. Given the budget, the
#   validation picks the narrow, many-row tables (width 16) at 25% and 10%: rows buy more than
#   width. At 50% only width 64 fits the grid (width 16 would need more rows than ids), which
#   is why the hashed curves dip there. Hash embeddings keep the most at the smallest budgets,
#   where the per-id importance weights are most of what distinguishes two ids.
# * **Biased MF falls back to its biases.** Its factors are a small correction on top of
#   $\mu+b_u+b_i$ (notebook 02); hashed factors shared by colliding ids cannot carry it and
#   the penalty shrinks them to zero: most hashed points share one RMSE, that of the biases
#   alone, and only hash embeddings at 50% and 25% keep part of the factors' gain. The narrow
#   full table keeps nearly all of it.

# %% [markdown]
# ## The 25% budget, refitted here
#
# The same protocol live for the full tables, hash embeddings (at the width the benchmark
# chose) and the small-dimension table, and the RMSE of every method at this budget.

# %%
options = bench["meta"]["two_tower"]
width = int(chosen.query("method == 'hash' and ratio == @ratio")["dim"].iloc[0])
live = ranking_curve(
    split,
    model_options={**options, "device": device},
    methods=("hash", "small dim"),
    ratios=(ratio,),
    embedding_options=bench["meta"]["embedding_options"],
    widths={"hash": (width,)},
    progress=False,
)
live["ndcg_loss"] = 1 - live["ndcg@20"] / live["ndcg@20"].iloc[0]
for row in live.to_dict("records"):
    log.add(
        f"TwoTower, {row['method']} {row['ratio']:.0%}",
        "ndcg@20",
        row["ndcg@20"],
        dataset=dataset,
        protocol=split.protocol,
    )
live.round(4)

# %%
train, test = rating_folds(data, seed=seed)[0][0]
live_rmse = rating_curve(
    train,
    test,
    model_options={**bench["meta"]["biased_mf"], "device": device},
    ratios=(ratio,),
    embedding_options=bench["meta"]["embedding_options"],
    progress=False,
)
live_rmse.round(4)

# %% [markdown]
# ## Which method when
#
# * **Every id known, vocabulary modest** (MovieLens users and items, most production item
#   catalogues): keep a full table and shrink $d$ — on this data it is lossless down to a
#   quarter of the parameters. Hashing only adds collisions.
# * **Open or huge id spaces** (tokens, zip codes, ad ids, $10^8$ users; new ids arriving
#   without retraining the table's size; no vocabulary to maintain): a full table is not an
#   option. Use **hash embeddings** ($k=2$, importance weights per id when a vocabulary is
#   known, else through a second hash) — the most accurate of the three here, most clearly so
#   at 5–10%; **Bloom embeddings** are nearly as good at moderate budgets with no per-id
#   parameters at all, so memory stays $O(B\,d)$ however many ids exist; the plain
#   **hashing trick** is for features whose collisions average out (linear models, long
#   tails, a sum over many features), not for the ids a ranking must tell apart.
# * Within a hashed budget, **prefer more rows over more width** (the validation chose width
#   16 over 64 at 25% and 10%), and hash with a fixed seed per field: the hashes of
#   `mfutils.embeddings` are stable across processes, so a saved model's rows mean the same
#   thing when it is loaded elsewhere.
#
# The target — hash embeddings within 5% of the full tables at 25% of their
# parameters — is **not met** on ML-100K under this protocol (about 20% lost); a full table
# of a quarter of the width meets it easily. The assertion below checks the measured
# headline: hash embeddings at 25% keep at least 70% of the full model's NDCG@20, the
# narrow full table at least 95%.

# %%
log.save()
hash_loss = live.set_index("method").loc["hash", "ndcg_loss"]
small_loss = live.set_index("method").loc["small dim", "ndcg_loss"]
assert np.isfinite(live["ndcg@20"]).all() and (live["ndcg@20"] > 0).all(), live
assert np.isfinite(live_rmse.select_dtypes("number")).all().all(), live_rmse
if curve_file.name == f"compact-{dataset}.json" and dataset == "ml-100k":
    assert hash_loss < 0.3, hash_loss
    assert small_loss < 0.05, small_loss
