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
# # 09 · DeepFM: a deep network on the factorization machine's embeddings
#
# A factorization machine (notebook 08) models every pair of features with an inner product,
# and nothing of higher order. DeepFM (Guo et al. 2017) adds a feed-forward network that
# reads the *same* embeddings. With $e_f = \sum_{i\in f} x_i v_i$ the embedding of field $f$
# (for the multi-valued genres, their $1/g$-weighted mean):
#
# $$y_{FM} = \langle w, x\rangle + \sum_{i<j}\langle v_i, v_j\rangle x_i x_j,\qquad
#   a^{(0)} = [e_1;\dots;e_m],\quad a^{(l+1)} = \mathrm{ReLU}\big(W^{(l)}a^{(l)}+b^{(l)}\big),$$
#
# $$\hat y = \mathrm{sigmoid}\big(y_{FM} + W^{(H+1)}a^{(H)} + b^{(H+1)}\big).$$
#
# The FM part learns the low-order interactions, the network the high-order ones, from one
# table and in one training run — no pre-training, no hand-made cross features. The paper
# predicts clicks (log loss); we try both MovieLens tasks:
#
# * **explicit**: the rating itself, squared error, no sigmoid (RMSE);
# * **binary**: "liked it", $r \ge 4 \to 1$, the paper's log loss (AUC and log loss).
#
# On ratings the one run overfits: the network fits the training ratings through the shared
# embeddings before the FM part has learned the biases (its validation curve below turns up
# after a few epochs, worse than the FM alone; on a release whose ratings are mostly biases it
# ends worse than the baseline estimates). The package therefore trains DeepFM in two phases
# by default: the FM part alone (the network's output held at 0), then the whole network
# from the FM's solution, with the network's output layer starting at zero, for as many
# joint epochs as a held-out tenth of the training ratings prefers — none, the FM itself,
# included. `DeepFM(warm_start=False)` is the paper's single run.

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
like_threshold = 4  # rating >= this is a positive in the binary task
benchmarks = {
    "explicit": "../benchmarks/results/explicit-ml-100k-features.json",
    "binary": "../benchmarks/results/explicit-ml-100k-binary.json",
}  # ML-100K u1..u5

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens, validation_split
from mfutils.experiments import evaluate_folds, fold_labels, rating_folds
from mfutils.metrics import auc, log_loss, rmse
from mfutils.models import DeepFM, FactorizationMachine
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("09_deepfm", results_dir)
data = load_movielens(dataset)
folds, protocol = rating_folds(data, seed=seed)
fold = fold_labels(protocol)[0]  # u1 on ML-100K, else fold 1 of a seeded 5-fold split
where = fold if protocol == "u1..u5" else f"{fold} of {protocol}"
fit_part, valid_part = validation_split(folds[0][0], fraction=0.1, seed=seed)
data, device, protocol

# %% [markdown]
# ## The two models
# Both over the fields kept in notebook 08 (the package default `DEFAULT_FIELDS`, those the
# release has: no demographics without a user table), with $k=20$ and the same
# training schedule (Adam, the per-rating penalty on the embeddings). DeepFM shares the FM's
# table and adds two ReLU layers of 64 with dropout 0.5 and a small L2 penalty on their
# weights. The paper's three layers of 400 overfit our validation split within a few epochs
# and train ten times slower on a CPU (`DeepFM(hidden=(400, 400, 400), n_factors=10)` to try
# them).


# %%
def make(name: str, **options):
    common = dict(seed=seed, device=device, **options)  # the default fields
    return FactorizationMachine(**common) if name == "FM" else DeepFM(**common)


# %% [markdown]
# ## Learning curves
# Validation RMSE (explicit) and validation log loss (binary) per epoch, on a split carved
# from the first training fold (`u1.base` on ML-100K); the binary labels are the same split,
# binarised.

# %%
liked = {
    part: split.with_ratings(split.rating >= like_threshold)
    for part, split in (("fit", fit_part), ("valid", valid_part))
}
histories = {"explicit": {}, "binary": {}}
for name in ("FM", "DeepFM"):
    histories["explicit"][name] = make(name).fit(fit_part, valid=valid_part).history
    histories["binary"][name] = (
        make(name, binary=True).fit(liked["fit"], valid=liked["valid"]).history
    )
