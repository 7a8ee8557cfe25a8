r"""Neural Network Matrix Factorization (G. K. Dziugaite, D. M. Roy, *Neural Network Matrix
Factorization*, arXiv:1511.06443, 2015).

Every user ``n`` has latent features :math:`U_n\in\mathbb R^D` and
:math:`U'_n\in\mathbb R^{D'\times K}`, every item ``m`` has :math:`V_m` and :math:`V'_m` of the
same shapes. A feed-forward network :math:`f_\theta` replaces the inner product of MF (§2):

.. math::

    \hat X_{nm} = f_\theta\big(U_n,\; V_m,\;
        \langle U'_{n,1},V'_{m,1}\rangle,\dots,\langle U'_{n,D'},V'_{m,D'}\rangle\big),

with :math:`U'_{n,d}` the ``d``-th row of :math:`U'_n`; for ``K = 1`` the last block is the
element-wise product :math:`U'_n\odot V'_m`. :math:`f_\theta` has three hidden layers of 50
sigmoid units and a linear output; :math:`D=10`, :math:`D'=60`, ``K = 1`` (the paper's
ML-100K sizes as implemented by its reproductions). The objective is

.. math::

    \sum_{(n,m)\in J}(X_{nm}-\hat X_{nm})^2
      + \lambda\Big[\sum_n\big(\lVert U_n\rVert^2+\lVert U'_n\rVert_F^2\big)
                   + \sum_m\big(\lVert V_m\rVert^2+\lVert V'_m\rVert_F^2\big)\Big],

only the latent features penalised. Minibatches carry it exactly in expectation: each rating
of user ``n`` (``N_n`` training ratings) takes :math:`\lambda/N_n` of the user's penalty, so
an epoch adds up to the penalty above. Training alternates, as in the paper, between a step
on :math:`\theta` with the latents fixed and a step on the latents with :math:`\theta` fixed
(``TrainConfig(alternate=True)``), with RMSProp, and stops early on a held-out part of the
training data.

By default (``base="sgd"``) the network is fitted on top of a frozen biased MF
(:class:`mfutils.models.BiasedMF` at its defaults, fitted first on the same ratings):

.. math::

    \hat X_{nm} = \mu + b_n + b_m + p_n^\top q_m + f_\theta(\dots),

so :math:`f_\theta` learns what biased MF leaves, and the base alone competes as epoch 0 of the
early stopping. The paper's model (``base=None``) has no bias terms, and where the factors
explain little beyond the biases it fits noise: on an ml-latest-small-shaped replica it is
worse than the baseline estimates at its defaults however it is set (the measurements are in
``tests/test_every_release.py``). Stacking a learned correction on a fitted base is the series'
warm start pattern (SVD++ and timeSVD++ start from biased MF), with the base kept fixed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mfutils.data.container import Ratings
from mfutils.models.base import ExplicitModel, holdout_mask
from mfutils.models.mf import METHODS, BiasedMF
from mfutils.models.nets import BiasedMFNet
from mfutils.train import TrainConfig, capped_batch_size, fit, rmse_metric

__all__ = ["NNMF", "NNMFNet"]


class NNMFNet(nn.Module):
    """Latents ``U, U', V, V'`` and the network ``f_theta``; batches hold ``user``, ``item``.

    Parameters
    ----------
    n_users, n_items : int
    latent_dim, prime_dim, prime_rank : int
        ``D``, ``D'`` and ``K``.
    hidden : sequence of int
        Widths of the sigmoid hidden layers of ``f_theta``.
    reg : float
        ``lambda`` of the objective (on the summed squared error).
    user_counts, item_counts : Tensor, shape (n_users,), (n_items,)
        Training ratings per user and item (spread each penalty over the rows).
    mu : float
        Initial bias of the output unit (the mean rating).
    init_std : float
        Standard deviation of the Gaussian latent initialisation.
    base_factors : int or None
        Rank of the frozen biased MF whose prediction ``f_theta`` corrects (``base``, a
        :class:`~mfutils.models.nets.BiasedMFNet` filled after its own fit); ``None``: none,
        the paper's ``f_theta`` alone.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        latent_dim: int,
        prime_dim: int,
        prime_rank: int,
        hidden: tuple[int, ...],
        reg: float,
        user_counts: torch.Tensor,
        item_counts: torch.Tensor,
        mu: float,
        init_std: float = 0.1,
        base_factors: int | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.base = None
        if base_factors is not None:
            self.base = BiasedMFNet(
                n_users, n_items, base_factors, mu=0.0, reg=0.0, reg_bias=0.0, device=device
            ).requires_grad_(False)
        self.reg = reg
        self.prime_dim, self.prime_rank = prime_dim, prime_rank
        self.user_latent = nn.Embedding(n_users, latent_dim, device=device)  # U
        self.item_latent = nn.Embedding(n_items, latent_dim, device=device)  # V
        self.user_prime = nn.Embedding(n_users, prime_dim * prime_rank, device=device)  # U'
        self.item_prime = nn.Embedding(n_items, prime_dim * prime_rank, device=device)  # V'
        with torch.no_grad():
            for table in self.latent_tables():
                table.weight.normal_(0.0, init_std, generator=generator)
        self.register_buffer("user_share", 1.0 / user_counts.float().clamp(min=1).to(device))
        self.register_buffer("item_share", 1.0 / item_counts.float().clamp(min=1).to(device))
        layers: list[nn.Module] = []
        width = 2 * latent_dim + prime_dim
        for size in hidden:
            layers += [nn.Linear(width, size, device=device), nn.Sigmoid()]
            width = size
        layers.append(nn.Linear(width, 1, device=device))
        self.mlp = nn.Sequential(*layers)  # f_theta
        with torch.no_grad():
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    # Glorot & Bengio (2010)'s range for sigmoid units, 4 sqrt(6 / (in + out)):
                    # PyTorch's default is too small, the latents then get no gradient through
                    # three saturating layers and the penalty alone shrinks them to zero.
                    nn.init.xavier_uniform_(layer.weight, gain=4.0, generator=generator)
                    layer.bias.zero_()
            self.mlp[-1].bias.fill_(mu)

    def latent_tables(self) -> tuple[nn.Embedding, ...]:
        return self.user_latent, self.item_latent, self.user_prime, self.item_prime

    def parameter_blocks(self) -> list[list[nn.Parameter]]:
        """The two blocks of the alternating optimisation: ``theta``, then the latents."""
        return [list(self.mlp.parameters()), [t.weight for t in self.latent_tables()]]

    def predict_from(
        self, u: torch.Tensor, v: torch.Tensor, u_prime: torch.Tensor, v_prime: torch.Tensor
    ) -> torch.Tensor:
        """``f_theta(U_n, V_m, <U'_n,d, V'_m,d>_d)`` for gathered rows, shape (B,)."""
        batch = len(u)
        prime = (
            u_prime.view(batch, self.prime_dim, self.prime_rank)
            * v_prime.view(batch, self.prime_dim, self.prime_rank)
        ).sum(-1)  # (B, D')
        features = torch.cat([u, v, prime], 1)  # shape: (B, 2D + D')
        return self.mlp(features)[:, 0]

    def base_score(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        user_known: torch.Tensor | bool = True,
        item_known: torch.Tensor | bool = True,
    ) -> torch.Tensor:
        """The frozen biased MF ``mu + b_n + b_m + p_n . q_m`` (0 without ``base``), shape (B,);
        an id not ``known`` drops its bias and the product, as :class:`BiasedMF` predicts."""
        if self.base is None:
            return torch.zeros(len(user), device=user.device)
        base = self.base
        b_u = base.user_bias.weight[user, 0] * user_known  # shape: (B,)
        b_i = base.item_bias.weight[item, 0] * item_known  # shape: (B,)
        dot = (base.user_factors.weight[user] * base.item_factors.weight[item]).sum(1)
        both = torch.as_tensor(user_known, device=user.device) & torch.as_tensor(
            item_known, device=user.device
        )
        return base.mu + b_u + b_i + dot * both

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user, item = batch["user"], batch["item"]  # shape: (B,)
        correction = self.predict_from(
            self.user_latent(user),
            self.item_latent(item),
            self.user_prime(user),
            self.item_prime(item),
        )
        return self.base_score(user, item) + correction

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row share ``lambda/2 (|U_n|^2 + |U'_n|^2) / N_n`` (and the item's), shape (B,).

        Halved like the trainer's squared error ``(x - x_hat)^2 / 2``, so the epoch's loss is
        half the paper's objective.
        """
        user, item = batch["user"], batch["item"]
        users = self.user_latent(user).pow(2).sum(1) + self.user_prime(user).pow(2).sum(1)
        items = self.item_latent(item).pow(2).sum(1) + self.item_prime(item).pow(2).sum(1)
        return 0.5 * self.reg * (users * self.user_share[user] + items * self.item_share[item])


class NNMF(ExplicitModel):
    """Neural network matrix factorization with ``fit`` / ``predict`` / ``recommend``.

    Parameters
    ----------
    n_factors, prime_dim, prime_rank : int
        ``D = 10`` (the width of ``U_n, V_m``), ``D' = 60``, ``K = 1`` as in the paper.
    hidden : sequence of int
        Hidden widths of ``f_theta``: three sigmoid layers of 50 in the paper.
    reg : float
        ``lambda`` on the summed squared error (reproductions of the paper use 40-50 with
        full-batch steps; chosen on validation here, notebook 10).
    epochs, batch_size, lr : int, int, float
        At most ``epochs`` passes; every minibatch takes one RMSProp step on ``theta`` and then
        one on the latents.
    min_batches : int or None
        Caps ``batch_size`` at ``ceil(n / min_batches)`` for ``n`` fit ratings
        (:func:`mfutils.train.capped_batch_size`): every epoch takes at least ``min_batches``
        alternating steps. ML-100K's 78k fit ratings keep their 77 batches of 1024; 16k
        ratings take 64 of ~250 instead of 16 of 1024, which stopped early far from converged
        (worse than the baseline estimates). ``None``: ``batch_size`` whatever ``n``.
    valid_fraction : float
        Share of the training ratings held out for early stopping when ``fit`` gets no
        ``valid`` (the reproductions hold out 2%); ``0`` trains all ``epochs`` on everything.
    min_valid : int
        Floor on that held-out count (never more than a fifth of the ratings): 2% of 16k
        ratings is 320, whose RMSE is noisy enough that ``patience`` stops on the early
        plateau at the mean rating. ML-100K's 2% (1,600) is above it; ``0``: 2% whatever.
    patience : int
        Epochs without improvement of the held-out RMSE before stopping (best epoch kept).
        ``10``: on a small release the held-out RMSE plateaus for more than 5 epochs before
        it falls again (5 stopped there, worse than the baseline estimates); on a validation
        split of ``u1.base`` 5 and 10 keep the same best epoch.
    init_std : float
        Standard deviation of the latent initialisation ``N(0, 0.1^2)``.
    base : {"sgd", "adam", "als"} or None
        ``f_theta`` corrects a frozen :class:`~mfutils.models.BiasedMF` of this ``method`` at
        its defaults, fitted first on the same (fit part of the) ratings; the base alone
        competes as epoch 0 on the held-out part, so a network that only fits noise is
        switched off (its output layer zeroed). ``None``: the paper's model, ``f_theta``
        alone (notebook 10 reproduces the paper with it). Measured with the defaults otherwise
        (RMSE; ml-latest-small-shaped replica, fold 1: paper 0.8624, ``"sgd"`` 0.8563,
        BiasedMF-SGD 0.8567; a validation tenth of ML-100K's ``u1.base``: 0.9070, 0.9019,
        0.9028; ML-1M-shaped replica, fold 1: 0.8166, 0.8252, 0.8280): the paper's network
        gains most where biased MF underfits, the stacked one is never worse than its base on
        the held-out part. ``"als"`` scored 0.8507, 0.9051 and 0.8596 there.
    seed, progress, device, clip
        As for :class:`mfutils.models.BiasedMF`.

    Notes
    -----
    The paper's NNMF has no bias terms to fall back on. A user (item) without training ratings
    is predicted with the *mean* latent features of the trained users (items), an "average
    user" seen through the learned network, plus (with ``base``) the base's prediction
    without that id's bias and factors.
    """

    # Search space of mfutils.tuning (Optuna): option -> ("log" | "float", low, high),
    # ("int", low, high[, "log"]) or ("choice", value, ...); around the defaults.
    SEARCH_SPACE = {
        "n_factors": ("int", 4, 40, "log"),
        "prime_dim": ("int", 15, 120, "log"),
        "reg": ("log", 3.0, 300.0),
        "lr": ("log", 0.0001, 0.01),
        "epochs": ("int", 20, 120),
    }

    def __init__(
        self,
        *,
        n_factors: int = 10,
        prime_dim: int = 60,
        prime_rank: int = 1,
        hidden: tuple[int, ...] = (50, 50, 50),
        reg: float = 30.0,
        epochs: int = 60,
        batch_size: int = 1024,
        min_batches: int | None = 64,
        lr: float = 1e-3,
        valid_fraction: float = 0.02,
        min_valid: int = 1000,
        patience: int = 10,
        init_std: float = 0.1,
        base: str | None = "sgd",
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        hidden = tuple(int(h) for h in hidden)
        if min(n_factors, prime_dim, prime_rank) < 1 or any(h < 1 for h in hidden):
            raise ValueError(
                f"n_factors={n_factors}, prime_dim={prime_dim}, "
                f"prime_rank={prime_rank} and hidden={hidden} must all be >= 1"
            )
        if not 0 <= valid_fraction < 1:
            raise ValueError(f"valid_fraction={valid_fraction} must lie in [0, 1)")
        if min_valid < 0:
            raise ValueError(f"min_valid={min_valid} must be >= 0")
        if reg < 0:
            raise ValueError(f"reg={reg} must be >= 0")
        if base is not None and base not in METHODS:
            raise ValueError(f"base={base!r}; choose one of {METHODS} or None")
        capped_batch_size(1, batch_size, min_batches)  # validates min_batches
        TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="rmsprop")

    def _build(self, n_users: int, n_items: int) -> None:
        c = self.config
        generator = torch.Generator(device=self.device).manual_seed(c["seed"])
        torch.manual_seed(c["seed"])  # nn.Linear draws its initial weights from the global RNG
        zeros_u = torch.zeros(n_users, device=self.device)
        zeros_i = torch.zeros(n_items, device=self.device)
        self.net = NNMFNet(
            n_users,
            n_items,
            latent_dim=c["n_factors"],
            prime_dim=c["prime_dim"],
            prime_rank=c["prime_rank"],
            hidden=c["hidden"],
            reg=c["reg"],
            user_counts=zeros_u,
            item_counts=zeros_i,
            mu=0.0,
            init_std=c["init_std"],
            base_factors=None if c["base"] is None else self._base_model().config["n_factors"],
            device=self.device,
            generator=generator,
        )

    def _base_model(self) -> BiasedMF:
        """The (unfitted) biased MF of ``base``: that method's defaults, this model's seed."""
        c = self.config
        return BiasedMF(method=c["base"], seed=c["seed"], device=self.device, clip=False)

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        if valid is None and c["valid_fraction"] > 0:
            held = holdout_mask(
                len(train),
                fraction=c["valid_fraction"],
                seed=c["seed"],
                min_count=c.get("min_valid", 0),
            )
            train, valid = train.subset(~held), train.subset(held)
            weights = None if weights is None else weights[~held]
            with torch.no_grad():  # ids whose every rating was held out are untrained
                self.user_known &= torch.as_tensor(train.user_counts() > 0, device=self.device)
                self.item_known &= torch.as_tensor(train.item_counts() > 0, device=self.device)
        net = self.net
        with torch.no_grad():
            net.user_share.copy_(
                1.0 / torch.as_tensor(train.user_counts(), device=self.device).float().clamp(min=1)
            )
            net.item_share.copy_(
                1.0 / torch.as_tensor(train.item_counts(), device=self.device).float().clamp(min=1)
            )
            net.mlp[-1].bias.fill_(0.0 if net.base is not None else train.global_mean)
        if net.base is not None:
            base = self._base_model().fit(train, weights=weights)
            net.base.load_state_dict(base.net.state_dict())
        data = {
            k: v for k, v in train.tensors(self.device).items() if k in ("user", "item", "rating")
        }
        if weights is not None:
            data["weight"] = torch.as_tensor(weights, device=self.device)
        config = TrainConfig(
            epochs=c["epochs"],
            optimizer="rmsprop",
            lr=c["lr"],
            batch_size=capped_batch_size(len(train), c["batch_size"], c.get("min_batches")),
            reduction="sum",
            alternate=True,
            patience=c["patience"] if valid else None,
            seed=c["seed"],
            progress=c["progress"],
        )
        valid_data = None if valid is None else valid.tensors(self.device)
        self.history = fit(net, data, config=config, valid=valid_data)
        if net.base is not None and valid_data is not None:
            self._base_competes(valid_data)

    @torch.no_grad()
    def _base_competes(self, valid: dict[str, torch.Tensor]) -> None:
        """Epoch 0 is the base alone (``f_theta``'s output layer zeroed): kept when no epoch
        predicts ``valid`` better. Records ``valid_start`` and ``best_epoch`` in ``history``."""
        net, output = self.net, self.net.mlp[-1]
        trained = (output.weight.clone(), output.bias.clone())
        output.weight.zero_()
        output.bias.zero_()
        start = float(rmse_metric(net, valid))
        self.history.attrs["valid_start"] = start
        if len(self.history) and start > self.history["valid"].min():
            output.weight.copy_(trained[0])
            output.bias.copy_(trained[1])
        else:
            self.history.attrs["best_epoch"] = 0

    def _predict_known(self, user, item, user_known, item_known):
        net = self.net

        def side(
            table: nn.Embedding, ids: torch.Tensor, known: torch.Tensor, trained: torch.Tensor
        ) -> torch.Tensor:
            mean = (table.weight * trained[:, None]).sum(0) / trained.sum().clamp(min=1)
            return torch.where(known[:, None], table(ids), mean)  # shape: (n, width)

        return net.base_score(user, item, user_known, item_known) + net.predict_from(
            side(net.user_latent, user, user_known, self.user_known),
            side(net.item_latent, item, item_known, self.item_known),
            side(net.user_prime, user, user_known, self.user_known),
            side(net.item_prime, item, item_known, self.item_known),
        )
