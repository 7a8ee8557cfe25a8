r"""Factorization Machines (S. Rendle, *Factorization Machines*, ICDM 2010), degree 2.

For a feature vector :math:`x\in\mathbb R^p` (here: the active features of one rating, built by
:class:`mfutils.features.FieldEncoder`), eq. 1 of the paper:

.. math::

    \hat y(x) = w_0 + \sum_{i=1}^p w_i x_i
              + \sum_{i=1}^p\sum_{j=i+1}^p \langle v_i, v_j\rangle x_i x_j ,

computed in :math:`O(k\,\mathrm{nnz}(x))` with the identity of Lemma 3.1 (eq. 5):

.. math::

    \sum_{i<j}\langle v_i,v_j\rangle x_ix_j
      = \tfrac12\sum_{f=1}^k\Big[\Big(\sum_i v_{i,f}x_i\Big)^2-\sum_i v_{i,f}^2x_i^2\Big].

With only the ``user`` and ``item`` fields, :math:`x` has two ones and the model *is* biased
matrix factorization :math:`w_0 + w_u + w_i + \langle v_u, v_i\rangle` (Rendle 2010, §V.A);
every further field adds a bias and a factor vector that interacts with all the others.
The regression head is trained on the squared error, the binary head (``binary=True``,
:math:`\sigma(\hat y)`) on the log loss; both with per-row :math:`L_2` penalties
:math:`\lambda_w w_i^2` and :math:`\lambda_V\lVert v_i\rVert^2` on the features of each
training row (libFM's SGD regularization), by the shared trainer :func:`mfutils.train.fit`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mfutils.data.container import Ratings
from mfutils.features import FieldEncoder
from mfutils.models.base import ExplicitModel
from mfutils.train import TrainConfig, capped_batch_size, fit

__all__ = ["FMNet", "FactorizationMachine", "FieldModel"]


class FMNet(nn.Module):
    """Degree-2 FM over one feature table; a batch holds ``index`` (B, L) and ``value`` (B, L).

    Parameters
    ----------
    n_features, n_factors : int
        Rows ``p`` of the table and the factor dimension ``k``.
    column_field : Tensor of int64, shape (L,)
        The field of every column of a batch (to pool per-field embeddings, see
        :meth:`field_embeddings`).
    reserved : Tensor of int64
        Rows of the fields' reserved buckets; their ``w`` and ``v`` start at zero, so an unseen
        value contributes nothing unless training rows use the bucket (``cold_fraction``).
    bias : float
        Initial ``w_0`` (the mean rating, or the logit of the positive rate).
    reg_linear, reg_factors : float
        Per-row penalties ``lambda_w`` and ``lambda_V``.
    init_std : float
        Standard deviation of the initial factors.
    """

    def __init__(
        self,
        n_features: int,
        n_factors: int,
        *,
        column_field: torch.Tensor,
        reserved: torch.Tensor,
        bias: float,
        reg_linear: float,
        reg_factors: float,
        init_std: float = 0.01,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.reg_linear, self.reg_factors = reg_linear, reg_factors
        self.n_fields = int(column_field.max()) + 1
        self.register_buffer("column_field", column_field.to(device))
        self.bias = nn.Parameter(torch.tensor(float(bias), device=device))  # w_0
        self.linear = nn.Embedding(n_features, 1, device=device)  # w
        self.factors = nn.Embedding(n_features, n_factors, device=device)  # V
        with torch.no_grad():
            self.linear.weight.zero_()
            self.factors.weight.normal_(0.0, init_std, generator=generator)
            self.factors.weight[reserved.to(device)] = 0.0

    def linear_term(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``sum_i w_i x_i``, shape (B,)."""
        w = self.linear.weight[:, 0].index_select(0, index.reshape(-1))  # shape: (B * L,)
        return (w.view_as(value) * value).sum(1)

    def scaled_factors(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``x_i v_i`` of every column, shape (B, L, k): one ``index_select`` of ``V``.

        Its backward is an ``index_add_`` into ``V``, several times faster on a CPU than the
        sorting backward of ``embedding`` / ``embedding_bag``.
        """
        rows = self.factors.weight.index_select(0, index.reshape(-1))  # shape: (B * L, k)
        return rows.view(*index.shape, -1) * value[..., None]

    def pairwise(
        self, index: torch.Tensor, value: torch.Tensor, xv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_{i<j} <v_i, v_j> x_i x_j`` by the O(k nnz) identity (eq. 5), shape (B,).

        ``sum_f [(sum_i x_i v_if)^2 - sum_i (x_i v_if)^2] / 2`` from the columns' ``x_i v_i``
        (``xv``, from :meth:`scaled_factors` when the caller has them).
        """
        if xv is None:
            xv = self.scaled_factors(index, value)  # shape: (B, L, k)
        return 0.5 * (xv.sum(1).pow(2) - xv.pow(2).sum(1)).sum(1)

    def field_embeddings(
        self, index: torch.Tensor, value: torch.Tensor, xv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-field embeddings ``e_f = sum_{i in f} x_i v_i``, shape (B, n_fields, k).

        A segment sum of the columns by field (``index_add_``), so the multi-valued ``genres``
        field is pooled with its ``1/n`` weights.
        """
        if xv is None:
            xv = self.scaled_factors(index, value)  # shape: (B, L, k)
        pooled = xv.new_zeros(len(xv), self.n_fields, xv.shape[-1])
        return pooled.index_add(1, self.column_field, xv)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        index, value = batch["index"], batch["value"]  # shape: (B, L)
        return self.bias + self.linear_term(index, value) + self.pairwise(index, value)

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row ``(lambda_w sum w_i^2 + lambda_V sum |v_i|^2) / 2`` over the row's active
        features (``x_i != 0``), shape (B,)."""
        index = batch["index"]
        active = (batch["value"] != 0).float()  # shape: (B, L)
        norms = self.reg_linear * self.linear.weight[:, 0].pow(
            2
        ) + self.reg_factors * self.factors.weight.pow(2).sum(1)  # shape: (p,)
        return 0.5 * (norms.index_select(0, index.reshape(-1)).view_as(active) * active).sum(1)


class FieldModel(ExplicitModel):
    """Shared ``fit`` / ``predict`` of the models over :class:`FieldEncoder` features.

    The encoder is fit on the training data first; ``predict_ratings`` passes the rating
    timestamps (time fields), ``predict`` / ``recommend`` do not (time fields in their reserved
    bucket). Users and items without training ratings keep their side features (age, genres,
    ...) and lose only their id feature; out-of-range ids lose every feature of their side.
    With ``fields=None`` the fields are the defaults the training data carries, resolved in
    :meth:`fit` and shown by :attr:`fields_` (they travel with :meth:`save`). Subclasses
    implement :meth:`_make_net`.
    """

    supports_binary = True

    def __init__(
        self,
        n_factors: int,
        *,
        fields: Sequence[str] | None,
        epochs: int,
        batch_size: int,
        min_batches: int | None,
        lr: float,
        optimizer: str,
        cold_fraction: float,
        device: str | torch.device | None,
        clip: bool,
    ) -> None:
        """Validates the options the two models share; ``self.config`` holds them all."""
        super().__init__(device=device, clip=clip)
        if n_factors < 1:
            raise ValueError(f"n_factors={n_factors} must be >= 1")
        if not 0 <= cold_fraction <= 1:
            raise ValueError(f"cold_fraction={cold_fraction} must lie in [0, 1]")
        capped_batch_size(1, batch_size, min_batches)  # validates min_batches
        FieldEncoder(fields)  # validates the field names now rather than at fit time
        fields = None if fields is None else tuple(fields)
        self.config["fields"] = fields
        TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr)
        self.encoder: FieldEncoder | None = None

    def _resolved_config(self) -> dict[str, Any]:
        return {**super()._resolved_config(), "fields": self.fields_}

    def _make_encoder(self) -> FieldEncoder:
        return FieldEncoder(self.config["fields"], zip_digits=self.config["zip_digits"])

    @property
    def fields_(self) -> tuple[str, ...]:
        """The fields the fitted model encodes (``fields``, or the resolved defaults)."""
        if self.encoder is None or self.encoder.fields is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")
        return self.encoder.fields

    def fit(
        self, train: Ratings, *, valid: Ratings | None = None, weights: np.ndarray | None = None
    ) -> FieldModel:
        """Fit the field encoder on ``train``, then the model (see :meth:`ExplicitModel.fit`)."""
        if len(train) == 0:
            raise ValueError("cannot fit on an empty Ratings")
        self.encoder = self._make_encoder().fit(train, device=self.device)
        return super().fit(train, valid=valid, weights=weights)

    def _build(self, n_users: int, n_items: int) -> None:
        generator = torch.Generator(device=self.device).manual_seed(self.config["seed"])
        self.net = self._make_net(generator)

    @abc.abstractmethod
    def _make_net(self, generator: torch.Generator) -> nn.Module:
        """The trainable net over ``self.encoder``'s features (with a ``bias`` parameter)."""

    def _initial_bias(self, train: Ratings) -> float:
        mean = float(np.mean(train.rating))
        if not self.config["binary"]:
            return mean
        rate = min(max(mean, 1e-4), 1 - 1e-4)
        return math.log(rate / (1 - rate))

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        with torch.no_grad():
            self.net.bias.fill_(self._initial_bias(train))
        self.history = self._train(
            self._training_rows(train, weights),
            None if valid is None else self.encoder.transform(valid),
            epochs=self.config["epochs"],
            lr=self.config["lr"],
        )

    def _training_rows(self, train: Ratings, weights: np.ndarray | None) -> dict[str, torch.Tensor]:
        """The encoded training rows: weights attached, anonymous copies appended."""
        data = self.encoder.transform(train)
        if weights is not None:
            data["weight"] = torch.as_tensor(weights, device=self.device)
        if self.config["cold_fraction"] > 0:
            data = self._with_anonymous_copies(data)
        return data

    def _train(
        self,
        data: dict[str, torch.Tensor],
        valid: dict[str, torch.Tensor] | None,
        *,
        epochs: int,
        lr: float,
    ) -> pd.DataFrame:
        """One run of the shared trainer over ``self.net`` (history as :func:`fit`'s)."""
        c = self.config
        batch_size = capped_batch_size(len(data["rating"]), c["batch_size"], c.get("min_batches"))
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            optimizer=c["optimizer"],
            lr=lr,
            lr_decay=c["lr_decay"],
            loss="bce" if c["binary"] else "mse",
            patience=c["patience"],
            seed=c["seed"],
            progress=c["progress"],
        )
        return fit(self.net, data, config=config, valid=valid)

    def _with_anonymous_copies(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``data`` plus, per id field, a seeded ``cold_fraction`` of its rows again with that
        id in its reserved bucket (for the user, ``since_first`` too), encoded as a user or
        item without training ratings is at prediction time: the bucket learns the newcomer,
        the other fields learn to stand in for the id."""
        generator = torch.Generator(device=self.device).manual_seed(self.config["seed"])
        n = len(data["rating"])
        columns = self.encoder.field_columns()
        parts = [data]
        for field in ("user", "item"):
            if field not in columns:
                continue
            # A user without ratings also has no first rating: since_first is unknown too.
            hidden = [field] + (
                ["since_first"] if field == "user" and "since_first" in columns else []
            )
            rows = torch.randperm(n, generator=generator, device=self.device)[
                : round(self.config["cold_fraction"] * n)
            ]  # shape: (n_copies,)
            copy = {key: value[rows] for key, value in data.items()}
            for name in hidden:
                copy["index"][:, columns[name]] = self.encoder.field_offsets[name]
            parts.append(copy)
        return {key: torch.cat([part[key] for part in parts]) for key in data}

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict_tensor(
        self, user: torch.Tensor, item: torch.Tensor, timestamp: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predictions for compact ids (and optional unix-second timestamps), shape (n,)."""
        self._require_fitted()
        self.net.eval()
        return self._output(self.net(self.encoder.encode(user, item, timestamp)))

    def _predict_known(self, user, item, user_known, item_known):
        """The base-class contract: unknown ids lose every feature of their side."""
        minus_one = torch.full_like(user, -1)
        return self.net(
            self.encoder.encode(
                torch.where(user_known, user, minus_one), torch.where(item_known, item, minus_one)
            )
        )

    def predict_ratings(self, data: Ratings, *, batch_size: int = 1 << 16) -> np.ndarray:
        """Predictions for every row of ``data``, with its timestamps for the time fields."""
        tensors = data.tensors(self.device)
        parts = [
            self.predict_tensor(
                *(tensors[k][lo : lo + batch_size] for k in ("user", "item", "timestamp"))
            )
            for lo in range(0, len(data), batch_size)
        ]
        return torch.cat(parts).cpu().numpy() if parts else np.empty(0, dtype=np.float32)

    def _restore(self, ckpt: dict[str, Any], path) -> None:
        self.encoder = self._make_encoder().allocate_like(ckpt["state"], prefix="encoder.")
        super()._restore(ckpt, path)


class FactorizationMachine(FieldModel):
    """Degree-2 Factorization Machine over MovieLens fields, ``fit`` / ``predict`` / ``recommend``.

    Parameters
    ----------
    n_factors : int
        Factor dimension ``k``.
    fields : sequence of str, optional
        Fields of :class:`mfutils.features.FieldEncoder`; ``("user", "item")`` is biased MF.
        A field named here that the training data lacks (``gender`` without a users table)
        is an error at ``fit``. The default ``None`` takes the fields of
        :data:`mfutils.features.DEFAULT_FIELDS` (chosen on validation) that the training data
        carries -- all of them on ML-100K and ML-1M, no ``gender`` / ``occupation`` on
        releases without a users table -- and logs each one left out at INFO; the fields used
        are :attr:`fields_` after ``fit``.
    zip_digits : int
        Zip-prefix length of the ``zip`` field.
    epochs, batch_size, lr, lr_decay : int, int, float, float
        Training schedule (Adam on the mean per-row objective by default); the learning rate
        is multiplied by ``lr_decay`` after every epoch. Defaults chosen on a validation split
        of ``u1.base`` (notebook 08).
    optimizer : str
        Any optimizer of :class:`mfutils.train.TrainConfig` except ``funk``.
    reg, reg_linear : float
        Per-row penalties ``lambda_V`` on the factors and ``lambda_w`` on the linear weights.
    init_std : float
        Standard deviation of the initial factors.
    cold_fraction : float
        Train for users and items without ratings: this share of the training rows is added
        again with the user id (and ``since_first``) in its reserved bucket, and another share
        with the item id hidden. ``0`` keeps the reserved buckets at zero (unknown ids
        contribute nothing). Notebook 08 uses 0.05 for its cold-start comparison.
    binary : bool
        Binary head: ``sigmoid(y_hat)`` trained with the log loss on 0/1 labels.
    patience : int, optional
        Early stopping on the validation ratings given to ``fit``.
    seed, progress, device, clip
        As for :class:`mfutils.models.BiasedMF`.
    min_batches : int, optional
        Cap ``batch_size`` so that an epoch takes at least this many steps
        (:func:`mfutils.train.capped_batch_size`); ``None`` (the default) never caps.
    """

    # Search space of mfutils.tuning (Optuna): option -> ("log" | "float", low, high),
    # ("int", low, high[, "log"]) or ("choice", value, ...); around the defaults.
    SEARCH_SPACE = {
        "n_factors": ("int", 4, 64, "log"),
        "lr": ("log", 0.001, 0.05),
        "reg": ("log", 0.015, 1.5),
        "reg_linear": ("log", 0.015, 1.5),
        "epochs": ("int", 10, 90),
    }

    def __init__(
        self,
        n_factors: int = 20,
        *,
        fields: Sequence[str] | None = None,
        zip_digits: int = 1,
        epochs: int = 30,
        batch_size: int = 4096,
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
        min_batches: int | None = None,
    ) -> None:
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

    def _make_net(self, generator: torch.Generator) -> FMNet:
        c, encoder = self.config, self.encoder
        return FMNet(
            encoder.n_features,
            c["n_factors"],
            column_field=encoder.column_field,
            reserved=encoder.reserved_indices(),
            bias=0.0,
            reg_linear=c["reg_linear"],
            reg_factors=c["reg"],
            init_std=c["init_std"],
            device=self.device,
            generator=generator,
        )
