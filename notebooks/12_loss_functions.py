# %% [markdown]
# # 12 · One model, nine losses
#
# Notebook 11 trained matrix factorization with BPR. Since then a stream of papers has
# claimed that the *loss* — not a bigger encoder — is what holds MF back: CCL (SimpleX, Mao
# et al. 2021), sampled softmax (Wu et al.), DirectAU (Wang et al. 2022), MAWU (Park et al.
# 2023), InfoNCE+ and MINE+ (Li, Jin & Ren 2023). Each paper uses its own data, split and
# tuning budget, so their numbers cannot be compared. Here they can: **the same two-tower MF
# (64-dimensional id embeddings), the same split, the same trainer, the same seed, the same
# validation budget**, and only the loss changes.
#
# With $s(u,i)$ the score of user $u$ and item $i$ — a dot product $p_u^\top q_i$, or a cosine
# $\cos(p_u,q_i)$ — and negatives $j$ drawn by a sampler:
#
# | loss | per positive $(u,i)$ | similarity |
# |---|---|---|
# | BPR | $-\log\sigma\big(s(u,i)-s(u,j)\big)$ | dot |
# | hinge | $\max\big(0,\;1-s(u,i)+s(u,j)\big)$ | dot |
# | CCL | $\big(1-s(u,i)\big)+\frac{w}{\lvert\mathcal N\rvert}\sum_{j}\max\big(0,\,s(u,j)-m\big)$ | cosine |
# | SSM | $-\log\dfrac{e^{s(u,i)/\tau}}{e^{s(u,i)/\tau}+\sum_j e^{s(u,j)/\tau}}$ | cosine |
# | softmax | the same with $\tau=1$ | dot |
# | InfoNCE+ | $-\frac{s(u,i)}{\tau}+\lambda\log\big(\epsilon e^{s(u,i)/\tau}+\sum_j e^{s(u,j)/\tau}\big)$ | cosine |
# | MINE+ | InfoNCE+ with $\epsilon=0$ | cosine |
# | DirectAU | $\lVert\tilde p_u-\tilde q_i\rVert^2+\frac{\gamma}{2}\big[\ell_{unif}(U)+\ell_{unif}(I)\big]$ | — |
# | MAWU | $-\cos\big(\theta_{ui}+1-\sigma(m_u+m_i)\big)+\gamma_1\ell_{unif}(U)+\gamma_2\ell_{unif}(I)$ | — |
#
# with $\ell_{unif}(X)=\log\mathbb E_{x\ne x'}e^{-2\lVert\tilde x-\tilde x'\rVert^2}$ over a
# batch's rows of unit vectors $\tilde x$. DirectAU and MAWU use no negatives at all: they
# pull positives together (*alignment*) and spread everything over the sphere
# (*uniformity*). Every formula, default and source is in `mfutils.losses` (and its tests
# check each loss against a slow direct formula).

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
epochs = 40  # with tune=True: upper bound; early stopping on validation NDCG@20 stops sooner
patience = 4  # with tune=True: epochs without improvement before stopping
trials = 8  # validation trials per loss with tune=True, the same for every loss
tune = False  # True searches every loss here (about an hour on 1 CPU core); False replays
study_json = "../benchmarks/results/losses-ml-100k.json"  # python benchmarks/implicit.py --losses
# (recorded on ML-100K: on another release, tune=False refits ML-100K's choices there)
replica_json = "../benchmarks/results/losses-ml-latest-small-replica.json"  # the same study
ablate = "softmax"  # the loss whose candidate set the ablation varies

# %%
import json
from pathlib import Path

import pandas as pd
import seaborn as sns

from mfutils import get_device, plotting, seed_everything
from mfutils.data import load_movielens
from mfutils.evaluation import alignment_uniformity
from mfutils.experiments import (
    ablation,
    compare_losses,
    evaluate_ranking,
    ranking_split,
    refit_study,
    tuned_table,
)
from mfutils.losses.presets import LOSS_SPACES
from mfutils.models import MostPopular, TwoTower
from mfutils.results import ResultsLog

# %%
plotting.set_style()
seed_everything(seed)
device = get_device(device)
log = ResultsLog("12_loss_functions", results_dir)
split = ranking_split(load_movielens(dataset), seed=seed)
print(split.protocol)

