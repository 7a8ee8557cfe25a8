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
# # 03 · Neighbourhood models: similarity, kNN interpolation, the global neighbourhood model
#
# Matrix factorization (notebook 02) explains a rating by latent factors. The older
# *neighbourhood* approach explains it by the user's own ratings of **similar items**
# (Koren 2008, "Factorization meets the neighborhood"). All three steps work on residuals
# of the baseline $b_{ui} = \mu + b_u + b_i$ of notebook 01, $z_{ui} = r_{ui} - b_{ui}$.
#
# **Similarity.** Pearson correlation of residuals over the users $U(i,j)$ who rated both
# items, shrunk towards 0 when the support $n_{ij} = |U(i,j)|$ is small (Koren08 eq. 2):
#
# $$\rho_{ij}=\frac{\sum_{u\in U(i,j)}z_{ui}z_{uj}}{\sqrt{\sum_{U(i,j)}z_{ui}^2\sum_{U(i,j)}z_{uj}^2}},
#   \qquad s_{ij}=\frac{n_{ij}}{n_{ij}+\lambda_2}\,\rho_{ij},\quad \lambda_2 = 100 .$$
#
# With a dense residual matrix $Z$ and rated mask $M$ this is three matrix products,
# $Z^\top Z$, $(Z^{\circ 2})^\top M$ and $M^\top M$ — no loop over item pairs.
#
# **kNN interpolation** (eq. 3): over $S^k(i;u)$, the $k$ items rated by $u$ most similar to $i$,
#
# $$\hat r_{ui}=b_{ui}+\frac{\sum_{j\in S^k(i;u)}s_{ij}(r_{uj}-b_{uj})}{\sum_{j\in S^k(i;u)}s_{ij}} .$$
#
# **Global neighbourhood model** (eq. 10): the weights become parameters learned by SGD,
# over $R^k(i;u)=R(u)\cap S^k(i)$ with $S^k(i)$ the $k$ items most similar to $i$ (not
# user-specific), plus implicit weights $c_{ij}$ for the *fact* that $u$ rated $j$:
#
# $$\hat r_{ui}=\mu+b_u+b_i+|R^k(i;u)|^{-\frac12}\!\!\sum_{j\in R^k(i;u)}\!(r_{uj}-b_{uj})w_{ij}
#   +|N^k(i;u)|^{-\frac12}\!\!\sum_{j\in N^k(i;u)}\!c_{ij},$$
#
# with $N(u)=R(u)$ here, squared error plus $\lambda_4(b_u^2+b_i^2+\sum w_{ij}^2+\sum c_{ij}^2)$
# (eq. 11), and Koren's SGD rules, e.g. $w_{ij}\leftarrow w_{ij}+\gamma(|R^k|^{-1/2}e_{ui}(r_{uj}-b_{uj})-\lambda_4 w_{ij})$.

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
preset = None  # `mfutils tune` preset JSON file(s): that model runs with the tuned options
knn_k_grid = [5, 10, 20, 40, 80, 160]
global_k_grid = [25, 50, 100]

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens, validation_split
from mfutils.experiments import (
    evaluate_folds,
    fold_labels,
    rating_folds,
    summarize_folds,
    validation_grid,
)
from mfutils.models import BaselineEstimates, GlobalNeighborhood, ItemKNN
from mfutils.models.neighborhood import residual_matrix, shrunk_pearson
from mfutils.results import ResultsLog
from mfutils.tuning import preset_options

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
tuned = preset_options(preset)  # {} unless a preset was given
log = ResultsLog("03_neighborhood_model", results_dir)
data = load_movielens(dataset)
folds, protocol = rating_folds(data, seed=seed)
fold_names = fold_labels(protocol, len(folds))  # u1..u5 on ML-100K, else fold 1..5
fit_part, valid_part = validation_split(folds[0][0], fraction=0.1, seed=seed)
data, device, protocol

# %% [markdown]
# ## The similarity matrix
# Residuals of the fixed ALS baseline on the fit part, then $s_{ij}$ for all item pairs at once.
# Shrinkage pulls the correlations of pairs with few common raters towards zero.

# %%
baseline = BaselineEstimates(device=device, clip=False).fit(fit_part)
Z, M = residual_matrix(fit_part, baseline)
start = time.perf_counter()
S = shrunk_pearson(Z, M, shrinkage=100.0)
raw = shrunk_pearson(Z, M, shrinkage=0.0)
print(f"{S.shape[0]}x{S.shape[1]} similarities in {time.perf_counter() - start:.2f} s")
support = (M.float().T @ M.float()).flatten().cpu()
fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter(support[::97], raw.flatten().cpu()[::97], s=2, alpha=0.3, label=r"$\rho_{ij}$")
ax.scatter(support[::97], S.flatten().cpu()[::97], s=2, alpha=0.3, label=r"$s_{ij}$ (shrunk)")
ax.set(xscale="symlog", xlabel="common raters $n_{ij}$", ylabel="similarity")
ax.legend(markerscale=5)

