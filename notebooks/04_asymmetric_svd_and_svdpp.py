# %% [markdown]
# # 04 · Asymmetric-SVD and SVD++: users described by what they rated
#
# Biased MF (notebook 02) learns a free vector $p_u$ for every user. Koren (2008) observed that
# *which* movies a user chose to rate says much about them, whatever the ratings were — and
# that a user can be described through their items alone.
#
# **SVD++** (eq. 15) adds that implicit feedback to the user factor, with $N(u)$ the items
# $u$ rated (here: in the training fold):
#
# $$\hat r_{ui} = \mu + b_u + b_i + q_i^\top\Big(p_u + |N(u)|^{-\frac12}\sum_{j\in N(u)} y_j\Big).$$
#
# **Asymmetric-SVD** (eq. 13) drops $p_u$: a user *is* the sum of their items,
# weighted by how much they liked each relative to a fixed baseline $b_{uj}$:
#
# $$\hat r_{ui} = b_{ui} + q_i^\top\Big(|R(u)|^{-\frac12}\sum_{j\in R(u)}(r_{uj}-b_{uj})\,x_j
#   + |N(u)|^{-\frac12}\sum_{j\in N(u)} y_j\Big).$$
#
# It has fewer parameters, explains every prediction through the user's own ratings, and scores
# a new user as soon as they have rated something — no retraining. In `mfutils` both sums are
# one `embedding_bag` over each user's items, built once per batch of whole users.

# %% tags=["parameters"]
dataset = "ml-100k"
results_dir = None  # the series runner passes a folder; numbers are logged there
device = None  # None picks cuda, then mps, then cpu ($MFUTILS_DEVICE overrides)
seed = 0
showcase_user = 1  # original MovieLens user id for the explanation example

# %%
import numpy as np
import pandas as pd

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens
from mfutils.experiments import evaluate_folds, rating_folds, summarize_folds
from mfutils.metrics import rmse
from mfutils.models import AsymmetricSVD, BiasedMF, SVDpp
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("04_asymmetric_svd_and_svdpp", results_dir)
data = load_movielens(dataset)
folds, protocol = rating_folds(data, seed=seed)
titles = data.items["title"]
data, device, protocol

# %% [markdown]
# ## Accuracy on u1..u5
# Both models start from a biased-MF fit (SVD++ with empty bags *is* biased MF) and then learn
# what the bags add; their hyperparameters were chosen on a validation split of `u1.base`.

# %%
models = {
    "BiasedMF SGD": lambda: BiasedMF(seed=seed, device=device),
    "AsymmetricSVD": lambda: AsymmetricSVD(seed=seed, device=device),
    "SVD++": lambda: SVDpp(seed=seed, device=device),
}
per_fold = pd.concat([evaluate_folds(make, folds, name=name) for name, make in models.items()])
summary = summarize_folds(per_fold)
summary.round(4)

# %% [markdown]
# ## Who gains: users with few ratings
# On u1, the error split by how many training ratings the user has: does the implicit sum help
# most where $p_u$ has little to learn from?

# %%
train, test = folds[0]
fitted = {name: make().fit(train) for name, make in models.items()}
activity = pd.cut(train.user_counts()[test.user], [0, 30, 60, 120, 1000])
errors = pd.DataFrame({name: (m.predict_ratings(test) - test.rating) ** 2
                       for name, m in fitted.items()}).groupby(activity, observed=True)
errors.mean().pow(0.5).assign(test_ratings=errors.size()).round(4)

# %% [markdown]
# ## Explaining a prediction
# Asymmetric-SVD's prediction is a sum over the user's own ratings: each rated movie $j$
# contributes $q_i^\top\big(|R(u)|^{-1/2}(r_{uj}-b_{uj})x_j + |N(u)|^{-1/2}y_j\big)$.
# The movies that pushed the top recommendation of one user up or down the most:

# %%
asym = fitted["AsymmetricSVD"]
user = int(train.encode_users([showcase_user])[0])
top_item = int(asym.recommend([user], k=1)[0][0, 0])
why = asym.explain(user, top_item).head(8)
print(f"recommended: {titles[top_item]}")
why.assign(title=titles[why.item].to_numpy())

# %% [markdown]
# ## New users, no retraining
# Hold 100 users (seeded) out of `u1.base` and fit on the rest. Each held-out user then "rates"
# half of their movies; `predict_new_users` computes their bias and vector from those ratings
# alone and predicts the other half. Without it, a model can only answer $\mu + b_i$.

# %%
rng = np.random.default_rng(seed)
newcomers = rng.choice(np.unique(train.user), size=100, replace=False)
is_new = np.isin(train.user, newcomers)
asym_rest = AsymmetricSVD(seed=seed, device=device).fit(train.subset(~is_new))
ratings_new = train.subset(is_new).to_frame()
given = rng.random(len(ratings_new)) < 0.5
shown, held = ratings_new[given], ratings_new[~given]
new_pred = asym_rest.predict_new_users(shown.user, shown.item, shown.rating, held.user, held.item)
fallback = asym_rest.predict(np.full(len(held), -1), held.item)
cold_rmse = {"new-user fold-in": rmse(new_pred, held.rating.to_numpy()),
             "item bias only": rmse(fallback, held.rating.to_numpy())}
cold_rmse

# %% [markdown]
# ## Results

# %%
for row in summary.itertuples():
    log.add(row.model, "rmse", row.rmse_mean, dataset=dataset,
            protocol=f"{protocol} mean, seed {seed}")
    log.add(row.model, "fit_seconds", row.fit_seconds, dataset=dataset,
            protocol=f"{protocol} mean, device {device.type}")
for name, value in cold_rmse.items():
    log.add(f"AsymmetricSVD {name}", "rmse", value, dataset=dataset,
            protocol=f"u1.base, 100 held-out users (seed {seed}), half of their ratings shown")
log.save()
log.frame()

# %%
rmse_of = summary.set_index("model").rmse_mean
assert rmse_of["SVD++"] < rmse_of["BiasedMF SGD"], rmse_of
assert rmse_of["AsymmetricSVD"] < rmse_of["BiasedMF SGD"], rmse_of
assert cold_rmse["new-user fold-in"] < cold_rmse["item bias only"], cold_rmse
if dataset == "ml-100k":
    assert rmse_of["SVD++"] <= 0.915, f"SVD++ mean RMSE {rmse_of['SVD++']:.4f}"

# %% [markdown]
# ## What to try next
# * More factors (`n_factors=50`) with a validated `reg`; Koren's Netflix table improves
#   steadily with $f$.
# * Other implicit sources as extra bags: on Netflix, the movies a user rated in the test set
#   without a known rating; on MovieLens, the user's demographic attributes (Koren, Bell &
#   Volinsky 2009, eq. 6).
# * Notebook 05 adds the neighbourhood tier to SVD++: Koren's integrated model.