# %% [markdown]
# ## The search spaces
#
# A comparison of losses is only as fair as the tuning behind each number, so every loss gets
# the same budget (`mfutils.losses.presets.LOSS_SPACES`): the same number of Optuna trials on
# the same validation part, the first its paper's recommended setting, the others drawn by
# the same seeded sampler. Every loss searches its learning rate; every softmax-family loss
# its temperature $\tau$ (InfoNCE+ also $\lambda$ and $\epsilon$, MINE+ $\lambda$); every
# loss that scores negatives chooses among the same four candidate sets (one or 64 uniform
# negatives per row, 1024 uniform catalogue items shared by the batch, in-batch with logQ);
# DirectAU and MAWU, which see no negatives, search their weights, weight decay and batch
# size. Adam, early stopping on validation NDCG@20.

# %%
pd.DataFrame(
    {
        name: {
            "start (the paper's setting)": ", ".join(f"{k}={v}" for k, v in spec.start.items()),
            "searched": ", ".join(spec.space),
        }
        for name, spec in LOSS_SPACES.items()
    }
).T

# %% [markdown]
# ## Every loss, tuned on validation
#
# For each loss: fit every trial on the *fit* part, keep the best validation NDCG@20 (and the
# epoch early stopping chose), refit that setting on the whole train part for that many
# epochs, and score the test part once.
#
# The searches take about an hour per seed on one CPU core, so by default this notebook
# replays them from `python benchmarks/implicit.py --losses`, which ran exactly this code
# (`compare_losses`) for each seed of its record and saved every trial with its choice: below,
# each loss's trials as recorded for this `seed`, then the chosen setting refit here on the
# train part. `tune=True` runs the searches instead. The record says which budget it was run
# with (`meta.budget`). It is ML-100K's: on another release, `tune=False` refits the settings
# chosen on ML-100K's validation split (a transfer of hyperparameters, never a look at this
# release's test part); `tune=True` chooses them anew.

# %%
if tune:
    study = compare_losses(
        split, trials=trials, epochs=epochs, patience=patience, seed=seed, device=device
    )
else:
    saved = json.loads(Path(study_json).read_text())
    record = saved["seeds"][str(seed)]
    print(f"recorded budget: {saved['meta']['budget']}; seeds {saved['meta']['seeds']}")
    if saved["meta"]["dataset"] == dataset:
        assert record["protocol"] == split.protocol, "another split: run with tune=True"
    else:
        print(
            f"the recorded searches are {saved['meta']['dataset']}'s: refitting its chosen "
            f"settings on {dataset} (tune=True chooses them on {dataset}'s validation split)"
        )
    study = refit_study(record["study"], split, seed=seed, device=device)
pd.concat({name: result.grid for name, result in study.items()}, names=["loss"]).round(4)

# %%
popular = MostPopular(device=device).fit(split.train)
reference = {"MostPopular": evaluate_ranking(popular, train=split.train, test=split.test)}
table = tuned_table(study)
for name, row in table.iterrows():
    for metric in ("recall@20", "ndcg@20"):
        log.add(f"MF-{name}", metric, row[metric], dataset=dataset, protocol=split.protocol)
table.sort_values("ndcg@20", ascending=False).round(4)

# %%
long = (
    table[["recall@20", "ndcg@20"]]
    .sort_values("ndcg@20", ascending=False)
    .reset_index(names="loss")
    .melt(id_vars="loss")
)
ax = sns.barplot(long, x="value", y="loss", hue="variable")
ax.axvline(reference["MostPopular"]["ndcg@20"], color="gray", ls="--", lw=1)
ax.set(xlabel="", ylabel="", title=f"{dataset}: MF trained with each loss (test part)")

# %% [markdown]
# ## Over the seeds
#
# One seed is one split, one initialisation and one search. The record holds every seed it
# was run with; its summary gives each loss's test NDCG@20 and Recall@20 as mean and standard
# deviation over them, `tie` marking the losses whose mean is within one standard deviation of
# the best's, beside iALS tuned on the same validation parts (notebook 11's grid, widened).

# %%
record_file = json.loads(Path(study_json).read_text())
over_seeds = pd.DataFrame(record_file["summary"]).set_index("loss")
print(
    f"{record_file['meta']['protocol']}; budget {record_file['meta']['budget']}; "
    f"iALS tuned per seed: mean NDCG@20 {record_file['meta']['ials_ndcg@20 mean']}"
)
over_seeds.round(4)

