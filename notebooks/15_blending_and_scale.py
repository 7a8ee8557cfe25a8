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
# # 15 · Blending, and training at scale
#
# The Netflix prize was not won by one model. BellKor's Pragmatic Chaos combined hundreds of
# predictors — factor models, neighbourhood models, RBMs, time-aware variants — with a
# regression learned on ratings none of them had been trained on (Töscher, Jahrer & Bell
# 2009; Koren 2009). Different models make different mistakes, and a blend averages them out.
#
# This notebook blends the explicit models of the series (notebooks 01–06) on the release
# chosen in the parameters (ML-100K by default), then
# turns to size: how fast each model trains as the data grows to ML-25M's shape, and how the
# shared trainer runs on several processes with `torch.distributed`.

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
# The blend members run here; None: every explicit model of the series (minutes per fold).
models = ["BaselineEstimates-ALS", "BiasedMF-SGD", "BiasedMF-ALS", "ItemKNN", "SVDpp", "TimeSVDpp"]
folds_to_run = [1]  # None: all five folds (u1..u5 on ML-100K); the all-fold table below is
# read from a file (ML-100K's)
valid_fraction = 0.1  # share of each training fold that learns the blend
n_seeds = 1  # fits per stochastic member, averaged (a seed bag); the benchmark below used 5
refit = True  # refit the models on the whole training fold for the test predictions
ddp_ratings = 200_000  # synthetic ratings of the multi-process demo
ddp_epochs = 3

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import mfutils
from mfutils import get_device, plotting, seed_everything
from mfutils.blending import SERIES_MODELS, blend_folds, series_models
from mfutils.data import load_movielens
from mfutils.experiments import fold_labels, rating_folds
from mfutils.parallel_fit import launch
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("15_blending_and_scale", results_dir)
data = load_movielens(dataset)
folds, protocol = rating_folds(data, seed=seed)
fold_ids = list(folds_to_run or range(1, len(folds) + 1))
fold_names = fold_labels(protocol, len(folds))  # u1..u5 on ML-100K, else fold 1..5
members = list(models or SERIES_MODELS)
benchmarks = Path(mfutils.__file__).parents[1] / "benchmarks" / "results"
data, device, protocol, members

# %% [markdown]
# ## The protocol: a probe set carved from each training fold
#
# For each fold $k$ with training part $T_k$ and test part:
#
# 1. carve a validation part $V_k$ (10% of $T_k$, random) — the Netflix *probe* set;
# 2. fit every model $m$ on $T_k\setminus V_k$ and predict $V_k$: $\hat r^{(m)}_{ui}$;
# 3. learn blend weights on $V_k$ by ridge regression with an intercept,
#
#    $$\min_{w,b}\ \frac1{|V_k|}\sum_{(u,i)\in V_k}\Big(r_{ui}-b-\sum_m w_m\hat r^{(m)}_{ui}\Big)^2
#      +\lambda\lVert w\rVert^2,$$
#
#    with $\lambda$ chosen by 5-fold cross-validation *inside* $V_k$;
# 4. refit every model, same hyperparameters, on all of $T_k$ (the prize's "probe refit") and
#    apply the weights to their test predictions.
#
# The test ratings are read once, to score. A second blend lets the weights depend on how much
# the models know about the user and the item — the *support* features of the prize blends:
# with $s_{ui}$ the standardised $\log(1+|R(u)|)$ and $\log(1+|R(i)|)$,
#
# $$\hat r_{ui} = b+\sum_m\Big(w_m+\sum_k v_{mk}s_{ui,k}\Big)\hat r^{(m)}_{ui}+\sum_k c_k s_{ui,k},$$
#
# still linear in its parameters and fit by the same ridge regression.

# %% [markdown]
# Before blending, each stochastic member can be *bagged*: fit once per seed, its prediction
# the mean of the fits. The seeds change only the initialisation and the order of the SGD
# steps, so bagging removes variance that no blend weight can (the prize teams bagged their
# members too). `n_seeds` sets the bag size.
#
# At the defaults the notebook blends six quick members, unbagged, on the first fold (u1 on
# ML-100K; about a minute there); set `folds_to_run = None`, `models = None` and `n_seeds = 5`
# for every model on every fold, which is what `benchmarks/blend.py --seeds 5` ran for the table
# further down.

