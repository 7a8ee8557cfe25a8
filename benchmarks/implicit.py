"""Implicit-feedback benchmark: every ranking model on one split, a Markdown table and a JSON file.

    python benchmarks/implicit.py               # ML-100K, the series' protocol, our models
    python benchmarks/implicit.py --peers       # ... and the `implicit` library on the same split
    python benchmarks/implicit.py --models iALS EASE --seed 1
    python benchmarks/implicit.py --losses      # two-tower MF with every loss (notebook 12)
    python benchmarks/implicit.py --compact     # compact id tables: accuracy vs parameters
    python benchmarks/implicit.py --dataset ml-latest-small --data-dir /data/replicas

The protocol is :func:`mfutils.experiments.ranking_split`: every rating an interaction, a
seeded per-user 80/20 split, full ranking with the training items masked. Hyperparameters
are the ones chosen on the validation part (notebooks 11 and 12); every model is fit on the
whole train part here and scored on test. Writes
``benchmarks/results/implicit-<dataset>.json`` with every metric and the fit seconds.

``--losses`` runs notebook 12's study instead: the two-tower MF with each loss of
:data:`mfutils.losses.presets.LOSS_SPACES`, each tuned with the same budget (``--trials``
Optuna trials on the validation part, the paper's setting first), refit on the whole train
part for the early-stopped number of epochs and scored on test, for every seed of
``--seeds`` (each its own split and initialisation), beside iALS tuned on the same
validation parts; ``benchmarks/results/losses-<dataset>.json`` holds every trial, choice and
score and the mean/std table, and a rerun resumes from it.

``--paper-settings`` runs DirectAU and MAWU at their papers' settings instead
(``PAPER_SETTINGS``: Adam at 1e-3, long training with patience 10, their batch sizes, weights
and weight decays) beside their presets and the BPR preset, on validation only (fit part ->
valid part), one JSON row per setting as it finishes
(``benchmarks/results/alignment-<dataset>.json``).

``--compact`` instead runs the size curves of notebook 13 (:mod:`mfutils.compact`): the
two-tower model with hashed, hash-embedded and Bloom-embedded id tables (and a full table of
smaller width) at 50/25/10/5% of the full tables' parameters, NDCG@20 on the same split, and
biased MF's RMSE on ML-100K's u1 fold; writes ``benchmarks/results/compact-<dataset>.json``
and ``compact-<dataset>.png``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mfutils import get_device
from mfutils.compact import METHODS, best_on_valid, ranking_curve, rating_curve
from mfutils.data import load_movielens
from mfutils.experiments import (
    ablation,
    compare_losses,
    evaluate_ranking,
    ranking_split,
    rating_folds,
    seeds_table,
    study_record,
    tune_and_test,
    tuned_table,
)
from mfutils.losses.presets import LOSS_SPACES
from mfutils.models import EASE, ImplicitALS, MostPopular, TwoTower
from mfutils.plotting import plot_compact_curves
from mfutils.results import to_markdown

# This script is named like the `implicit` library it compares against; running it puts this
# folder first on sys.path, which would make `import implicit` import the script itself.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# iALS setting chosen on the validation part of ML-100K (notebook 11); peers get the same.
# The loss study tunes iALS per seed over notebook 11's grid, widened by one step of factors
# and two of lambda: on ML-100K seeds chose 128 factors, on the ml-latest-small replica
# lambda = 100, both that grid's edge.
IALS_AXES = {
    "n_factors": [32, 64, 128, 256],
    "reg": [3.0, 10.0, 30.0, 100.0, 300.0, 1000.0],
    "alpha": [0.5, 2.0, 5.0],
}
IALS_GRID = [
    dict(zip(IALS_AXES, point, strict=True)) for point in itertools.product(*IALS_AXES.values())
]
ALS = {"n_factors": 64, "reg": 30.0, "alpha": 2.0, "epochs": 15}


def package_models(device: torch.device) -> dict[str, Callable[[], object]]:
    """The package's ranking models at their validated settings."""
    return {
        "MostPopular": lambda: MostPopular(device=device),
        "EASE": lambda: EASE(device=device),
        "iALS": lambda: ImplicitALS(**ALS, device=device),
        "iALS-Cholesky": lambda: ImplicitALS(**ALS, solver="cholesky", device=device),
    }


