# %% [markdown]
# # 11 · Implicit feedback: from ratings to rankings
#
# Notebooks 01–10 predicted *how much* a user likes a movie. Most real systems never see a
# rating: they see clicks, plays, purchases — *which* items a user chose. Rendle's survey
# ("Item Recommendation from Implicit Feedback", 2021) frames the task: for each user, rank
# the whole catalogue so that the items they will interact with come first.
#
# Two things change:
#
# * **the data** — every observed pair $(u,i)$ is a positive; everything else is *unobserved*,
#   a mix of "not interested" and "never saw it". There are no negatives to fit.
# * **the metric** — no RMSE; we rank all items for each user and ask whether the held-out
#   ones come first (Recall@K, NDCG@K).
#
# This notebook sets up the protocol that notebooks 12 and 13 reuse, and the three classic
# answers: recommend what is popular, weighted matrix factorization by ALS (iALS), and BPR.

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
bpr_epochs = 40  # upper bound; early stopping on validation NDCG@20 usually stops sooner

# %%
import itertools

import pandas as pd
import seaborn as sns

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens
from mfutils.evaluation import known_items, koren_topk, sampled_hit_rate
from mfutils.experiments import RANKING_KS, evaluate_ranking, ranking_split, tune_and_test
from mfutils.models import EASE, ImplicitALS, MostPopular, TwoTower
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("11_implicit_feedback", results_dir)
split = ranking_split(load_movielens(dataset), seed=seed)
print(split.protocol)
pd.Series(
    {name: len(getattr(split, name)) for name in ("train", "test", "fit", "valid")},
    name="interactions",
)

# %% [markdown]
# ## The protocol
#
# Every rating becomes an interaction (the star value is dropped). Each user's interactions
# are split at random, 80% train / 20% test, and 10% of each user's train is set aside again
# as **validation**: every hyperparameter below is chosen there, with models fit on the rest;
# the test part is touched once, by the final models, fit on the whole train part.
#
# For every test user we score **all** items, mask the user's training items, and take the
# top $K$ list $L_u$. With $T_u$ the user's test items:
#
# $$\text{Recall@}K=\frac{|L_u\cap T_u|}{|T_u|},\qquad
#   \text{NDCG@}K=\frac{\sum_{r=1}^{K}\mathbb 1[L_u(r)\in T_u]/\log_2(r+1)}
#                      {\sum_{r=1}^{\min(|T_u|,K)}1/\log_2(r+1)},$$
#
# averaged over users (`mfutils.metrics.topk_metrics`, vectorised over chunks of users).


# %%
def log_scores(name, scores):
    """Log the headline test numbers; all of them as a Series."""
    for metric in ("recall@20", "ndcg@20"):
        log.add(name, metric, scores[metric], dataset=dataset, protocol=split.protocol)
    return pd.Series(scores, name=name)


def test_scores(model, name):
    """A model without options to tune: fit on the whole train part, score test once."""
    model.fit(split.train)
    return log_scores(
        name, evaluate_ranking(model, train=split.train, test=split.test, ks=RANKING_KS)
    )


results = {"MostPopular": test_scores(MostPopular(device=device), "MostPopular")}
results["MostPopular"].round(4)

# %% [markdown]
# On ML-100K, popularity alone puts a held-out movie in the top 20 for 84% of the users
# (`hitrate@20` above, for the release loaded): MovieLens interactions concentrate on a few
# hundred films, so every personalised model must be
# measured against this line.
#
# ## iALS: weighted matrix factorization (Hu, Koren & Volinsky 2008)
#
# Treat *every* pair as data: preference $p_{ui}=1$ if $u$ interacted with $i$, else 0, with
# confidence $c_{ui}=1+\alpha r_{ui}$, and fit
#
# $$\min_{X,Y}\sum_{u,i}c_{ui}\,(p_{ui}-x_u^\top y_i)^2+\lambda\Big(\sum_u\|x_u\|^2+\sum_i\|y_i\|^2\Big).$$
#
# The sum runs over all $|U|\times|I|$ pairs, yet with $Y$ fixed each $x_u$ is a ridge solve
# whose matrix $Y^\top Y+Y^\top(C^u-I)Y+\lambda I$ needs only the user's own items beyond the
# shared $Y^\top Y$. `ImplicitALS` solves all users at once by a few conjugate-gradient steps
# built on `torch.sparse` (or exactly, by batched Cholesky).
#
# $\lambda$ has a ceiling set by the data. Near zero a sweep is linear,
# $x_u\approx\lambda^{-1}\sum_{i\in I_u}c_{ui}y_i$, so along its leading direction the
# factors scale by $(\sigma_{\max}(W)/\lambda)^2$ per sweep, $W_{ui}=c_{ui}$ on the observed
# pairs: above $\lambda=\sigma_{\max}(W)$ zero is the only fixed point, and what is left to
# rank by is the decaying start. `ImplicitALS` then stops with `TrainingCollapsed`, which gives
# $\sigma_{\max}$, and the grid below keeps such a point unscored instead of choosing it.

