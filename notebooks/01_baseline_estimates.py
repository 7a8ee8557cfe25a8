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
# # 01 · Baseline estimates
#
# Before any latent factor, most of what is predictable in a rating is *who* rates and *what*
# is rated: some users rate everything generously, some movies are simply better liked.
# Koren (2008) calls this part the **baseline estimate**
#
# $$b_{ui} = \mu + b_u + b_i,$$
#
# with $\mu$ the mean training rating, $b_u$ how far user $u$ tends to rate above or below it
# and $b_i$ the same for item $i$. Every later model in the series adds to this baseline, and
# it is the fallback for users or items a model has never seen. This notebook fits it three
# ways and scores it on the series' rating folds: ML-100K's canonical u1..u5, or a seeded
# random 5-fold split on releases without them (`rating_folds`).

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
reg_grid = [0, 2, 5, 10, 25]  # lambda values tried on the validation split

# %%
import numpy as np
import pandas as pd
import seaborn as sns

from mfutils import get_device, plotting, seed_everything
from mfutils.data import Ratings, load_movielens, validation_split
from mfutils.experiments import (
    evaluate_folds,
    fold_labels,
    rating_folds,
    summarize_folds,
    validation_grid,
)
from mfutils.metrics import rmse
from mfutils.models import BaselineEstimates
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("01_baseline_estimates", results_dir)
data = load_movielens(dataset)
folds, protocol = rating_folds(data, seed=seed)
fold_names = fold_labels(protocol, len(folds))  # u1..u5 on ML-100K, else fold 1..5
data, device, protocol

# %% [markdown]
# ## A worked example
#
# The seed slides use a 3×3 toy matrix (users are rows, items columns, `·` unknown):
#
# | | item 1 | item 2 | item 3 |
# |---|---|---|---|
# | user 1 | 2 | · | 1 |
# | user 2 | **?** | 4 | 3 |
# | user 3 | 1 | · | · |
#
# $\mu = (2+1+4+3+1)/5 = 2.2$. The slides then take plain means: user 2 averages 3.5, so
# $b_{u=2} = 1.3$; item 1 averages 1.5, so $b_{i=1} = -0.7$ (the slide's formula line for
# $b_{i=1}$ reuses user 2's ratings by mistake; its value $-0.7$ is item 1's). That gives
# $\hat r_{21} = 2.2 + 1.3 - 0.7 = 2.8$.
#
# Koren's estimate removes the item effects *before* measuring the user: user 2 rated item 2
# (mean 4, $b_2 = 1.8$) and item 3 (mean 2, $b_3 = -0.2$), so relative to those items the
# residuals are $0$ and $1$ and $b_{u=2} = 0.5$. User 2 is generous mostly because they rated
# well-liked movies. With no shrinkage ($\lambda = 0$):

# %%
toy = Ratings.from_triples([(0, 0, 2), (0, 2, 1), (1, 1, 4), (1, 2, 3), (2, 0, 1)])
koren = BaselineEstimates(method="shrunk", reg_item=0, reg_user=0, clip=False, device=device)
koren.fit(toy)
slides_b_u2 = toy.rating[toy.user == 1].mean() - toy.global_mean
pd.DataFrame(
    {
        "b_u (user 2)": [slides_b_u2, koren.user_bias[1]],
        "b_i (item 1)": [-0.7, koren.item_bias[0]],
        "prediction r_21": [2.2 + slides_b_u2 - 0.7, koren.predict([1], [0])[0]],
    },
    index=["slides: plain means", "Koren: items first, then residual user means"],
).round(3)

# %% [markdown]
# ## Three ways to fit the biases
#
# **Regularized least squares** (Koren 2008, the objective under eq. 1):
#
# $$\min_{b_*}\sum_{(u,i)\in\mathcal K}(r_{ui}-\mu-b_u-b_i)^2+\lambda_3\sum_u b_u^2+\lambda_2\sum_i b_i^2 .$$
#
# * **Shrunk means** (Koren & Bell, Handbook §5.2.1) — one pass, items first:
#   $b_i=\frac{\sum_{u\in R(i)}(r_{ui}-\mu)}{\lambda_2+|R(i)|}$, then
#   $b_u=\frac{\sum_{i\in R(u)}(r_{ui}-\mu-b_i)}{\lambda_3+|R(u)|}$ (Netflix: $\lambda_2=25$,
#   $\lambda_3=10$). An item with few ratings is pulled toward $0$ — toward $\mu$.
# * **ALS** — each of those two steps is the exact minimizer of the objective in one block of
#   variables, so repeating them converges to the least-squares solution.
# * **SGD** — Koren's per-rating rule $b_u \leftarrow b_u + \gamma(e_{ui} - \lambda_1 b_u)$,
#   the same for $b_i$, through the package's shared trainer.
#
# ### Choosing $\lambda$ on validation, not on test
# We carve 10% of the first fold's training part (`u1.base` on ML-100K) off as a validation
# split and try a small grid; the test folds are only used once the choice is made.