class ImplicitPeer:
    """A model of the ``implicit`` library behind ``fit`` / ``score_items``.

    ``fit_seconds`` is the time of the library's own ``fit`` on its CSR matrix; building the
    matrix from our ``Ratings`` is not counted against it.
    """

    def __init__(self, factory: Callable[[], object]) -> None:
        self.factory = factory
        self.device = torch.device("cpu")

    def fit(self, train) -> ImplicitPeer:
        import scipy.sparse as sp

        values = np.ones(len(train), dtype=np.float32)
        matrix = sp.csr_matrix(
            (values, (train.user, train.item)), shape=(train.n_users, train.n_items)
        )
        self.model = self.factory()
        start = time.perf_counter()
        self.model.fit(matrix, show_progress=False)
        self.fit_seconds = time.perf_counter() - start
        return self

    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        user_factors = np.asarray(self.model.user_factors)[users.cpu().numpy()]
        return torch.as_tensor(user_factors @ np.asarray(self.model.item_factors).T)


def peer_models(threads: int) -> dict[str, Callable[[], object]]:
    """``implicit`` 0.7 ALS at the same factors, sweeps and regularization as ours.

    Our confidence is :math:`c = 1 + \\alpha r` (HKV08 eq. 3); ``implicit`` uses the matrix
    value itself as the confidence, scaled by its ``alpha``, so on 0/1 data its ``alpha`` is our
    ``1 + alpha``. Its conjugate-gradient solver runs 3 steps per sweep, as ours does.
    """
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError:
        sys.exit("--peers needs implicit: pip install -e '.[bench]'")
    return {
        "implicit ALS": lambda: ImplicitPeer(
            lambda: AlternatingLeastSquares(
                factors=ALS["n_factors"],
                regularization=ALS["reg"],
                alpha=1.0 + ALS["alpha"],
                iterations=ALS["epochs"],
                random_state=0,
                num_threads=threads,
                calculate_training_loss=False,
            )
        ),
        "implicit BPR": lambda: ImplicitPeer(
            lambda: BayesianPersonalizedRanking(
                factors=64,
                learning_rate=0.05,
                regularization=0.001,
                iterations=200,
                random_state=0,
                num_threads=threads,
            )
        ),
    }


# The compact-embedding curves (notebook 13). The two-tower setting is the full model chosen on
# the validation part (sampled softmax, 1024 uniform candidates); every point keeps it, trains
# up to 30 epochs with early stopping on validation NDCG@20 (compact tables learn slower), and
# changes only the id tables. Hashed tables try two widths within each budget: the drop-in
# width 64 (fewer rows) and 16 (more rows); best_on_valid picks one per budget.
COMPACT_TWO_TOWER = {
    "n_factors": 64,
    "loss": "softmax",
    "negatives": "popularity",
    "popularity_alpha": 0.0,
    "n_negatives": 1024,
    "lr": 3e-3,
    "epochs": 30,
    "patience": 3,
}
COMPACT_WIDTHS = {"hashing": (64, 16), "hash": (64, 16), "bloom": (64, 16)}
COMPACT_MF = {"n_factors": 20, "epochs": 20, "lr": 0.005, "reg": 0.15}  # BiasedMF adam defaults
COMPACT_OPTIONS = {"hash": {"k": 2}, "bloom": {"k": 2}, "hashing": {"sign": True}}
COMPACT_RATIOS = (0.5, 0.25, 0.1, 0.05)


