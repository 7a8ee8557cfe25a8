# %% [markdown]
# # 10 · Neural network matrix factorization: a learned function instead of a dot product
#
# Matrix factorization predicts with a fixed function of two vectors, $p_u^\top q_i$.
# Dziugaite & Roy (2015) keep per-user and per-item latent vectors but let a small network
# $f_\theta$ *learn* how to combine them:
#
# $$\hat X_{nm} = f_\theta\big(U_n,\; V_m,\; U'_n \odot V'_m\big),$$
#
# with $U_n, V_m\in\mathbb R^{D}$ fed in as they are and $U'_n, V'_m\in\mathbb R^{D'}$ entering
# through their element-wise product — the $D'$ terms of an inner product, left for the
# network to weigh ($K=1$; with $K>1$ every entry is itself a rank-$K$ inner product).
# $f_\theta$ has three hidden layers of 50 sigmoid units; $D=10$, $D'=60$.
#
# Only the latent features are penalized:
#
# $$\sum_{(n,m)\in J}\big(X_{nm}-\hat X_{nm}\big)^2
#   + \lambda\Big[\sum_n\big(\lVert U_n\rVert^2+\lVert U'_n\rVert^2\big)
#   + \sum_m\big(\lVert V_m\rVert^2+\lVert V'_m\rVert^2\big)\Big],$$
#
# and training **alternates**: a step on $\theta$ with the latents fixed, then a step on the
# latents with $\theta$ fixed, both with RMSProp, stopped early on held-out ratings. In
# `mfutils` the alternation is the shared trainer's `alternate=True`; every minibatch
# carries its share $\lambda/N_n$ of each user's penalty, so an epoch sums to the objective.
#
# The paper's model is `NNMF(base=None)`, used throughout this notebook. The package's default
# stacks $f_\theta$ on a frozen biased MF, $\hat X_{nm} = \mu + b_n + b_m + p_n^\top q_m +
# f_\theta(\dots)$, the base alone competing as epoch 0 of the early stopping: on data where
# the factors explain little beyond the biases the paper's network fits noise and loses even to
# the baseline estimates (compared at the end).

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
reg_grid = [10.0, 30.0, 100.0]  # lambda candidates, compared on a validation split
paper_rmse = (0.903, 0.907)  # NNMF on ML-100K as quoted: 0.907 (reproductions), 0.903
benchmarks = {
    "random 90/10": "../benchmarks/results/explicit-ml-100k-random90.json",
    "u1..u5": "../benchmarks/results/explicit-ml-100k-features.json",
}  # ML-100K

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens, random_holdout, validation_split
from mfutils.metrics import rmse
from mfutils.models import NNMF, BiasedMF
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("10_nnmf", results_dir)
data = load_movielens(dataset)
train90, test10 = random_holdout(data, test_fraction=0.1, seed=seed)
data, device

# %% [markdown]
# ## The paper's protocol beside ours
# The paper splits the ratings at random into 90% training and 10% test and holds part of the
# training ratings out for early stopping. Its ML-100K number is quoted by the reproductions;
# the sizes, RMSProp and the alternation come from them too (the reference doc marks what is
# verified).

# %%
protocols = pd.DataFrame(
    {
        "paper (as reproduced)": [
            "random 90% / 10%",
            "2% of train, early stopping",
            "D=10, D'=60, K=1, 3x50 sigmoid",
            "RMSProp, alternating, full batch",
            "40-50 on the summed loss",
            "{}-{}".format(*paper_rmse),
        ],
        "this notebook": [
            f"random 90% / 10%, seed {seed}",
            "2% of train, early stopping",
            "D=10, D'=60, K=1, 3x50 sigmoid",
            "RMSProp, alternating, batches of 1024",
            "chosen below on validation",
            "below",
        ],
    },
    index=["split", "validation", "sizes", "training", "lambda", "ML-100K RMSE"],
)
protocols

# %% [markdown]
# ## Choosing $\lambda$ on validation
# A 5% validation split carved from the 90% training part (the test 10% stays untouched). Each
# fit still holds out its own 2% for early stopping. The curves show why early stopping
# matters: past its best epoch the network overfits fast, whatever $\lambda$.

