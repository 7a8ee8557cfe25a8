"""Biased matrix factorization ("SVD", Funk 2006; Koren, Bell & Volinsky 2009, eq. 5).

    r_hat_ui = mu + b_u + b_i + q_i^T p_u

trained by per-rating SGD (``method="sgd"``, Funk's update rules, vectorized per minibatch),
by Adam on the same objective (``method="adam"``), or by alternating least squares with the
biases in the solve (``method="als"``, optionally ALS-WR's weighted lambda).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from mfutils.data.container import Ratings
from mfutils.models import als
from mfutils.models.base import ExplicitModel
from mfutils.models.nets import BiasedMFNet
from mfutils.train import TrainConfig, fit, rmse_metric

METHODS = ("sgd", "adam", "als")


class BiasedMF(ExplicitModel):
    """Biased matrix factorization with ``fit`` / ``predict`` / ``recommend``.

    Parameters
    ----------
    n_factors : int
        Latent dimension ``f``.
    method : {"sgd", "adam", "als"}
        ``sgd``: Funk/Koren per-rating SGD (``lr`` is Koren's gamma); ``adam``: Adam on the
        mean per-row objective; ``als``: alternating ridge solves, ``epochs`` sweeps.
    epochs, batch_size, lr, lr_decay : int, int, float, float
        Training schedule (``lr``, ``batch_size`` unused by ALS).
    reg : float
        Penalty ``lambda`` on the factors, per rating (Koren's lambda_4 = 0.02 on Netflix; on
        ML-100K more is better, see notebook 02).
    reg_bias : float, optional
        Penalty on the biases; defaults to ``reg``.
    weighted_reg : bool
        ALS only: ALS-WR's ``lambda n_u`` penalty (Zhou et al. 2008).
    init, init_std : str, float
        Factor initializer (``normal``, ``uniform``, ``xavier``, ``zeros``) and scale.
    user_embeddings, item_embeddings : array, optional
        Pretrained factor tables, shape ``(n_users, f)`` / ``(n_items, f)``, to start from.
    freeze_users, freeze_items : bool
        Keep that side's factors and biases fixed during training.
    binary : bool
        Logistic output for 0/1 preferences: ``sigmoid(mu + b_u + b_i + p_u.q_i)`` trained with
        the log loss (``sgd``/``adam`` only).
    patience : int, optional
        Early stopping on the validation split given to ``fit``.
    seed : int
        Seeds the initialization and the batch order.
    progress : bool
        Progress bar over epochs.
    device : str or torch.device, optional
    clip : bool
        Clip predictions to the rating scale.
    """

    supports_binary = True

    # Search space of mfutils.tuning (Optuna), per method (the defaults are _DEFAULTS below):
    # option -> ("log" | "float", low, high), ("int", low, high[, "log"]) or ("choice", ...).
    SEARCH_SPACE = {
        "sgd": {
            "n_factors": ("int", 8, 128, "log"),
            "lr": ("log", 0.003, 0.05),
            "reg": ("log", 0.01, 0.5),
            "epochs": ("int", 10, 60),
        },
        "adam": {
            "n_factors": ("int", 8, 128, "log"),
            "lr": ("log", 0.0005, 0.05),
            "reg": ("log", 0.015, 1.0),
            "epochs": ("int", 10, 60),
        },
        "als": {
            "n_factors": ("int", 8, 128, "log"),
            "reg": ("log", 0.015, 1.5),
            "epochs": ("int", 5, 30),
        },
    }

    def __init__(
        self,
        n_factors: int = 20,
        *,
        method: str = "sgd",
        epochs: int | None = None,
        batch_size: int = 1024,
        lr: float | None = None,
        lr_decay: float = 1.0,
        reg: float | None = None,
        reg_bias: float | None = None,
        weighted_reg: bool = True,
        init: str = "normal",
        init_std: float = 0.1,
        user_embeddings: np.ndarray | torch.Tensor | None = None,
        item_embeddings: np.ndarray | torch.Tensor | None = None,
        freeze_users: bool = False,
        freeze_items: bool = False,
        binary: bool = False,
        patience: int | None = None,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if method not in METHODS:
            raise ValueError(f"method={method!r}; choose one of {METHODS}")
        if n_factors < 1:
            raise ValueError(f"n_factors={n_factors} must be >= 1 (use BaselineEstimates for 0)")
        if binary and method == "als":
            raise ValueError("binary=True needs the log loss: use method='sgd' or 'adam'")
        defaults = _DEFAULTS[method]
        epochs = defaults["epochs"] if epochs is None else epochs  # None: default; 0 is 0
        lr = defaults["lr"] if lr is None else lr
        if epochs < 1:
            raise ValueError(f"epochs={epochs} must be >= 1 (None: the method's default)")
        reg = defaults["reg"] if reg is None else reg
        reg_bias = reg if reg_bias is None else reg_bias
        self.config.update(epochs=epochs, lr=lr, reg=reg, reg_bias=reg_bias)  # resolved
        self._pretrained = {"user": user_embeddings, "item": item_embeddings}

    # ------------------------------------------------------------------ building
    def _build(self, n_users: int, n_items: int) -> None:
        c = self.config
        generator = torch.Generator(device=self.device).manual_seed(c["seed"])
        self.net = BiasedMFNet(
            n_users,
            n_items,
            c["n_factors"],
            mu=0.0,
            reg=c["reg"],
            reg_bias=c["reg_bias"],
            init=c["init"],
            init_std=c["init_std"],
            freeze_users=c["freeze_users"],
            freeze_items=c["freeze_items"],
            device=self.device,
            generator=generator,
        )
        for side, table, n in (
            ("user", self.net.user_factors, n_users),
            ("item", self.net.item_factors, n_items),
        ):
            pretrained = self._pretrained[side]
            if pretrained is None:
                continue
            values = torch.as_tensor(pretrained, dtype=torch.float32, device=self.device)
            if tuple(values.shape) != (n, c["n_factors"]):
                raise ValueError(
                    f"{side}_embeddings has shape {tuple(values.shape)}; expected "
                    f"({n}, n_factors={c['n_factors']})"
                )
            with torch.no_grad():
                table.weight.copy_(values)

    # ------------------------------------------------------------------ training
    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        mu = float(self.mu)
        if c["binary"]:
            rate = min(max(mu, 1e-4), 1 - 1e-4)
            mu = math.log(rate / (1 - rate))
        self.net.mu.fill_(mu)
        self.mu.fill_(mu)
        data = train.tensors(self.device)
        if weights is not None:
            data["weight"] = torch.as_tensor(weights, device=self.device)
        if c["method"] == "als":
            self.history = self._fit_als(data, valid)
            return
        config = TrainConfig(
            epochs=c["epochs"],
            batch_size=c["batch_size"],
            optimizer="funk" if c["method"] == "sgd" and not c["binary"] else c["method"],
            lr=c["lr"],
            lr_decay=c["lr_decay"],
            loss="bce" if c["binary"] else "mse",
            patience=c["patience"],
            seed=c["seed"],
            progress=c["progress"],
        )
        columns = ("user", "item", "rating", "weight")
        self.history = fit(
            self.net,
            {k: v for k, v in data.items() if k in columns},
            config=config,
            valid=None if valid is None else valid.tensors(self.device),
        )

    @torch.no_grad()
    def _fit_als(self, data: dict[str, torch.Tensor], valid: Ratings | None) -> pd.DataFrame:
        c = self.config
        user, item, rating = data["user"], data["item"], data["rating"]
        weight = data.get("weight", torch.ones_like(rating))
        by_user = als.build_side(user, item, self.n_users, self.n_items)
        by_item = als.build_side(item, user, self.n_items, self.n_users)
        net, mu = self.net, self.mu
        p, q = net.user_factors.weight.data, net.item_factors.weight.data
        b_u, b_i = net.user_bias.weight.data[:, 0], net.item_bias.weight.data[:, 0]
        options = {"reg": c["reg"], "reg_bias": c["reg_bias"], "weighted_reg": c["weighted_reg"]}
        valid_data = None if valid is None else valid.tensors(self.device)
        rows, start = [], time.perf_counter()
        for sweep in range(1, c["epochs"] + 1):
            if not c["freeze_users"]:
                theta = als.solve_side(
                    by_user, weight, weight * (rating - mu - b_i[item]), q, **options
                )  # shape: (n_users, f+1)
                p.copy_(theta[:, :-1])
                b_u.copy_(theta[:, -1])
            if not c["freeze_items"]:
                phi = als.solve_side(
                    by_item, weight, weight * (rating - mu - b_u[user]), p, **options
                )  # shape: (n_items, f+1)
                q.copy_(phi[:, :-1])
                b_i.copy_(phi[:, -1])
            record = {"epoch": sweep, "train_rmse": rmse_metric(net, data)}
            if valid_data is not None:
                record["valid"] = rmse_metric(net, valid_data)
            rows.append({**record, "seconds": time.perf_counter() - start})
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ prediction
    def _predict_known(self, user, item, user_known, item_known):
        net = self.net
        b_u = net.user_bias.weight[user, 0] * user_known  # shape: (n,)
        b_i = net.item_bias.weight[item, 0] * item_known  # shape: (n,)
        dot = (net.user_factors.weight[user] * net.item_factors.weight[item]).sum(1)
        return self.mu + b_u + b_i + dot * (user_known & item_known)

    @torch.no_grad()
    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """All items' scores for ``users`` as one matrix product, shape (len(users), n_items)."""
        self._require_fitted()
        safe, known = self._known_users(users)  # shape: (B,), (B,)
        net = self.net
        p_u = net.user_factors.weight[safe] * known[:, None]  # shape: (B, f)
        b_u = net.user_bias.weight[safe, 0] * known  # shape: (B,)
        b_i = net.item_bias.weight[:, 0] * self.item_known  # shape: (n_items,)
        q = net.item_factors.weight * self.item_known[:, None]  # shape: (n_items, f)
        scores = self.mu + b_u[:, None] + b_i[None, :] + p_u @ q.T  # shape: (B, n_items)
        return self._output(scores)

    @property
    def user_embeddings(self) -> np.ndarray:
        """Learned user factors ``P``, shape (n_users, f)."""
        return self.net.user_factors.weight.detach().cpu().numpy()

    @property
    def item_embeddings(self) -> np.ndarray:
        """Learned item factors ``Q``, shape (n_items, f)."""
        return self.net.item_factors.weight.detach().cpu().numpy()


# Defaults chosen on a validation split carved from u1.base (notebook 02), not on test.
_DEFAULTS = {
    "sgd": {"epochs": 20, "lr": 0.015, "reg": 0.08},
    "adam": {"epochs": 20, "lr": 0.005, "reg": 0.15},
    "als": {"epochs": 10, "lr": 0.0, "reg": 0.15},
}