# %% [markdown]
# **Read the tables with their budget.** Every loss had the same 8 validation trials per seed
# over its declared space, and three seeds. The dashed line is the most-popular list's
# NDCG@20; every loss clears it. Over the seeds the cosine sampled softmax (SSM) leads alone,
# 0.440 ± 0.001, and every seed's search gave it 64 uniform negatives per row; InfoNCE+ and
# MINE+ follow (0.426, 0.422), then BPR (0.417, with 64 negatives per row as well: a pairwise
# loss over many negatives), the plain dot-product softmax (0.416, the noisiest: ± 0.017),
# hinge, CCL and DirectAU (0.398), and MAWU last (0.339 ± 0.042). Tuned iALS on the same
# splits, 0.443 ± 0.004, is level with SSM within a standard deviation. Once each loss is tuned
# with the same budget the spread is about four points, smaller than most papers' reported
# gains, and several of the one-seed orderings of this notebook's table (this `seed`) swap on
# another seed.
#
# DirectAU and MAWU stay below BPR. Their papers' own settings, tried on the validation part
# (`python benchmarks/implicit.py --paper-settings`, `benchmarks/results/alignment-ml-100k.json`),
# split them: DirectAU at the MAWU repository's re-tuned Beauty setting ($\gamma=0.4$, weight
# decay 1e-4, batch 256; the start of its search here) reaches validation NDCG@20 0.225 against
# BPR's preset 0.219, while its README's settings with weight decay 1e-6 fall to 0.04–0.12 —
# the losses see only directions, and the decay is what lets an item's norm, its raw
# dot-product score, grow with its popularity; at test, tuned, it ends 0.019 below the tuned
# BPR. MAWU stays at 0.14–0.15 validation NDCG@20 at every setting tried (its papers' three,
# and DirectAU's batch size): on this data its margin-aware alignment, not the tuning, is what
# costs it.
#
# ## Alignment and uniformity of what each loss learned
#
# Wang & Isola's two numbers describe any embedding: **alignment**, the mean squared distance
# between a user's and a held-out item's unit vectors (here over the test pairs), and
# **uniformity**, how evenly users (and items) spread over the sphere. DirectAU optimises
# them directly; the others get there, or not, on their way.

# %% [markdown]
# ## The same study on a second release
#
# Does the ordering carry over? The same code, budget and protocol on a replica shaped like
# ml-latest-small (`mfutils.data.replicas.write_release(DIR, "ml-latest-small")`: 610 users,
# 9.7k movies, a third of them rated once, heavy users; `python benchmarks/implicit.py
# --losses --dataset ml-latest-small --data-dir DIR`), with tuned iALS and the most-popular
# list on the same splits:

# %%
replica = json.loads(Path(replica_json).read_text())
print(replica["meta"]["protocol"])
for key, label in (("ials", "iALS, tuned per seed"), ("popular", "MostPopular")):
    ndcg = [entry[key]["scores"]["ndcg@20"] for entry in replica["seeds"].values()]
    print(f"{label}: NDCG@20 {pd.Series(ndcg).mean():.4f} ± {pd.Series(ndcg).std():.4f}")
pd.DataFrame(replica["summary"]).set_index("loss").round(4)

# %% [markdown]
# The ordering does not carry over. On the replica no model beats the most-popular list;
# tuned iALS is next, BPR is the best loss, and SSM, first on ML-100K, is near the bottom with
# CCL; MAWU fails. The dot-product losses (BPR, hinge, softmax) lead and the cosine ones follow,
# MINE+ aside: a likely reading is that where interactions are few per movie and concentrated
# on the popular ones, a score that keeps popularity in the item's norm gains, as the
# popularity list itself does. The replica is synthetic, so this is not how the real release
# behaves; it is why a loss is chosen on the data at hand (`tune=True`), not from another data
# set's table.

# %%
geometry = pd.DataFrame(
    {
        name: alignment_uniformity(
            result.model.user_embeddings(), result.model.item_embeddings(), split.test
        )
        for name, result in study.items()
    }
).T
geometry["ndcg@20"] = table["ndcg@20"]
ax = plotting.plot_alignment_uniformity(geometry, hue="ndcg@20")
ax.set_title("test pairs: lower left is better")
geometry.round(3)

