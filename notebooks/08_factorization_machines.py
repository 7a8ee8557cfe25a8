# %% [markdown]
# # 08 · Factorization machines: side features in the model
#
# Biased MF sees a rating as a pair of ids: $\hat r_{ui} = \mu + b_u + b_i + p_u^\top q_i$.
# MovieLens knows more — the user's age, gender, occupation and zip code, the movie's genres
# and release year, the time of the rating — but there is no slot for any of it: every
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
# for values never seen in training; `FactorizationMachine` computes both sums with
# `EmbeddingBag`s.

# %% tags=["parameters"]
dataset = "ml-100k"
results_dir = None  # the series runner passes a folder; numbers are logged there
device = None  # None picks cuda, then mps, then cpu ($MFUTILS_DEVICE overrides)
seed = 0
side_fields = ["age", "gender", "occupation", "zip", "genres", "year", "weekday", "since_first"]
n_new_users = 100  # users held out of u1.base for the cold-start comparison

# %%
import numpy as np
import pandas as pd

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens, validation_split
from mfutils.experiments import evaluate_folds, rating_folds, summarize_folds, validation_grid
from mfutils.features import FieldEncoder
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
fit_part, valid_part = validation_split(folds[0][0], fraction=0.1, seed=seed)
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
display_row = pd.DataFrame({"field": np.asarray(encoder.columns)[active.numpy()],
                            "row of the table": row["index"][0][active].numpy(),
                            "x": row["value"][0][active].numpy()})
encoder.describe().merge(display_row, on="field", how="left")

# %% [markdown]
# ## With ids only, an FM is biased MF
# The same objective (squared error plus per-rating penalties), the same optimizer (Adam) and
# regularization: an FM over `user` and `item` and `BiasedMF(method="adam")` land on the same
# validation error, and their predictions differ by far less than either's error.

# %%
fm_ids = FactorizationMachine(fields=["user", "item"], seed=seed, device=device).fit(fit_part)
mf_adam = BiasedMF(method="adam", seed=seed, device=device).fit(fit_part)
pred_fm, pred_mf = fm_ids.predict_ratings(valid_part), mf_adam.predict_ratings(valid_part)
pd.Series({"FM (user, item)": rmse(pred_fm, valid_part.rating),
           "BiasedMF Adam": rmse(pred_mf, valid_part.rating),
           "between the two": rmse(pred_fm, pred_mf)}, name="validation RMSE").round(4)

# %% [markdown]
# ## Ablation: adding one field at a time
# Each side field added alone to the ids, on the validation split carved from `u1.base`.

# %%
def make_fm(**options):
    return FactorizationMachine(seed=seed, device=device, **options)


ids_rmse = rmse(pred_fm, valid_part.rating)
single = validation_grid(make_fm, [{"fields": ("user", "item", f)} for f in side_fields],
                         fit_part, valid_part)
single["field"] = single.pop("fields").map(lambda f: f[-1])
single["change"] = single.valid_rmse - ids_rmse
single.round(4)

# %% [markdown]
# Genres and release year help on their own; the demographic fields do not — a user with
# dozens of ratings is described better by them than by their age. But fields interact: the
# FM also learns gender × genre or occupation × year. So the fields are added *cumulatively*,
# best single field first, and the best prefix on validation is kept.

# %%
order = single.sort_values("change", kind="stable").field.tolist()
prefix_rmse = [single.valid_rmse[single.field == order[0]].item()] + [
    rmse(make_fm(fields=["user", "item", *order[:n]]).fit(fit_part).predict_ratings(valid_part),
         valid_part.rating) for n in range(2, len(order) + 1)]
cumulative = pd.DataFrame({"added": order, "valid_rmse": prefix_rmse})
chosen = ["user", "item", *order[: int(cumulative.valid_rmse.idxmin()) + 1]]
print("kept:", chosen)
cumulative.round(4)

# %% [markdown]
# ## u1..u5: biased MF, FM with ids, FM with the kept fields

# %%
models = {
    "BiasedMF SGD": lambda: BiasedMF(seed=seed, device=device),
    "FM ids only": lambda: make_fm(fields=["user", "item"]),
    "FM side features": lambda: make_fm(fields=chosen),
}
per_fold = pd.concat([evaluate_folds(make, folds, name=name) for name, make in models.items()])
summary = summarize_folds(per_fold)
summary.round(4)

# %% [markdown]
# ## Cold users: few ratings, or none
# Hold `n_new_users` users (seeded) entirely out of `u1.base` and fit on the rest. For the
# held-out users, biased MF and the ids-only FM can only answer with the item's terms; an FM
# keeps whatever demographic fields it has (all of them in "FM all fields": age, gender,
# occupation, zip code).

# %%
train, test = folds[0]
newcomers = np.random.default_rng(seed).choice(np.unique(train.user), size=n_new_users,
                                               replace=False)
known_train = train.subset(~np.isin(train.user, newcomers))
is_new = np.isin(test.user, newcomers)
cold = {
    "BiasedMF SGD": BiasedMF(seed=seed, device=device),
    "FM ids only": make_fm(fields=["user", "item"]),
    "FM side features": make_fm(fields=chosen),
    "FM all fields": make_fm(fields=["user", "item", *side_fields]),
}
squared = pd.DataFrame({name: (m.fit(known_train).predict_ratings(test) - test.rating) ** 2
                        for name, m in cold.items()})
cold_rmse = squared[is_new].mean().pow(0.5).rename(f"new users ({is_new.sum()} ratings)")
cold_rmse.round(4)

# %% [markdown]
# The other users of u1.test, by how many training ratings they have: side features matter
# most where the user's own ratings are few.

# %%
activity = pd.cut(known_train.user_counts()[test.user[~is_new]], [0, 30, 60, 120, 1000])
by_activity = squared[~is_new].groupby(activity, observed=True)
by_activity.mean().pow(0.5).assign(test_ratings=by_activity.size()).round(4)

# %% [markdown]
# ## Results

# %%
for row in summary.itertuples():
    log.add(row.model, "rmse", row.rmse_mean, dataset=dataset,
            protocol=f"{protocol} mean, seed {seed}, fields {'/'.join(chosen)}")
for name, value in cold_rmse.items():
    log.add(f"{name} (new users)", "rmse", value, dataset=dataset,
            protocol=f"u1, {n_new_users} users held out of u1.base (seed {seed})")
log.save()
log.frame()

# %%
rmse_of = summary.set_index("model").rmse_mean
assert rmse_of["FM side features"] <= rmse_of["FM ids only"], rmse_of
assert rmse_of["FM side features"] <= rmse_of["BiasedMF SGD"], rmse_of
assert cold_rmse["FM all fields"] < cold_rmse["FM ids only"], cold_rmse
if dataset == "ml-100k":
    assert rmse_of["FM side features"] <= 0.9157, rmse_of  # the project's biased MF

# %% [markdown]
# ## What to try next
# * An implicit field, "the other movies $u$ rated" with $x = 1/\sqrt{|N(u)|}$: the FM then
#   holds SVD++ (Rendle 2010, §V.B).
# * Field-aware FMs (one vector per field pair) and per-field regularization.
# * Notebook 09 puts a deep network on the same embeddings (DeepFM).
