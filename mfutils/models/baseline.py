"""Baseline estimates ``b_ui = mu + b_u + b_i`` (Koren 2008 eq. 1; KorenBell-HB §5.2.1).

Three ways to fit the biases:

* ``shrunk`` -- Koren's decoupled shrunk means, items first, then users:
  ``b_i = sum_{u in R(i)} (r_ui - mu) / (lambda_2 + |R(i)|)`` and
  ``b_u = sum_{i in R(u)} (r_ui - mu - b_i) / (lambda_3 + |R(u)|)``, one pass (typical
  Netflix values lambda_2 = 25, lambda_3 = 10).
* ``als`` -- the same two exact coordinate steps repeated, which converges to the regularized
  least-squares solution of ``sum (r_ui - mu - b_u - b_i)^2 + lambda_3 sum b_u^2 +
  lambda_2 sum b_i^2`` (what Surprise's ``BaselineOnly(method='als')`` iterates).
* ``sgd`` -- that objective with Koren's per-rating penalty, by SGD (``b_u <- b_u +
  gamma (e_ui - lambda_1 b_u)``), through the shared trainer.
"""

from __future__ import annotations

import numpy as np
import torch

from mfutils.data.container import Ratings
from mfutils.models.base import ExplicitModel
from mfutils.models.nets import BiasedMFNet
from mfutils.train import TrainConfig, fit

METHODS = ("shrunk", "als", "sgd")


class BaselineEstimates(ExplicitModel):
    """``mu + b_u + b_i`` fitted by shrunk means, alternating least squares or SGD.

    Parameters
    ----------
    method : {"shrunk", "als", "sgd"}
    reg_item, reg_user : float, optional
        ``lambda_2`` (items) and ``lambda_3`` (users) of the shrunk means and the ALS solve.
        Defaults: Koren's Netflix constants 25 / 10 for ``shrunk``; 2 / 5 for ``als``, the
        best of a grid on a validation split carved from ML-100K ``u1.base`` (notebook 01).
    epochs : int, optional
        Passes: the alternating ones of ``shrunk`` (default 1, Koren's single pass) and
        ``als`` (default 10), or SGD's epochs (default 20).
    reg, lr, batch_size : float, float, int
        SGD only: ``lambda_1`` per rating, step ``gamma`` and minibatch size.
    seed, progress, device, clip
        As in :class:`mfutils.models.base.ExplicitModel`.
    """

    # Search space of mfutils.tuning (Optuna), per method, around the defaults of __init__:
    # option -> ("log" | "float", low, high), ("int", low, high[, "log"]) or ("choice", ...).
    SEARCH_SPACE = {
        "shrunk": {"reg_item": ("log", 2.5, 250.0), "reg_user": ("log", 1.0, 100.0)},
        "als": {"reg_item": ("log", 0.2, 20.0), "reg_user": ("log", 0.5, 50.0)},
        "sgd": {"reg": ("log", 0.002, 0.2), "lr": ("log", 0.0005, 0.05), "epochs": ("int", 5, 60)},
    }

    def __init__(
        self,
        *,
        method: str = "als",
        reg_item: float | None = None,
        reg_user: float | None = None,
        epochs: int | None = None,
        reg: float = 0.02,
        lr: float = 0.005,
        batch_size: int = 256,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if method not in METHODS:
            raise ValueError(f"method={method!r}; choose one of {METHODS}")
        default_item, default_user = (25.0, 10.0) if method == "shrunk" else (2.0, 5.0)
        reg_item = default_item if reg_item is None else reg_item
        reg_user = default_user if reg_user is None else reg_user
        if reg_item < 0 or reg_user < 0:
            raise ValueError(f"reg_item={reg_item} and reg_user={reg_user} must be >= 0")
        if epochs is None:
            epochs = {"shrunk": 1, "als": 10, "sgd": 20}[method]
        if epochs < 1:
            raise ValueError(f"epochs={epochs} must be >= 1 (None: the method's default)")
        self.config.update(reg_item=reg_item, reg_user=reg_user, epochs=epochs)  # resolved

    def _build(self, n_users: int, n_items: int) -> None:
        c = self.config
        self.net = BiasedMFNet(
            n_users, n_items, 0, mu=0.0, reg=c["reg"], reg_bias=c["reg"], device=self.device
        )

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        self.net.mu.copy_(self.mu)
        data = train.tensors(self.device)
        if weights is not None:
            data["weight"] = torch.as_tensor(weights, device=self.device)
        if c["method"] == "sgd":
            config = TrainConfig(
                epochs=c["epochs"],
                batch_size=c["batch_size"],
                optimizer="funk",
                lr=c["lr"],
                seed=c["seed"],
                progress=c["progress"],
            )
            self.history = fit(
                self.net,
                data,
                config=config,
                valid=None if valid is None else valid.tensors(self.device),
            )
            return
        self._fit_alternating(data)

    @torch.no_grad()
    def _fit_alternating(self, data: dict[str, torch.Tensor]) -> None:
        c = self.config
        user, item = data["user"], data["item"]  # shape: (n,)
        weight = data.get("weight", torch.ones_like(data["rating"]))
        residual = data["rating"] - self.mu  # shape: (n,)
        item_den = torch.bincount(item, weights=weight, minlength=self.n_items) + c["reg_item"]
        user_den = torch.bincount(user, weights=weight, minlength=self.n_users) + c["reg_user"]
        b_u = torch.zeros(self.n_users, device=self.device)
        for _ in range(c["epochs"]):
            b_i = torch.bincount(
                item, weights=weight * (residual - b_u[user]), minlength=self.n_items
            ) / item_den.clamp(min=1e-12)
            b_u = torch.bincount(
                user, weights=weight * (residual - b_i[item]), minlength=self.n_users
            ) / user_den.clamp(min=1e-12)
        self.net.user_bias.weight[:, 0] = b_u
        self.net.item_bias.weight[:, 0] = b_i

    def _predict_known(self, user, item, user_known, item_known):
        b_u = self.net.user_bias.weight[user, 0] * user_known  # shape: (n,)
        b_i = self.net.item_bias.weight[item, 0] * item_known  # shape: (n,)
        return self.mu + b_u + b_i

    @torch.no_grad()
    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """``mu + b_u + b_i`` for every item by broadcasting, shape (len(users), n_items)."""
        self._require_fitted()
        safe, known = self._known_users(users)
        b_u = self.net.user_bias.weight[safe, 0] * known  # shape: (B,)
        b_i = self.net.item_bias.weight[:, 0] * self.item_known  # shape: (n_items,)
        return self._output(self.mu + b_u[:, None] + b_i[None, :])

    @property
    def user_bias(self) -> np.ndarray:
        """Learned ``b_u``, shape (n_users,)."""
        return self.net.user_bias.weight[:, 0].detach().cpu().numpy()

    @property
    def item_bias(self) -> np.ndarray:
        """Learned ``b_i``, shape (n_items,)."""
        return self.net.item_bias.weight[:, 0].detach().cpu().numpy()
