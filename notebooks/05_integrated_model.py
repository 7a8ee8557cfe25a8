# %% [markdown]
# # 05 · The integrated model: baseline, factors and neighbours in one
#
# Notebooks 02–04 built two families. Latent factors (SVD++) capture the broad taste of a user;
# the neighbourhood model (notebook 03) captures strong links among a few related movies,
# which factors smear out. Koren (2008, eq. 16) adds them into one predictor with three tiers:
#
# $$\hat r_{ui} = \underbrace{\mu + b_u + b_i}_{\text{baseline}}
#   + \underbrace{q_i^\top\Big(p_u + |N(u)|^{-\frac12}\sum_{j\in N(u)} y_j\Big)}_{\text{factors (SVD++)}}
#   + \underbrace{|R^k(i;u)|^{-\frac12}\sum_{j\in R^k(i;u)}(r_{uj}-b_{uj})\,w_{ij}
#   + |N^k(i;u)|^{-\frac12}\sum_{j\in N^k(i;u)} c_{ij}}_{\text{neighbourhood}} .$$
#
# All parameters are learned together on the squared error with the penalties of each tier.
# `IntegratedModel.fit` first fits the two tiers on their own (SVD++ from a biased-MF start,
# the global neighbourhood model from its fixed baseline), then trains the sum jointly: the two
# halves alone would count the user and item effects twice.

# %% tags=["parameters"]
dataset = "ml-100k"
results_dir = None  # the series runner passes a folder; numbers are logged there
device = None  # None picks cuda, then mps, then cpu ($MFUTILS_DEVICE overrides)
seed = 0
joint_epochs_grid = [1, 3, 6]  # joint passes tried on the validation split

# %%
import pandas as pd

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens, validation_split
from mfutils.experiments import evaluate_folds, rating_folds, summarize_folds, validation_grid
from mfutils.models import BaselineEstimates, GlobalNeighborhood, IntegratedModel, SVDpp
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("05_integrated_model", results_dir)
data = load_movielens(dataset)
folds, protocol = rating_folds(data, seed=seed)
fit_part, valid_part = validation_split(folds[0][0], fraction=0.1, seed=seed)
data, device, protocol

# %% [markdown]
# ## How long to train the sum jointly
# On the validation split carved from `u1.base`; the test folds below use the number of joint
# passes chosen here.

# %%
tuning = validation_grid(
    lambda **o: IntegratedModel(seed=seed, device=device, **o),
    [{"epochs": e} for e in joint_epochs_grid], fit_part, valid_part)
joint_epochs = int(tuning.iloc[0]["epochs"])
tuning

# %% [markdown]
# ## What each tier adds, on u1..u5
# The same folds for every row; predictions clipped to [1, 5].

# %%
tiers = {
    "baseline only": lambda: BaselineEstimates(device=device),
    "baseline + neighbourhood (GlobalNeighborhood)": lambda: GlobalNeighborhood(
        seed=seed, device=device),
    "baseline + factors (SVD++)": lambda: SVDpp(seed=seed, device=device),
    "all three tiers (IntegratedModel)": lambda: IntegratedModel(
        epochs=joint_epochs, seed=seed, device=device),
}
per_fold = pd.concat([evaluate_folds(make, folds, name=name) for name, make in tiers.items()])
summary = summarize_folds(per_fold)
summary.round(4)

# %%
plotting.plot_fold_results(per_fold, metric="rmse")

# %% [markdown]
# Each tier alone takes a large step from the baseline. What the third tier adds on top of
# SVD++ is the gap below, fold by fold (negative: the integrated model is better):

# %%
by_fold = per_fold.pivot(index="fold", columns="model", values="rmse")
gap = by_fold["all three tiers (IntegratedModel)"] - by_fold["baseline + factors (SVD++)"]
gap.to_frame("integrated - SVD++").T.round(4)

# %% [markdown]
# On Netflix, Koren reported a clear gain (SVD++ 0.8924 at f=100; the integrated model
# "below 0.887"). ML-100K is a much smaller test: with 80,000 training ratings the $2k$
# neighbourhood weights per item rest on few co-ratings, and joint training also moves a
# well-tuned SVD++. The validation split above (a random 10% of `u1.base`) and the canonical
# test folds (blocks of users' ratings) need not agree on so small a difference — compare the
# validation table with the gap. Reported as measured; tuning it on the test folds would not
# be honest.
#
# ## Results

# %%
for row in summary.itertuples():
    log.add(row.model, "rmse", row.rmse_mean, dataset=dataset,
            protocol=f"{protocol} mean, seed {seed}")
    u1 = per_fold[(per_fold.model == row.model) & (per_fold.fold == "u1")].rmse.iloc[0]
    log.add(row.model, "rmse", u1, dataset=dataset, protocol="u1")
log.save()
log.frame()

# %%
rmse_of = summary.set_index("model").rmse_mean
integrated = rmse_of["all three tiers (IntegratedModel)"]
assert integrated <= rmse_of["baseline + neighbourhood (GlobalNeighborhood)"], rmse_of
assert integrated < rmse_of["baseline only"] - 0.02, rmse_of
if dataset == "ml-100k":
    assert integrated <= 0.914, f"integrated model mean RMSE {integrated:.4f}"

# %% [markdown]
# ## What to try next
# * A larger neighbourhood (`k=200`) or more factors (`n_factors=50`) for the tiers
#   (`svdpp_options`, `neighborhood_options`), chosen on the validation split.
# * Koren's per-tier learning rates: the neighbourhood weights learn ten times slower
#   ($\gamma_3 = 0.001$) than factors and biases ($\gamma_{1,2} = 0.007$) on Netflix.
# * Notebook 06 lets the biases and the user factors drift with time; notebook 07 checks
#   whether the lower RMSE also gives better top-K lists.