# %% [markdown]
# Neither number alone predicts accuracy. On ML-100K's seed 0, DirectAU, which optimises the
# two directly, ends the best aligned and the least uniform, and ranks second to last;
# CCL, whose margin only pushes away negatives that come too close, is next on both counts. MINE+, MAWU and hinge spread their embeddings most,
# and of them only MINE+ ranks well. The best losses (SSM, the softmax, BPR with 64 negatives)
# sit in between: a loss over many negatives trades some alignment for spread, and the
# softmax's temperature sets the exchange rate.

# %% [markdown]
# ## Ablations: negatives, logQ, hard negatives
#
# The same loss and options — by default the plain softmax at its tuned setting — with only the
# candidates changed, scored on validation (an ablation is a design choice, so it never sees
# the test part):
#
# * **uniform per row**: 64 exact negatives per positive, outside the user's items;
# * **shared uniform**: 1024 catalogue items shared by the batch;
# * **in-batch**: the batch's other positives, which follow item popularity — so the softmax
#   over-penalises popular items unless each logit is corrected by $-\log q_j$ (**logQ**,
#   Yi et al. 2019), with exact frequencies or with their streaming estimate;
# * **mixed** (Yang et al. 2020): in-batch plus 256 uniform items, with logQ;
# * **hard negatives**: only the 64 highest-scoring of the 1024 shared candidates enter the
#   softmax.

# %%
base = {
    **study[ablate].base,
    **study[ablate].options,
    "epochs": epochs,
    "patience": 3,
    "seed": seed,
    "device": device,
}
shared = {"negatives": "popularity", "popularity_alpha": 0.0, "n_negatives": 1024, "logq": None}
hardest = {**base.get("loss_options", {}), "hard_negatives": 64}
variants = {
    "uniform per row (64)": {"negatives": "uniform", "n_negatives": 64, "logq": None},
    "shared uniform (1024)": shared,
    "in-batch": {"negatives": "in-batch", "logq": None},
    "in-batch + logQ": {"negatives": "in-batch", "logq": "exact"},
    "in-batch + streaming logQ": {"negatives": "in-batch", "logq": "streaming"},
    "mixed (+256 uniform) + logQ": {"negatives": "mixed", "n_negatives": 256, "logq": "exact"},
    "shared uniform, 64 hardest": {**shared, "loss_options": hardest},
}
ablations = ablation(lambda **o: TwoTower(**{**base, **o}), variants, split)
ablations.round(4)

# %%
ax = sns.barplot(
    ablations.reset_index(names="negatives"),
    x="valid ndcg@20",
    y="negatives",
    color=sns.color_palette()[0],
)
ax.set(ylabel="", title=f"{ablate} MF: validation NDCG@20 by candidate set")

# %% [markdown]
# In-batch negatives without the correction push popular items down — on MovieLens, where
# popularity is most of the signal, that halves validation NDCG@20; exact logQ recovers all
# of it, level with the shared uniform candidates; the streaming estimate (Yi et al.'s Alg. 2,
# updated for every copy of an item in a batch, so that it estimates the expected copies per
# batch and does not saturate at one for the popular items) recovers about three quarters: it
# learns the frequencies as it goes, and after a few epochs a rarely seen item's estimate
# still rests on one or two gaps. Per-row uniform negatives do a little better than in-batch +
# logQ here. Restricting the softmax to the 64 hardest of the shared candidates hurts: on
# dense data many of the "hardest" unobserved items are items the user would have liked
# (false negatives). Mixed negatives match in-batch + logQ —
# their case is long-tail and fresh items in a large catalogue, which ML-100K does not have.

# %%
log.save()
best_loss = table["ndcg@20"].idxmax()
print(f"best loss: {best_loss}, test NDCG@20 {table.loc[best_loss, 'ndcg@20']:.4f}")
assert table["ndcg@20"].max() > reference["MostPopular"]["ndcg@20"], table["ndcg@20"]
if dataset == "ml-100k":
    assert (table["ndcg@20"] > reference["MostPopular"]["ndcg@20"]).sum() >= 7, table["ndcg@20"]
    assert table["ndcg@20"].max() > 0.40, table["ndcg@20"]