# DirectAU (Wang et al. 2022) and MAWU (Park et al. 2023) at their papers' settings
# (shared/reference/implicit-losses-and-embeddings.md, sections 4-5): d = 64, Adam at 1e-3,
# early stopping on validation NDCG@20 with patience 10 and up to 300 epochs (DirectAU's
# bound; MAWU's 1000 is cut to it), the README's batch sizes, weights and weight decays.
# Beside them: the presets as the loss study runs them (30 epochs, patience 3) and BPR's.
_PAPER = {"lr": 1e-3, "epochs": 300, "patience": 10}
PAPER_SETTINGS: dict[str, dict[str, object]] = {
    "bpr preset (reg 1e-2)": {"loss": "bpr", "lr": 3e-3, "reg": 1e-2, "epochs": 30, "patience": 3},
    "directau preset (g 0.5, wd 1e-3, batch 1024)": {
        "loss": "directau",
        "lr": 1e-3,
        "weight_decay": 1e-3,
        "loss_options": {"gamma": 0.5},
        "epochs": 30,
        "patience": 3,
    },
    "directau preset, paper schedule": {
        "loss": "directau",
        **_PAPER,
        "weight_decay": 1e-3,
        "loss_options": {"gamma": 0.5},
    },
    **{
        f"directau paper: g {g}, wd {wd:g}, batch {b}": {
            "loss": "directau",
            **_PAPER,
            "batch_size": b,
            "weight_decay": wd,
            "loss_options": {"gamma": g},
        }
        for g, wd, b in ((0.5, 1e-6, 256), (1.0, 1e-6, 1024), (5.0, 1e-6, 1024), (0.4, 1e-4, 256))
    },
    "mawu preset (1.0/0.1, wd 1e-3, batch 1024)": {
        "loss": "mawu",
        "lr": 1e-3,
        "weight_decay": 1e-3,
        "loss_options": {"gamma1": 1.0, "gamma2": 0.1},
        "epochs": 30,
        "patience": 3,
    },
    **{
        f"mawu paper: g {g1}/{g2}, wd {wd:g}, batch 2048": {
            "loss": "mawu",
            **_PAPER,
            "batch_size": 2048,
            "weight_decay": wd,
            "loss_options": {"gamma1": g1, "gamma2": g2},
        }
        for g1, g2, wd in ((1.0, 0.1, 1e-4), (2.6, 1.4, 1e-6), (0.8, 0.6, 1e-6), (1.0, 0.1, 1e-3))
    },
    # not a paper setting: MAWU at the batch size and decay that made DirectAU work here
    "mawu: g 1.0/0.1, wd 1e-4, batch 256": {
        "loss": "mawu",
        **_PAPER,
        "batch_size": 256,
        "weight_decay": 1e-4,
        "loss_options": {"gamma1": 1.0, "gamma2": 0.1},
    },
}


def run_paper_settings(
    split, args: argparse.Namespace, device: torch.device, output: Path | None
) -> pd.DataFrame:
    """Every ``PAPER_SETTINGS`` entry fit on the fit part, early-stopped and scored on valid;
    the JSON is rewritten after every setting, and a rerun keeps the settings it recorded."""
    output = output or RESULTS_DIR / f"alignment-{args.dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        **_meta(args, split, device),
        "scored_on": "valid part (fit part trained, early stopping on valid NDCG@20)",
        "seed": args.seed,
    }
    saved = json.loads(output.read_text())["settings"] if output.exists() else []
    done = {row["setting"]: row for row in saved}
    rows = []
    for label, options in PAPER_SETTINGS.items():
        if label in done and done[label]["options"] == json.loads(json.dumps(options)):
            rows.append(done[label])  # resumed: recorded with these very options
            continue
        table = ablation(
            lambda **o: TwoTower(**o, seed=args.seed, device=device),
            {label: options},
            split,
            progress=False,
        )
        rows.append({"setting": label, "options": options, **table.iloc[0].to_dict()})
        print(to_markdown(pd.DataFrame(rows[-1:]).drop(columns="options").round(4)), flush=True)
        output.write_text(
            json.dumps({"meta": meta, "settings": rows}, indent=2, default=_plain) + "\n"
        )
    print(f"\nwrote {output}")
    return pd.DataFrame(rows)


