"""Koren's integrated model: SVD++ and the global neighbourhood model in one (Koren 2008 eq. 16).

    r_hat_ui = mu + b_u + b_i + q_i^T ( p_u + |N(u)|^{-1/2} sum_{j in N(u)} y_j )
             + |R^k(i;u)|^{-1/2} sum_{j in R^k(i;u)} (r_uj - b_uj) w_ij
             + |N^k(i;u)|^{-1/2} sum_{j in N^k(i;u)} c_ij

Three tiers: the baseline (``mu + b_u + b_i``), the latent factors with implicit feedback, and
the item-item neighbourhood. The net reuses :class:`~mfutils.models.nets.ItemBagNet` for the
first two and :class:`~mfutils.models.neighborhood.GlobalNeighborhoodNet` for the third (whose
own biases are left out: the tiers share one ``b_u, b_i``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mfutils.data.container import Ratings, UserItemCSR
from mfutils.models.base import ExplicitModel
from mfutils.models.neighborhood import GlobalNeighborhood, GlobalNeighborhoodNet
from mfutils.models.nets import ItemBagNet
from mfutils.models.svdpp import SVDpp
from mfutils.train import TrainConfig, fit


class IntegratedNet(nn.Module):
    """Sum of an SVD++ net and the neighbourhood terms of a global neighbourhood net."""

    def __init__(self, factors: ItemBagNet, neighbors: GlobalNeighborhoodNet) -> None:
        super().__init__()
        self.factors, self.neighbors = factors, neighbors
        neighbors.user_bias.requires_grad_(False)  # the tiers share the SVD++ biases
        neighbors.item_bias.requires_grad_(False)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        neighbors = self.neighbors
        return self.factors(batch) + neighbors.neighborhood(
            batch["user"], batch["item"], neighbors.batch_lookup(batch)
        )

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """SVD++'s per-rating penalty plus ``lambda_8 (sum w_ij^2 + sum c_ij^2) / 2``."""
        return self.factors.penalty(batch) + self.neighbors.neighborhood_penalty(batch)


SCHEDULES = ("stagewise", "tiers")


