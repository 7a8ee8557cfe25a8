"""Blending benchmark: every explicit model and two ridge blends of them on every fold.

    python benchmarks/blend.py                          # ML-100K u1..u5, the series' models
    python benchmarks/blend.py --folds 1 --models BiasedMF-SGD SVDpp TimeSVDpp
    python benchmarks/blend.py --no-refit               # test predictions by the probe models
    python benchmarks/blend.py --seeds 5                # every stochastic model a 5-seed bag

The protocol of :mod:`mfutils.blending` on each fold: a validation part (``--valid-fraction``
of the training fold, seeded) is carved out of train; every model is fit on the rest and
predicts the validation part; a ridge blend (penalty by 5-fold CV inside the validation part)
is learned there; the models are refit on the whole training fold ("probe refit") and the blend
weights are applied to their test predictions. The test ratings are only read to score. With
``--seeds N`` every stochastic model is a seed bag (:class:`mfutils.blending.SeedBag`): fit with
N seeds, its prediction the mean, in both fits.

Writes ``benchmarks/results/blend-<dataset>.json``: the protocol, and per model and blend the
test RMSE of every fold, their mean, the validation RMSE and the fit seconds; per blend and
fold the chosen penalty and the weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from mfutils import get_device
from mfutils.blending import SERIES_MODELS, blend_folds, series_models
from mfutils.data import load_movielens
from mfutils.experiments import rating_folds
from mfutils.results import to_markdown

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument(
        "--models", nargs="*", default=None, help=f"subset of {list(SERIES_MODELS)} (default: all)"
    )
    parser.add_argument(
        "--folds", type=int, nargs="*", default=None, help="fold numbers to run (default all)"
    )
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument(
        "--no-refit", action="store_true", help="score the models fit without the validation part"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds", type=int, default=1, help="seeds per stochastic model, averaged (a seed bag)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path to write")
    args = parser.parse_args(argv)

    device = get_device(args.device)
    data = load_movielens(args.dataset)
    folds, protocol = rating_folds(data, seed=args.seed)
    labels = [f"u{k}" for k in range(1, len(folds) + 1)]
    if args.folds:
        folds, labels = [folds[k - 1] for k in args.folds], [labels[k - 1] for k in args.folds]
    models = series_models(args.models, device=device, seed=args.seed, n_seeds=args.seeds)
    refit = not args.no_refit

    start = time.perf_counter()
    per_fold, blends = blend_folds(
        models,
        folds,
        fold_names=labels,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
        refit=refit,
    )
    seconds = time.perf_counter() - start
    summary = per_fold.pivot(index="model", columns="fold", values="rmse")[labels]
    summary = summary.assign(mean=summary.mean(axis=1)).sort_values("mean").reset_index()
    full_protocol = (
        f"{protocol} ({', '.join(labels)}); blend learned on a {args.valid_fraction:.0%} "
        f"random validation split of each training fold (seed {args.seed}), ridge penalty by "
        f"5-fold CV inside it; "
        + (
            f"stochastic models bagged over seeds {args.seed}..{args.seed + args.seeds - 1}; "
            if args.seeds > 1
            else ""
        )
        + (
            "models refit on the whole training fold for the test predictions"
            if refit
            else "test predictions by the models fit without the validation part"
        )
    )
    print(
        f"\n{args.dataset}, {full_protocol}, device {device}, "
        f"{torch.get_num_threads()} threads, {seconds:.0f} s\n"
    )
    print(to_markdown(summary.round(4)))

    records = []
    for name, rows in per_fold.groupby("model", sort=False):
        record = {
            "model": name,
            "folds": rows["fold"].tolist(),
            "rmse": rows["rmse"].tolist(),
            "rmse_mean": float(rows["rmse"].mean()),
            "valid_rmse": rows["valid_rmse"].tolist(),
            "fit_seconds": rows["fit_seconds"].tolist(),
        }
        if name.startswith("Blend"):
            record["lam"] = [blends[fold][name].lam for fold in rows["fold"]]
            record["weights"] = {
                fold: dict(
                    zip(
                        blends[fold][name].columns, blends[fold][name].weights.tolist(), strict=True
                    )
                )
                | {"(intercept)": blends[fold][name].intercept}
                for fold in rows["fold"]
            }
        records.append(record)
    meta = {
        "dataset": args.dataset,
        "protocol": full_protocol,
        "members": list(models),
        "valid_fraction": args.valid_fraction,
        "refit": refit,
        "seed": args.seed,
        "seeds": args.seeds,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "wall_seconds": seconds,
    }
    output = args.output or RESULTS_DIR / f"blend-{args.dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "models": records}
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {output}")
    return result


if __name__ == "__main__":
    main()