# %%
fit_part, valid_part = validation_split(folds[0][0], fraction=0.1, seed=seed)
grid = [{"reg_item": a, "reg_user": b} for a in reg_grid for b in reg_grid]
tuning = validation_grid(
    lambda **o: BaselineEstimates(method="als", device=device, **o), grid, fit_part, valid_part
)
best = tuning.iloc[0][["reg_item", "reg_user"]].to_dict()
plotting.plot_heatmap(tuning, index="reg_item", columns="reg_user", values="valid_rmse")
best

# %% [markdown]
# ## The three fits on the rating folds
#
# Each model is fit on each fold's training part (`uK.base` on ML-100K) and scored on its test
# part (`uK.test`), predictions clipped to the rating scale; the same five folds serve every
# model in the series. Koren's single pass uses his Netflix constants; ALS uses the validation
# choice (the package default for `method="als"` is the choice this grid makes on ML-100K);
# SGD uses Koren's $\gamma = 0.005$, $\lambda_1 = 0.02$.

# %%
models = {
    "shrunk (Koren, 25/10)": lambda: BaselineEstimates(method="shrunk", device=device),
    "ALS (validated)": lambda: BaselineEstimates(method="als", device=device, **best),
    "SGD": lambda: BaselineEstimates(method="sgd", seed=seed, device=device),
}
per_fold = pd.concat(
    [evaluate_folds(make, folds, name=name, fold_names=fold_names) for name, make in models.items()]
)
summary = summarize_folds(per_fold)
summary.round(4)

# %%
plotting.plot_fold_results(per_fold, metric="rmse")

# %% [markdown]
# ## What shrinkage does
# On the first fold (u1 on ML-100K), each movie's bias against its number of ratings: the raw
# mean offset (no shrinkage) explodes for movies with one or two ratings; shrinkage pulls them
# toward zero.

# %%
train = folds[0][0]
raw = BaselineEstimates(method="shrunk", reg_item=0, reg_user=0, device=device).fit(train)
shrunk = BaselineEstimates(method="als", device=device, **best).fit(train)
biases = pd.DataFrame(
    {
        "ratings of the item": train.item_counts(),
        "λ = 0": raw.item_bias,
        "validated λ": shrunk.item_bias,
    }
).melt("ratings of the item", var_name="fit", value_name="b_i")
ax = sns.scatterplot(data=biases, x="ratings of the item", y="b_i", hue="fit", s=10, alpha=0.6)
ax.set_xscale("log")

# %% [markdown]
# ## Results
# Logged for the series' results table, with the protocol beside each number.

# %%
for row in summary.itertuples():
    log.add(
        f"BaselineEstimates {row.model}",
        "rmse",
        row.rmse_mean,
        dataset=dataset,
        protocol=f"{protocol} mean, seed {seed}",
    )
    first = per_fold[(per_fold.model == row.model) & (per_fold.fold == fold_names[0])]
    log.add(
        f"BaselineEstimates {row.model}",
        "rmse",
        first.rmse.iloc[0],
        dataset=dataset,
        protocol=fold_names[0] if protocol == "u1..u5" else f"{fold_names[0]} of {protocol}",
    )
log.save()
log.frame()

# %%
best_rmse = summary.rmse_mean.min()
global_mean_rmse = np.mean(
    [rmse(np.full(len(test), train.global_mean), test.rating) for train, test in folds]
)  # always predicting mu
print(f"best baseline {best_rmse:.4f} vs the global mean {global_mean_rmse:.4f} ({protocol})")
if dataset == "ml-100k":
    assert best_rmse <= 0.945, f"baseline mean RMSE {best_rmse:.4f} above the 0.945 target"
assert np.isfinite(best_rmse) and best_rmse < global_mean_rmse - 0.02, best_rmse

# %% [markdown]
# ## What to try next
# * Separate $\lambda$ for users and items matters more than the fitting method: compare the
#   rows of the heatmap with its columns.
# * Iterate Koren's shrunk means (`epochs`) and watch it converge to the ALS numbers.
# * The baseline is also the cold-start answer: every model in `mfutils` falls back to it for
#   users or items it has never seen (`predict([-1], [item])`).