# %%
grid = [
    dict(n_factors=f, reg=r, alpha=a)
    for f, r, a in itertools.product([32, 64, 128], [3.0, 10.0, 30.0, 100.0], [0.5, 2.0, 5.0])
]
ials = tune_and_test(
    lambda **o: ImplicitALS(**{"seed": seed, "valid_every": 1, "device": device, **o}),
    grid,
    split,
    name="iALS",
)
ials.grid.head(8).round(4)

# %%
ax = ials.valid_model.history.plot(x="epoch", y="valid_ndcg@20", marker="o", legend=False)
ax.set(xlabel="ALS sweep", ylabel="validation NDCG@20", title=f"iALS {ials.options}")
results["iALS"] = log_scores("iALS", ials.scores)
results["iALS"].round(4)

# %% [markdown]
# ## BPR: learning from pairs (Rendle et al. 2009)
#
# BPR keeps only the *order* of the data: a user prefers an item they interacted with, $i$,
# to one they did not, $j$. With $\hat x_{uij}=p_u^\top q_i-p_u^\top q_j$ it maximises
#
# $$\sum_{(u,i,j)}\ln\sigma(\hat x_{uij})-\lambda\|\Theta\|^2,$$
#
# a smooth surrogate of each user's AUC (here $\lambda$ weighs the squared norms of the
# embeddings a batch uses; Adam at learning rate $3\cdot10^{-3}$). Negatives $j$ are drawn
# uniformly among the items the user has *not* interacted with (`UniformNegatives`: exact,
# no collisions); the model is the two-tower MF of notebook 12 with the `bpr` loss, trained by
# the shared trainer with early stopping on validation NDCG@20.

# %%
bpr = tune_and_test(
    lambda **o: TwoTower(
        **{"loss": "bpr", "epochs": bpr_epochs, "seed": seed, "device": device, **o}
    ),
    [dict(lr=3e-3, reg=reg) for reg in (1e-3, 1e-2)],
    split,
    name="BPR-MF",
)
bpr.grid.round(4)

# %%
ax = plotting.plot_learning_curves({"BPR-MF": bpr.valid_model.history}, best="max")
ax.set(ylabel="validation NDCG@20")
results["BPR-MF"] = log_scores("BPR-MF", bpr.scores)
results["BPR-MF"].round(4)

# %% [markdown]
# For reference, EASE (Steck 2019) — a closed-form item-item model with one $n\times n$
# inverse — is one of the strongest simple baselines on data of this size.

# %%
results["EASE"] = test_scores(EASE(device=device), "EASE")
table = pd.DataFrame(results).T
table[["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]].round(4)

# %%
long = table[["recall@20", "ndcg@20"]].reset_index(names="model").melt(id_vars="model")
ax = sns.barplot(long, x="value", y="model", hue="variable")
ax.set(xlabel="", ylabel="", title=f"{dataset}: full ranking, test part")

# %% [markdown]
# ## Why not sample the negatives in evaluation?
#
# Many papers rank each held-out item among only 100 random unobserved items and report a
# "HitRate@10" there. Krichene & Rendle (KDD 2020) showed such **sampled metrics** are not
# consistent with the full ranking: with few negatives every metric collapses towards AUC, and
# the order of two models can flip. Below, the same fitted models on the same test part:
# the sampled numbers are much higher and much closer together than the full-ranking ones.

# %%
fitted = {
    "MostPopular": MostPopular(device=device).fit(split.train),
    "iALS": ials.model,
    "EASE": EASE(device=device).fit(split.train),
}
sampled = koren_topk(
    fitted,
    split.train,
    split.test,
    min_rating=1.0,
    n_negatives=100,
    seed=seed,
    known=known_items(split.train, split.test),
)
contrast = pd.DataFrame(
    {
        "sampled hitrate@10 (100 negatives)": sampled_hit_rate(sampled, 10),
        "full hitrate@10": table.loc[list(fitted), "hitrate@10"],
        "full recall@10": table.loc[list(fitted), "recall@10"],
    }
)
pd.concat([contrast.round(4), contrast.rank(ascending=False).add_suffix(" (rank)")], axis=1)

# %% [markdown]
# Popularity looks respectable when it only has to beat 100 random — mostly obscure — movies;
# in the full ranking it is far behind. Compare the order of the two strong models under both
# protocols in the table: when they are close, the sampled metric can rank them differently
# from the full ranking. Report full-ranking metrics; if a sampled protocol is
# unavoidable, label it as such (as notebook 07 does for Koren's protocol).

# %%
log.save()
if dataset == "ml-100k":
    assert results["iALS"]["ndcg@20"] > 0.43, results["iALS"]["ndcg@20"]
assert results["iALS"]["ndcg@20"] > results["MostPopular"]["ndcg@20"], table
assert results["BPR-MF"]["ndcg@20"] > results["MostPopular"]["ndcg@20"], table
