"""One trainer for every gradient-trained model of the series.

A *net* is an ``nn.Module`` that maps a batch (a dict of equally long tensors such as
``user``, ``item``, ``rating``) to one prediction per row with ``net(batch)`` and, optionally,
returns the per-row regularization of the papers with ``net.penalty(batch)``: Koren's penalty
sits inside the sum over ratings, so every parameter is penalised once per rating it appears in
(KorenBell-HB eq. 5.2), which global ``weight_decay`` does not reproduce.

The loss of a batch is ``sum_b c_b * l(pred_b, y_b) + penalty_b`` with ``l`` the squared error
(halved, so that plain SGD with batch size 1 is exactly Funk's update) or the logistic loss,
reduced by ``sum`` (Funk/Koren step sizes) or ``mean`` (Adam-style step sizes).
Nets that define ``funk_step(batch, lr)`` can be trained with ``optimizer="funk"``: the same
per-row objective, its gradients written out by hand and applied with ``index_add_``, which
skips autograd and is about twice as fast for the plain factor models. A row (a user, an
item) that occurs ``k > 1`` times in one batch does not receive the plain sum of its ``k``
steps -- with a heavy user that sum overshoots and diverges where per-rating SGD does not --
but that sum scaled by :func:`sequential_step_scale`, the factor under which it equals ``k``
sequential SGD steps on a quadratic of the same curvature.
Nets whose loss is not a sum over rows -- the implicit-feedback losses, which contrast a
batch's positives with sampled or in-batch negatives -- define ``objective(batch)``, the
batch's mean loss (a scalar), which then replaces the per-row loss.

Under ``torchrun`` (a ``torch.distributed`` process group is initialized), :func:`fit` trains
data-parallel: every rank draws the same global batches, computes the loss of its own shard of
each batch and ``DistributedDataParallel`` all-reduces the gradients, scaled so that they equal
the single-process gradient of the whole batch (see :mod:`mfutils.distributed`). Funk steps
are taken on each shard with the whole batch's row multiplicities and their parameter updates
summed over ranks (:func:`mfutils.distributed.summed_step`), the single-process step again.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from mfutils import distributed

Batch = dict[str, torch.Tensor]


# ---------------------------------------------------------------------- the net contract
# What :func:`fit` asks of a net: an ``nn.Module`` that is a :class:`Net`, and optionally one
# or more of the other protocols; each is checked with ``isinstance`` where ``fit`` needs it.
@runtime_checkable
class Net(Protocol):
    """``net(batch)``: one prediction per row (a logit for ``loss="bce"``), shape (B,)."""

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor: ...


@runtime_checkable
class PenalizedNet(Net, Protocol):
    """``penalty(batch)``: the per-row regularization of the papers, shape (B,), added to the
    per-row loss (KorenBell-HB eq. 5.2)."""

    def penalty(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor: ...


@runtime_checkable
class FunkNet(Net, Protocol):
    """``funk_step(batch, lr)``: one hand-written SGD step on the batch (``optimizer="funk"``),
    returning the batch's summed loss before the step (a scalar)."""

    def funk_step(self, batch: Mapping[str, torch.Tensor], lr: float) -> torch.Tensor: ...