# %%
per_fold, blends = blend_folds(
    series_models(members, device=device, seed=seed, n_seeds=n_seeds),
    [folds[k - 1] for k in fold_ids],
    fold_names=[fold_names[k - 1] for k in fold_ids],
    valid_fraction=valid_fraction,
    seed=seed,
    refit=refit,
)
table = per_fold.pivot(index="model", columns="fold", values="rmse")
table = table.assign(mean=table.mean(axis=1)).sort_values("mean")
table.round(4)

# %%
plotting.plot_fold_results(per_fold, sort=True)
plt.show()

# %% [markdown]
# ## What the blend learned
# The weights of the plain blend on each fold. Weights need not be positive: a model can enter
# with a negative weight when it corrects what the others share (often the baseline). The
# weights are similar across folds, which is what makes them trustworthy.

# %%
weights = pd.DataFrame(
    {fold: pd.Series(b["Blend"].weights, index=b["Blend"].names) for fold, b in blends.items()}
)
ax = sns.heatmap(weights, annot=True, fmt=".2f", cmap="vlag", center=0)
ax.set(title="Blend weights per fold", xlabel="fold", ylabel="")
plt.show()

# %% [markdown]
# ## Every model, every fold
# `python benchmarks/blend.py --seeds 5` runs the same protocol with all thirteen explicit
# models of the series, each stochastic one a 5-seed bag, on u1..u5 and writes
# `benchmarks/results/blend-ml-100k.json`. Its table, with the protocol it was measured under
# (only ML-100K's is committed: on another release this section is skipped):

# %%
record_path = benchmarks / f"blend-{dataset}.json"
blend_record = json.loads(record_path.read_text()) if record_path.is_file() else None
if blend_record is not None:
    all_folds = pd.DataFrame(
        {r["model"]: dict(zip(r["folds"], r["rmse"], strict=True)) for r in blend_record["models"]}
    ).T
    all_folds = all_folds.assign(mean=all_folds.mean(axis=1)).sort_values("mean")
    print(blend_record["meta"]["protocol"])
else:
    all_folds = None
    print(f"{record_path.name} is not committed: run python benchmarks/blend.py on {dataset}")
all_folds.round(4) if all_folds is not None else None

# %% [markdown]
# On ML-100K, the support-dependent blend gains on every fold over the best single model
# (timeSVD++), and over the plain blend: how far to trust a model depends on how much it has
# seen of the user and the item. u1 is the hardest fold for every model (its test users differ
# most from the training ones), and the blend does not close that gap. Bagging pays twice: each
# member gains on its own (a 5-seed timeSVD++ scores about 0.002 better than one seed, NNMF
# about 0.006), and the blend gains about 0.003 on top of an unbagged one (0.8876 over u1..u5
# without bags, in the benchmark's earlier run).
#
# ## Training at scale: the synthetic benchmark
# `benchmarks/scale.py` times each model on `make_synthetic` ratings shaped like ML-1M,
# ML-10M and ML-25M (5M in between), every (model, size) in a fresh process so that the
# peak memory (`getrusage`) is its own, with $k=64$ factors and one thread. The two-tower's
# in-batch softmax step is slow on a CPU, so its epoch is timed over 200 random batches of
# 1024 and scaled to all ratings (`extrapolated`). The whole run takes tens of minutes, so the
# notebook reads the committed results; rerun it with
# `python benchmarks/scale.py --sizes 1M 5M 10M 25M` (add `--device cuda` on a GPU).

# %%
scale = json.loads((benchmarks / "scale-synthetic.json").read_text())
runs = pd.DataFrame(scale["runs"]).dropna(subset=["seconds_per_epoch"])
print(
    scale["meta"]["protocol"],
    "|",
    scale["meta"]["device"],
    scale["meta"]["threads"],
    "thread(s), k =",
    scale["meta"]["factors"],
    "| load average during the runs:",
    f"{runs['load_average'].min():.1f}-{runs['load_average'].max():.1f}",
)
sizes = [size for size in ("1M", "5M", "10M", "25M") if size in set(runs["size"])]
runs.pivot(index="model", columns="size", values="seconds_per_epoch")[sizes].round(2)

