"""timeSVD++: SVD++ with time-dependent biases and user factors (Koren 2009; Handbook §5.3.3).

Koren, "Collaborative Filtering with Temporal Dynamics" (KDD 2009) and Koren & Bell, Recommender
Systems Handbook §5.3.3 (eqs. 5.9-5.12), with time ``t`` in days:

    b_i(t)  = b_i + b_{i,Bin(t)}                                   (item-bias bins, eq. 5.7)
    dev_u(t) = sign(t - t_u) |t - t_u|^beta,  beta = 0.4          (t_u: u's mean rating day)
    b_u(t)  = b_u + alpha_u dev_u(t) + b_{u,t}                     (eq. 5.9)
    c_u(t)  = c_u + c_{u,t}                                        (rating scale, eq. 5.12)
    p_u(t)  = p_u + alpha_u^p dev_u(t) + p_{u,t}                   (user factors, eq. 5.13)

    r_hat_ui(t) = mu + b_u(t) + b_i(t) c_u(t)
                  + q_i^T ( p_u(t) + |N(u)|^{-1/2} sum_{j in N(u)} y_j ).

Every time term is switchable (an ablation); with all of them off the model *is* SVD++
(:class:`mfutils.models.svdpp.SVDpp`), whose net, implicit bag and trainer it reuses. The
per-rating time features -- the item-time bin, ``dev_u(t)`` and the index of the (user, day)
pair among the pairs seen in training -- are computed once; the forward pass is gathers plus the
SVD++ bag. Days that training never saw for a user (future or held-out days) take Koren's
defaults ``b_{u,t} = 0``, ``c_{u,t} = 0``, ``p_{u,t} = 0``; times before the first or after the
last training day fall into the first or last item bin.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from mfutils.data.container import Ratings, UserItemCSR
from mfutils.models.base import ExplicitModel
from mfutils.models.item_bags import ItemBagModel
from mfutils.models.nets import ItemBagNet
from mfutils.models.svdpp import SVDpp

DAY = 86_400
WARM_STARTS = ("svdpp", "mf", "none")


class _Scaled(nn.Module):
    """``value = scale * raw``: Adam moves ``raw`` by about ``lr`` per step, so the time
    parameters move ``scale`` times faster than the SVD++ ones (a per-parameter step size).

    ``rows`` gives every row its own multiplier (a buffer, saved in checkpoints, all
    ``scale`` until :meth:`TimeBagNet` sets it): the day terms' ``lr_time n / (n + reg_day)``.
    """

    def __init__(
        self,
        scale: float,
        rows: tuple[int, ...] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if rows is None:
            self.scale: float | torch.Tensor = float(scale)
        else:
            self.register_buffer("scale", torch.full(rows, float(scale), device=device))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return raw * self.scale

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value / self.scale


TIME_PARAMETERS = ("item_bin_bias", "alpha_u", "b_ud", "c_u", "c_ud", "alpha_uk", "p_ud")
USER_TIME_PARAMETERS = TIME_PARAMETERS[1:]  # one Adam step per epoch under whole-user batches
DRIFT_PARAMETERS = ("alpha_u", "alpha_uk")  # multiply dev_u(t): stepped per dev_scale
DAY_PARAMETERS = ("b_ud", "c_ud", "p_ud")  # one row per (user, day): shrunk per n_{u,t}


class TimeBagNet(ItemBagNet):
    """The net behind :class:`TimeSVDpp`: :class:`ItemBagNet` (SVD++) plus the time terms.

    Parameters
    ----------
    n_users, n_items, n_factors, csr, mu, reg, reg_bias, reg_implicit, init_std, device, generator
        As for :class:`ItemBagNet` (``asymmetric=False``).
    n_user_days : int
        Number of (user, day) pairs seen in training (rows of ``b_ud, c_ud, p_ud``).
    item_bins : int or None
        Number of item-time bins of ``b_{i,Bin(t)}``; ``None`` drops the term.
    user_drift, user_day_bias, scale, factor_drift, factor_day : bool
        ``alpha_u dev_u(t)``, ``b_{u,t}``, ``c_u(t) = c_u + c_{u,t}``, ``alpha_uk dev_u(t)``
        and ``p_{uk,t}``.
    reg_time : float
        Per-rating penalty on the bias-type time parameters ``b_{i,Bin}, alpha_u, b_{u,t},
        c_u - 1, c_{u,t}`` (Koren's lambda_7 of the time-aware baseline).
    reg_time_factors : float
        Per-rating penalty on ``alpha_uk`` and ``p_{uk,t}`` (``p_{uk,t}`` adds f parameters per
        user-day: regularise it heavily).
    reg_day : float
        Per-*day* penalty on the day terms ``b_{u,t}, c_{u,t}, p_{uk,t}``: each rating of day
        ``(u, t)`` adds ``reg_day / n_{u,t}`` times their squares, so a day's total penalty is
        ``(n_{u,t} reg + reg_day) b_{u,t}^2`` and its least-squares ``b_{u,t}`` is the day's
        mean residual shrunk by ``n_{u,t} / (n_{u,t} (1 + reg) + reg_day)`` (the shrinkage of
        Koren's baseline biases, Handbook eq. 5.3). A day with a single rating barely moves.
    lr_time : float
        Step-size multiplier of the *user-side* time parameters (``alpha_u, b_{u,t}, c_u,
        c_{u,t}, alpha_uk, p_{uk,t}``, stored as ``raw`` with ``value = lr_time * raw``). With
        whole-user batches every per-user parameter gets one Adam step per epoch, too few for
        ``b_{u,t}`` to move at the SVD++ learning rate; ``b_{i,Bin}`` is stepped every batch.
    dev_scale : float
        Root-mean-square of ``dev_u(t)`` over the training ratings (set from the data by
        :class:`TimeSVDpp`). The drifts ``alpha_u, alpha_uk`` are measured in rating units per
        ``dev_scale``: their step multiplier is ``lr_time / dev_scale`` and their penalty
        ``reg * (dev_scale * alpha)^2``, so a 20-year span (``|dev|`` up to ~30) moves and
        regularises the drift term ``alpha_u dev_u(t)`` as a 7-month one does (``|dev|`` ~1-8).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int,
        *,
        csr: UserItemCSR,
        mu: float,
        reg: float,
        reg_bias: float,
        reg_implicit: float,
        n_user_days: int,
        item_bins: int | None,
        user_drift: bool,
        user_day_bias: bool,
        scale: bool,
        factor_drift: bool,
        factor_day: bool,
        reg_time: float,
        reg_time_factors: float,
        reg_day: float = 0.0,
        lr_time: float = 1.0,
        dev_scale: float = 1.0,
        init_std: float = 0.1,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            n_factors,
            csr=csr,
            mu=mu,
            reg=reg,
            reg_bias=reg_bias,
            reg_implicit=reg_implicit,
            asymmetric=False,
            init_std=init_std,
            device=device,
            generator=generator,
        )
        self.item_bins, self.user_drift, self.user_day_bias = item_bins, user_drift, user_day_bias
        self.scale, self.factor_drift, self.factor_day = scale, factor_drift, factor_day
        self.reg_time, self.reg_time_factors, self.reg_day = reg_time, reg_time_factors, reg_day
        self.lr_time = lr_time
        # The time axis of the training data (set by TimeSVDpp._fit, saved in checkpoints).
        self.register_buffer("day0", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("n_days", torch.ones((), dtype=torch.long, device=device))
        self.register_buffer("user_mean_day", torch.zeros(n_users, device=device))  # t_u
        self.register_buffer(
            "user_day_keys",  # sorted u * n_days + day of training pairs
            torch.zeros(n_user_days, dtype=torch.long, device=device),
        )
        self.register_buffer(
            "user_day_count",  # n_{u,t}: training ratings of every pair
            torch.ones(n_user_days, device=device),
        )
        self.register_buffer("dev_scale", torch.tensor(float(dev_scale), device=device))

        def zeros(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(*shape, device=device))

        if item_bins is not None:
            self.item_bin_bias = zeros(n_items, item_bins)  # b_{i,Bin}
        if user_drift:
            self.alpha_u = zeros(n_users)  # alpha_u
        if user_day_bias:
            self.b_ud = zeros(n_user_days)  # b_{u,t}
        if scale:
            self.c_u = nn.Parameter(torch.ones(n_users, device=device))  # c_u, starts at 1
            self.c_ud = zeros(n_user_days)  # c_{u,t}
        if factor_drift:
            self.alpha_uk = zeros(n_users, n_factors)  # alpha_uk
        if factor_day:
            self.p_ud = zeros(n_user_days, n_factors)  # p_{uk,t}
        for name in USER_TIME_PARAMETERS:
            step = lr_time / dev_scale if name in DRIFT_PARAMETERS else lr_time
            rows = None
            if name in DAY_PARAMETERS and reg_day > 0:
                rows = (n_user_days,) if name != "p_ud" else (n_user_days, 1)
            if hasattr(self, name) and (step != 1.0 or rows is not None):
                parametrize.register_parametrization(self, name, _Scaled(step, rows, device))

    def set_day_counts(self, count: torch.Tensor) -> None:
        """Store ``n_{u,t}`` (shape ``(n_user_days,)``) and the day terms' step multipliers
        ``lr_time n / (n + reg_day)``.

        Adam moves every parameter by about its step size whatever its gradient, so a
        penalty alone cannot hold a single-rating day near 0; the multiplier applies the
        same shrinkage ``n / (n + reg_day)`` to the step (Handbook eq. 5.3).
        """
        self.user_day_count.copy_(count)
        if self.reg_day <= 0:
            return
        shrink = count / (count + self.reg_day)  # shape: (n_user_days,)
        for name in DAY_PARAMETERS:
            if hasattr(self, name):
                mult = getattr(self.parametrizations, name)[0].scale
                mult.copy_((self.lr_time * shrink).reshape(mult.shape))

    # ------------------------------------------------------------------ time features
    def time_features(
        self, user: torch.Tensor, timestamp: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Per-rating ``bin`` (long), ``dev`` (float) and ``user_day`` (long, -1 if unseen).

        ``timestamp`` is in unix seconds; ``None`` predicts at each user's mean training time
        ``t_u`` (``dev = 0``, the bin of ``t_u``) with the day terms at their defaults.
        ``user`` must hold in-range ids.
        """
        t_u = self.user_mean_day[user]  # shape: (n,) days since day0
        if timestamp is None:
            t, user_day = t_u, torch.full_like(user, -1)
            day = torch.floor(t).long()
        else:
            seconds = timestamp.to(user.device, torch.long) - self.day0 * DAY
            t = (seconds.double() / DAY).float()  # shape: (n,) days since day0
            day = torch.div(seconds, DAY, rounding_mode="floor")  # shape: (n,)
            in_span = (day >= 0) & (day < self.n_days)
            key = user * self.n_days + day.clamp(0, int(self.n_days) - 1)  # shape: (n,)
            pos = torch.searchsorted(self.user_day_keys, key).clamp(
                max=max(len(self.user_day_keys) - 1, 0)
            )  # shape: (n,)
            found = in_span & (len(self.user_day_keys) > 0)
            if len(self.user_day_keys):
                found = found & (self.user_day_keys[pos] == key)
            user_day = torch.where(found, pos, torch.full_like(pos, -1))
        bins = self.item_bins or 1
        bin_ = (day.clamp(0, int(self.n_days) - 1) * bins) // self.n_days  # shape: (n,)
        diff = t - t_u
        dev = torch.sign(diff) * diff.abs().pow(TimeSVDpp.beta)  # shape: (n,) dev_u(t)
        return {"bin": bin_, "dev": dev, "user_day": user_day}

    # ------------------------------------------------------------------ prediction
    def predict_rows(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        feats: dict[str, torch.Tensor],
        user_known: torch.Tensor | None = None,
        item_known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``r_hat_ui(t)`` of the module docstring for every row, shape (n,).

        Unknown users (``user_known`` False) drop every user term (``c_u(t) = 1``), unknown
        items every item term except ``b_i(t)`` which is then zero too.
        """
        ones = torch.ones_like(user, dtype=torch.bool)
        uk = (ones if user_known is None else user_known).float()  # shape: (n,)
        ik = (ones if item_known is None else item_known).float()  # shape: (n,)
        users, inverse = torch.unique(user, return_inverse=True)  # shape: (U,), (n,)
        z = self.user_vectors(users)[inverse]  # shape: (n, f) p_u + |N|^-1/2 sum y_j
        dev, ud = feats["dev"], feats["user_day"]
        seen = (ud >= 0).float()  # shape: (n,) day seen in training for this user
        ud = ud.clamp(min=0)
        b_i = self.item_bias.weight[item, 0]  # shape: (n,)
        if self.item_bins is not None:
            b_i = b_i + self.item_bin_bias[item, feats["bin"]]
        b_u = self.user_bias.weight[user, 0]  # shape: (n,)
        if self.user_drift:
            b_u = b_u + self.alpha_u[user] * dev
        if self.user_day_bias:
            b_u = b_u + self.b_ud[ud] * seen
        if self.scale:
            c = self.c_u[user] + self.c_ud[ud] * seen  # shape: (n,) c_u(t)
            c = uk * c + (1 - uk)  # unknown user: unscaled item bias
        else:
            c = torch.ones_like(b_i)
        if self.factor_drift:
            z = z + self.alpha_uk[user] * dev[:, None]
        if self.factor_day:
            z = z + self.p_ud[ud] * seen[:, None]
        dot = (self.item_factors.weight[item] * z).sum(1)  # shape: (n,)
        return self.mu + uk * b_u + ik * b_i * c + uk * ik * dot

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.predict_rows(batch["user"], batch["item"], batch)

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """SVD++'s per-rating penalty plus, halved, shape (B,):

        ``reg_time`` times the squares of this rating's ``b_{i,Bin}, s alpha_u, b_{u,t},
        c_u - 1, c_{u,t}``; ``reg_time_factors`` times ``|s alpha_uk|^2 + |p_{u,t}|^2``
        (``s = dev_scale``); and ``reg_day / n_{u,t}`` times ``b_{u,t}^2 + c_{u,t}^2 +
        |p_{u,t}|^2`` (zero for days unseen in training).
        """
        user, item, ud = batch["user"], batch["item"], batch["user_day"].clamp(min=0)
        seen = (batch["user_day"] >= 0).float()  # shape: (B,)
        s2 = self.dev_scale**2
        out = super().penalty(batch)
        time = torch.zeros_like(out)
        day = torch.zeros_like(out)  # shape: (B,) squares of the day terms
        if self.item_bins is not None:
            time = time + self.item_bin_bias[item, batch["bin"]] ** 2
        if self.user_drift:
            time = time + s2 * self.alpha_u[user] ** 2
        if self.user_day_bias:
            time = time + self.b_ud[ud] ** 2
            day = day + self.b_ud[ud] ** 2
        if self.scale:
            time = time + (self.c_u[user] - 1) ** 2 + self.c_ud[ud] ** 2
            day = day + self.c_ud[ud] ** 2
        factors = torch.zeros_like(out)
        if self.factor_drift:
            factors = factors + s2 * self.alpha_uk[user].pow(2).sum(1)
        if self.factor_day:
            factors = factors + self.p_ud[ud].pow(2).sum(1)
            day = day + self.p_ud[ud].pow(2).sum(1)
        shrink = self.reg_day * seen / self.user_day_count[ud]  # shape: (B,) reg_day / n_{u,t}
        return out + 0.5 * (self.reg_time * time + self.reg_time_factors * factors + shrink * day)


class TimeSVDpp(ItemBagModel):
    """timeSVD++ (Koren 2009; Handbook §5.3.3 eqs. 5.9-5.13) with switchable time terms.

    Parameters
    ----------
    n_factors, epochs, lr, lr_decay, reg, reg_bias, reg_implicit, batch_size, optimizer,
    init_std, patience, seed, progress, device, clip
        As for :class:`mfutils.models.svdpp.SVDpp` (whole-user batches, Adam by default).
    item_bins : int or None
        Item-time bins ``b_{i,Bin(t)}`` over the training span (Netflix: 30; ML-100K's 215
        days support about 4-8); ``None`` turns the term off.
    user_drift : bool
        ``alpha_u dev_u(t)`` in the user bias.
    user_day_bias : bool
        ``b_{u,t}``, one bias per (user, day) seen in training.
    scale : bool
        ``c_u(t) = c_u + c_{u,t}`` multiplying the item bias (eq. 5.12).
    factor_drift : bool
        ``alpha_uk dev_u(t)`` in the user factors.
    factor_day : bool
        ``p_{uk,t}``, f parameters per (user, day).
    reg_time, reg_time_factors : float
        Per-rating penalties on the bias-type and the factor-type time parameters.
    reg_day : float
        Per-day penalty of the day terms ``b_{u,t}, c_{u,t}, p_{uk,t}`` (spread over the day's
        ratings; see :class:`TimeBagNet`): shrinks the days with few ratings to Koren's
        default 0.
    lr_time : float
        Step-size multiplier of the user-side time parameters relative to ``lr`` (see
        :class:`TimeBagNet`); Koren likewise uses per-parameter step sizes.
    warm_start : {"svdpp", "mf", "none"}
        Start from a fitted :class:`SVDpp` (same factors, regularisation and seed; its
        default schedule), from a :class:`BiasedMF` fit, or from scratch. Time terms start at
        their neutral values (0, ``c_u = 1``), so a warm start begins at that model's
        predictions.
    warm_start_options : dict, optional
        Options of the :class:`BiasedMF` fit of ``warm_start="mf"``.
    valid_fraction : float
        As for :class:`SVDpp` (whose fit, the warm start, chooses its own epochs the same
        way): the share of the training ratings held out to choose how many of the
        ``epochs`` time epochs to run, ``0`` (the warm start alone, i.e. SVD++) included.
        The model is fitted once on the rest with that share as ``valid``, then refitted on
        all ratings for the chosen number of epochs (twice the fit time). With ``valid``
        given, the best epoch on it is kept, the warm start again competing as epoch 0
        (:attr:`epochs_` after ``fit``). ``0``: all ``epochs``, no selection.

    Notes
    -----
    The defaults (no item bins, ``alpha_u``, ``b_{u,t}``, ``c_u(t)`` on, ``reg_time=0.05``,
    SVD++ warm start, then 8 Adam epochs at ``lr=0.002`` with ``lr_time=8``, ``reg_day=10``)
    are the best of small grids on a validation split carved from ML-100K ``u1.base``
    (``validation_split(fraction=0.1, seed=0)``: 0.9051 against 0.9044 for the earlier
    ``lr=0.005, lr_time=3``, no ``reg_day``, raw-``dev`` drift); item bins and the factor
    terms did not help there (7 months of data, most users rating in a single session, ~33
    ratings per user-day). On data spread over decades (ml-latest-small: 1.2 ratings per
    user-day, ``|dev|`` up to ~30) the unshrunk day terms and raw-``dev`` drift fitted noise:
    ``reg_day`` and ``dev_scale`` (see :class:`TimeBagNet`) and the smaller ``lr`` (a gentler
    restart of the warm-started SVD++ parameters) are what keep it near SVD++ there.

    ``predict(users, items, timestamps=...)`` and ``predict_ratings(data)`` (which passes
    ``data.timestamp``) are time-aware. Without timestamps (``predict(users, items)``,
    ``score_items``, ``recommend``) a user is predicted at their mean training time ``t_u``
    with the day terms at their defaults: the static model plus ``b_{i,Bin(t_u)}``.
    """

    asymmetric = False

    beta = 0.4  # Koren's cross-validated exponent of dev_u(t)

    # Search space of mfutils.tuning (Optuna): option -> ("log" | "float", low, high),
    # ("int", low, high[, "log"]) or ("choice", value, ...); around the defaults.
    SEARCH_SPACE = {
        "n_factors": ("int", 8, 64, "log"),
        "lr": ("log", 0.0005, 0.02),
        "reg": ("log", 0.015, 1.0),
        "reg_time": ("log", 0.005, 0.5),
        "reg_day": ("log", 1.0, 100.0),
        "lr_time": ("log", 0.5, 20.0),
        "epochs": ("int", 4, 24),
    }

    def __init__(
        self,
        n_factors: int = 20,
        *,
        item_bins: int | None = None,
        user_drift: bool = True,
        user_day_bias: bool = True,
        scale: bool = True,
        factor_drift: bool = False,
        factor_day: bool = False,
        reg_time: float = 0.05,
        reg_time_factors: float = 1.0,
        reg_day: float = 10.0,
        lr_time: float = 8.0,
        epochs: int = 8,
        lr: float = 0.002,
        lr_decay: float = 1.0,
        reg: float = 0.15,
        reg_bias: float = 0.15,
        reg_implicit: float = 0.01,
        batch_size: int = 8192,
        optimizer: str = "adam",
        init_std: float = 0.1,
        warm_start: str = "svdpp",
        warm_start_options: dict[str, Any] | None = None,
        patience: int | None = None,
        valid_fraction: float = 0.1,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        if warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start={warm_start!r}; choose one of {WARM_STARTS}")
        if item_bins is not None and item_bins < 1:
            raise ValueError(f"item_bins={item_bins} must be >= 1 or None")
        super().__init__(
            n_factors,
            epochs=epochs,
            lr=lr,
            lr_decay=lr_decay,
            reg=reg,
            reg_bias=reg_bias,
            reg_implicit=reg_implicit,
            batch_size=batch_size,
            optimizer=optimizer,
            init_std=init_std,
            warm_start=warm_start != "none",
            warm_start_options=warm_start_options,
            patience=patience,
            valid_fraction=valid_fraction,
            seed=seed,
            progress=progress,
            device=device,
            clip=clip,
        )

    # ------------------------------------------------------------------ building / fitting
    def _build(self, n_users: int, n_items: int) -> None:
        c = self.config
        empty = UserItemCSR.empty(n_users, n_items, device=self.device)
        self.net = TimeBagNet(
            n_users,
            n_items,
            c["n_factors"],
            csr=getattr(self, "_bag_csr", empty),
            mu=0.0,
            reg=c["reg"],
            reg_bias=c["reg_bias"],
            reg_implicit=c["reg_implicit"],
            n_user_days=getattr(self, "_n_user_days", 0),
            item_bins=c["item_bins"],
            user_drift=c["user_drift"],
            user_day_bias=c["user_day_bias"],
            scale=c["scale"],
            factor_drift=c["factor_drift"],
            factor_day=c["factor_day"],
            reg_time=c["reg_time"],
            reg_time_factors=c["reg_time_factors"],
            reg_day=c["reg_day"],
            lr_time=c["lr_time"],
            dev_scale=getattr(self, "_dev_scale", 1.0),
            init_std=c["init_std"],
            device=self.device,
            generator=torch.Generator(device=self.device).manual_seed(c["seed"]),
        )

    def _restore(self, ckpt, path) -> None:
        self._n_user_days = len(ckpt["state"]["net.user_day_keys"])
        self._dev_scale = float(ckpt["state"].get("net.dev_scale", 1.0))
        super()._restore(ckpt, path)

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        epochs = self._epochs_to_run(train, valid, weights)
        self._bag_csr = UserItemCSR.from_pairs(
            train.user,
            train.item,
            n_users=train.n_users,
            n_items=train.n_items,
            values=np.zeros(len(train), dtype=np.float32),
            device=self.device,
        )
        day = train.timestamp // DAY  # shape: (n,) calendar day (UTC) of every rating
        day0, n_days = int(day.min()), int(day.max() - day.min() + 1)
        keys, day_count = np.unique(
            train.user.astype(np.int64) * n_days + (day - day0), return_counts=True
        )  # shape: (n_ud,), (n_ud,)
        t = (train.timestamp - day0 * DAY) / DAY  # shape: (n,) days since day0, float64
        counts = np.bincount(train.user, minlength=train.n_users)
        t_u = np.bincount(train.user, weights=t, minlength=train.n_users)
        t_u = np.where(counts > 0, t_u / np.maximum(counts, 1), t.mean())  # shape: (n_users,)
        dev = np.abs(t - t_u[train.user]) ** self.beta  # shape: (n,) |dev_u(t)|
        self._n_user_days = len(keys)
        self._dev_scale = max(float(np.sqrt(np.mean(dev**2))), 1e-3)
        self._build(train.n_users, train.n_items)
        net = self.net
        net.set_day_counts(torch.as_tensor(day_count, dtype=torch.float32, device=self.device))
        net.day0.fill_(day0)
        net.n_days.fill_(n_days)
        net.user_mean_day.copy_(torch.as_tensor(t_u, dtype=torch.float32))
        net.user_day_keys.copy_(torch.as_tensor(keys))
        net.mu.fill_(float(self.mu))
        if c["warm_start"] == "mf":
            self._warm_start(train)
        elif c["warm_start"] == "svdpp":
            self._warm_start_svdpp(train)
        self._train_from_start(
            self._time_batch(train, weights),
            None if valid is None else self._time_batch(valid, None),
            epochs,
        )

    def _time_batch(self, data: Ratings, weights: np.ndarray | None) -> dict[str, torch.Tensor]:
        """``user, item, rating`` plus the precomputed ``bin, dev, user_day`` columns."""
        tensors = data.tensors(self.device)
        out = {k: tensors[k] for k in ("user", "item", "rating")}
        out.update(self.net.time_features(out["user"], tensors["timestamp"]))
        if weights is not None:
            out["weight"] = torch.as_tensor(weights, device=self.device)
        return out

    def _warm_start_svdpp(self, train: Ratings) -> None:
        """Copy biases, ``p_u``, ``q_i`` and ``y_j`` of an :class:`SVDpp` fit."""
        c = self.config
        svdpp = SVDpp(
            c["n_factors"],
            reg=c["reg"],
            reg_bias=c["reg_bias"],
            reg_implicit=c["reg_implicit"],
            seed=c["seed"],
            device=self.device,
            clip=False,
        ).fit(train)
        with torch.no_grad():
            for name in ("user_bias", "item_bias", "item_factors", "implicit", "user_factors"):
                getattr(self.net, name).weight.copy_(getattr(svdpp.net, name).weight)

    # ------------------------------------------------------------------ prediction
    def _predict_known(self, user, item, user_known, item_known):
        return self._predict_at(user, item, user_known, item_known, None)

    def _predict_at(self, user, item, user_known, item_known, timestamp):
        feats = self.net.time_features(user, timestamp)
        return self.net.predict_rows(user, item, feats, user_known, item_known)

    @torch.no_grad()
    def predict_tensor(
        self, user: torch.Tensor, item: torch.Tensor, timestamp: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predictions for compact id tensors at unix-second ``timestamp`` (or ``t_u``)."""
        self._require_fitted()
        safe_user, safe_item, user_known, item_known = self._known(user, item)
        pred = self._predict_at(safe_user, safe_item, user_known, item_known, timestamp)
        return self._output(pred)

    def predict(
        self,
        users: np.ndarray | list[int],
        items: np.ndarray | list[int],
        *,
        timestamps: np.ndarray | list[int] | None = None,
        batch_size: int = 1 << 18,
    ) -> np.ndarray:
        """Predicted ratings at ``timestamps`` (unix seconds), as a float32 array.

        Without ``timestamps`` each user is predicted at their mean training time with the day
        terms at their defaults. Unknown ids fall back as in :meth:`ExplicitModel.predict`
        (``mu + b_i(t)``, ``mu + b_u(t)``, ``mu``).
        """
        user = torch.as_tensor(np.asarray(users), dtype=torch.long, device=self.device)
        item = torch.as_tensor(np.asarray(items), dtype=torch.long, device=self.device)
        if user.shape != item.shape or user.dim() != 1:
            raise ValueError(
                f"users and items must be 1-d and equally long; got "
                f"{tuple(user.shape)} and {tuple(item.shape)}"
            )
        stamp = None
        if timestamps is not None:
            stamp = torch.as_tensor(np.asarray(timestamps), dtype=torch.long, device=self.device)
            if stamp.shape != user.shape:
                raise ValueError(
                    f"timestamps has shape {tuple(stamp.shape)}; expected {tuple(user.shape)}"
                )
        parts = [
            self.predict_tensor(
                user[lo : lo + batch_size],
                item[lo : lo + batch_size],
                None if stamp is None else stamp[lo : lo + batch_size],
            )
            for lo in range(0, len(user), batch_size)
        ]
        return torch.cat(parts).cpu().numpy() if parts else np.empty(0, dtype=np.float32)

    def predict_ratings(self, data: Ratings) -> np.ndarray:
        """Time-aware predictions for every row of ``data`` (uses ``data.timestamp``)."""
        return self.predict(data.user, data.item, timestamps=data.timestamp)

    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Every item's score for ``users`` at their mean training time, (B, n_items).

        The time terms are per (user, item), so this takes the base class's path through
        :meth:`predict_tensor` instead of SVD++'s single matrix product.
        """
        return ExplicitModel.score_items(self, users)
