"""Scaling benchmark: seconds per epoch and peak memory of each model as the data grows.

    python benchmarks/scale.py                                  # 1M 5M 10M 25M, every model
    python benchmarks/scale.py --sizes 1M 5M                    # a quick run
    python benchmarks/scale.py --sizes 25M --models BiasedMF-SGD
    python benchmarks/scale.py --device cuda                    # the same script on a GPU

The data are :func:`mfutils.data.make_synthetic` ratings shaped like MovieLens (1M, 10M and
25M have the users and items of ML-1M, ML-10M and ML-25M; 5M lies between on a log scale).
Each (model, size) runs in a fresh subprocess that loads the cached arrays, fits the model for
``--epochs`` epochs (timing epochs, not a full training) and reports

* ``seconds_per_epoch``: the last epoch's seconds from the model's history (the first epoch
  also pays one-off costs, reported as ``first_epoch_seconds``);
* ``ratings_per_second``: ratings in the training set over ``seconds_per_epoch``;
* for the two-tower (``TIMED_BATCHES``; its in-batch softmax step costs about as much as a
  whole Funk epoch's thousand steps), an epoch over ``--timed-batches`` random batches of the
  data (same users and items, same tables, same batch size), scaled to the full data:
  ``seconds_per_epoch = measured * n_ratings / timed_ratings``, flagged ``extrapolated``;
* for ``implicit-ALS`` (the `implicit` library's ALS, the ``bench`` extra), its whole fit of
  ``--epochs`` sweeps divided by ``--epochs``: setup included, so a slight overestimate;
* ``peak_rss_gb``: the process's peak resident memory (``getrusage``), data included, and
  ``data_rss_gb``, the peak before fitting; on CUDA also ``cuda_peak_gb``
  (``torch.cuda.max_memory_allocated``). ``tracemalloc`` would miss torch's allocations.

Writes ``benchmarks/results/scale-synthetic[-<device>].json`` (results of earlier runs at
other sizes or models are kept and replaced per (model, size)) and a log-log plot of seconds
per epoch against size, ``scale-synthetic[-<device>].png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# name -> (n_users, n_items, n_ratings); 1M/10M/25M are the MovieLens shapes.
SIZES = {
    "100k": (943, 1_682, 100_000),
    "1M": (6_040, 3_706, 1_000_000),
    "5M": (33_500, 7_750, 5_000_000),
    "10M": (69_878, 10_677, 10_000_000),
    "25M": (162_541, 59_047, 25_000_000),
}
DEFAULT_SIZES = ("1M", "5M", "10M", "25M")
# Models timed on a random subset of whole batches, the epoch extrapolated: name -> batch size.
TIMED_BATCHES = {"TwoTower-SSM": 1024}
# The `implicit` library's ALS (conjugate gradient, the same factors, regularization, confidence
# and CG steps as iALS), timed beside ours: its fit of ``epochs`` sweeps divided by ``epochs``.
PEER = "implicit-ALS"


def model_factories(factors: int, epochs: int, device: object) -> dict[str, Callable[[], object]]:
    """The models of the benchmark at ``factors`` dimensions, trained for ``epochs`` epochs.

    Batch sizes are the ones that make each method fast without changing what it computes:
    Funk's SGD keeps small batches (its per-rating steps add up within a batch), Adam on the
    mean loss takes large ones, ALS and iALS solve every row once per sweep; the two-tower's
    in-batch softmax costs ``O(batch^2 d)`` per step, so it keeps the usual 1024.
    """
    from mfutils.models import BiasedMF, ImplicitALS, SVDpp
    from mfutils.models.two_tower import TwoTower

    return {
        "BiasedMF-SGD": lambda: BiasedMF(
            factors, method="sgd", epochs=epochs, batch_size=4096, lr=0.005, device=device
        ),
        "BiasedMF-Adam": lambda: BiasedMF(
            factors, method="adam", epochs=epochs, batch_size=65536, lr=0.01, device=device
        ),
        "BiasedMF-ALS": lambda: BiasedMF(factors, method="als", epochs=epochs, device=device),
        "SVDpp": lambda: SVDpp(
            factors, epochs=epochs, batch_size=65536, warm_start=False, device=device
        ),
        "iALS": lambda: ImplicitALS(n_factors=factors, epochs=epochs, device=device),
        "TwoTower-SSM": lambda: TwoTower(
            n_factors=factors,
            loss="ssm",
            negatives="in-batch",
            epochs=epochs,
            batch_size=TIMED_BATCHES["TwoTower-SSM"],
            patience=None,
            device=device,
        ),
    }


# ---------------------------------------------------------------------- one (model, size) run
def worker(
    model_name: str,
    data_path: Path,
    *,
    factors: int,
    epochs: int,
    device_name: str | None,
    threads: int | None,
    timed_batches: int,
) -> dict[str, object]:
    """Fit one model on the cached data in this (fresh) process and measure it."""
    import torch

    from mfutils import get_device
    from mfutils.data import Ratings

    if threads:
        torch.set_num_threads(threads)
    device = get_device(device_name)
    arrays = np.load(data_path)
    n_users, n_items = int(arrays["n_users"]), int(arrays["n_items"])
    data = Ratings(
        user=arrays["user"],
        item=arrays["item"],
        rating=arrays["rating"],
        timestamp=arrays["timestamp"],
        n_users=n_users,
        n_items=n_items,
        user_ids=np.arange(n_users),
        item_ids=np.arange(n_items),
        name="synthetic",
    )
    n_ratings, timed = len(data), len(data)
    if model_name in TIMED_BATCHES and timed_batches * TIMED_BATCHES[model_name] < len(data):
        timed = timed_batches * TIMED_BATCHES[model_name]
        keep = np.sort(np.random.default_rng(0).choice(len(data), timed, replace=False))
        data = data.subset(keep)
    data_rss = _peak_rss_gb()
    if model_name == PEER:
        return _implicit_worker(
            data,
            factors=factors,
            epochs=epochs,
            threads=threads or torch.get_num_threads(),
            data_rss=data_rss,
        )
    model = model_factories(factors, epochs, device)[model_name]()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    model.fit(data)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    fit_seconds = time.perf_counter() - start
    seconds = np.diff(np.concatenate([[0.0], model.history["seconds"].to_numpy()]))
    scale = n_ratings / timed  # 1 unless the epoch is extrapolated from a subset
    record = {
        "model": model_name,
        "n_ratings": n_ratings,
        "n_users": n_users,
        "n_items": n_items,
        "factors": factors,
        "epochs": len(seconds),
        "seconds_per_epoch": float(seconds[-1]) * scale,
        "first_epoch_seconds": float(seconds[0]) * scale,
        "fit_seconds": fit_seconds,
        "ratings_per_second": timed / float(seconds[-1]),
        "extrapolated": timed < n_ratings,
        "timed_ratings": timed,
        "data_rss_gb": data_rss,
        "peak_rss_gb": _peak_rss_gb(),
    }
    if device.type == "cuda":
        record["cuda_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return record


def _implicit_worker(
    data, *, factors: int, epochs: int, threads: int, data_rss: float
) -> dict[str, object]:
    """``implicit``'s ALS on the same interactions as :class:`ImplicitALS` (its ``alpha`` is
    our ``1 + alpha`` on 0/1 data, as in benchmarks/implicit.py)."""
    import scipy.sparse as sp

    here = Path(__file__).resolve().parent  # benchmarks/implicit.py would shadow the library
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from implicit.cpu.als import AlternatingLeastSquares

    matrix = sp.csr_matrix(
        (np.ones(len(data), dtype=np.float32), (data.user, data.item)),
        shape=(data.n_users, data.n_items),
    )
    matrix.sum_duplicates()
    peer = AlternatingLeastSquares(
        factors=factors,
        regularization=30.0,
        alpha=1.0 + 2.0,
        iterations=epochs,
        use_cg=True,  # 3 CG steps, as ours
        num_threads=threads,
        random_state=0,
        calculate_training_loss=False,
    )
    start = time.perf_counter()
    peer.fit(matrix, show_progress=False)
    fit_seconds = time.perf_counter() - start
    return {
        "model": PEER,
        "n_ratings": len(data),
        "n_users": data.n_users,
        "n_items": data.n_items,
        "factors": factors,
        "epochs": epochs,
        "seconds_per_epoch": fit_seconds / epochs,
        "first_epoch_seconds": None,
        "fit_seconds": fit_seconds,
        "ratings_per_second": len(data) * epochs / fit_seconds,
        "extrapolated": False,
        "timed_ratings": len(data),
        "data_rss_gb": data_rss,
        "peak_rss_gb": _peak_rss_gb(),
    }


def _peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GiB (``ru_maxrss`` is KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


# ---------------------------------------------------------------------- the driver
def cached_data(size: str, cache_dir: Path, seed: int) -> Path:
    """Generate the synthetic ratings of ``size`` once and keep them as ``.npz``."""
    from mfutils.data import make_synthetic

    path = cache_dir / f"synthetic-{size}-seed{seed}.npz"
    if not path.exists():
        n_users, n_items, n_ratings = SIZES[size]
        start = time.perf_counter()
        data = make_synthetic(n_users, n_items, n_ratings, seed=seed)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            user=data.user,
            item=data.item,
            rating=data.rating,
            timestamp=data.timestamp,
            n_users=n_users,
            n_items=n_items,
        )
        tmp.replace(path)
        print(
            f"generated {size} ({n_ratings:,} ratings) in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
    return path


def run_one(model: str, data_path: Path, args: argparse.Namespace) -> dict[str, object]:
    """Run :func:`worker` in a fresh interpreter, so that peak memory is this model's own."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        model,
        "--data",
        str(data_path),
        "--factors",
        str(args.factors),
        "--epochs",
        str(args.epochs),
        "--timed-batches",
        str(args.timed_batches),
    ]
    if args.device:
        command += ["--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"model": model, "error": f"timed out after {args.timeout} s"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"model": model, "error": f"exit {done.returncode}: {' | '.join(tail)}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(records: list[dict[str, object]], path: Path, title: str) -> None:
    """Log-log plot of seconds per epoch against the number of ratings, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.DataFrame([r for r in records if "seconds_per_epoch" in r])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    extrapolated = table.get("extrapolated", pd.Series(False, index=table.index)).fillna(False)
    for name, rows in table.sort_values("n_ratings").groupby("model", sort=False):
        guessed = extrapolated.loc[rows.index].astype(bool)
        label = f"{name} (extrapolated: open)" if guessed.any() else name
        (line,) = ax.plot(rows["n_ratings"], rows["seconds_per_epoch"], marker="o", label=label)
        ax.plot(
            rows["n_ratings"][guessed],
            rows["seconds_per_epoch"][guessed],
            "o",
            markerfacecolor="white",
            color=line.get_color(),
        )
    ax.set(xscale="log", yscale="log", xlabel="ratings", ylabel="seconds per epoch", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", nargs="*", default=list(DEFAULT_SIZES), help=f"data sizes, of {sorted(SIZES)}"
    )
    parser.add_argument("--models", nargs="*", default=None, help="subset of model names")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="epochs (sweeps) to time")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument(
        "--timed-batches",
        type=int,
        default=200,
        help=f"batches per timed epoch of {sorted(TIMED_BATCHES)}",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where generated data are kept (default: a temporary folder)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path to write")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(
            json.dumps(
                worker(
                    args.worker,
                    args.data,
                    factors=args.factors,
                    epochs=args.epochs,
                    device_name=args.device,
                    threads=args.threads,
                    timed_batches=args.timed_batches,
                )
            )
        )
        return []
    unknown = set(args.sizes) - set(SIZES)
    if unknown:
        parser.error(f"unknown sizes {sorted(unknown)}; known: {sorted(SIZES)}")
    import torch

    from mfutils import get_device

    device = get_device(args.device)
    names = [*model_factories(args.factors, args.epochs, device), PEER]
    if args.models:
        unknown = set(args.models) - set(names)
        if unknown:
            parser.error(f"unknown models {sorted(unknown)}; known: {names}")
        names = [name for name in names if name in args.models]
    suffix = "" if device.type == "cpu" else f"-{device.type}"
    output = args.output or RESULTS_DIR / f"scale-synthetic{suffix}.json"
    previous = json.loads(output.read_text())["runs"] if output.exists() else []

    meta = {
        "device": str(device),
        "threads": args.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "factors": args.factors,
        "epochs": args.epochs,
        "timed_batches": args.timed_batches,
        "protocol": f"make_synthetic (seed {args.seed}), {args.epochs} epochs per run, "
        f"last epoch timed; {', '.join(TIMED_BATCHES)}: epochs over "
        f"{args.timed_batches} random batches, seconds per epoch extrapolated "
        "to all ratings",
    }
    runs = list(previous)
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = args.cache_dir or Path(scratch)
        cache_dir.mkdir(parents=True, exist_ok=True)
        for size in sorted(args.sizes, key=lambda s: SIZES[s][2]):
            data_path = cached_data(size, cache_dir, args.seed)
            for name in names:
                record = {
                    "size": size,
                    **run_one(name, data_path, args),
                    "load_average": os.getloadavg()[0],
                }
                print(_line(record), flush=True)
                # Saved after every run: a long sweep stopped halfway keeps what it measured.
                runs = [r for r in runs if (r["model"], r["size"]) != (name, size)] + [record]
                runs.sort(key=lambda r: (SIZES[r["size"]][2], r["model"]))
                _save(output, meta, runs, args.factors)
    print(f"wrote {output} and {output.with_suffix('.png').name}")
    return runs


def _save(
    output: Path, meta: dict[str, object], runs: list[dict[str, object]], factors: int
) -> None:
    """Write the JSON and the plot of ``runs``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    plot(
        runs,
        output.with_suffix(".png"),
        f"make_synthetic, k={factors}, {meta['device']}, {meta['threads']} thread(s)",
    )


def _line(record: dict[str, object]) -> str:
    if "error" in record:
        return f"{record['size']:>4} {record['model']:<14} {record['error']}"
    mark = "*" if record.get("extrapolated") else " "
    return (
        f"{record['size']:>4} {record['model']:<14} "
        f"{record['seconds_per_epoch']:8.2f}{mark}s/epoch "
        f"{record['ratings_per_second'] / 1e6:7.2f} M ratings/s  peak "
        f"{record['peak_rss_gb']:.2f} GiB (data {record['data_rss_gb']:.2f})  "
        f"load {record['load_average']:.1f}"
    )


if __name__ == "__main__":
    main()
