"""More Gibbs chains or a longer one: a Bayesian model's chain budget chosen on validation.

    python benchmarks/chains.py                                  # BayesianFM-ordinal, 5 chains
    python benchmarks/chains.py --model BayesianMF --chains 3

On ML-100K's first fold: a validation tenth of ``u1.base`` (random, seed 0) is carved out;
the model at its defaults (one chain of ``sweeps``), with ``--chains`` chains of ``sweeps``
each (``n_chains``) and with one chain of ``--chains`` times the sweeps (the same compute) is
fit on the rest and scored there; the best of the three on validation is refit on the whole of
``u1.base`` and scored once on ``u1.test``. The test part takes part in no choice.

Writes ``benchmarks/results/chains-<dataset>-<model>.json``: the validation RMSE and the fit
seconds of each budget, the choice and its test RMSE, and the long chain's ``trace``: every
``TRACE_EVERY`` sweeps, the mean factor precision of the user and item id groups
(``lambda_user``, ``lambda_item`` of ``history``: the burn-in is over once they stop
falling) and the validation RMSE of the mean of the samples kept up to that sweep.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from mfutils.data import canonical_folds, load_movielens, validation_split
from mfutils.metrics import rmse
from mfutils.models import registry
from mfutils.results import to_markdown

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TRACE_EVERY = 20  # sweeps between the long chain's trace points


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="BayesianFM-ordinal", help="a Bayesian model name")
    parser.add_argument("--chains", type=int, default=5, help="chains (and the sweeps factor)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path to write")
    args = parser.parse_args(argv)
    if args.chains < 2:
        parser.error(f"--chains {args.chains}: compare at least 2 chains with one")
    cls, implied = registry.resolve(args.model)
    sweeps = registry.constructor_options(cls)["sweeps"]
    train, test = canonical_folds(load_movielens("ml-100k"))[0]
    fit, valid = validation_split(train, fraction=0.1, seed=0)
    budgets = {
        "1 chain": {},
        f"{args.chains} chains": {"n_chains": args.chains},
        f"1 chain of {args.chains * sweeps} sweeps": {"sweeps": args.chains * sweeps},
    }
    rows, trace = {}, None
    for label, options in budgets.items():
        start = time.perf_counter()
        model = cls(**implied, **options, device=args.device).fit(fit)
        seconds = time.perf_counter() - start
        rows[label] = {
            "options": options,
            "valid_rmse": rmse(model.predict_ratings(valid), valid.rating),
            "fit_seconds": seconds,
        }
        if "sweeps" in options:
            trace = long_chain_trace(model, valid)
    chosen = min(rows, key=lambda label: rows[label]["valid_rmse"])
    model = cls(**implied, **budgets[chosen], device=args.device).fit(train)
    score = rmse(model.predict_ratings(test), test.rating)
    table = pd.DataFrame(rows).T.drop(columns="options").rename_axis(args.model).reset_index()
    print(to_markdown(table.round(4)))
    print(f"chosen on validation: {chosen}; u1.test RMSE {score:.4f}")
    record = {
        "meta": {
            "model": args.model,
            "protocol": "ML-100K u1.base, a random validation tenth (seed 0) for the choice; "
            "the choice refit on u1.base, scored on u1.test once",
            "device": str(model.device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
        "budgets": rows,
        "chosen": chosen,
        "u1_test_rmse": score,
        "trace": trace,
    }
    output = args.output or RESULTS_DIR / f"chains-ml-100k-{args.model}.json"
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}")
    return record


def long_chain_trace(model, valid) -> list[dict[str, float]]:
    """Every ``TRACE_EVERY`` sweeps of a one-chain fit: the id groups' factor precision and
    the validation RMSE of the running mean of the samples kept so far."""
    curve = model.sample_curve(valid).set_index("sweep")["mean"]
    history = model.history.set_index("sweep")
    points = []
    for sweep in range(TRACE_EVERY, len(history) + 1, TRACE_EVERY):
        kept = curve[curve.index <= sweep]
        points.append(
            {
                "sweep": sweep,
                "lambda_user": float(history.at[sweep, "lambda_user"]),
                "lambda_item": float(history.at[sweep, "lambda_item"]),
                "valid_rmse_of_mean": float(kept.iloc[-1]) if len(kept) else None,
            }
        )
    return points


if __name__ == "__main__":
    main()