histories["explicit"]["DeepFM, one run (paper)"] = (
    make("DeepFM", warm_start=False).fit(fit_part, valid=valid_part).history
)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, (task, curves) in zip(axes, histories.items(), strict=True):
    plotting.plot_learning_curves(curves, ax=ax)
    ax.set_title(f"{task}: validation {'RMSE' if task == 'explicit' else 'log loss'}")

# %% [markdown]
# ## Explicit ratings on the first fold (u1 on ML-100K)
# Beside the two models, the constant predictor (the training mean) as the floor.

# %%
explicit = pd.concat(
    [
        evaluate_folds(lambda n=name: make(n), folds[:1], name=name, fold_names=[fold])
        for name in ("FM", "DeepFM")
    ]
)
constant_rmse = rmse(np.full(len(folds[0][1]), folds[0][0].global_mean), folds[0][1].rating)
explicit.round(4), f"constant: {constant_rmse:.4f}"

# %% [markdown]
# ## Liked or not ($r \ge 4$) on the same fold
# The same fold with binarised labels; the models output probabilities. AUC is the chance
# that a liked rating is scored above a disliked one; the constant predictor (the training
# fold's positive rate) is the log loss to beat.

# %%
train, test = folds[0]
train_liked = train.with_ratings(train.rating >= like_threshold)
label = (test.rating >= like_threshold).astype(float)
probs = {
    name: make(name, binary=True).fit(train_liked).predict_ratings(test)
    for name in ("FM", "DeepFM")
}
binary = pd.DataFrame(
    {name: {"auc": auc(p, label), "logloss": log_loss(p, label)} for name, p in probs.items()}
).T
binary.loc["constant"] = [0.5, log_loss(np.full(len(test), train_liked.rating.mean()), label)]
binary.round(4)

# %% [markdown]
# ## Both tasks on ML-100K's u1..u5
# From `benchmarks/explicit.py` (rating task) and `benchmarks/explicit.py --task binary`, run
# on ML-100K (the committed JSON); skipped on the other releases.

# %%
if dataset == "ml-100k":
    bench = {
        task: pd.DataFrame(json.loads(Path(path).read_text())["models"]).set_index("model")
        for task, path in benchmarks.items()
    }
    five_folds = (
        pd.DataFrame(
            {
                "RMSE": bench["explicit"].rmse_mean,
                "AUC": bench["binary"].auc_mean,
                "log loss": bench["binary"].logloss_mean,
            }
        )
        .loc[["FM-ids", "FM-side", "DeepFM", "constant"]]
        .round(4)
    )
else:
    five_folds = None
    print(f"the committed five-fold tables are ML-100K's; skipped on {dataset}")
five_folds

# %% [markdown]
# ## Results

# %%
for r in explicit.itertuples():
    log.add(r.model, "rmse", r.rmse, dataset=dataset, protocol=f"{where}, seed {seed}")
for name, row in binary.loc[["FM", "DeepFM"]].iterrows():
    for metric in ("auc", "logloss"):
        log.add(
            name,
            metric,
            row[metric],
            dataset=dataset,
            protocol=f"{where}, rating >= {like_threshold} -> 1, seed {seed}",
        )
log.save()
log.frame()

# %%
rmse_of = explicit.set_index("model").rmse
models_binary = binary.loc[["FM", "DeepFM"]]
assert (rmse_of < constant_rmse).all(), (rmse_of, constant_rmse)
assert (models_binary.auc > 0.5).all(), binary
assert (models_binary.logloss < binary.logloss["constant"]).all(), binary
if dataset == "ml-100k":
    assert rmse_of["DeepFM"] < 0.93 and rmse_of["FM"] < 0.93, rmse_of
    assert (models_binary.auc > 0.75).all(), binary
    assert (models_binary.logloss < binary.logloss["constant"] - 0.05).all(), binary

# %% [markdown]
# ## What to try next
# * The paper's network (`hidden=(400, 400, 400)`, `n_factors=10`) on a GPU.
# * The FM's inner products are DeepFM's strongest part here: try the deep part alone
#   (an MLP on the embeddings, as in Wide & Deep's deep side) to see what the FM part adds.
# * An implicit "rated items" field, shared by both parts.
