"""Serving benchmark: latency of a top-10 request and requests per second under a bounded load.

    python benchmarks/serving.py                          # BiasedMF-SGD on ML-100K u1, CPU
    python benchmarks/serving.py --model best             # best servable model of the table
    python benchmarks/serving.py --threads 8 --requests 2000 --device cuda

Trains the model (``mfutils.serving.pipeline.train_artifact``), exports the artifact to a
temporary directory and serves it with the documented command (``python -m mfutils.cli serve``,
one uvicorn worker, a fresh process) on a free loopback port. Then:

* **latency**: ``--requests`` ``GET /users/{u}/recommendations?k=10`` for random known users,
  one after another over one keep-alive connection, after a warm-up; p50 and p99;
* **throughput**: the same requests split among ``--threads`` concurrent client threads, each
  with its own connection (a bounded local load: never more than ``--threads`` requests in
  flight); requests per second over the wall time, with p50 and p99 under that load;
* the model's own share: ``Recommender.recommend`` for the same users in this process.

Clients and server share the machine's cores, so the numbers are end-to-end loopback numbers
of this machine. Writes ``benchmarks/results/serving-<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import mfutils
from mfutils.data import load_movielens
from mfutils.results import to_markdown
from mfutils.serving import Recommender, pipeline
from mfutils.serving.loadtest import measure_calls, measure_latency, measure_throughput, summarize
from mfutils.serving.runner import ServerProcess

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument(
        "--model",
        default="BiasedMF-SGD",
        help="a registered model name, or 'best': the best model of "
        "benchmarks/results/explicit-<dataset>.json that takes online "
        "updates (default BiasedMF-SGD)",
    )
    parser.add_argument("--split", default="u1", choices=pipeline.SPLITS)
    parser.add_argument("--requests", type=int, default=1000, help="requests per measurement")
    parser.add_argument("--threads", type=int, default=4, help="concurrent client threads")
    parser.add_argument("-k", type=int, default=10, help="list length")
    parser.add_argument("--device", default="cpu", help="the service's device (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="JSON path to write")
    args = parser.parse_args(argv)
    if args.requests < args.threads:
        parser.error(f"--requests {args.requests} must be at least --threads {args.threads}")

    name = args.model
    if name == "best":
        name, _ = pipeline.choose_model(RESULTS_DIR / f"explicit-{args.dataset}.json")
    data = load_movielens(args.dataset)
    artifact = pipeline.train_artifact(
        name, data, split=args.split, seed=args.seed, device=args.device, topk=False
    )
    with tempfile.TemporaryDirectory(prefix="mfutils-bench-") as workdir:
        path = artifact.save(Path(workdir) / "model")
        users = np.random.default_rng(args.seed).choice(artifact.model.user_ids, args.requests)
        paths = [f"/users/{user}/recommendations?k={args.k}" for user in users]
        local = Recommender(path, device=args.device)
        with ServerProcess(path, args=["--device", args.device]) as server:
            sequential = summarize(measure_latency(server.url, paths))
            load = measure_throughput(server.url, paths, threads=args.threads)
        in_process = summarize(measure_calls(lambda user: local.recommend([user], args.k), users))

    rows = {
        "HTTP, sequential": {**sequential, "requests_per_s": 1e3 / sequential["mean_ms"]},
        f"HTTP, {args.threads} client threads": {
            key: load[key] for key in ("requests", "p50_ms", "p99_ms", "mean_ms", "requests_per_s")
        },
        "in-process recommend()": {**in_process, "requests_per_s": 1e3 / in_process["mean_ms"]},
    }
    table = pd.DataFrame(rows).T.astype({"requests": int}).rename_axis("path").reset_index()
    protocol = (
        f"GET top-{args.k} for {args.requests} random known users, {args.dataset} "
        f"{args.split}, one uvicorn worker on {args.device}, loopback HTTP"
    )
    print(
        f"\n{name}: {protocol}; {os.cpu_count()} cores shared by server and clients, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print(to_markdown(table, floatfmt=".2f"))

    output = args.output or RESULTS_DIR / f"serving-{args.dataset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": args.dataset,
        "model": name,
        "split": args.split,
        "k": args.k,
        "requests": args.requests,
        "threads": args.threads,
        "device": args.device,
        "protocol": protocol,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mfutils": mfutils.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1min": os.getloadavg()[0],
    }  # other work on the machine skews timings
    output.write_text(
        json.dumps({"meta": meta, "results": table.to_dict("records")}, indent=2) + "\n"
    )
    print(f"\nwrote {output}")
    return table


if __name__ == "__main__":
    main()
