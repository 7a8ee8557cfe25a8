r"""Multi-process, data-parallel training of the series' models with ``torch.distributed``.

When one process is not enough, the shared trainer :func:`mfutils.train.fit` runs unchanged
under ``torchrun``; this module holds the process-group helpers it uses, and
:mod:`mfutils.parallel_fit` the program that ``torchrun`` runs (and :func:`launch
<mfutils.parallel_fit.launch>`, which runs it from Python).

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

import os
from collections.abc import Callable, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mfutils.device import get_device

__all__ = [
    "RowLoss",
    "all_sum",
    "init_from_env",
    "rank",
    "shard",
    "summed_step",
    "world_size",
    "wrap",
]


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

    def __init__(
        self, net: nn.Module, loss_fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
    ) -> None:
        super().__init__()
        self.net = net
        self.loss_fn = loss_fn

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_fn(batch)  # shape: (shard,)


def wrap(
    net: nn.Module, loss_fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
) -> DistributedDataParallel:
    """DDP around ``RowLoss(net, loss_fn)``; parameters and buffers are broadcast once.

    Buffers (CSR indices, ``mu``) are equal on every rank by construction and are not
    re-broadcast before every step.
    """
    device = next(net.parameters()).device
    return DistributedDataParallel(
        RowLoss(net, loss_fn),
        device_ids=[device] if device.type == "cuda" else None,
        forward_sync_buffers=False,
    )


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
