r"""The data-parallel training program: one model fit on synthetic ratings under ``torchrun``.

    torchrun --standalone --nproc_per_node 2 -m mfutils.parallel_fit \
        --model BiasedMF-Adam --ratings 1000000 --epochs 2 --output run.json
    torchrun ... -m mfutils.parallel_fit --model SVDpp -p warm_start=false

``--model`` is any explicit model or preset of :mod:`mfutils.models.registry` that
:func:`mfutils.train.fit` trains by minibatches (BiasedMF-SGD/-Adam, SVDpp, AsymmetricSVD,
FM, ...); the trainer refuses, with a one-line reason, what does not split over processes
(alternating parameter blocks, set-wise objectives), and a model fit without it (ALS,
neighbourhoods, Gibbs sampling) runs whole in every process, with no speed-up.

From Python (a notebook), :func:`launch` runs that command in a subprocess and returns rank 0's
record. How the ranks split a batch and why the result equals one process is in
:mod:`mfutils.distributed`, the process-group helpers the trainer uses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from mfutils.data import make_synthetic, random_holdout
from mfutils.distributed import init_from_env, rank, world_size
from mfutils.metrics import rmse
from mfutils.models import registry

__all__ = ["launch", "main"]


def launch(
    processes: int, *, threads: int, args: list[str] | tuple[str, ...] = (), timeout: float = 600
) -> dict[str, object]:
    """Run ``torchrun --standalone --nproc_per_node processes -m mfutils.parallel_fit *args``.

    Parameters
    ----------
    processes : int
        Processes on this machine.
    threads : int
        Torch threads per process (``OMP_NUM_THREADS``); give ``processes * threads`` cores.
    args : sequence of str
        Options of :func:`main`, e.g. ``["--ratings", "200000", "--epochs", "2"]``.
    timeout : float
        Seconds before the run is stopped.

    Returns
    -------
    dict
        Rank 0's JSON record (see :func:`main`).

    Raises
    ------
    ValueError
        When ``processes`` or ``threads`` is below 1.
    RuntimeError
        With the tail of the processes' output when the run fails.
    """
    if processes < 1 or threads < 1:
        raise ValueError(f"processes={processes} and threads={threads} must both be >= 1")
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "run.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "mfutils.parallel_fit",
            *args,
            "--threads",
            str(threads),
            "--output",
            str(output),
        ]
        # The children import this very package, wherever it lives.
        package_root = str(Path(__file__).resolve().parents[1])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": python_path}
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if done.returncode != 0 or not output.exists():
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}"
            )
        return json.loads(output.read_text())


def _params(
    parser: argparse.ArgumentParser, params: list[str], accepted: dict[str, object]
) -> dict[str, object]:
    """``-p NAME=VALUE`` options by name, each value JSON where it parses, else text."""
    out: dict[str, object] = {}
    for param in params:
        name, sep, text = param.partition("=")
        if not sep or name not in accepted:
            parser.error(f"-p {param}: expected NAME=VALUE with NAME one of {sorted(accepted)}")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Train a model on synthetic ratings, in one process or under ``torchrun``.

    Rank 0 prints (and with ``--output`` writes) a JSON record: processes, backend, threads,
    the seconds and training loss of every epoch and the RMSE on a 10% holdout; ``--save``
    writes the trained model's checkpoint.
    """
    parser = argparse.ArgumentParser(
        prog="python -m mfutils.parallel_fit", description=main.__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--model",
        default="BiasedMF-Adam",
        help="a registered explicit model or preset (mfutils models), e.g. SVDpp",
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a model option, the value read as JSON (warm_start=false, lr=0.01) or text",
    )
    parser.add_argument("--users", type=int, default=6_040)
    parser.add_argument("--items", type=int, default=3_706)
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=65_536)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--output", type=Path, default=None, help="JSON record (rank 0)")
    parser.add_argument("--save", type=Path, default=None, help="checkpoint path (rank 0)")
    args = parser.parse_args(argv)
    try:
        cls, implied = registry.resolve(args.model)
    except ValueError as err:
        parser.error(str(err))
    if cls.kind != "explicit":
        parser.error(f"--model {args.model}: a {cls.kind} model; choose an explicit one")
    accepted = registry.constructor_options(cls)
    options = {**implied, **_params(parser, args.param, accepted)}
    shared = {
        "n_factors": args.factors,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
    }
    options.update({k: v for k, v in shared.items() if k in accepted and v is not None})

    if args.threads:
        torch.set_num_threads(args.threads)
    device = init_from_env(args.device)
    data = make_synthetic(args.users, args.items, args.ratings, seed=args.seed)
    train, test = random_holdout(data, test_fraction=0.1, seed=args.seed)
    model = cls(**options, device=device)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    history = model.history
    record = {
        "model": args.model,
        "options": {k: v for k, v in options.items() if k in model.config},
        "processes": world_size(),
        "backend": dist.get_backend() if world_size() > 1 else None,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "train_ratings": len(train),
        "factors": args.factors,
        "batch_size": args.batch_size,
        "fit_seconds": seconds,
        "epoch_seconds": history["seconds"].diff().fillna(history["seconds"]).tolist(),
        "train_loss": history["train_loss"].tolist(),
        "test_rmse": rmse(model.predict_ratings(test), test.rating),
    }
    if rank() == 0:
        print(json.dumps(record))
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(record, indent=2) + "\n")
        if args.save is not None:
            model.save(args.save)
    if dist.is_initialized():
        dist.destroy_process_group()
    return record


if __name__ == "__main__":
    main()