class IntegratedModel(ExplicitModel):
    """The integrated model (Koren 2008 eq. 16) with ``fit`` / ``predict`` / ``recommend``.

    ``fit`` trains the three tiers in stages, each with the shared trainer:

    1. the factor tier: :class:`SVDpp` (itself warm-started from biased MF) with its biases;
    2. the neighbourhood tier on top of it (``schedule="stagewise"``): ``w_ij = c_ij = 0``
       over the neighbour table of :class:`GlobalNeighborhood`, then Koren's SGD rules
       (Koren 2008 §3) for ``w, c`` -- and optionally a correction of ``b_u, b_i`` -- with
       SVD++'s prediction as the fixed offset of every training rating, i.e. what the factors
       leave unexplained;
    3. optionally ``epochs`` passes of joint training of all parameters (Adam, whole-user
       batches), starting from the sum.

    ``schedule="tiers"`` instead fits :class:`GlobalNeighborhood` on its own in step 2 and
    adds its ``w, c`` to SVD++ (its own biases are dropped), which counts the user and item
    effects twice until the joint passes of step 3 sort it out.

    Parameters
    ----------
    n_factors : int
        Latent dimension of the factor tier.
    k : int
        Neighbourhood size ``|S^k(i)|`` of the neighbourhood tier.
    schedule : {"stagewise", "tiers"}
        How step 2 starts the neighbourhood tier (see above).
    neighbor_epochs, neighbor_lr, neighbor_batch_size : int, float, int
        Koren's per-rating SGD (``optimizer="funk"``) of step 2: passes, step ``gamma_3``
        and ratings per step.
    reg_neighbors : float
        ``lambda_8`` on ``w_ij, c_ij``, per rating (steps 2 and 3).
    neighbor_biases : bool
        Also learn a correction of ``b_u, b_i`` in step 2 (penalty ``reg_neighbor_bias``);
        it is folded into the shared biases afterwards.
    reg_neighbor_bias : float
        Per-rating penalty on that correction.
    epochs, lr, batch_size : int, float, int
        Joint training of step 3 (Adam on batches of whole users); ``epochs=0`` skips it.
    svdpp_options : dict, optional
        Options of the :class:`SVDpp` fit of step 1.
    neighborhood_options : dict, optional
        Options of :class:`GlobalNeighborhood`: the neighbour table (``shrinkage``,
        ``baseline_options``) and, with ``schedule="tiers"``, its own training.
    seed, progress, device, clip
        As in :class:`~mfutils.models.mf.BiasedMF`.

    Notes
    -----
    The defaults (step 2 with the bias correction, 15 passes at ``gamma = 0.005`` on 4096
    ratings per step, ``lambda_8 = 0.002``, no joint passes) are the best of small grids on
    random 10% validation splits carved from ML-100K ``u1.base`` and ``u4.base``: validation
    RMSE 0.910 and 0.897 against SVD++'s 0.919 and 0.908. Joint Adam passes after step 2
    changed it by less than 0.0005 (up or down), and ``schedule="tiers"`` reached only 0.916
    on ``u1.base`` -- it hurts users with few ratings (notebook 05).
    """

    # Search space of mfutils.tuning (Optuna): option -> ("log" | "float", low, high),
    # ("int", low, high[, "log"]) or ("choice", value, ...); around the defaults.
    SEARCH_SPACE = {
        "n_factors": ("int", 8, 64, "log"),
        "neighbor_lr": ("log", 0.001, 0.02),
        "reg_neighbors": ("log", 0.0002, 0.02),
        "reg_neighbor_bias": ("log", 0.002, 0.2),
        "neighbor_epochs": ("int", 5, 45),
    }

    def __init__(
        self,
        n_factors: int = 20,
        *,
        k: int = 100,
        schedule: str = "stagewise",
        neighbor_epochs: int = 15,
        neighbor_lr: float = 0.005,
        neighbor_batch_size: int = 4096,
        reg_neighbors: float = 0.002,
        neighbor_biases: bool = True,
        reg_neighbor_bias: float = 0.02,
        epochs: int = 0,
        lr: float = 0.002,
        batch_size: int = 8192,
        svdpp_options: dict[str, Any] | None = None,
        neighborhood_options: dict[str, Any] | None = None,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r}; choose one of {SCHEDULES}")
        if epochs < 0 or neighbor_epochs < 1:
            raise ValueError(
                f"need epochs >= 0 and neighbor_epochs >= 1; got {epochs} and {neighbor_epochs}"
            )
        if (svdpp_options or {}).get("user_attributes"):
            raise ValueError(
                "svdpp_options: user_attributes are not supported by the integrated model"
            )
        self.config.update(
            svdpp_options=dict(svdpp_options or {}),
            neighborhood_options=dict(neighborhood_options or {}),
        )
        TrainConfig(optimizer="adam", lr=lr, batch_size=batch_size)  # validate the options now
        TrainConfig(optimizer="funk", lr=neighbor_lr, batch_size=neighbor_batch_size)

    def _build(self, n_users: int, n_items: int) -> None:
        """Empty tiers of the right shapes (filled by ``_fit`` or a checkpoint)."""
        c, shapes = self.config, getattr(self, "_shapes", {"nnz": 0, "k": 1})

        def empty(dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shapes["nnz"], dtype=dtype, device=self.device)

        indptr = getattr(self, "_indptr", None)
        if indptr is None:
            indptr = torch.zeros(n_users + 1, dtype=torch.long, device=self.device)
        csr = UserItemCSR(indptr, empty(torch.long), empty(), n_items)
        factors = ItemBagNet(
            n_users,
            n_items,
            c["n_factors"],
            csr=csr,
            mu=0.0,
            reg=0.0,
            reg_bias=0.0,
            reg_implicit=0.0,
            device=self.device,
        )
        neighbors = GlobalNeighborhoodNet(
            torch.zeros(n_items, shapes["k"], dtype=torch.long, device=self.device),
            empty(torch.long),
            empty(),
            n_users=n_users,
            mu=0.0,
            reg=c["reg_neighbors"],
            reg_bias=0.0,
        )
        self.net = IntegratedNet(factors, neighbors)

    def _restore(self, ckpt: dict[str, Any], path: Any) -> None:
        state = ckpt["state"]
        self._indptr = state["net.factors.indptr"].to(self.device)
        self._shapes = {
            "nnz": len(state["net.factors.indices"]),
            "k": state["net.neighbors.neighbors"].shape[1],
        }
        super()._restore(ckpt, path)

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        common = {"seed": c["seed"], "device": self.device, "clip": False}
        svdpp = SVDpp(c["n_factors"], **{**common, **c["svdpp_options"]})
        svdpp.fit(train, weights=weights)
        options = {**common, "progress": c["progress"], **c["neighborhood_options"]}
        if c["schedule"] == "stagewise":
            options["epochs"] = 0  # the neighbour table only: w = c = 0
        tier = GlobalNeighborhood(c["k"], **options).fit(train, weights=weights)
        neighbors = tier.net
        neighbors.reg, neighbors.reg_bias = c["reg_neighbors"], c["reg_neighbor_bias"]
        data = neighbors.training_columns(train, weights)
        histories = []
        if c["schedule"] == "stagewise":
            histories.append(self._fit_on_offsets(svdpp, neighbors, data, valid))
        with torch.no_grad():  # one set of biases, SVD++'s (plus the step-2 correction)
            if c["schedule"] == "stagewise":
                svdpp.net.user_bias.weight[:, 0] += neighbors.user_bias
                svdpp.net.item_bias.weight[:, 0] += neighbors.item_bias
            neighbors.user_bias.zero_()
            neighbors.item_bias.zero_()
        self.net = IntegratedNet(svdpp.net, neighbors)
        if c["epochs"]:
            config = TrainConfig(
                epochs=c["epochs"],
                batch_size=c["batch_size"],
                optimizer="adam",
                lr=c["lr"],
                batch_by="user",
                seed=c["seed"],
                progress=c["progress"],
            )
            histories.append(
                fit(self.net, data, config=config, valid=self._valid_data(valid)).assign(
                    stage="joint"
                )
            )
        self.history = pd.concat(histories, ignore_index=True) if histories else None

    def _fit_on_offsets(
        self,
        svdpp: SVDpp,
        neighbors: GlobalNeighborhoodNet,
        data: dict[str, torch.Tensor],
        valid: Ratings | None,
    ) -> pd.DataFrame:
        """Step 2: Koren's SGD for ``w, c`` (and the bias correction) with SVD++'s
        prediction of every rating as its fixed offset."""
        c = self.config
        with torch.no_grad():
            neighbors.user_bias.zero_()
            neighbors.item_bias.zero_()
        neighbors.user_bias.requires_grad_(c["neighbor_biases"])
        neighbors.item_bias.requires_grad_(c["neighbor_biases"])
        offsets = {**data, "offset": svdpp.predict_tensor(data["user"], data["item"])}
        valid_data = self._valid_data(valid)
        if valid_data is not None:
            valid_data["offset"] = svdpp.predict_tensor(valid_data["user"], valid_data["item"])
        config = TrainConfig(
            epochs=c["neighbor_epochs"],
            batch_size=c["neighbor_batch_size"],
            optimizer="funk",
            lr=c["neighbor_lr"],
            seed=c["seed"],
            progress=c["progress"],
        )
        history = fit(neighbors, offsets, config=config, valid=valid_data)
        neighbors.user_bias.requires_grad_(False)  # the tiers share SVD++'s biases from now on
        neighbors.item_bias.requires_grad_(False)
        return history.assign(stage="neighbourhood")

    def _valid_data(self, valid: Ratings | None) -> dict[str, torch.Tensor] | None:
        if valid is None:
            return None
        return {k: v for k, v in valid.tensors(self.device).items() if k != "timestamp"}

    def _predict_known(self, user, item, user_known, item_known):
        factors = self.net.factors
        users, inverse = torch.unique(user, return_inverse=True)
        z = factors.user_vectors(users)[inverse]  # shape: (n, f)
        both = user_known & item_known
        dot = (factors.item_factors.weight[item] * z).sum(1)  # shape: (n,)
        nbr = self.net.neighbors.neighborhood(user, item)  # shape: (n,)
        return (
            self.mu
            + factors.user_bias.weight[user, 0] * user_known
            + factors.item_bias.weight[item, 0] * item_known
            + (dot + nbr) * both
        )

    @torch.no_grad()
    def score_items(self, users: torch.Tensor, *, chunk_size: int = 512) -> torch.Tensor:
        """Every item's score for ``users``, shape (B, n_items), ``chunk_size`` users at a time.

        The factor tier is one matrix product. The neighbourhood tier of all items at once is
        three sparse-dense products per chunk: with ``Z`` the chunk's residuals ``r_uj - b_uj``
        and ``M`` its rated mask (dense, chunk x n_items) and ``W, C, A`` the ``n_items x
        n_items`` sparse matrices holding ``w_ij, c_ij`` and 1 at ``j in S^k(i)``,
        ``sum_{R^k(i;u)} (r_uj - b_uj) w_ij = (Z W^T)_ui``, ``sum_{N^k(i;u)} c_ij = (M C^T)_ui``
        and ``|R^k(i;u)| = (M A^T)_ui``.
        """
        self._require_fitted()
        factors, neighbors = self.net.factors, self.net.neighbors
        n_items, k = neighbors.neighbors.shape
        rows = torch.arange(n_items, device=self.device).repeat_interleave(k)  # shape: (n * k,)
        index = torch.stack([rows, neighbors.neighbors.reshape(-1)])  # shape: (2, n * k)

        def sparse(values: torch.Tensor) -> torch.Tensor:  # shape: (n_items, n_items)
            return torch.sparse_coo_tensor(
                index, values.reshape(-1), (n_items, n_items), check_invariants=True
            )

        weights = sparse(neighbors.weights).coalesce()
        implicit_and_count = torch.cat(
            [sparse(neighbors.implicit), sparse(torch.ones_like(neighbors.implicit))]
        ).coalesce()
        q = factors.item_factors.weight * self.item_known[:, None]  # shape: (n_items, f)
        b_i = factors.item_bias.weight[:, 0] * self.item_known  # shape: (n_items,)
        parts = []
        for lo in range(0, len(users), chunk_size):
            safe, known = self._known_users(users[lo : lo + chunk_size])  # shape: (B,), (B,)
            distinct, inverse = torch.unique(safe, return_inverse=True)
            z = factors.user_vectors(distinct)[inverse] * known[:, None]  # shape: (B, f)
            position, entry = self.train_csr.positions(safe)  # shape: (nnz_B,)
            keep = known[position]
            position, entry = position[keep], entry[keep]
            item = self.train_csr.indices[entry]  # shape: (nnz_B,)
            res = torch.zeros(len(safe), n_items, device=self.device)  # shape: (B, n_items)
            res[position, item] = neighbors.residual[entry]
            rated = torch.zeros_like(res)  # shape: (B, n_items)
            rated[position, item] = 1.0
            sum_w = torch.sparse.mm(weights, res.T).T  # shape: (B, n_items)
            sum_c, count = torch.sparse.mm(implicit_and_count, rated.T).T.split(n_items, dim=1)
            norm = torch.where(count > 0, count.clamp(min=1).rsqrt(), torch.zeros_like(count))
            pair = (z @ q.T + norm * (sum_w + sum_c)) * self.item_known[None, :]
            b_u = factors.user_bias.weight[safe, 0] * known  # shape: (B,)
            parts.append(self.mu + b_u[:, None] + b_i[None, :] + pair * known[:, None])
        return self._output(
            torch.cat(parts) if parts else torch.zeros(0, n_items, device=self.device)
        )