# %%
ax = sns.lineplot(
    runs, x="n_ratings", y="seconds_per_epoch", hue="model", style="extrapolated", markers=True
)
ax.set(xscale="log", yscale="log", xlabel="ratings", ylabel="seconds per epoch")
plt.show()
memory = runs.pivot(index="model", columns="size", values="peak_rss_gb")[sizes]
memory.round(2)

# %% [markdown]
# The committed timings were taken on a shared two-core machine under load (the load average
# is recorded with every run), so single points can be off by a factor of two or more; rerun
# the benchmark on a quiet machine before quoting one. Still, the picture is clear.
# Every model's epoch grows about linearly with the ratings (slope ≈ 1 on the log-log plot):
# SGD and Adam touch each rating once per epoch, ALS builds one Gram matrix per user and item
# from their ratings. What differs is the constant: Funk's hand-written SGD step avoids
# autograd and gathers rows with `index_select`; Adam's dense embedding gradients and the
# $(f+1)^2$ Gram entries per rating of ALS cost more per rating. iALS is level with the
# `implicit` library's ALS (the `implicit-ALS` row, same factors, regularization and three CG
# steps, one thread) at every size. It once grew eight-fold between 10M and 25M: its CG handed
# `torch.sparse.sampled_addmm` a contiguous transpose of the fixed side, which the CPU kernel
# transposes back, copying the whole table on every call; a transposed view costs nothing.
# The two-tower is in another
# league: each step of 1024 rows scores a $1024\times1024$ logit matrix, masks accidental
# hits against the users' training items and updates the whole tables with Adam, so an epoch
# on ML-25M takes hours on one CPU core — a model for a GPU. ALS keeps its memory in check by
# never building a (ratings × $f$) array: the Gram matrices come from a sparse product with the
# lower triangles of the $x_ix_i^\top$ (about $n_{\text{items}}(f+1)(f+2)/2$ floats), the
# right-hand sides from a second sparse product, and the rows are solved in blocks of a few
# thousand, so its peak grows with the number of users and items more than with the ratings.
# At ML-25M's size — where the biased MF should stay under 30 s per epoch at $k=64$ and under
# 8 GB:

# %%
runs.query("size == '25M'")[
    [
        "model",
        "seconds_per_epoch",
        "ratings_per_second",
        "peak_rss_gb",
        "extrapolated",
        "load_average",
    ]
].round(2)

# %% [markdown]
# ## Several processes: data-parallel training
# When one process is not enough, the same trainer runs under `torchrun`:
#
# ```
# torchrun --standalone --nproc_per_node 2 -m mfutils.parallel_fit \
#     --model BiasedMF-Adam --ratings 200000 --epochs 3
# ```
#
# Every process holds all embedding tables and all ratings. All processes draw the same global
# batch of $B$ rows; process $r$ of $W$ computes the loss of its shard $S_r$ (a contiguous
# $1/W$ of the batch), and `DistributedDataParallel` all-reduces the gradients — gloo on CPU,
# NCCL on GPU. DDP *averages* gradients, so each process scales its loss by $W/B$:
#
# $$\frac1W\sum_{r=1}^W\nabla\Big(\frac WB\sum_{b\in S_r}\ell_b\Big)=\nabla\frac1B\sum_{b=1}^B\ell_b,$$
#
# the single-process gradient. Same seed, same batches, same steps: two processes reproduce
# one up to the order of floating-point sums (`tests/test_distributed.py` checks it). Below,
# `mfutils.parallel_fit.launch` runs that command in a subprocess: the same model on the same
# data with one process and with two, one thread each (the timed epochs exclude the start-up
# of the processes, a few seconds each).

