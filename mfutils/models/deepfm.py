r"""DeepFM (H. Guo, R. Tang, Y. Ye, Z. Li, X. He, *DeepFM: A Factorization-Machine based Neural
Network for CTR Prediction*, IJCAI 2017, arXiv:1703.04247).

An FM component and a deep component read the *same* field embeddings (§2.1, Fig. 1). With
:math:`e_f=\sum_{i\in f}x_iv_i` the embedding of field :math:`f` (eq. 4's embedding layer; the
multi-valued ``genres`` field is pooled with its :math:`1/n` values):

.. math::

    y_{FM} = \langle w, x\rangle + \sum_{i<j}\langle v_i,v_j\rangle x_ix_j
    \quad\text{(eq. 2)},\qquad
    a^{(0)} = [e_1;\dots;e_m],\quad a^{(l+1)} = \sigma(W^{(l)}a^{(l)} + b^{(l)})
    \quad\text{(eq. 5)},

.. math::

    y_{DNN} = W^{|H|+1}a^{|H|} + b^{|H|+1},\qquad
    \hat y = \mathrm{sigmoid}(y_{FM} + y_{DNN})\quad\text{(eq. 1)}.

The binary head (``binary=True``) is eq. 1 with the log loss; the regression head drops the
sigmoid and fits the squared error (ratings). No hand-made cross features. The paper's settings
(§3.1) are ReLU, three hidden layers of 400, dropout 0.5, ``k = 10`` and Adam; the defaults
here are smaller and add an L2 penalty on the DNN's weights (chosen on a validation split of
``u1.base``: the paper's network overfits ML-100K's ratings and is ten times slower on a CPU).

**Deviation: two training phases.** The paper trains FM and DNN jointly from scratch, "no
pre-training" being one of its points against FNN. On ratings that run overfits: the DNN fits
the training ratings through the shared embeddings before the FM part has learned the biases.
Measured on 10% validation parts carved from the training data (fold 1), validation RMSE:

==========================================  ===============  ===========================
model                                        ML-100K u1.base  ml-latest-small replica
==========================================  ===============  ===========================
FM, same fields                              0.9155           0.8666 (5% carved)
DeepFM, one joint run (best epoch)           0.9186           0.8731 (epoch 2)
DeepFM, FM phase then joint, ``joint_lr``    0.9117           0.8664
==========================================  ===============  ===========================

So by default (``warm_start=True``) the FM part is trained alone first and the whole network
then continues from the FM's solution, the DNN's output layer starting at zero, for as many
joint epochs as a held-out part of the training data prefers, zero (the FM) included.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from mfutils.data.container import Ratings
from mfutils.models.fm import FieldModel, FMNet
from mfutils.train import TrainConfig

__all__ = ["DeepFM", "DeepFMNet"]


class DeepFMNet(FMNet):
    """:class:`FMNet` plus an MLP on the concatenated field embeddings (same table ``V``).

    Parameters
    ----------
    hidden : sequence of int
        Widths of the hidden layers (ReLU, dropout after each).
    dropout : float
        Drop probability of the hidden activations (the paper's 0.5 keeps half).
    reg_mlp : float
        L2 penalty ``reg_mlp / 2 * sum ||W||^2`` on the DNN's weight matrices, added to every
        row (with the trainer's mean reduction: once per step).
    **fm_options
        As for :class:`FMNet`.
    """

    def __init__(
        self,
        n_features: int,
        n_factors: int,
        *,
        hidden: Sequence[int],
        dropout: float,
        reg_mlp: float = 0.0,
        **fm_options,
    ) -> None:
        super().__init__(n_features, n_factors, **fm_options)
        self.reg_mlp = reg_mlp
        device = self.column_field.device
        layers: list[nn.Module] = []
        width = self.n_fields * n_factors
        for size in hidden:
            layers += [nn.Linear(width, size, device=device), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1, device=device))
        self.mlp = nn.Sequential(*layers)
        self.fm_only = False  # DeepFM's first phase: y_DNN is held at 0 and not computed

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        index, value = batch["index"], batch["value"]  # shape: (B, L)
        if self.fm_only:
            return super().forward(batch)
        xv = self.scaled_factors(index, value)  # shape: (B, L, k), shared by both parts
        embeddings = self.field_embeddings(index, value, xv)  # shape: (B, n_fields, k)
        pairs = self.pairwise(index, value, xv)
        y_fm = self.bias + self.linear_term(index, value) + pairs
        y_dnn = self.mlp(embeddings.flatten(1))[:, 0]  # shape: (B,)
        return y_fm + y_dnn

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The FM's per-row penalty plus ``reg_mlp / 2 * sum ||W||^2``, shape (B,)."""
        if self.fm_only:
            return super().penalty(batch)
        weights = sum(
            layer.weight.pow(2).sum() for layer in self.mlp if isinstance(layer, nn.Linear)
        )
        return super().penalty(batch) + 0.5 * self.reg_mlp * weights


class DeepFM(FieldModel):
    """DeepFM over MovieLens fields with ``fit`` / ``predict`` / ``recommend``.

    Parameters
    ----------
    n_factors : int
        Embedding size ``k`` shared by the FM and the DNN (the paper uses 10). The defaults
        (``k = 20``, two layers of 64, dropout 0.5, ``reg_mlp = 1e-3``, the FM's schedule,
        then up to 15 joint epochs at ``joint_lr = 0.003``: 0.9117 on validation against
        0.9129 at 0.01 and a still-falling 0.9114 after 15 at 0.001) were chosen on a
        validation split of ``u1.base``; the paper's 400-400-400 overfit there.
    hidden : sequence of int
        Hidden layer widths of the DNN (the paper: 400, 400, 400).
    dropout : float
        Dropout of the hidden layers (the paper: 0.5).
    reg_mlp : float
        L2 penalty on the DNN's weights (the paper relies on dropout alone).
    warm_start : bool
        Train in two phases (the default): first the FM part alone (``y_DNN`` held at 0) for
        ``epochs`` at ``lr``, exactly a :class:`FactorizationMachine` over the same fields,
        then the whole network from there for up to ``joint_epochs`` at ``joint_lr``, the
        DNN's output layer starting at zero so that the joint phase starts at the FM's
        predictions. ``False``: the paper's joint training from scratch for ``epochs``.
    joint_epochs, joint_lr : int, float
        The joint phase's epochs (at most) and Adam step size.
    valid_fraction : float
        When ``fit`` gets no ``valid``: the share of the training ratings held out to choose
        how many joint epochs to run, ``0`` (the FM alone) included; the model is then
        refitted on all ratings for that many (twice the fit time). With ``valid`` given,
        the best joint epoch on it is kept, the FM again competing as epoch 0. ``0``: all
        ``joint_epochs``, no selection. :attr:`joint_epochs_` after ``fit``.
    batch_size, min_batches : int, int or None
        Rows per Adam step, capped at ``ceil(n / min_batches)`` for ``n`` training rows
        (:func:`mfutils.train.capped_batch_size`), so every epoch takes at least
        ``min_batches`` steps: 16k ratings take 16 steps of ~1000 instead of 4 of 4096, which
        left DeepFM worse than the baseline estimates on a small release. ``16`` is the largest
        floor that leaves ML-100K's schedule as it was (a validation split of ``u1.base``
        preferred 4096-row batches to 20 steps of 3600). ``None``: ``batch_size`` whatever
        ``n``.
    fields, zip_digits, epochs, lr, lr_decay, optimizer, reg, reg_linear, init_std,
    cold_fraction, binary, patience, seed, progress, device, clip
        As for :class:`mfutils.models.FactorizationMachine` (``fields=None``: the default
        fields the training data carries, :attr:`fields_` after ``fit``); ``reg`` and
        ``reg_linear`` penalise the embeddings, the DNN is regularised by dropout.
    """

    # Search space of mfutils.tuning (Optuna): option -> ("log" | "float", low, high),
    # ("int", low, high[, "log"]) or ("choice", value, ...); around the defaults.
    SEARCH_SPACE = {
        "n_factors": ("int", 4, 64, "log"),
        "lr": ("log", 0.001, 0.05),
        "reg": ("log", 0.015, 1.5),
        "reg_mlp": ("log", 0.0001, 0.01),
        "dropout": ("float", 0.0, 0.7),
        "epochs": ("int", 10, 90),
        "joint_lr": ("log", 0.0005, 0.02),
    }

    def __init__(
        self,
        n_factors: int = 20,
        *,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.5,
        reg_mlp: float = 1e-3,
        fields: Sequence[str] | None = None,
        zip_digits: int = 1,
        epochs: int = 30,
        batch_size: int = 4096,
        min_batches: int | None = 16,
        lr: float = 0.01,
        lr_decay: float = 0.97,
        optimizer: str = "adam",
        reg: float = 0.15,
        reg_linear: float = 0.15,
        init_std: float = 0.01,
        cold_fraction: float = 0.0,
        binary: bool = False,
        patience: int | None = None,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
        warm_start: bool = True,
        joint_epochs: int = 15,
        joint_lr: float = 0.003,
        valid_fraction: float = 0.1,
    ) -> None:
        hidden = tuple(int(h) for h in hidden)
        if not 0 <= valid_fraction < 1:
            raise ValueError(f"valid_fraction={valid_fraction} must lie in [0, 1)")
        if joint_epochs < 0:
            raise ValueError(f"joint_epochs={joint_epochs} must be >= 0")
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden={hidden}: every layer needs at least one unit")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout} must lie in [0, 1)")
        super().__init__(
            n_factors,
            fields=fields,
            epochs=epochs,
            batch_size=batch_size,
            min_batches=min_batches,
            lr=lr,
            optimizer=optimizer,
            cold_fraction=cold_fraction,
            device=device,
            clip=clip,
        )
        if joint_epochs:
            TrainConfig(epochs=joint_epochs, lr=joint_lr, optimizer=optimizer)

    def _make_net(self, generator: torch.Generator) -> DeepFMNet:
        c, encoder = self.config, self.encoder
        torch.manual_seed(c["seed"])  # nn.Linear draws its initial weights from the global RNG
        return DeepFMNet(
            encoder.n_features,
            c["n_factors"],
            hidden=c["hidden"],
            dropout=c["dropout"],
            reg_mlp=c["reg_mlp"],
            column_field=encoder.column_field,
            reserved=encoder.reserved_indices(),
            bias=0.0,
            reg_linear=c["reg_linear"],
            reg_factors=c["reg"],
            init_std=c["init_std"],
            device=self.device,
            generator=generator,
        )

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        if not c["warm_start"]:
            super()._fit(train, valid=valid, weights=weights)
            self.joint_epochs_ = c["epochs"]
            return
        joint_epochs = c["joint_epochs"]
        if valid is None and c["valid_fraction"] > 0 and joint_epochs > 0:
            joint_epochs = self._held_out_probe(train, weights).joint_epochs_
        net = self.net
        with torch.no_grad():
            net.bias.fill_(self._initial_bias(train))
            net.mlp[-1].weight.zero_()  # y_DNN = 0 until the joint phase moves it
            net.mlp[-1].bias.zero_()
        data = self._training_rows(train, weights)
        held = None if valid is None else self.encoder.transform(valid)
        net.fm_only = True
        net.mlp.requires_grad_(False)
        try:
            fm_phase = self._train(data, held, epochs=c["epochs"], lr=c["lr"])
        finally:
            net.fm_only = False
            net.mlp.requires_grad_(True)
        phases, best = [fm_phase.assign(phase="fm")], joint_epochs
        if joint_epochs:
            start = None if held is None else copy.deepcopy(net.state_dict())
            joint = self._train(data, held, epochs=joint_epochs, lr=c["joint_lr"])
            best = joint.attrs["best_epoch"]
            if held is not None and joint["valid"].min() >= fm_phase["valid"].min():
                net.load_state_dict(start)  # the FM alone predicts the held-out ratings best
                best = 0
            phases.append(
                joint.assign(
                    phase="joint",
                    epoch=joint["epoch"] + len(fm_phase),
                    seconds=joint["seconds"] + fm_phase["seconds"].iloc[-1],
                )
            )
        self.history = pd.concat(phases, ignore_index=True)
        self.history.attrs.update(best_epoch=len(fm_phase) + best, joint_epochs=best)
        self.joint_epochs_ = best