def run_compact(
    dataset: str, seed: int, device: torch.device, output: Path | None, data_dir: Path | None
) -> dict:
    """Both size curves, a JSON file and a plot; returns the JSON payload."""
    data = load_movielens(dataset, data_dir=data_dir)
    split = ranking_split(data, seed=seed)
    ranking = ranking_curve(
        split,
        model_options={**COMPACT_TWO_TOWER, "device": device},
        ratios=COMPACT_RATIOS,
        embedding_options=COMPACT_OPTIONS,
        widths=COMPACT_WIDTHS,
    )
    folds, fold_label = rating_folds(data, seed=seed)
    train, test = folds[0]
    rating = rating_curve(
        train,
        test,
        model_options={**COMPACT_MF, "device": device},
        ratios=COMPACT_RATIOS,
        embedding_options=COMPACT_OPTIONS,
    )
    full = ranking.loc[ranking["method"] == "full", "ndcg@20"].iloc[0]
    ranking["ndcg_loss"] = 1 - ranking["ndcg@20"] / full
    chosen = best_on_valid(ranking)
    print(
        f"\n{split.protocol}; fit on fit, early-stopped on valid, scored on test; "
        f"device {device}\n\nevery point:\n"
    )
    print(to_markdown(ranking.round(4)))
    print("\nwidth chosen on validation per method and budget:\n")
    print(to_markdown(chosen.round(4)))
    print(f"\nbiased MF (Adam), {dataset} {fold_label} first fold, test RMSE\n")
    print(to_markdown(rating.round(4)))

    output = output or RESULTS_DIR / f"compact-{dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": dataset,
        "protocol": split.protocol,
        "ranking_fit": f"fit part, early stopping on valid (patience "
        f"{COMPACT_TWO_TOWER['patience']}), scored on test with all train "
        "items masked",
        "rating_protocol": f"{fold_label}, first fold",
        "methods": list(METHODS),
        "two_tower": COMPACT_TWO_TOWER,
        "biased_mf": COMPACT_MF,
        "embedding_options": COMPACT_OPTIONS,
        "widths": COMPACT_WIDTHS,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    payload = {
        "meta": meta,
        "ranking": ranking.to_dict("records"),
        "chosen": chosen.to_dict("records"),
        "rating": rating.to_dict("records"),
    }
    output.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    figure = plot_compact_curves(chosen, rating)
    figure.savefig(output.with_suffix(".png"), dpi=120, bbox_inches="tight")
    print(f"\nwrote {output} and {output.with_suffix('.png')}")
    return payload


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding <dataset>/ (default $MFUTILS_DATA_DIR), e.g. a release replica",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--peers", action="store_true", help="also run the implicit library")
    parser.add_argument("--models", nargs="*", default=None, help="subset of model names")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path to write")
    parser.add_argument(
        "--compact",
        action="store_true",
        help="compact id tables: accuracy vs parameters (notebook 13)",
    )
    parser.add_argument(
        "--losses",
        action="store_true",
        help="two-tower MF with every loss, each tuned on validation",
    )
    parser.add_argument("--epochs", type=int, default=40, help="epoch bound with --losses")
    parser.add_argument("--patience", type=int, default=4, help="early stopping with --losses")
    parser.add_argument("--trials", type=int, default=8, help="trials per loss with --losses")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2], help="split and model seeds, --losses"
    )
    parser.add_argument(
        "--paper-settings",
        action="store_true",
        help="DirectAU and MAWU at their papers' settings, on validation",
    )
    args = parser.parse_args(argv)

    device = get_device(args.device)
    if args.compact:
        payload = run_compact(args.dataset, args.seed, device, args.output, args.data_dir)
        return pd.DataFrame(payload["ranking"])
    if args.losses:
        return loss_study(load_movielens(args.dataset, data_dir=args.data_dir), args, device)
    split = ranking_split(load_movielens(args.dataset, data_dir=args.data_dir), seed=args.seed)
    if args.paper_settings:
        return run_paper_settings(split, args, device, args.output)
    models = package_models(device)
    if args.peers:
        models.update(peer_models(torch.get_num_threads()))
    if args.models:
        unknown = set(args.models) - set(models)
        if unknown:
            parser.error(f"unknown models {sorted(unknown)}; known: {sorted(models)}")
        models = {name: models[name] for name in args.models}

    rows = []
    for name, make in models.items():
        model = make()
        start = time.perf_counter()
        model.fit(split.train)
        seconds = getattr(model, "fit_seconds", time.perf_counter() - start)
        scores = evaluate_ranking(model, train=split.train, test=split.test, device=device)
        rows.append({"model": name, **scores, "fit_seconds": seconds})
    table = pd.DataFrame(rows)
    shown = [
        "model",
        "recall@10",
        "ndcg@10",
        "recall@20",
        "ndcg@20",
        "recall@50",
        "ndcg@50",
        "fit_seconds",
    ]
    print(f"\n{split.protocol}; device {device}, {torch.get_num_threads()} threads\n")
    print(to_markdown(table[shown]))

    output = args.output or RESULTS_DIR / f"implicit-{args.dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps({"meta": _meta(args, split, device), "models": rows}, indent=2, default=float)
        + "\n"
    )
    print(f"\nwrote {output}")
    return table