@runtime_checkable
class SetwiseNet(Net, Protocol):
    """``objective(batch)``: the batch's mean loss (a scalar) for losses that are no sum over
    rows (sampled or in-batch negatives); replaces ``config.loss``."""

    def objective(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor: ...


@runtime_checkable
class BlockNet(Net, Protocol):
    """``parameter_blocks()``: the parameter groups stepped in turn with ``alternate=True``."""

    def parameter_blocks(self) -> list[list[nn.Parameter]]: ...


OPTIMIZERS = ("funk", "sgd", "adam", "adamw", "sparse_adam", "adagrad", "rmsprop")
LOSSES = ("mse", "bce")


class TrainingFailed(RuntimeError):
    """Training ended without a usable model (see the subclasses); the message names the
    likely cause and what to change."""


class TrainingDiverged(TrainingFailed):
    """The training loss became NaN or infinite."""


class TrainingCollapsed(TrainingFailed):
    """Every factor shrank to zero: the penalty outweighs the data, so the only fixed point
    of the fit is the trivial all-zero solution (e.g. iALS with too large a ``reg``)."""


EpochCallback = Callable[[int, dict[str, float]], None]
_EPOCH_CALLBACK: contextvars.ContextVar[EpochCallback | None] = contextvars.ContextVar(
    "mfutils_epoch_callback", default=None
)


@contextlib.contextmanager
def epoch_callback(callback: EpochCallback) -> Iterator[None]:
    """Within the block, :func:`fit` calls ``callback(epoch, record)`` after every epoch that has
    a validation record (``fit(..., valid=...)``), with the epoch's history row.

    A hook for hyper-parameter search (:mod:`mfutils.tuning` reports the validation curve to
    Optuna's pruner): models need no change, and an exception raised by ``callback`` (e.g.
    ``optuna.TrialPruned``) ends the fit. A ``contextvars`` variable, so threads and tasks each
    see their own callback.
    """
    token = _EPOCH_CALLBACK.set(callback)
    try:
        yield
    finally:
        _EPOCH_CALLBACK.reset(token)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Options of :func:`fit`.

    Parameters
    ----------
    epochs : int
        Maximum number of passes over the training rows.
    batch_size : int
        Rows per step. Batches are slices of a per-epoch permutation of tensors that already
        live on the device, so there is no per-sample DataLoader.
    optimizer : str
        One of ``funk`` (hand-written per-row SGD, nets with ``funk_step``), ``sgd``, ``adam``,
        ``adamw``, ``sparse_adam`` (nets with sparse embeddings), ``adagrad`` or ``rmsprop``.
    lr : float
        Learning rate ``gamma``.
    lr_decay : float
        Multiply the learning rate by this after every epoch (Koren uses 0.9).
    weight_decay : float
        Global weight decay at every step: coupled L2 for ``adam`` (``torch.optim.Adam``'s,
        as DirectAU's and MAWU's official code use it), decoupled for ``adamw``; ignored by
        the other optimizers. For rating models prefer the net's per-row penalty.
    loss : str
        ``mse`` for ratings or ``bce`` for 0/1 labels (the net returns logits).
    reduction : str or None
        ``sum`` or ``mean`` over the rows of a batch; ``None`` picks ``sum`` for ``funk`` and
        ``sgd`` (so ``lr`` is Koren's per-rating step) and ``mean`` otherwise.
    patience : int or None
        Stop when the validation metric has not improved for this many epochs and restore the
        best epoch's parameters. ``None`` trains all epochs (the best epoch is still restored
        when validation data is given).
    batch_by : str
        ``row``: batches are random rows. ``user``: batches hold *all* rows of a random group of
        users (about ``batch_size`` rows), so per-user terms such as SVD++'s implicit sum are
        computed once per user and epoch, as in Koren's per-user training loop.
    alternate : bool
        Block-coordinate training: the net's ``parameter_blocks()`` returns lists of parameters
        and every batch takes one optimizer step on each block in turn, the other blocks fixed
        and the loss recomputed before each step (NNMF's alternation between the network and
        the latent features, Dziugaite & Roy 2015). Each block has its own optimizer state.
    seed : int
        Seed of the batch order.
    progress : bool
        Show a ``tqdm`` progress bar over epochs.
    """

    epochs: int = 20
    batch_size: int = 1024
    optimizer: str = "adam"
    lr: float = 1e-2
    lr_decay: float = 1.0
    weight_decay: float = 0.0
    loss: str = "mse"
    reduction: str | None = None
    patience: int | None = None
    batch_by: str = "row"
    alternate: bool = False
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}; choose one of {LOSSES}")
        if self.reduction not in (None, "sum", "mean"):
            raise ValueError(f"reduction={self.reduction!r}; choose 'sum', 'mean' or None")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs={self.epochs} and batch_size={self.batch_size} must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr={self.lr} must be a positive finite number")
        if self.batch_by not in ("row", "user"):
            raise ValueError(f"batch_by={self.batch_by!r}; choose 'row' or 'user'")
        if self.optimizer == "funk" and self.loss != "mse":
            raise ValueError("optimizer='funk' implements the squared error only; use 'sgd'")
        if self.optimizer == "funk" and self.alternate:
            raise ValueError("alternate=True needs an autograd optimizer, not 'funk'")

    @property
    def batch_reduction(self) -> str:
        if self.reduction is not None:
            return self.reduction
        return "sum" if self.optimizer in ("funk", "sgd") else "mean"


def fit(
    net: nn.Module,
    train: Mapping[str, torch.Tensor],
    *,
    config: TrainConfig,
    valid: Mapping[str, torch.Tensor] | None = None,
    valid_metric: Callable[[nn.Module, Mapping[str, torch.Tensor]], float] | None = None,
    target: str = "rating",
    weight: str | None = "weight",
    maximize: bool = False,
) -> pd.DataFrame:
    """Train ``net`` in place on ``train`` and return the history.

    Parameters
    ----------
    net : nn.Module
        A :class:`Net`: called as ``net(batch)`` for predictions (logits for ``bce``). As a
        :class:`PenalizedNet` its ``penalty(batch)`` gives the per-row regularization; a
        :class:`SetwiseNet` returns its batch's mean loss itself (``config.loss`` and
        ``reduction`` are then unused); ``optimizer="funk"`` needs a :class:`FunkNet`,
        ``alternate=True`` a :class:`BlockNet`.
    train : mapping of str to Tensor
        Equally long tensors on the net's device; ``train[target]`` are the labels and
        ``train[weight]`` (optional) the per-row confidence weights ``c_ui``.
    config : TrainConfig
    valid : mapping of str to Tensor, optional
        Validation rows (carved from training data, never the test set).
    valid_metric : callable, optional
        ``valid_metric(net, valid) -> float``, lower is better (higher with ``maximize``).
        Defaults to the RMSE for ``mse`` and the log loss for ``bce``.
    target, weight : str
        Names of the label column and of the optional confidence-weight column.
    maximize : bool
        The validation metric is better when higher (e.g. NDCG).

    Returns
    -------
    pandas.DataFrame
        One row per epoch: ``epoch``, ``train_loss`` (mean loss per row, penalty included),
        ``valid`` (the validation metric, if any), ``lr`` and cumulative ``seconds``.

    Raises
    ------
    TrainingDiverged
        When an epoch's loss is NaN or infinite; the message suggests what to change.
    """
    n = _check_batch(train, target)
    if valid is not None:
        _check_batch(valid, target)
    if config.optimizer == "funk" and not isinstance(net, FunkNet):
        raise ValueError(
            f"optimizer='funk' needs a net with funk_step(); {type(net).__name__} "
            "has none: use 'sgd' or 'adam'"
        )
    if config.alternate and not isinstance(net, BlockNet):
        raise ValueError(
            f"alternate=True needs a net with parameter_blocks(); {type(net).__name__} has none"
        )
    valid_metric = valid_metric or (rmse_metric if config.loss == "mse" else logloss_metric)
    device = train[target].device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    blocks = net.parameter_blocks() if config.alternate else [list(net.parameters())]
    optimizers = [_make_optimizer(net, block, config) for block in blocks]
    step = _choose_step(net, train, config, blocks, optimizers, target=target, weight=weight)
    lr = config.lr
    best_value, best_state, best_epoch = math.inf, None, 0
    rows: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(
        range(1, config.epochs + 1),
        desc=type(net).__name__,
        unit="epoch",
        disable=not config.progress or distributed.rank() > 0,
        leave=False,
    )
    for epoch in bar:
        net.train()
        loss_sum = torch.zeros((), device=device)
        for idx in _batches(train, config, generator):
            loss_sum += step(idx, lr)
        train_loss = float(distributed.all_sum(loss_sum)) / n
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"{type(net).__name__}: the training loss became {train_loss} in epoch {epoch} "
                f"(optimizer={config.optimizer}, lr={lr:g}, batch_size={config.batch_size}). "
                + _divergence_advice(net, train, config, weight=weight)
            )
        record = {"epoch": epoch, "train_loss": train_loss, "lr": lr}
        if valid is not None:
            net.eval()
            with torch.no_grad():
                record["valid"] = float(valid_metric(net, valid))
            score = -record["valid"] if maximize else record["valid"]
            if score < best_value:
                best_value, best_epoch = score, epoch
                best_state = copy.deepcopy(net.state_dict())
        record["seconds"] = time.perf_counter() - start
        rows.append(record)
        if valid is not None and (callback := _EPOCH_CALLBACK.get()) is not None:
            callback(epoch, dict(record))
        bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k in ("train_loss", "valid")})
        if (
            config.patience is not None
            and valid is not None
            and epoch - best_epoch >= config.patience
        ):
            break
        lr *= config.lr_decay
        for optimizer in optimizers:
            for group in optimizer.param_groups if optimizer is not None else ():
                group["lr"] = lr
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    history = pd.DataFrame(rows)
    history.attrs["best_epoch"] = best_epoch or len(rows)
    return history


Step = Callable[[torch.Tensor, float], torch.Tensor]


def _choose_step(
    net: nn.Module,
    train: Mapping[str, torch.Tensor],
    config: TrainConfig,
    blocks: list[list[nn.Parameter]],
    optimizers: list[torch.optim.Optimizer | None],
    *,
    target: str,
    weight: str | None,
) -> Step:
    """The one step function of a run, chosen before the loop: ``step(idx, lr)`` trains on the
    rows ``idx`` of ``train`` and returns their summed loss before the step (detached).

    Four paths: Funk's hand-written step or autograd steps (one per parameter block with
    ``alternate``), each on one process or data-parallel under ``torchrun``.
    """
    world = distributed.world_size()
    if world > 1 and isinstance(net, SetwiseNet):
        raise ValueError(
            f"{type(net).__name__} has a set-wise objective(batch) (e.g. in-batch"
            " negatives) that does not split over ranks; train it in one process"
        )
    if world > 1 and config.alternate:
        raise ValueError(
            "alternate=True (parameter blocks) is not supported under torchrun; train it in "
            "one process"
        )

    def rows(index: torch.Tensor) -> Batch:
        return {key: value.index_select(0, index) for key, value in train.items()}

    if config.optimizer == "funk" and world > 1:

        def step(idx: torch.Tensor, lr: float) -> torch.Tensor:
            # each rank steps on its shard with the whole batch's row multiplicities; the
            # shards' updates are all-reduced, the single-process step
            batch = rows(distributed.shard(idx))
            batch["repeats"] = distributed.shard(_row_repeats(train, idx))  # shape: (shard, 2)
            return distributed.summed_step(
                net, functools.partial(net.funk_step, batch, lr)
            ).detach()

    elif config.optimizer == "funk":

        def step(idx: torch.Tensor, lr: float) -> torch.Tensor:
            return net.funk_step(rows(idx), lr).detach()

    elif world > 1:
        step_net = distributed.wrap(
            net, functools.partial(batch_loss, net, loss=config.loss, target=target, weight=weight)
        )
        optimizer = optimizers[0]

        def step(idx: torch.Tensor, lr: float) -> torch.Tensor:
            # this rank's shard of the global batch; DDP averages the gradients, so the scale
            # makes them the mean of world * shard sums: the single-process gradient
            loss = step_net(rows(distributed.shard(idx)))
            scale = world / (len(idx) if config.batch_reduction == "mean" else 1)
            optimizer.zero_grad(set_to_none=True)
            (loss.sum() * scale).backward()
            optimizer.step()
            return loss.detach().sum()

    else:
        setwise = isinstance(net, SetwiseNet)

        def step(idx: torch.Tensor, lr: float) -> torch.Tensor:
            batch, first = rows(idx), None
            for block, optimizer in zip(blocks, optimizers, strict=True):
                if setwise:  # set-wise losses: one mean per batch
                    reduced = net.objective(batch)
                    batch_sum = reduced.detach() * len(idx)
                else:
                    loss = batch_loss(net, batch, loss=config.loss, target=target, weight=weight)
                    reduced = loss.sum() if config.batch_reduction == "sum" else loss.mean()
                    batch_sum = loss.detach().sum()
                optimizer.zero_grad(set_to_none=True)
                reduced.backward(
                    inputs=[p for p in block if p.requires_grad] if config.alternate else None
                )
                optimizer.step()
                first = batch_sum if first is None else first  # the loss before any step
            return first

    return step


def capped_batch_size(n_rows: int, batch_size: int, min_batches: int | None) -> int:
    """``batch_size``, lowered so that an epoch over ``n_rows`` rows takes ``min_batches`` steps.

    ``min(batch_size, ceil(n_rows / min_batches))`` (``batch_size`` itself for ``None``): a
    schedule counted in epochs then takes at least ``epochs * min_batches`` optimizer steps
    however small the data, instead of a handful (4096-row batches over 16k ratings: four
    Adam steps an epoch). On data with ``n_rows >= batch_size * min_batches`` nothing changes.
    """
    if min_batches is None:
        return batch_size
    if min_batches < 1:
        raise ValueError(f"min_batches={min_batches} must be >= 1 (or None)")
    return max(1, min(batch_size, math.ceil(n_rows / min_batches)))


def batch_loss(
    net: nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    loss: str = "mse",
    target: str = "rating",
    weight: str | None = "weight",
) -> torch.Tensor:
    """Per-row objective ``c_b * l(pred_b, y_b) + penalty_b``, shape (batch,)."""
    pred = net(batch)  # shape: (batch,)
    if loss == "mse":
        per_row = 0.5 * (batch[target] - pred) ** 2
    else:
        per_row = F.binary_cross_entropy_with_logits(pred, batch[target], reduction="none")
    if weight is not None and weight in batch:
        per_row = per_row * batch[weight]
    if isinstance(net, PenalizedNet):
        per_row = per_row + net.penalty(batch)
    return per_row


def sequential_step_scale(
    index: torch.Tensor,
    curvature: torch.Tensor,
    lr: float,
    *,
    workspace: torch.Tensor,
    repeats: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Per-occurrence factor that turns a batch's summed SGD step into sequential SGD.

    Per-rating SGD (Funk 2006; Koren, Bell & Volinsky 2009 eq. 5) visits a row's ``k``
    ratings one after another, each step re-reading the parameters the previous one moved. A
    minibatch step sums the ``k`` gradients, all taken at the same point: on a row's quadratic
    of curvature ``h`` per rating, the ``k`` sequential steps move the parameter a fraction
    :math:`1 - (1 - \gamma h)^k` of the way to its optimum, the summed step a fraction
    :math:`k \gamma h`, which passes 2 -- divergence -- once ``k > 2 / (\gamma h)`` (a user
    with 2,698 ratings appears about 110 times in a batch of 4,096 of ml-latest-small's
    100,836). Scaling the summed step by

    .. math::
        s = \frac{1 - (1 - \gamma h)^k}{k \gamma h}

    (``h-bar`` the curvature of the occurrence's term) makes it equal to the ``k``
    sequential steps on that quadratic, so the step is stable at any multiplicity. The biases'
    curvature is the same for all of a row's ratings (``1 + lambda`` without weights), so
    there the equality is exact; for a factor row ``|q_i|^2`` varies with the item and each
    occurrence's own curvature stands in for their mean (one gather, no second scatter). For
    ``k = 1`` the factor is 1: batches without repeated rows are plain SGD, and heavy rows
    keep most of their progress (``s`` is about 0.5 at ``k = 110``, ``gamma h = 0.015``),
    unlike a mean over the occurrences (``1 / k``).

    Parameters
    ----------
    index : Tensor of int64, shape (B,)
        The row (e.g. user id) of every occurrence in the batch.
    curvature : Tensor, shape (B, m)
        Curvature of each occurrence's term, one column per parameter block of the row that
        shares ``index``: ``c_b + lambda`` for a bias, ``c_b |q_i|^2 + lambda`` for a factor
        row (``c_b`` the confidence weight, 1 without weights).
    lr : float
        The step size ``gamma``.
    workspace : Tensor, shape (>= n_rows,)
        Zeros on ``index``'s device, reused across calls (:func:`step_workspace`): only the
        touched rows are written and reset to zero, so a step costs O(B), not O(n_rows).
    repeats : Tensor, shape (B,), optional
        The multiplicity ``k`` of each occurrence's row, when ``index`` is only a shard of
        the batch (data-parallel training, :func:`fit` under ``torchrun``); default: counted
        in ``index``.

    Returns
    -------
    Tensor, shape (B, m)
        The factor of each occurrence and block (1, to rounding, where the row occurs once).
    """
    if repeats is None:
        workspace.index_add_(0, index, torch.ones_like(index, dtype=workspace.dtype))
        k = workspace.index_select(0, index)[:, None]  # shape: (B, 1) the row's multiplicity
        workspace.index_fill_(0, index, 0.0)  # leave the workspace as it was found: zeros
    else:
        k = repeats.to(curvature.dtype)[:, None]  # shape: (B, 1)
    # gamma * curvature, kept inside (0, 1): past 1 a single step already overshoots.
    step = (curvature * lr).clamp_(1e-12, 1.0 - 1e-6)  # shape: (B, m)
    # (1 - (1 - step)^k) / (k step); for k = 1 this is 1 up to rounding.
    return torch.log1p(-step).mul_(k).expm1_().div_(step * -k)  # shape: (B, m)


