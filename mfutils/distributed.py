r"""Multi-process, data-parallel training of the series' models with ``torch.distributed``.

When one process is not enough, the shared trainer :func:`mfutils.train.fit` runs unchanged
under ``torchrun``::

    torchrun --standalone --nproc_per_node 2 -m mfutils.distributed \
        --model BiasedMF --method adam --ratings 1000000 --epochs 2 --output run.json

and from Python (a notebook) :func:`launch` runs that command in a subprocess and returns rank
0's record.

Every process (*rank*) holds a full replica of the embedding tables and of the training
ratings. All ranks draw the same random global batches (one seed); rank ``r`` computes the loss
of its shard of each batch (a contiguous ``1/world`` of the rows) and
``DistributedDataParallel`` all-reduces the gradients (gloo on CPU, NCCL on GPU) before every
optimizer step. Because DDP *averages* gradients over ranks, each rank scales its shard's loss
sum by ``world / B`` (mean reduction, batch size ``B``) or ``world`` (sum reduction), so that
the all-reduced gradient is exactly the single-process gradient of the whole batch:

.. math::
    \frac{1}{W}\sum_{r=1}^{W} \nabla\Big(\frac{W}{B}\sum_{b\in\mathrm{shard}_r}\ell_b\Big)
    = \nabla\,\frac{1}{B}\sum_{b=1}^{B}\ell_b .

Every rank then takes the same optimizer step on the same parameters, so training with ``W``
processes reproduces one process up to the order of floating-point sums. Funk's hand-written
SGD step is additive over the batch's rows (every gradient is taken before the step), so each
rank takes it on its shard -- with the whole batch's row multiplicities for the repeated-row
scale -- and :func:`summed_step` all-reduces the parameter updates; set-wise objectives
(in-batch negatives) do not split into independent shards and are refused.

Where this stops scaling, and TorchRec takes over
-------------------------------------------------
Replicated tables with dense gradients mean that *every* step all-reduces the *whole* tables
(``(n_users + n_items) * (f + 1)`` floats), although a batch touches only its own rows, and
that every rank must hold every table. For ML-25M at ``f = 64`` that is 14 M floats (57 MB) per
step -- fine on one machine with large batches, but it grows with the catalogue, not with the
batch. Once the tables do not fit one device (hundreds of millions of ids, as in production
recommenders) or the all-reduce dominates the step, the embeddings must be *sharded*:
TorchRec's ``EmbeddingBagCollection`` with ``DistributedModelParallel`` places tables (or row
or column blocks of a table) on different ranks, exchanges only the looked-up rows with an
all-to-all per batch, and applies a fused sparse optimizer to the touched rows; the dense
layers on top stay data-parallel. The factor models of this series have no dense layers, so
for them sharding is the whole story; the data-parallel path here is the right tool while the
tables fit in one device's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["RowLoss", "all_sum", "init_from_env", "launch", "main", "rank", "shard",
           "summed_step", "world_size", "wrap"]


def world_size() -> int:
    """Number of processes in the initialized process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_from_env(device: str | torch.device | None = None) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment.

    Uses NCCL when the device is CUDA (each rank on ``cuda:LOCAL_RANK``) and gloo otherwise.
    Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) nothing is initialized.

    Returns
    -------
    torch.device
        The device this rank computes on.
    """
    from mfutils.device import get_device

    device = get_device(device)
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


class RowLoss(nn.Module):
    """``loss_fn(batch)`` as a module around ``net``, so that DDP sees the loss's forward.

    DDP registers its gradient hooks for the parameters of the module it wraps and prepares
    them in that module's ``forward``; the net's own ``forward`` only gives predictions, so
    the per-row loss (prediction error plus penalty) is wrapped here.
    """

    def __init__(self, net: nn.Module, loss_fn: Callable[[Mapping[str, torch.Tensor]],
                                                         torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.loss_fn = loss_fn

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_fn(batch)  # shape: (shard,)


def wrap(net: nn.Module, loss_fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
         ) -> DistributedDataParallel:
    """DDP around ``RowLoss(net, loss_fn)``; parameters and buffers are broadcast once.

    Buffers (CSR indices, ``mu``) are equal on every rank by construction and are not
    re-broadcast before every step.
    """
    device = next(net.parameters()).device
    return DistributedDataParallel(
        RowLoss(net, loss_fn), device_ids=[device] if device.type == "cuda" else None,
        forward_sync_buffers=False)


def shard(index: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous part of a global batch's row indices (parts differ by <= 1)."""
    return torch.tensor_split(index, world_size())[rank()]


def summed_step(net: nn.Module, step: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run ``step()`` (which updates ``net`` in place from this rank's shard), then replace
    every parameter's update by the sum of all ranks' updates; returns ``step()``'s value.

    Exact for steps whose update is a sum over the batch's rows computed at the parameters
    before the step, such as Funk's SGD step.
    """
    if world_size() == 1:
        return step()
    params = list(net.parameters())
    with torch.no_grad():
        before = [p.detach().clone() for p in params]
        out = step()
        for p, start in zip(params, before, strict=True):
            delta = p.detach() - start
            dist.all_reduce(delta, op=dist.ReduceOp.SUM)
            p.copy_(start + delta)
    return out


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over ranks (``value`` itself in one process)."""
    if world_size() == 1:
        return value
    total = value.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


# ---------------------------------------------------------------------- command line
def launch(processes: int, *, threads: int, args: list[str] | tuple[str, ...] = (),
           timeout: float = 600) -> dict[str, object]:
    """Run ``torchrun --standalone --nproc_per_node processes -m mfutils.distributed *args``.

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
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(processes), "-m", "mfutils.distributed",
                   *args, "--threads", str(threads), "--output", str(output)]
        # The children import this very package, wherever it lives.
        package_root = str(Path(__file__).resolve().parents[1])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": python_path}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=env, check=False)
        if done.returncode != 0 or not output.exists():
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                               f"{done.stderr[-2000:]}")
        return json.loads(output.read_text())


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Train a model on synthetic ratings, in one process or under ``torchrun``.

    Rank 0 prints (and with ``--output`` writes) a JSON record: processes, backend, threads,
    the seconds and training loss of every epoch and the RMSE on a 10% holdout; ``--save``
    writes the trained model's checkpoint.
    """
    parser = argparse.ArgumentParser(prog="python -m mfutils.distributed",
                                     description=main.__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("BiasedMF", "SVDpp"), default="BiasedMF")
    parser.add_argument("--method", choices=("sgd", "adam"), default="adam",
                        help="BiasedMF's training method")
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

    from mfutils.data import make_synthetic, random_holdout
    from mfutils.metrics import rmse
    from mfutils.models import BiasedMF, SVDpp

    if args.threads:
        torch.set_num_threads(args.threads)
    device = init_from_env(args.device)
    data = make_synthetic(args.users, args.items, args.ratings, seed=args.seed)
    train, test = random_holdout(data, test_fraction=0.1, seed=args.seed)
    options = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
               "device": device}
    if args.lr is not None:
        options["lr"] = args.lr
    if args.model == "BiasedMF":
        model = BiasedMF(args.factors, method=args.method, **options)
    else:
        model = SVDpp(args.factors, warm_start=False, **options)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    history = model.history
    record = {
        "model": args.model, "method": args.method if args.model == "BiasedMF" else "adam",
        "processes": world_size(), "backend": dist.get_backend() if world_size() > 1 else None,
        "device": str(device), "threads": torch.get_num_threads(), "train_ratings": len(train),
        "factors": args.factors, "batch_size": args.batch_size, "fit_seconds": seconds,
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