def _plain(value: object) -> object:
    """JSON form of numpy scalars (and anything else, as text)."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _meta(args: argparse.Namespace, split, device: torch.device) -> dict[str, object]:
    return {
        "dataset": args.dataset,
        # a release replica (mfutils.data.replicas.write_release) when not the real files
        "data_dir": None if args.data_dir is None else str(args.data_dir),
        "protocol": split.protocol,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }


def loss_study(data, args: argparse.Namespace, device: torch.device) -> pd.DataFrame:
    """Every loss on the two-tower MF, each tuned with the same budget, over seeds.

    For each seed: its own split (:func:`ranking_split`), every loss tuned by
    :func:`compare_losses` (``--trials`` Optuna trials on validation, the same for every loss,
    refit and tested once), iALS tuned on the same validation part over ``IALS_AXES``
    (the reference of the study's target) and MostPopular (the floor). The JSON is rewritten
    after every loss, and a run resumes from it: a (seed, loss) already recorded with the same
    budget is kept.
    """
    output = args.output or RESULTS_DIR / f"losses-{args.dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    budget = {"trials": args.trials, "epochs": args.epochs, "patience": args.patience}
    saved = json.loads(output.read_text()) if output.exists() else {}
    seeds = saved.get("seeds", {}) if saved.get("meta", {}).get("budget") == budget else {}
    losses = args.models or list(LOSS_SPACES)
    start = time.perf_counter()
    for seed in args.seeds:
        split = ranking_split(data, seed=seed)
        entry = seeds.setdefault(str(seed), {"protocol": split.protocol, "study": {}})
        # absent, another grid's, or from before collapsed fits were excluded ("failed")
        if entry.get("ials", {}).get("grid") != IALS_AXES or "failed" not in entry["ials"]:
            ials = tune_and_test(
                functools.partial(ImplicitALS, seed=seed, device=device),
                IALS_GRID,
                split,
                name="iALS",
                progress=False,
            )
            grid = ials.grid if "failed" in ials.grid else ials.grid.assign(failed=None)
            failed = grid.loc[grid["failed"].notna(), list(IALS_AXES)]  # collapsed points
            entry["ials"] = {
                "options": ials.options,
                "scores": ials.scores,
                "grid": IALS_AXES,
                "failed": failed.to_dict(orient="records"),
            }
        if "popular" not in entry:  # the floor: on sparse, popularity-driven data it is high
            popular = MostPopular(device=device).fit(split.train)
            scores = evaluate_ranking(popular, train=split.train, test=split.test, device=device)
            entry["popular"] = {"scores": scores}
        for loss in losses:
            if loss in entry["study"]:
                continue
            tuned = compare_losses(
                split, losses=[loss], seed=seed, device=device, progress=False, **budget
            )
            entry["study"].update(study_record(tuned))
            row = tuned_table(tuned).reset_index(names="loss")
            shown = row[["loss", "chosen", "valid ndcg@20", "ndcg@20"]].round(4)
            print(f"seed {seed}:\n{to_markdown(shown)}", flush=True)
            _write_study(output, args, split, device, budget, seeds)
    table = _write_study(output, args, split, device, budget, seeds)
    print(
        f"\nseeds {args.seeds} (each its own split and initialisation); two-tower MF, d=64, "
        f"{args.trials} validation trials per loss; {time.perf_counter() - start:.0f} s\n"
    )
    print(to_markdown(table.round(4).reset_index(names="loss")))
    print(f"\nwrote {output}")
    return table


def _write_study(output, args, split, device, budget, seeds) -> pd.DataFrame:
    """The study JSON: the budget, every seed's records and iALS, the mean/std table."""
    complete = {int(seed): entry["study"] for seed, entry in seeds.items() if entry["study"]}
    table = seeds_table(complete) if complete else pd.DataFrame()
    ials = [entry["ials"]["scores"]["ndcg@20"] for entry in seeds.values() if "ials" in entry]
    meta = {
        **_meta(args, split, device),
        "protocol": re.sub(
            r"\(seed \d+\)", f"(seeds {sorted(int(k) for k in seeds)})", split.protocol
        ),
        "budget": budget,
        "seeds": sorted(int(s) for s in seeds),
        "ials_ndcg@20 mean": float(np.mean(ials)) if ials else None,
        "ials_grid": IALS_AXES,
    }
    summary = table.reset_index(names="loss").to_dict(orient="records") if complete else []
    output.write_text(
        json.dumps({"meta": meta, "summary": summary, "seeds": seeds}, indent=2, default=_plain)
        + "\n"
    )
    return table


if __name__ == "__main__":
    main()