def step_workspace(n_rows: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Zeros of shape (n_rows,) for :func:`sequential_step_scale` to reuse."""
    return torch.zeros(n_rows, device=device)


def rmse_metric(net: nn.Module, data: Mapping[str, torch.Tensor]) -> float:
    """Root mean squared error of ``net(data)`` against ``data['rating']``."""
    pred = predict_in_batches(net, data)
    return float(torch.sqrt(torch.mean((pred - data["rating"]) ** 2)))


def logloss_metric(net: nn.Module, data: Mapping[str, torch.Tensor]) -> float:
    """Mean logistic loss of the logits ``net(data)`` against 0/1 ``data['rating']``."""
    logits = predict_in_batches(net, data)
    return float(F.binary_cross_entropy_with_logits(logits, data["rating"]))


def predict_in_batches(
    net: nn.Module, data: Mapping[str, torch.Tensor], *, batch_size: int = 65536
) -> torch.Tensor:
    """``net(data)`` evaluated in slices so that large inputs fit in memory, shape (n,)."""
    n = len(next(iter(data.values())))
    with torch.no_grad():
        parts = [
            net({key: value[lo : lo + batch_size] for key, value in data.items()})
            for lo in range(0, n, batch_size)
        ]
    return torch.cat(parts) if parts else torch.empty(0, device=next(iter(data.values())).device)


def _batches(
    data: Mapping[str, torch.Tensor], config: TrainConfig, generator: torch.Generator
) -> list[torch.Tensor]:
    """Row indices of every batch of one epoch, in a fresh random order."""
    n = len(data["user"])
    device = data["user"].device
    if config.batch_by == "row":
        order = torch.randperm(n, device=device, generator=generator)  # shape: (n,)
        return list(torch.split(order, config.batch_size))
    by_user = torch.argsort(data["user"], stable=True)  # shape: (n,) rows grouped by user
    counts = torch.bincount(data["user"])  # shape: (n_users,)
    starts = torch.cumsum(counts, 0) - counts  # shape: (n_users,)
    users = torch.randperm(len(counts), device=device, generator=generator)
    users = users[counts[users] > 0]  # shape: (n_active,) random user order
    sizes = counts[users]
    # Each user's rows, users in random order: position k of user u maps to starts[u] + k.
    offsets = torch.repeat_interleave(starts[users] - (torch.cumsum(sizes, 0) - sizes), sizes)
    order = by_user[offsets + torch.arange(int(sizes.sum()), device=device)]  # shape: (n,)
    # Cut between users once about batch_size rows are collected.
    group = (torch.cumsum(sizes, 0) - sizes) // config.batch_size  # shape: (n_active,)
    rows_per_batch = torch.bincount(group, weights=sizes.to(torch.float64)).long()
    return list(torch.split(order, rows_per_batch[rows_per_batch > 0].tolist()))


def _row_repeats(train: Mapping[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
    """How often each row's user and item occur in the global batch ``idx``, shape (B, 2).

    A rank sees only its shard, but :func:`sequential_step_scale` needs the multiplicity in
    the whole batch, the one a single process would use."""
    counts = []
    for column in ("user", "item"):
        _, inverse, count = torch.unique(
            train[column].index_select(0, idx), return_inverse=True, return_counts=True
        )
        counts.append(count.index_select(0, inverse))
    return torch.stack(counts, 1).float()  # shape: (B, 2)


def _divergence_advice(
    net: nn.Module, train: Mapping[str, torch.Tensor], config: TrainConfig, *, weight: str | None
) -> str:
    """The likeliest cause of a divergence, most specific first, as advice to act on."""
    negative = {
        name: value
        for name, value in vars(net).items()
        if name.startswith("reg") and isinstance(value, int | float) and value < 0
    }
    if negative:
        listed = ", ".join(f"{name}={value:g}" for name, value in negative.items())
        return (
            f"Cause: a negative penalty ({listed}) rewards large parameters, so the loss "
            "has no minimum; use penalties >= 0."
        )
    if weight is not None and weight in train:
        w = train[weight]
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            return f"Cause: the {weight!r} column holds NaN, inf or negative confidence weights."
    if any(not bool(torch.isfinite(p).all()) for p in net.parameters()):
        cause = "the parameters overflowed"
    else:
        cause = "the loss overflowed"
    if config.optimizer == "sgd" and config.batch_reduction == "sum":
        return (
            f"Cause: {cause} under summed SGD steps, where a row repeated k times in a batch "
            "takes k steps at once: use optimizer='funk' (it scales repeated rows), "
            "reduction='mean', a smaller batch or a lower lr."
        )
    return (
        f"Cause: {cause}: the step is too large for this data. Lower the learning rate "
        "(try a tenth), raise the regularization, or use optimizer='adam'."
    )


def _check_batch(data: Mapping[str, torch.Tensor], target: str) -> int:
    if target not in data:
        raise ValueError(f"training data has no {target!r} column; it has {sorted(data)}")
    lengths = {key: len(value) for key, value in data.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"all training columns must have the same length; got {lengths}")
    n = lengths[target]
    if n == 0:
        raise ValueError("no training rows")
    if not torch.isfinite(data[target]).all():
        raise ValueError(f"the {target!r} column contains NaN or inf")
    return n


def _make_optimizer(
    net: nn.Module, parameters: list[nn.Parameter], config: TrainConfig
) -> torch.optim.Optimizer | None:
    params = [p for p in parameters if p.requires_grad]
    if config.optimizer == "funk":
        return None
    if not params:
        raise ValueError(
            f"{type(net).__name__} has no trainable parameters (all frozen?)"
            + (" in one of its parameter_blocks()" if config.alternate else "")
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=config.lr)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr)
    return torch.optim.SparseAdam(params, lr=config.lr)
