"""More Gibbs chains or a longer one: a Bayesian model's chain budget chosen on validation.

    python benchmarks/chains.py                                  # BayesianFM-ordinal, 5 chains
    python benchmarks/chains.py --model BayesianMF --chains 3

On ML-100K's first fold: a validation tenth of ``u1.base`` (random, seed 0) is carved out;
the model at its defaults (one chain of ``sweeps``), with ``--chains`` chains of ``sweeps``
each (``n_chains``) and with one chain of ``--chains`` times the sweeps (the same compute) is
fit on the rest and scored there; the best of the three on validation is refit on the whole of
``u1.base`` and scored once on ``u1.test``. The test part takes part in no choice.

Writes ``benchmarks/results/chains-<dataset>-<model>.json``: the validation RMSE and the fit
seconds of each budget, the choice and its test RMSE.
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
    rows = {}
    for label, options in budgets.items():
        start = time.perf_counter()
        model = cls(**implied, **options, device=args.device).fit(fit)
        seconds = time.perf_counter() - start
        rows[label] = {
            "options": options,
            "valid_rmse": rmse(model.predict_ratings(valid), valid.rating),
            "fit_seconds": seconds,
        }
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
    }
    output = args.output or RESULTS_DIR / f"chains-ml-100k-{args.model}.json"
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}")
    return record


if __name__ == "__main__":
    main()