# %% [markdown]
# The most similar items of a well-known movie, by shrunk similarity:

# %%
anchor = int(M.sum(0).argmax())  # the most rated movie of the fit part
top = S[anchor].topk(8)
neighbours = pd.DataFrame(
    {"similarity": top.values.cpu().numpy()},
    index=data.items["title"].iloc[top.indices.cpu().numpy()],
)
print("most similar to", data.items["title"].iloc[anchor])
neighbours.round(3)

# %% [markdown]
# ## kNN interpolation: choosing $k$ on the validation split
# Only the positive similarities among the $k$ nearest rated items count; with none, the
# prediction is the baseline $b_{ui}$ (an implementation choice, not from the paper).

# %%
knn_grid = validation_grid(
    lambda **o: ItemKNN(device=device, **o), [{"k": k} for k in knn_k_grid], fit_part, valid_part
)
knn_grid.sort_values("k")

# %% [markdown]
# ## Global neighbourhood model: accuracy vs $k$ and cost
# Koren reports that accuracy keeps improving with $k$, so $k$ trades accuracy for training
# time ($O(k)$ work per rating). On ML-100K's 80k ratings, a small $k$ also overfits sooner.

# %%
rows = []
for k in global_k_grid:
    model = GlobalNeighborhood(k, epochs=15, seed=seed, device=device)
    start = time.perf_counter()
    model.fit(fit_part, valid=valid_part)
    best = model.history["valid"].idxmin()
    rows.append(
        {
            "k": k,
            "valid_rmse": model.history["valid"].min(),
            "best_epoch": int(model.history["epoch"][best]),
            "fit_seconds": time.perf_counter() - start,
        }
    )
global_grid = pd.DataFrame(rows)
global_grid.round(4)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
knn_grid.sort_values("k").plot(
    x="k", y="valid_rmse", marker="o", logx=True, ax=axes[0], title="kNN interpolation"
)
global_grid.plot(x="k", y="valid_rmse", marker="o", ax=axes[1], title="global model")
ax2 = axes[1].twinx()
global_grid.plot(x="k", y="fit_seconds", marker="s", color="C1", ax=ax2, legend=False)
ax2.set_ylabel("fit seconds")

# %% [markdown]
# ## Test folds
# The defaults of both classes are the validation choices above on ML-100K ($k=40$ for kNN;
# $k=100$, 15 epochs, $\gamma=0.01$, $\lambda_4=0.002$ for the global model). Every model is fit
# on each fold's training part (`u*.base` on ML-100K) and scored on its test part (`u*.test`),
# with predictions clipped to the rating scale.

# %%
per_fold = pd.concat(
    [
        evaluate_folds(
            lambda: BaselineEstimates(device=device),
            folds,
            name="Baseline (ALS)",
            fold_names=fold_names,
        ),
        evaluate_folds(
            lambda: ItemKNN(device=device, **tuned.get("ItemKNN", {})),
            folds,
            name="kNN interpolation (k=40)",
            fold_names=fold_names,
        ),
        evaluate_folds(
            lambda: GlobalNeighborhood(
                seed=seed, device=device, **tuned.get("GlobalNeighborhood", {})
            ),
            folds,
            name="Global neighbourhood (k=100)",
            fold_names=fold_names,
        ),
    ]
)
summary = summarize_folds(per_fold)
summary.round(4)

# %%
for row in summary.itertuples():
    log.add(row.model, "rmse", row.rmse_mean, dataset=dataset, protocol=f"{protocol} mean")
    log.add(row.model, "mae", row.mae_mean, dataset=dataset, protocol=f"{protocol} mean")
    log.add(row.model, "fit_seconds", row.fit_seconds, dataset=dataset, protocol=f"{protocol} mean")
first = per_fold[per_fold["fold"] == fold_names[0]].set_index("model")["rmse"]
for model_name, value in first.items():
    log.add(
        model_name,
        "rmse",
        value,
        dataset=dataset,
        protocol=fold_names[0] if protocol == "u1..u5" else f"{fold_names[0]} of {protocol}",
    )
log.save()
log.frame()

# %% [markdown]
# On ML-100K both neighbourhood models beat the baseline clearly; the learned global model
# beats the hand-set interpolation weights, as in Koren's Netflix results (0.9139 at $k=250$ vs
# CorNgbr's 0.9406 there), at the price of a training loop. For reference, Surprise's
# `KNNBaseline` (item, `pearson_baseline`) scores 0.9204 mean RMSE on ML-100K's u1..u5.

# %%
rmse_of = summary.set_index("model")["rmse_mean"]
headline = rmse_of.drop("Baseline (ALS)").min()
print(
    f"best neighbourhood mean RMSE: {headline:.4f} ({protocol}); "
    f"baseline {rmse_of['Baseline (ALS)']:.4f}"
)
assert dataset != "ml-100k" or headline <= 0.920, headline
assert np.isfinite(rmse_of).all() and headline < rmse_of["Baseline (ALS)"], rmse_of