# %%
fit_part, valid_part = validation_split(train90, fraction=0.05, seed=seed)
paper = {"base": None, "seed": seed, "device": device}  # the paper's f_theta alone
candidates = {reg: NNMF(reg=reg, **paper).fit(fit_part) for reg in reg_grid}
grid = pd.DataFrame(
    {
        "reg": reg_grid,
        "valid_rmse": [
            rmse(m.predict_ratings(valid_part), valid_part.rating) for m in candidates.values()
        ],
        "epochs": [len(m.history) for m in candidates.values()],
    }
)
best_reg = float(grid.loc[grid.valid_rmse.idxmin(), "reg"])
plotting.plot_learning_curves({f"lambda={r:g}": m.history for r, m in candidates.items()})
grid.round(4)

# %% [markdown]
# ## NNMF on the paper's protocol
# The chosen candidate (fitted on the 90% part less the validation 5%) on the test 10%, and
# biased MF (notebook 02's defaults, fitted on the same part), the package's default NNMF
# stacked on that biased MF and the constant predictor (the training mean) beside it; the
# paper's number is ML-100K's, shown on ML-100K only.

# %%
nnmf = candidates[best_reg]
mf = BiasedMF(seed=seed, device=device).fit(fit_part)
stacked = NNMF(reg=best_reg, seed=seed, device=device).fit(fit_part)
paper_protocol = pd.Series(
    {
        **({"NNMF (paper, reported)": max(paper_rmse)} if dataset == "ml-100k" else {}),
        "NNMF (ours)": rmse(nnmf.predict_ratings(test10), test10.rating),
        "BiasedMF SGD (ours)": rmse(mf.predict_ratings(test10), test10.rating),
        "NNMF on BiasedMF SGD (default)": rmse(stacked.predict_ratings(test10), test10.rating),
        "constant (training mean)": rmse(np.full(len(test10), fit_part.global_mean), test10.rating),
    },
    name="test RMSE, random 90/10",
)
paper_protocol.round(4)

# %% [markdown]
# ## Five splits of each protocol (ML-100K)
# From `benchmarks/explicit.py --split random90` (five random 90/10 splits, seeds 0..4, the
# default $\lambda = 30$ refitted on the whole 90%) and from `benchmarks/explicit.py` (the
# canonical folds u1..u5, 80% / 20%): the same splits for both models. The committed tables
# are ML-100K's, their NNMF rows the paper's model (measured before the default stacked it on
# biased MF); skipped on the other releases.

# %%
if dataset == "ml-100k":
    bench = {
        name: pd.DataFrame(json.loads(Path(path).read_text())["models"]).set_index("model")
        for name, path in benchmarks.items()
    }
    five = pd.DataFrame({name: table.rmse_mean for name, table in bench.items()})
    five = five.loc[["NNMF", "BiasedMF-SGD"]].round(4)
else:
    five = None
    print(f"the committed five-split tables are ML-100K's; skipped on {dataset}")
five

# %% [markdown]
# ## Results

# %%
split_protocol = f"random 90/10 (seed {seed}), 2% of train for early stopping, lambda {best_reg:g}"
log.add("NNMF", "rmse", paper_protocol["NNMF (ours)"], dataset=dataset, protocol=split_protocol)
log.add(
    "BiasedMF SGD",
    "rmse",
    paper_protocol["BiasedMF SGD (ours)"],
    dataset=dataset,
    protocol=f"random 90/10 (seed {seed}), fitted on 95% of the 90%",
)
log.add(
    "NNMF on BiasedMF SGD",
    "rmse",
    paper_protocol["NNMF on BiasedMF SGD (default)"],
    dataset=dataset,
    protocol=f"{split_protocol}, the package's default (base='sgd')",
)
log.save()
log.frame()

# %%
ours = paper_protocol["NNMF (ours)"]
assert np.isfinite(ours) and ours < paper_protocol["constant (training mean)"], paper_protocol
if dataset == "ml-100k":  # within 0.01 of the paper's 0.903-0.907
    assert min(paper_rmse) - 0.01 <= ours <= max(paper_rmse) + 0.01, (ours, paper_rmse)

# %% [markdown]
# ## What to try next
# * The paper's full-batch RMSProp (`batch_size=len(train)`): many more, slower steps.
# * $K>1$ (`prime_rank`): each of the $D'$ inputs becomes a rank-$K$ inner product.
# * Regularize $\theta$ too (weight decay or dropout): the overfitting above comes from the
#   network as much as from the latents.