# %%
demo = [
    "--ratings",
    str(ddp_ratings),
    "--users",
    str(ddp_ratings // 100),
    "--items",
    str(ddp_ratings // 130),
    "--epochs",
    str(ddp_epochs),
    "--batch-size",
    "16384",
    "--seed",
    str(seed),
]
ddp_runs = pd.DataFrame(
    [
        {"processes": n, "threads each": t, **launch(n, threads=t, args=demo)}
        for n, t in ((1, 1), (2, 1))
    ]
)
ddp_runs["seconds per epoch"] = ddp_runs["epoch_seconds"].map(lambda s: min(s[1:] or s))
ddp_runs["final train loss"] = ddp_runs["train_loss"].map(lambda s: s[-1])
ddp_runs["speed-up"] = ddp_runs["seconds per epoch"].iloc[0] / ddp_runs["seconds per epoch"]
ddp_runs[
    [
        "processes",
        "threads each",
        "backend",
        "seconds per epoch",
        "speed-up",
        "final train loss",
        "test_rmse",
    ]
].round(6)

# %% [markdown]
# The final loss and the test RMSE agree to about six digits: the two-process run is the
# single-process run. On a two-core machine the speed-up is at most two, and what is left of
# it shrinks with the load on the machine: every step all-reduces the *whole* embedding
# tables (their gradients are dense), the processes share the two cores with gloo's
# communication threads, and small batches leave little work to split. Data parallelism pays
# off with many cores or GPUs and large batches, when the step's compute dominates the
# all-reduce.
#
# ## When the tables do not fit: sharded embeddings
# Replication has two limits. Each step all-reduces $(|U|+|I|)(f+1)$ floats however few rows
# the batch touched — for ML-25M at $f=64$, 14 M floats (57 MB) per step — and every process
# must hold every table. Production recommenders have hundreds of millions of ids; their
# tables do not fit one GPU. There, *model* parallelism takes over: TorchRec's
# `EmbeddingBagCollection` under `DistributedModelParallel` shards tables table-wise, row-wise
# or column-wise across devices, sends each batch's ids to the devices that own them and the
# looked-up rows back with an all-to-all, and updates only the touched rows with a fused
# sparse optimizer; dense layers on top stay data-parallel. The factor models of this series
# have no dense layers, so for them sharding is the whole story — and the replicated,
# data-parallel path here is the right tool as long as the tables fit one device.
#
# ## Results

# %%
fold_label = ", ".join(table.columns[:-1])
for name, value in table["mean"].items():
    log.add(
        name,
        "rmse",
        value,
        dataset=dataset,
        protocol=f"{protocol} ({fold_label}) mean; members {', '.join(members)}; blend "
        f"learned on a {valid_fraction:.0%} validation split of each train fold, "
        f"seed {seed}"
        + (", models refit on the full train fold" if refit else "")
        + (f", members bagged over {n_seeds} seeds" if n_seeds > 1 else ""),
    )
for name in ("Blend", "Blend + support") if blend_record is not None else ():
    log.add(
        f"{name}, all models (benchmarks/blend.py)",
        "rmse",
        all_folds.loc[name, "mean"],
        dataset=blend_record["meta"]["dataset"],
        protocol=blend_record["meta"]["protocol"] + f" (read from {record_path.name})",
    )
for _, run in ddp_runs.iterrows():
    log.add(
        f"BiasedMF-Adam, {run['processes']} process(es) x {run['threads each']} thread(s)",
        "seconds_per_epoch",
        run["seconds per epoch"],
        dataset="synthetic",
        protocol=f"{ddp_ratings} ratings, batch 16384, {run['backend'] or 'no'} backend",
    )
log.save()
log.frame()

# %%
singles = table.drop(index=["Blend", "Blend + support"])
margin = 0.002 if dataset == "ml-100k" else 0.0  # the blend beats every member
for fold in table.columns[:-1]:
    assert table.loc["Blend + support", fold] < singles[fold].min() - margin, fold
assert abs(ddp_runs["final train loss"].iloc[-1] - ddp_runs["final train loss"].iloc[0]) < 1e-5
if dataset == "ml-100k" and 1 in fold_ids:
    assert table.loc["Blend + support", "u1"] <= 0.906, table.loc["Blend + support", "u1"]

# %% [markdown]
# ## What to try next
# * Blend more diverse predictors: the implicit-feedback models' scores, models of another
#   kind (RBMs and autoencoders were strong, different members of the prize blends).
# * Replace the probe split by K-fold cross-fitting (every training rating predicted by a model
#   that did not see it): the blend learns from all of train instead of 10%.
# * A non-linear blender (gradient-boosted trees or a small net on predictions and support),
#   as the prize's final blends did.
# * Run `benchmarks/scale.py --device cuda` on a GPU, and the multi-process demo with
#   `--device cuda` under NCCL.
