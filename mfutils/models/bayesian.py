r"""Bayesian matrix factorization sampled by Gibbs (R. Salakhutdinov, A. Mnih, *Bayesian
Probabilistic Matrix Factorization using Markov Chain Monte Carlo*, ICML 2008).

Ratings are Gaussian around a biased inner product with noise precision :math:`\alpha`,

.. math::

    r_{ui} \sim \mathcal N\big(\mu + b_u + b_i + p_u^\top q_i,\; \alpha^{-1}\big),

and the biases ride along as one more latent coordinate (the reference's "biases as extra
latent coordinates"): a user's row is :math:`\theta_u = [p_u; b_u]` against
:math:`x_i = [q_i; 1]`, an item's :math:`\phi_i = [q_i; b_i]` against :math:`z_u = [p_u; 1]`.
Each side's rows share a Gaussian prior :math:`\theta_u \sim \mathcal N(\mu_U, \Lambda_U^{-1})`
with the Normal–Wishart hyperprior of the paper (:math:`\mu_0 = 0`, :math:`\beta_0 = 2`,
:math:`\nu_0 = D`, :math:`W_0 = I`, eqs. 5–6); :math:`\alpha` has the conjugate
:math:`\Gamma(a_0/2, b_0/2)` prior of libFM (:math:`a_0 = b_0 = 1`) instead of the paper's
fixed :math:`\alpha = 2`.

One Gibbs sweep (paper §3.3): draw :math:`(\mu_U, \Lambda_U)` given the users' rows (eq. 14),
then every user's row given the items (eqs. 11–12) -- all users at once, one batched
Cholesky factorization of :math:`\Lambda_u^* = \Lambda_U + \alpha \sum_{i \in R(u)} x_i
x_i^\top` (the normal equations of :mod:`mfutils.models.als`) and
:math:`\theta_u = \mu_u^* + L_u^{-\top} z`, :math:`z \sim \mathcal N(0, I)` -- then the same
for the items, then :math:`\alpha` given the residuals. Predictions average
:math:`\hat r_{ui}` over the samples kept after burn-in (eq. 10), not the last sample.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from mfutils.data.container import Ratings
from mfutils.features import ITEM_FIELDS, TIME_FIELDS, USER_FIELDS, FieldEncoder
from mfutils.metrics import rmse
from mfutils.models.als import Side, build_side, normal_equations
from mfutils.models.base import ExplicitModel

__all__ = [
    "BAGS",
    "BayesianFM",
    "BayesianFMNet",
    "BayesianMF",
    "BayesianMFNet",
    "Block",
    "OrdinalProbit",
    "design_block",
    "kept_sweeps",
    "sample_block",
    "sample_rows",
]


def kept_sweeps(sweeps: int, burn_in: int, max_samples: int) -> list[int]:
    """The (0-based) sweeps whose sample is kept: after ``burn_in``, evenly thinned so that
    at most ``max_samples`` are kept, the last sweep always among them."""
    after = sweeps - burn_in
    thin = math.ceil(after / max_samples)
    return list(range(sweeps - 1, burn_in - 1, -thin))[::-1]


def _wishart(scale: torch.Tensor, *, df: int) -> torch.Tensor:
    """One draw of ``W(scale, df)`` by Bartlett's decomposition: ``L A A^T L^T`` with
    ``scale = L L^T``, ``A`` lower triangular, ``A_kk^2 ~ chi^2(df - k)``, ``A_kl ~ N(0, 1)``."""
    d = len(scale)
    chi2 = torch.distributions.Chi2(
        torch.arange(df, df - d, -1, dtype=scale.dtype, device=scale.device)
    )
    a = torch.randn(d, d, dtype=scale.dtype, device=scale.device).tril(-1)
    a = a + torch.diag(chi2.sample().sqrt())
    la = torch.linalg.cholesky(scale) @ a  # shape: (D, D)
    return la @ la.T


def _normal_wishart(rows: torch.Tensor, *, beta0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``(mu, Lambda)`` of the rows' Gaussian prior from their Normal-Wishart posterior.

    Eq. 14 of Salakhutdinov & Mnih (2008) with ``mu_0 = 0``, ``W_0 = I``, ``nu_0 = D``; the
    small ``D x D`` algebra runs in float64. ``rows``: shape (N, D).
    """
    n, d = rows.shape
    x = rows.double()
    mean = x.mean(0)  # shape: (D,)
    centred = x - mean
    scatter = centred.T @ centred  # shape: (D, D) = N S
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    w_inv = eye + scatter + (beta0 * n / (beta0 + n)) * torch.outer(mean, mean)
    w_star = torch.linalg.inv(w_inv)
    w_star = (w_star + w_star.T) / 2
    precision = _wishart(w_star, df=d + n)  # shape: (D, D)
    mu_star = n * mean / (beta0 + n)
    chol = torch.linalg.cholesky((beta0 + n) * precision)
    z = torch.randn(d, 1, dtype=x.dtype, device=x.device)
    mu = mu_star + torch.linalg.solve_triangular(chol.T, z, upper=True)[:, 0]
    return mu.to(rows.dtype), precision.to(rows.dtype)


def _draw_noise(
    sse: torch.Tensor, n: int, *, prior: float, model: str, sweep: int
) -> tuple[torch.Tensor, float]:
    """The noise precision from its Gamma conditional, ``Gamma((a0 + N) / 2, (a0 + SSE) / 2)``
    (``a0 = noise_prior``), as a tensor and as the float the next sweep uses (one host sync
    per sweep); a non-finite draw stops the sampler."""
    noise_t = torch.distributions.Gamma((prior + n) / 2, (prior + sse) / 2).sample()
    noise = float(noise_t)
    if not math.isfinite(noise):
        raise FloatingPointError(
            f"{model}: the noise precision became {noise} in sweep {sweep + 1}"
        )
    return noise_t, noise


def sample_rows(
    side: Side,
    target: torch.Tensor,
    other: torch.Tensor,
    *,
    noise: float,
    mu: torch.Tensor,
    precision: torch.Tensor,
) -> torch.Tensor:
    """Every row of one side drawn from its Gaussian conditional, shape (n_rows, f+1).

    ``Lambda* = Lambda + alpha sum_j x_j x_j^T``, ``mean = Lambda*^{-1} (alpha sum_j y_j x_j
    + Lambda mu)`` (eqs. 11-12), ``x_j = [other_j; 1]``, ``target`` the ratings less ``mu``
    and the fixed side's bias, in the order of the ratings.
    """
    ones = torch.ones_like(target)
    prior = precision @ mu  # shape: (f+1,)
    rows = other.new_empty(side.n_rows, other.shape[1] + 1)
    for start, stop, gram, rhs in normal_equations(side, ones, target, other):
        chol = torch.linalg.cholesky(noise * gram + precision)  # shape: (b, f+1, f+1)
        mean = torch.cholesky_solve((noise * rhs + prior)[:, :, None], chol)  # (b, f+1, 1)
        z = torch.randn_like(mean)
        rows[start:stop] = (mean + torch.linalg.solve_triangular(chol.mT, z, upper=True))[:, :, 0]
    return rows


class BayesianMFNet(nn.Module):
    """The kept Gibbs samples: ``[p_u; b_u]``, ``[q_i; b_i]`` and the noise variance.

    Buffers ``user_samples`` (S, n_users, f+1), ``item_samples`` (S, n_items, f+1) and
    ``noise_var`` (S,), so a checkpoint holds the whole posterior sample.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int,
        n_samples: int,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        width = n_factors + 1
        self.register_buffer("user_samples", torch.zeros(n_samples, n_users, width, device=device))
        self.register_buffer("item_samples", torch.zeros(n_samples, n_items, width, device=device))
        self.register_buffer("noise_var", torch.ones(n_samples, device=device))

    def draws(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        user_known: torch.Tensor,
        item_known: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> Iterator[torch.Tensor]:
        """``b_u + b_i + p_u^T q_i`` of every kept sample in turn, shape (n,) each.

        Unknown users (items) lose their row: the item's (user's) bias alone remains.
        ``context`` is ignored (Bayesian MF has no context features).
        """
        for theta, phi in zip(self.user_samples, self.item_samples, strict=True):  # S samples
            u = theta[user] * user_known[:, None]  # shape: (n, f+1)
            v = phi[item] * item_known[:, None]  # shape: (n, f+1)
            yield (u[:, :-1] * v[:, :-1]).sum(1) + u[:, -1] + v[:, -1]

    def score_draws(self, users: torch.Tensor, known: torch.Tensor) -> Iterator[torch.Tensor]:
        """Every item's score for ``users`` under each kept sample, shape (B, n_items) each."""
        for theta, phi in zip(self.user_samples, self.item_samples, strict=True):
            u = theta[users] * known[:, None]  # shape: (B, f+1)
            yield u[:, :-1] @ phi[:, :-1].T + u[:, -1:] + phi[:, -1]


class _PosteriorModel(ExplicitModel):
    """Prediction from kept Gibbs samples (``self.net.draws``): the posterior mean, the
    predictive spread, the curve over the number of samples. ``_sweep_of_sample`` names the
    sweep each sample was kept at; the samples of ``n_chains`` chains are stored one chain
    after the other."""

    def _sweep_of_sample(self) -> list[int]:
        c = self.config
        return kept_sweeps(c["sweeps"], c["burn_in"], c["max_samples"]) * c["n_chains"]

    def _run_chains(self, train: Ratings) -> None:
        """``n_chains`` chains one after the other from the seed's random stream (chain 0 is
        the single-chain fit), their samples pooled; ``history`` gets a ``chain`` column. The
        layout every chain reads (:meth:`_layout`) is built once."""
        devices = [self.device] if self.device.type == "cuda" else []
        per_chain = len(self._sweep_of_sample()) // self.config["n_chains"]
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config["seed"])
            layout = self._layout(train)
            history = [
                self._sample(train, layout, first_slot=chain * per_chain).assign(chain=chain)
                for chain in range(self.config["n_chains"])
            ]
        self.history = pd.concat(history, ignore_index=True)

    def _context(self, user: torch.Tensor, timestamp: torch.Tensor | None) -> torch.Tensor | None:
        """Per-rating context the samples need beyond the ids (none by default)."""
        return None

    def _link(self, draw: torch.Tensor, sample: int) -> torch.Tensor:
        """Sample ``sample``'s prediction less ``mu`` from its model output (identity)."""
        return draw

    def _draws(self, user, item, user_known, item_known, context) -> Iterator[torch.Tensor]:
        for sample, draw in enumerate(self.net.draws(user, item, user_known, item_known, context)):
            yield self._link(draw, sample)

    def _moments(
        self, user, item, user_known, item_known, timestamp=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance over the samples of the prediction less ``mu``, (n,) each."""
        context = self._context(user, timestamp)
        total = torch.zeros(len(user), device=self.device)
        square = torch.zeros_like(total)
        n = 0
        for pred in self._draws(user, item, user_known, item_known, context):
            total += pred
            square += pred * pred
            n += 1
        mean = total / n
        return mean, (square / n - mean * mean).clamp(min=0)

    def _predict_known(self, user, item, user_known, item_known, timestamp=None):
        return self.mu + self._moments(user, item, user_known, item_known, timestamp)[0]

    @torch.no_grad()
    def predict_tensor(
        self, user: torch.Tensor, item: torch.Tensor, timestamp: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Posterior-mean predictions for compact ids (and optional unix-second timestamps
        for the context features), shape (n,)."""
        self._require_fitted()
        known = self._known(user, item)
        return self._output(self._predict_known(*known, timestamp))

    @torch.no_grad()
    def predict(
        self,
        users: np.ndarray | list[int],
        items: np.ndarray | list[int],
        *,
        timestamps: np.ndarray | None = None,
        batch_size: int = 1 << 16,
        return_std: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior-mean ratings (float32); with ``return_std`` also their predictive
        standard deviation (sample spread plus the mean noise variance, not clipped).
        ``timestamps`` (unix seconds) feed the context features of models that have them."""
        self._require_fitted()
        user = torch.as_tensor(np.asarray(users), dtype=torch.long, device=self.device)
        item = torch.as_tensor(np.asarray(items), dtype=torch.long, device=self.device)
        if user.shape != item.shape or user.dim() != 1:
            raise ValueError(
                f"users and items must be 1-d and equally long; got "
                f"{tuple(user.shape)} and {tuple(item.shape)}"
            )
        stamp = (
            None
            if timestamps is None
            else torch.as_tensor(np.asarray(timestamps), dtype=torch.long, device=self.device)
        )
        means, stds = [], []
        noise_var = self.net.noise_var.mean()
        for lo in range(0, len(user), batch_size):
            part = slice(lo, lo + batch_size)
            mean, var = self._moments(
                *self._known(user[part], item[part]), None if stamp is None else stamp[part]
            )
            means.append(self._output(self.mu + mean))
            stds.append((var + noise_var).sqrt())
        if not means:
            empty = np.empty(0, dtype=np.float32)
            return (empty, empty.copy()) if return_std else empty
        mean = torch.cat(means).cpu().numpy()
        return (mean, torch.cat(stds).cpu().numpy()) if return_std else mean

    def predict_ratings(
        self, data: Ratings, *, return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` for every row of ``data``, with its timestamps."""
        return self.predict(data.user, data.item, timestamps=data.timestamp, return_std=return_std)

    @torch.no_grad()
    def sample_curve(self, data: Ratings) -> pd.DataFrame:
        """RMSE on ``data`` of each kept sample alone and of the mean of the first ``k``.

        Returns one row per kept sample: ``samples`` (``k``), ``chain`` and ``sweep`` (where
        the sample was drawn), ``single`` (that sample's predictions) and ``mean`` (the
        average of the first ``k`` samples' predictions, clipped like :meth:`predict`): what
        averaging the posterior buys over a point estimate.
        """
        self._require_fitted()
        tensors = data.tensors(self.device)
        user, item, known_u, known_i = self._known(tensors["user"], tensors["item"])
        context = self._context(user, tensors["timestamp"])
        total = torch.zeros(len(user), device=self.device)
        per_chain = len(self._sweep_of_sample()) // self.config["n_chains"]
        rows = []
        for k, (pred, sweep) in enumerate(
            zip(
                self._draws(user, item, known_u, known_i, context),
                self._sweep_of_sample(),
                strict=True,
            ),
            1,
        ):
            total += pred
            rows.append(
                {
                    "samples": k,
                    "chain": (k - 1) // per_chain,
                    "sweep": sweep + 1,
                    "single": rmse(self._output(self.mu + pred), tensors["rating"]),
                    "mean": rmse(self._output(self.mu + total / k), tensors["rating"]),
                }
            )
        return pd.DataFrame(rows)

    @torch.no_grad()
    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Posterior-mean scores of every item for compact user ids, (len(users), n_items)."""
        self._require_fitted()
        safe, known = self._known_users(users)
        scores = torch.zeros(len(safe), self.n_items, device=self.device)
        n = 0
        for sample, draw in enumerate(self.net.score_draws(safe, known)):
            scores += self._link(draw, sample)
            n += 1
        return self._output(self.mu + scores / n)


class BayesianMF(_PosteriorModel):
    r"""Bayesian biased MF (BPMF with biases) by Gibbs sampling, ``fit`` / ``predict``.

    Parameters
    ----------
    n_factors : int
        Rank ``f`` of ``p_u, q_i`` (each side's rows are ``f + 1`` wide with the bias).
    sweeps : int
        Gibbs sweeps in all (each draws both sides' hyperparameters and rows and the noise).
    burn_in : int
        Sweeps discarded before samples are kept.
    max_samples : int
        At most this many samples are kept, evenly thinned over the sweeps after burn-in
        (:func:`kept_sweeps`): memory is ``max_samples * (n_users + n_items) * (f + 1)``
        floats whatever ``sweeps``.
    n_chains : int
        Independent Gibbs chains, run one after the other from the seed's random stream
        (chain 0 is the single-chain fit), each with its own start, burn-in and
        ``max_samples``; their samples are pooled, so time and memory grow ``n_chains``-fold.
        For ``BayesianFM``'s ordinal output at rank 16, on a validation tenth of ML-100K's
        ``u1.base``, five chains of 200 sweeps beat one chain of 1,000
        (``benchmarks/chains.py``; README, "Bayesian models").
    beta0 : float
        ``beta_0`` of the Normal-Wishart hyperprior (the paper's 2).
    noise_prior : float
        ``a_0 = b_0`` of the Gamma prior on the noise precision ``alpha`` (libFM's 1).
    init_std : float
        Standard deviation of the initial factors (biases start at 0).
    seed : int
        Seeds every draw; a fit is reproducible on the same device (the global RNG is
        untouched).
    progress : bool
        A progress bar over sweeps with the training RMSE of the running mean.
    device, clip
        As for :class:`mfutils.models.BiasedMF`.

    Notes
    -----
    ``predict(..., return_std=True)`` also returns the predictive standard deviation,
    ``sqrt(Var_s[r_hat_s] + mean_s alpha_s^{-1})`` over the kept samples (reference §5).
    Unknown users fall back to the sampled item biases (and vice versa), as
    :meth:`ExplicitModel.predict` documents. ``history`` has one row per sweep: the training
    RMSE of that sweep's sample (``train_rmse``), the noise precision drawn (``alpha``) and
    the mean diagonal of each side's factor precision :math:`\Lambda` over the factor
    columns (``lambda_user``, ``lambda_item``): how far the hyperparameters have moved from
    their start, i.e. whether the burn-in is over.
    """

    SEARCH_SPACE = {"n_factors": ("int", 4, 32, "log"), "sweeps": ("int", 50, 400, "log")}

    def __init__(
        self,
        n_factors: int = 10,
        *,
        sweeps: int = 200,
        burn_in: int = 20,
        max_samples: int = 50,
        n_chains: int = 1,
        beta0: float = 2.0,
        noise_prior: float = 1.0,
        init_std: float = 0.1,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if min(n_factors, max_samples, n_chains) < 1:
            raise ValueError(
                f"n_factors={n_factors}, max_samples={max_samples} and n_chains={n_chains} "
                "must be >= 1"
            )
        if not 0 <= burn_in < sweeps:
            raise ValueError(f"burn_in={burn_in} must lie in [0, sweeps={sweeps})")
        if min(beta0, noise_prior) <= 0 or init_std < 0:
            raise ValueError(
                f"beta0={beta0} and noise_prior={noise_prior} must be > 0, init_std={init_std} >= 0"
            )

    def _build(self, n_users: int, n_items: int) -> None:
        n_samples = len(self._sweep_of_sample())
        self.net = BayesianMFNet(
            n_users, n_items, self.config["n_factors"], n_samples, device=self.device
        )

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        if weights is not None:
            raise ValueError("BayesianMF does not take per-rating weights")
        self._run_chains(train)

    def _layout(self, train: Ratings) -> tuple[Side, Side]:
        """Each side's rows with their ratings (:func:`build_side`), shared by the chains."""
        tensors = train.tensors(self.device)
        user, item = tensors["user"], tensors["item"]  # shape: (N,)
        return (
            build_side(user, item, train.n_users, train.n_items),
            build_side(item, user, train.n_items, train.n_users),
        )

    def _sample(
        self, train: Ratings, layout: tuple[Side, Side], *, first_slot: int
    ) -> pd.DataFrame:
        """One chain; its kept samples go to the slots from ``first_slot`` on."""
        c, net = self.config, self.net
        tensors = train.tensors(self.device)
        user, item = tensors["user"], tensors["item"]  # shape: (N,)
        centred = tensors["rating"] - self.mu  # shape: (N,)
        users, items = layout
        width = c["n_factors"] + 1
        theta = torch.randn(train.n_users, width, device=self.device) * c["init_std"]
        phi = torch.randn(train.n_items, width, device=self.device) * c["init_std"]
        theta[:, -1] = 0.0
        phi[:, -1] = 0.0
        noise = 1.0
        keep = {
            sweep: first_slot + slot
            for slot, sweep in enumerate(kept_sweeps(c["sweeps"], c["burn_in"], c["max_samples"]))
        }
        seen_u = torch.as_tensor(train.user_counts() > 0, device=self.device)
        seen_i = torch.as_tensor(train.item_counts() > 0, device=self.device)
        rows = []
        for sweep in tqdm(
            range(c["sweeps"]),
            desc="BayesianMF",
            unit="sweep",
            disable=not c["progress"],
            leave=False,
        ):
            mu_u, lam_u = _normal_wishart(theta[seen_u], beta0=c["beta0"])
            theta = sample_rows(
                users, centred - phi[item, -1], phi[:, :-1], noise=noise, mu=mu_u, precision=lam_u
            )
            mu_i, lam_i = _normal_wishart(phi[seen_i], beta0=c["beta0"])
            phi = sample_rows(
                items,
                centred - theta[user, -1],
                theta[:, :-1],
                noise=noise,
                mu=mu_i,
                precision=lam_i,
            )
            resid = centred - (
                (theta[user, :-1] * phi[item, :-1]).sum(1) + theta[user, -1] + phi[item, -1]
            )  # shape: (N,)
            sse = resid.pow(2).sum()
            noise_t, noise = _draw_noise(
                sse, len(resid), prior=c["noise_prior"], model="BayesianMF", sweep=sweep
            )
            if sweep in keep:
                slot = keep[sweep]
                net.user_samples[slot] = theta
                net.item_samples[slot] = phi
                net.noise_var[slot] = 1.0 / noise_t
            # one host sync: the factor columns' mean prior precision of each side
            lam = torch.stack([lam_u.diagonal()[:-1].mean(), lam_i.diagonal()[:-1].mean()])
            lambda_user, lambda_item = lam.tolist()
            rows.append(
                {
                    "sweep": sweep + 1,
                    "train_rmse": float(sse / len(resid)) ** 0.5,
                    "alpha": noise,
                    "lambda_user": lambda_user,
                    "lambda_item": lambda_item,
                }
            )
        return pd.DataFrame(rows)


# ---------------------------------------------------------------------- Bayesian FM
BAGS = ("user", "item")  # N(u): the items a user rated; N(i): the users who rated an item
CG_CHECK = 5  # conjugate-gradient steps between looks at the residual (a host sync) off the CPU
DENSE_LIMIT = 1024  # a block with at most this many parameters is solved densely, exactly


@dataclass(frozen=True, eq=False)
class Block:
    """One block of the factorization machine's design matrix, with its parameter rows.

    Every training rating has one *entity* of the block (its user, its item, or its context:
    the combination of its time features), and an entity's row of features is the row of
    the sparse design ``F`` (``n_entities x n_features``). The block's parameters are the
    rows ``start:stop`` of the model's table, ``[v_l; w_l]`` for each feature ``l``.

    Attributes
    ----------
    name : str
        ``"user"``, ``"item"`` or ``"context"``.
    entity : Tensor, shape (N,)
        The entity of every training rating.
    members : sparse CSR Tensor
        ``n_entities x N``, a one where rating ``n`` belongs to the entity: segment sums over
        each entity's ratings are one sparse product.
    design, design_t : sparse CSR Tensor
        ``F`` and ``F^T``.
    own, own_value : Tensor, shape (n_entities,)
        Each entity's *own* feature (one that no other entity carries: its id), ``-1`` for
        none, and its value: eliminated exactly, entity by entity, before the CG solve.
    owners : Tensor, shape (n_owners,)
        The entities that have one (indices, so that no sampling step needs a host sync).
    shared : Tensor, shape (n_shared,)
        The other features (side fields, bag members, features no entity carries).
    shared_design, shared_design_t, shared_squared_t : sparse CSR Tensor
        ``F_s``, ``F_s^T`` and ``(F_s * F_s)^T``: the design over the shared features.
    start, stop : int
        The block's rows in the parameter table.
    separable : bool
        No two shared features share an entity and no shared feature two entities (a block
        of ids alone): the preconditioner is then exact and the draw needs no CG step.
    """

    name: str
    entity: torch.Tensor
    members: torch.Tensor
    design: torch.Tensor
    design_t: torch.Tensor
    own: torch.Tensor
    own_value: torch.Tensor
    owners: torch.Tensor
    shared: torch.Tensor
    shared_design: torch.Tensor
    shared_design_t: torch.Tensor
    shared_squared_t: torch.Tensor
    start: int
    stop: int
    separable: bool

    def aggregate(self, theta: torch.Tensor) -> torch.Tensor:
        """``F [v; w]`` over the block's rows of ``theta``: every entity's summed factor
        vector and linear term, shape (n_entities, f+1) (Rendle 2013's per-entity terms)."""
        return torch.sparse.mm(self.design, theta[self.start : self.stop])


def _csr(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return (
            torch.sparse_coo_tensor(
                torch.stack([rows, cols]), values, shape, check_invariants=False
            )
            .coalesce()
            .to_sparse_csr()
        )


def _segment_gram(members: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r"""Every entity's Gram matrix :math:`G_e = \sum_n m_{en} h_n h_n^\top` of its rows.

    The upper triangle of every row's outer product -- ``h[:, k:] * h[:, k]`` for each
    ``k``, side by side -- then one sparse product and a mirror: half the products of the
    full outer products, no ``(N, w, w)`` temporary, and one sparse product rather than one
    per column (1.6x faster on ML-100K's ratings).

    Parameters
    ----------
    members : Tensor, sparse CSR, shape (n_e, N)
        Each row's weight in each entity's sum: the entity of each rating (ones), or the
        counts of the entity's ratings with each row of ``h``.
    h : Tensor, shape (N, w)

    Returns
    -------
    Tensor, shape (n_e, w, w)
    """
    width = h.shape[1]
    upper = torch.sparse.mm(
        members, torch.cat([h[:, k:] * h[:, k : k + 1] for k in range(width)], 1)
    )  # shape: (n_e, w(w+1)/2), row-major triu
    return upper[:, _triu(width, h.device)[1]].view(-1, width, width)


def _triu(width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric ``(w, w)`` matrix's row-major upper triangle: the flat indices of its
    entries, shape (w(w+1)/2,), and every entry's slot in it, shape (w*w,)."""
    iu, ju = torch.triu_indices(width, width, device=device)
    slot = torch.empty(width, width, dtype=torch.long, device=device)
    slot[iu, ju] = slot[ju, iu] = torch.arange(len(iu), device=device)
    return iu * width + ju, slot.flatten()


@dataclass(frozen=True, eq=False)
class Partners:
    r"""How one block's ratings meet the other blocks' entities: its Gram matrices from
    theirs, without a sum over the ratings (the ALS normal equations, one level up).

    With every other block's vectors augmented, :math:`\tilde a_j = [a_j; 1]` for the first
    and :math:`[a_j; 0]` for the rest, a rating's :math:`h_n = \sum_j \tilde a_{j, e_j(n)}`
    and

    .. math::

        G_e = \sum_j \sum_m C^{(j)}_{em} \tilde a_{j,m}\tilde a_{j,m}^\top
        + \sum_{j < l} (X^{(jl)}_e + X^{(jl)\top}_e),\quad
        X^{(jl)}_e = \sum_{m} S_{(e,m)} \tilde a_{l,m}^\top,\quad
        S_{(e,m)} = \sum_{n:\ e_n = e,\ e_l(n) = m} \tilde a_{j, e_j(n)},

    :math:`C^{(j)}` counting the block's ratings with each of block ``j``'s entities and the
    cross terms summed over the distinct pairs :math:`(e, m)` of the block's and block
    ``l``'s entities. On ML-100K with a context block (35 combinations of weekday and
    days-since-first-rating bucket) a user meets 2.2 contexts on average, so the user
    block's cross term runs over 2,112 pairs rather than 80,000 ratings.

    Attributes
    ----------
    others : tuple of int
        The other blocks, the first carrying the constant.
    counts : tuple of sparse CSR Tensor
        :math:`C^{(j)}`, ``n_e x n_j``, one per other block.
    pairs : tuple of (int, int, Tensor, Tensor, Tensor)
        Per pair of other blocks, ``(j, l, pair_counts, pair_entity, pair_members)``:
        ``n_pairs x n_j`` counts of each pair's ratings with block ``j``'s entities, the
        block-``l`` entity of each pair (n_pairs,), and ``n_e x n_pairs`` ones; ``l`` is the
        one of the two with the fewer distinct pairs.
    """

    others: tuple[int, ...]
    counts: tuple[torch.Tensor, ...]
    pairs: tuple[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor], ...]

    @classmethod
    def of(cls, blocks: Sequence[Block], k: int) -> Partners:
        """Block ``k``'s partners among ``blocks`` (their entities of the same ratings)."""
        own = blocks[k].entity
        others = tuple(j for j in range(len(blocks)) if j != k)
        dtype = blocks[k].design.dtype
        ones = torch.ones(len(own), dtype=dtype, device=own.device)
        n_e = blocks[k].design.shape[0]

        def n_of(j: int) -> int:
            return blocks[j].design.shape[0]

        def count(rows: torch.Tensor, j: int, n_rows: int) -> torch.Tensor:
            return _csr(rows, blocks[j].entity, ones, (n_rows, n_of(j)))

        pairs = []
        for a, b in itertools.combinations(others, 2):
            keys = [own * n_of(j) + blocks[j].entity for j in (a, b)]
            distinct = [torch.unique(key, return_inverse=True) for key in keys]
            side = 0 if len(distinct[0][0]) < len(distinct[1][0]) else 1
            j, l = (b, a) if side == 0 else (a, b)
            pair_key, pair_of = distinct[side]  # shapes: (n_pairs,), (N,)
            n_pairs = len(pair_key)
            pair_members = _csr(
                torch.div(pair_key, n_of(l), rounding_mode="floor"),
                torch.arange(n_pairs, device=own.device),
                torch.ones(n_pairs, dtype=dtype, device=own.device),
                (n_e, n_pairs),
            )
            pairs.append((j, l, count(pair_of, j, n_pairs), pair_key % n_of(l), pair_members))
        return cls(
            others=others, counts=tuple(count(own, j, n_e) for j in others), pairs=tuple(pairs)
        )

    def gram(self, vectors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Every entity's :math:`G_e`, shape (n_e, f+1, f+1), from every block's summed
        factor vectors ``vectors[j]`` (n_j, f) (the block's own are not used)."""
        first = vectors[self.others[0]]
        augmented = {
            j: torch.cat([vectors[j], first.new_full((len(vectors[j]), 1), float(i == 0))], 1)
            for i, j in enumerate(self.others)
        }  # shape: (n_j, f+1) each
        gram = sum(
            _segment_gram(c, augmented[j]) for j, c in zip(self.others, self.counts, strict=True)
        )
        for j, l, pair_counts, pair_entity, pair_members in self.pairs:
            s = torch.sparse.mm(pair_counts, augmented[j])  # shape: (n_pairs, f+1)
            outer = s[:, :, None] * augmented[l][pair_entity][:, None, :]  # (n_pairs, w, w)
            x = torch.sparse.mm(pair_members, outer.flatten(1)).view_as(gram)
            gram = gram + x + x.transpose(1, 2)
        return gram


def design_block(
    name: str,
    entity: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    values: torch.Tensor,
    n_entities: int,
    n_features: int,
    start: int,
) -> Block:
    """A :class:`Block` from its design's entries ``F[rows, cols] = values`` (zeros dropped)
    and the entity of every training rating; its parameters start at row ``start``."""
    keep = values != 0
    rows, cols, values = rows[keep], cols[keep], values[keep]
    dev = rows.device
    # each entity's own feature: the lowest-numbered one no other entity carries
    alone = torch.bincount(cols, minlength=n_features)[cols] == 1  # shape: (nnz,)
    own = torch.full((n_entities,), n_features, device=dev).scatter_reduce(
        0, rows[alone], cols[alone], reduce="amin"
    )
    own = torch.where(own == n_features, -1, own)  # shape: (n_e,)
    is_own = alone & (own[rows] == cols)  # shape: (nnz,)
    own_value = torch.zeros(n_entities, dtype=values.dtype, device=dev)
    own_value[rows[is_own]] = values[is_own]
    local = torch.zeros(n_features, dtype=torch.bool, device=dev)
    local[cols[is_own]] = True
    shared = torch.nonzero(~local).squeeze(1)  # shape: (n_s,)
    local = torch.cumsum(~local, 0) - 1  # shared column -> its index among the shared
    r, c, v = rows[~is_own], local[cols[~is_own]], values[~is_own]
    n_shared = len(shared)
    shared_design = _csr(r, c, v, (n_entities, n_shared))
    separable = bool(
        (shared_design.crow_indices().diff() <= 1).all()
        and (torch.bincount(c, minlength=n_shared) <= 1).all()
    )
    ratings = torch.arange(len(entity), device=dev)
    return Block(
        name=name,
        entity=entity,
        members=_csr(
            entity, ratings, torch.ones_like(entity, dtype=values.dtype), (n_entities, len(entity))
        ),
        design=_csr(rows, cols, values, (n_entities, n_features)),
        design_t=_csr(cols, rows, values, (n_features, n_entities)),
        own=own,
        own_value=own_value,
        owners=torch.nonzero(own >= 0).squeeze(1),
        shared=shared,
        shared_design=shared_design,
        shared_design_t=_csr(c, r, v, (n_shared, n_entities)),
        shared_squared_t=_csr(c, r, v * v, (n_shared, n_entities)),
        start=start,
        stop=start + n_features,
        separable=separable,
    )


def sample_block(
    block: Block,
    theta: torch.Tensor,
    target: torch.Tensor,
    other: torch.Tensor,
    *,
    noise: float,
    prior_mean: torch.Tensor,
    prior_precision: torch.Tensor,
    cg_steps: int,
    cg_tol: float,
    gram: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Draw all of one block's parameter rows jointly from their Gaussian conditional.

    With the other blocks fixed the FM is linear in the block's parameters ``Theta``:
    :math:`\hat y_n = c_n + (F\Theta)_{e_n} h_n`, :math:`h_n = [\sum_{B' \ne B} a_{B',n}; 1]`.
    The conditional has precision :math:`P = \alpha F^\top \operatorname{diag}(G_e) F +
    \Lambda`, :math:`G_e = \sum_{n: e_n = e} h_n h_n^\top` (each entity's Gram matrix, one
    segment sum: the relational trick, so a user's bag costs one row, not one per rating),
    and mean :math:`P^{-1}(\alpha F^\top g + \Lambda\mu)`, :math:`g_e = \sum_n y_n h_n`.

    The draw is *perturb-and-solve* (Papandreou & Yuille 2010): perturb the targets by
    :math:`\mathcal N(0, \alpha^{-1})` and the prior mean by :math:`\mathcal N(0,
    \Lambda^{-1})`, then solve :math:`P\Theta = b` -- the solution is an exact draw from the
    conditional. Each entity's own feature (its id) is eliminated exactly, one
    :math:`(f+1)\times(f+1)` Cholesky per entity; the remaining Schur complement over the
    shared features (side fields, bag members) is solved by conjugate gradients from the
    current rows, preconditioned by its exact per-feature blocks, so a block of ids alone
    needs no CG step, and eliminating the ids cuts the steps of a block with bags about
    threefold. A block of at most ``DENSE_LIMIT`` parameters (the context) is solved by one
    dense Cholesky factorization of :math:`P`.

    Parameters
    ----------
    block : Block
    theta : Tensor, shape (n_params, f+1)
        The parameter table; the block's rows are the starting point.
    target : Tensor, shape (N,)
        ``y_n - c_n``: the ratings less every term without the block.
    other : Tensor, shape (N, f)
        The other blocks' summed factor vectors per rating.
    noise : float
        The noise precision ``alpha``.
    prior_mean, prior_precision : Tensor, shape (n_features, f+1)
        Every row's prior (its group's ``mu`` and ``lambda``).
    cg_steps, cg_tol : int, float
        At most ``cg_steps`` conjugate-gradient steps, fewer once the relative residual
        ``||b - P Theta|| / ||b||`` is below ``cg_tol`` (looked at every step on the CPU,
        every ``CG_CHECK`` steps elsewhere: one host sync each time).
    gram : Tensor, shape (n_entities, f+1, f+1), optional
        Every entity's :math:`G_e` when the caller has it from the other blocks' entities
        (:meth:`Partners.gram`); by default summed over the ratings' ``h_n``.

    Returns
    -------
    rows : Tensor, shape (n_features, f+1)
    residual : Tensor, scalar
        ``||b - P Theta|| / ||b||`` after the last step (how exact the draw is).
    """
    n_entities = block.design.shape[0]
    width = other.shape[1] + 1
    if gram is None:
        h = torch.cat([other, other.new_ones(len(other), 1)], 1)  # shape: (N, f+1)
        gram = _segment_gram(block.members, h)
    gram = noise * gram  # shape: (n_e, f+1, f+1)
    perturbed = target + torch.randn_like(target) / math.sqrt(noise)  # shape: (N,)
    g = torch.sparse.mm(
        block.members, torch.cat([perturbed[:, None] * other, perturbed[:, None]], 1)
    )  # shape: (n_e, f+1): sum_n y_n h_n
    prior = prior_mean + torch.randn_like(prior_mean) / prior_precision.sqrt()
    rhs = noise * torch.sparse.mm(block.design_t, g) + prior_precision * prior  # (n_f, f+1)
    tiny = torch.finfo(rhs.dtype).tiny

    def relative_residual(x: torch.Tensor) -> torch.Tensor:  # ||b - P x|| / ||b||
        fx = torch.sparse.mm(block.design, x)  # shape: (n_e, f+1)
        px = torch.sparse.mm(block.design_t, _bmv(gram, fx)) + prior_precision * x
        return (rhs - px).norm() / rhs.norm().clamp(min=tiny)

    n_features = block.design.shape[1]
    if not block.separable and n_features * width <= DENSE_LIMIT:  # P itself, exactly
        design = block.design.to_dense()  # shape: (n_e, n_f)
        dense = torch.einsum("ea,eb,ekl->akbl", design, design, gram).reshape(
            n_features * width, n_features * width
        ) + torch.diag(prior_precision.flatten())
        x = torch.cholesky_solve(rhs.reshape(-1, 1), torch.linalg.cholesky(dense))
        x = x.view(n_features, width)
        return x, relative_residual(x)
    # Each entity's own feature p (value v) couples to the block only through the entity:
    # eliminate it, A_e = v^2 G_e + Lambda_p, leaving the shared features' Schur complement
    # S = F_s^T diag(H_e) F_s + Lambda_s with H_e = G_e - v^2 G_e A_e^-1 G_e = G_e A_e^-1
    # Lambda_p (no cancellation), solved by CG; then x_p = A_e^-1 (b_p - v G_e (F_s x_s)_e).
    own, value = block.own, block.own_value[:, None]  # shapes: (n_e,), (n_e, 1)
    has_own = own >= 0
    lam_own = prior_precision[own.clamp(min=0)]  # shape: (n_e, f+1)
    a_inv = torch.cholesky_inverse(
        torch.linalg.cholesky(value[:, :, None] ** 2 * gram + torch.diag_embed(lam_own))
    )  # shape: (n_e, f+1, f+1)
    ga = torch.bmm(gram, a_inv)  # G_e A_e^-1
    reduced = ga * lam_own[:, None, :]  # shape: (n_e, f+1, f+1) H_e
    reduced = (reduced + reduced.transpose(1, 2)) / 2
    b_own = torch.where(has_own[:, None], rhs[own.clamp(min=0)], 0.0)  # shape: (n_e, f+1)
    x = torch.empty_like(rhs)
    s_e = rhs.new_zeros(n_entities, width)  # (F_s x_s)_e
    shared = block.shared
    if len(shared):
        x[shared] = _shared_solve(
            block,
            reduced,
            rhs[shared] - torch.sparse.mm(block.shared_design_t, value * _bmv(ga, b_own)),
            prior_precision[shared],
            theta[block.start : block.stop][shared],
            steps=cg_steps,
            limit=(cg_tol * rhs.norm()) ** 2,
        )
        s_e = torch.sparse.mm(block.shared_design, x[shared])
    x_own = _bmv(a_inv, b_own - value * _bmv(gram, s_e))  # shape: (n_e, f+1)
    x[own[block.owners]] = x_own[block.owners]
    return x, relative_residual(x)


def _bmv(matrices: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Batched matrix-vector products, shapes (n, w, w) x (n, w) -> (n, w)."""
    return torch.bmm(matrices, vectors[:, :, None])[:, :, 0]


def _shared_solve(
    block: Block,
    reduced: torch.Tensor,
    rhs: torch.Tensor,
    precision: torch.Tensor,
    x: torch.Tensor,
    *,
    steps: int,
    limit: torch.Tensor,
) -> torch.Tensor:
    r"""Solve :math:`S x = b`, :math:`S = F_s^\top \operatorname{diag}(H_e) F_s + \Lambda_s`
    (the shared features' Schur complement), by conjugate gradients from ``x``,
    preconditioned by the exact per-feature blocks of ``S`` (exact when the block is
    separable); stops once ``||b - S x||^2 <= limit``, looked at every step on the CPU (where
    it costs nothing) and every ``CG_CHECK`` steps elsewhere (a host sync each time).
    """
    width = x.shape[1]

    def apply(v: torch.Tensor) -> torch.Tensor:  # S v, shape: (n_s, f+1)
        fv = torch.sparse.mm(block.shared_design, v)  # shape: (n_e, f+1)
        return torch.sparse.mm(block.shared_design_t, _bmv(reduced, fv)) + precision * v

    flat, slot = _triu(width, x.device)  # H_e is symmetric: sum its upper triangles
    diag = torch.sparse.mm(block.shared_squared_t, reduced.flatten(1)[:, flat])
    diag = diag[:, slot].view(-1, width, width)  # shape: (n_s, f+1, f+1)
    # the blocks' inverses once, then every CG step is one batched product
    inverse = torch.cholesky_inverse(
        torch.linalg.cholesky(diag + torch.diag_embed(precision))
    )  # shape: (n_s, f+1, f+1)
    if block.separable:  # the preconditioner is S's exact inverse
        return _bmv(inverse, rhs)
    tiny = torch.finfo(rhs.dtype).tiny
    r = rhs - apply(x)
    z = _bmv(inverse, r)
    p, rz = z, (r * z).sum()
    check = 1 if x.device.type == "cpu" else CG_CHECK
    for step in range(1, steps + 1):  # on the device; the host looks every `check` steps
        ap = apply(p)
        alpha = rz / (p * ap).sum().clamp(min=tiny)
        x = x + alpha * p
        r = r - alpha * ap
        z = _bmv(inverse, r)
        rz_next = (r * z).sum()
        p = z + (rz_next / rz.clamp(min=tiny)) * p
        rz = rz_next
        if step % check == 0 and bool((r * r).sum() <= limit):
            break
    return x


def _normal_gamma(
    theta: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    mean: torch.Tensor,
    *,
    shape: float,
    gamma0: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Draw each group's prior mean and precision per column (libFM's MCMC, Rendle 2012).

    Rows of group ``g`` are :math:`\mathcal N(\mu_g, \lambda_g^{-1})` per column, with
    :math:`\lambda_g \sim \Gamma(\alpha_\lambda/2, \beta_\lambda/2)` and
    :math:`\mu_g \mid \lambda_g \sim \mathcal N(0, (\gamma_0\lambda_g)^{-1})`
    (:math:`\alpha_\lambda = \beta_\lambda =` ``shape``). Given the rows and the current
    mean, :math:`\lambda_g \sim \Gamma\big((\alpha_\lambda + n_g + 1)/2,\ (\beta_\lambda +
    \gamma_0\mu_g^2 + \sum_{l \in g}(\theta_l - \mu_g)^2)/2\big)`; then
    :math:`\mu_g \sim \mathcal N\big(\sum_{l\in g}\theta_l / (n_g + \gamma_0),\
    ((n_g + \gamma_0)\lambda_g)^{-1}\big)`. ``group`` is ``-1`` for rows without data
    (reserved buckets), which take no part. Returns ``(mean, precision)``, (n_groups, f+1).
    """
    keep = group >= 0
    rows, index = theta[keep], group[keep]
    count = torch.bincount(index, minlength=n_groups).to(theta.dtype)[:, None]  # (G, 1)
    total = theta.new_zeros(n_groups, theta.shape[1]).index_add_(0, index, rows)
    square = theta.new_zeros(n_groups, theta.shape[1]).index_add_(0, index, rows * rows)
    spread = square - 2 * mean * total + count * mean * mean  # sum (theta - mu)^2
    precision = torch.distributions.Gamma(
        (shape + count + 1) / 2, (shape + gamma0 * mean * mean + spread) / 2
    ).sample()
    scale = count + gamma0
    mean = total / scale + torch.randn_like(total) / (scale * precision).sqrt()
    return mean, precision


class OrdinalProbit:
    r"""The ordered-probit output of a Gibbs-sampled model (Albert & Chib 1993; myFM).

    A rating of level :math:`k` (the :math:`K` distinct training ratings, sorted) is seen
    when the latent :math:`z \sim \mathcal N(\hat y, 1)` falls in :math:`(c_{k-1}, c_k]`,
    :math:`c_{-1} = -\infty`, :math:`c_{K-1} = \infty`. Each sweep draws the cut-points by
    random-walk Metropolis on their likelihood with the latents integrated out,
    :math:`\prod_n \Phi(c_{r_n} - \hat y_n) - \Phi(c_{r_n - 1} - \hat y_n)`, in the
    coordinates :math:`(c_0, \log(c_k - c_{k-1}))` under a wide Gaussian prior there, then
    every latent from its truncated normal (inverse CDF, float64), which the model then
    regresses on with unit noise. The step is tuned towards a 25-40% acceptance during
    burn-in only, so the kept chain is a fixed Metropolis kernel.
    """

    PRIOR_SD = 10.0  # of c_0 and of each log-gap
    STEPS = 5  # Metropolis steps per sweep

    def __init__(self, rating: torch.Tensor, levels: torch.Tensor) -> None:
        self.level = torch.searchsorted(levels, rating)  # shape: (N,) class of each rating
        self.levels = levels
        share = torch.bincount(self.level, minlength=len(levels)).cumsum(0)[:-1].double()
        cut = torch.special.ndtri(share / len(rating))  # shape: (K-1,) empirical quantiles
        self.coords = self._coords(cut)
        self.step = 0.5 / math.sqrt(len(rating))
        self.log_like = None

    @staticmethod
    def _coords(cut: torch.Tensor) -> torch.Tensor:
        return torch.cat([cut[:1], cut.diff().clamp(min=1e-6).log()])

    @staticmethod
    def cutpoints(coords: torch.Tensor) -> torch.Tensor:
        return torch.cat([coords[:1], coords[:1] + coords[1:].exp().cumsum(0)])

    def _bounds(self, cut: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inf = cut.new_tensor([math.inf])
        edges = torch.cat([-inf, cut, inf])  # shape: (K+1,)
        return edges[self.level], edges[self.level + 1]

    def _log_likelihood(self, coords: torch.Tensor, fm: torch.Tensor) -> torch.Tensor:
        low, high = self._bounds(self.cutpoints(coords))
        mass = torch.special.ndtr(high - fm) - torch.special.ndtr(low - fm)  # shape: (N,)
        prior = -(coords / self.PRIOR_SD).pow(2).sum() / 2
        return mass.clamp(min=1e-300).log().sum() + prior

    def update(self, fm: torch.Tensor, *, adapt: bool) -> torch.Tensor:
        """Metropolis steps on the cut-points given the model output ``fm`` (N,), then the
        latents drawn given both; returns the latents (float32, shape (N,))."""
        fm = fm.double()
        current = self._log_likelihood(self.coords, fm)
        accepted = fm.new_zeros(())
        for _ in range(self.STEPS):
            proposal = self.coords + self.step * torch.randn_like(self.coords)
            proposed = self._log_likelihood(proposal, fm)
            accept = torch.rand((), dtype=fm.dtype, device=fm.device).log() < proposed - current
            self.coords = torch.where(accept, proposal, self.coords)
            current = torch.where(accept, proposed, current)
            accepted = accepted + accept
        if adapt:  # burn-in only: one host sync per sweep
            rate = float(accepted) / self.STEPS
            self.step *= 1.2 if rate > 0.4 else 0.8 if rate < 0.25 else 1.0
        low, high = self._bounds(self.cutpoints(self.coords))
        lo, hi = torch.special.ndtr(low - fm), torch.special.ndtr(high - fm)
        u = lo + (hi - lo) * torch.rand_like(fm)
        tiny = 1e-12
        return (fm + torch.special.ndtri(u.clamp(tiny, 1 - tiny))).float()

    @staticmethod
    def probabilities(fm: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
        """``P(r = level_k)`` for model outputs ``fm`` (any shape), shape (*fm.shape, K)."""
        inf = cut.new_tensor([math.inf])
        edges = torch.cat([-inf, cut, inf])  # shape: (K+1,)
        cdf = torch.special.ndtr(edges - fm[..., None])  # shape: (*, K+1)
        return cdf[..., 1:] - cdf[..., :-1]


class BayesianFMNet(nn.Module):
    """The kept samples of :class:`BayesianFM`, per entity: every user's and item's summed
    ``[a; w]`` (ids, bag, side features), the context features' rows, ``w_0`` and the noise
    variance. Buffers ``user_samples`` (S, n_users, f+1), ``item_samples`` (S, n_items,
    f+1), ``context_samples`` (S, n_context, f+1), ``w0`` (S,), ``noise_var`` (S,)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_context: int,
        n_factors: int,
        n_samples: int,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        width = n_factors + 1
        for name, n in (
            ("user_samples", n_users),
            ("item_samples", n_items),
            ("context_samples", n_context),
        ):
            self.register_buffer(name, torch.zeros(n_samples, n, width, device=device))
        self.register_buffer("w0", torch.zeros(n_samples, device=device))
        self.register_buffer("noise_var", torch.ones(n_samples, device=device))

    def draws(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        user_known: torch.Tensor,
        item_known: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> Iterator[torch.Tensor]:
        """``w_0 + sum_B w_B + sum_{B<B'} <a_B, a_B'>`` of every kept sample, (n,) each.

        ``context`` (n, C) holds each rating's context rows (``-1``: none). Unknown users
        (items) lose every feature of their side."""
        for s in range(len(self.w0)):
            parts = [
                self.user_samples[s][user] * user_known[:, None],
                self.item_samples[s][item] * item_known[:, None],
            ]  # shape: (n, f+1)
            if context is not None and context.shape[1]:
                rows = self.context_samples[s][context.clamp(min=0)]  # shape: (n, C, f+1)
                parts.append((rows * (context >= 0)[:, :, None]).sum(1))
            yield self.w0[s] + _fm_terms(parts)

    def score_draws(self, users: torch.Tensor, known: torch.Tensor) -> Iterator[torch.Tensor]:
        """Every item's score for ``users`` under each kept sample (no context), (B, n_items)."""
        for s in range(len(self.w0)):
            u = self.user_samples[s][users] * known[:, None]  # shape: (B, f+1)
            v = self.item_samples[s]  # shape: (n_items, f+1)
            yield self.w0[s] + u[:, :-1] @ v[:, :-1].T + u[:, -1:] + v[:, -1]


def _fm_terms(parts: list[torch.Tensor]) -> torch.Tensor:
    """``sum_B w_B + sum_{B<B'} <a_B, a_B'>`` over per-rating block rows ``[a_B; w_B]``,
    shape (n,): the pairs by ``(||sum a||^2 - sum ||a||^2) / 2``."""
    linear = sum(p[:, -1] for p in parts)
    total = sum(p[:, :-1] for p in parts)
    squares = sum(p[:, :-1].pow(2).sum(1) for p in parts)
    return linear + (total.pow(2).sum(1) - squares) / 2


class BayesianFM(_PosteriorModel):
    r"""Bayesian factorization machine by block Gibbs sampling, ``fit`` / ``predict``.

    The features of a rating form three blocks (reference §2–3): the **user** block (the
    user id, the user's side fields, and -- "SVD++" -- the bag :math:`N(u)` of the items the
    user rated, each :math:`1/\sqrt{|N(u)|}`), the **item** block (the item id, genres and
    year, and -- "flipped" -- the bag :math:`N(i)` of the item's raters) and the **context**
    block (the rating's time fields, and a bin of its date -- "timeSVD++"). The model is an
    FM whose pairwise interactions run *between* blocks,

    .. math::

        \hat r = \mu + w_0 + \sum_B w_B + \sum_{B < B'} \langle a_B, a_{B'} \rangle,\qquad
        a_B = \sum_{l \in B} x_l v_l,\ w_B = \sum_{l \in B} x_l w_l,

    so with ids and both bags :math:`\langle a_U, a_I\rangle = (p_u + |N(u)|^{-1/2}\sum
    y_j)^\top(q_i + |N(i)|^{-1/2}\sum z_v)`, SVD++ flipped. **Deviation from libFM/myFM:**
    their FM also has the pairs inside a block; with the user id in the block every such pair
    is a constant over the user's ratings, which the user's own weight :math:`w_u` already
    spans. Leaving them out makes each block's conditional Gaussian, so a whole block is
    drawn at once (:func:`sample_block`) instead of coordinate by coordinate.

    Priors as libFM's MCMC (Rendle 2012): the rows of one *group* (a field, a bag, the date
    bins) are :math:`\mathcal N(\mu_g, \lambda_g^{-1})` per column with a Normal–Gamma
    hyperprior (:func:`_normal_gamma`), :math:`w_0 \sim \mathcal N(0, 1)`, the noise
    precision :math:`\Gamma(a_0/2, b_0/2)`. A sweep draws the hyperparameters, the user
    block, the item block, the context block, :math:`w_0`, then the noise.

    Parameters
    ----------
    n_factors : int
        Rank of every feature's vector ``v_l``.
    fields : sequence of str or None
        The :class:`mfutils.features.FieldEncoder` fields (ids, side and time fields);
        ``None``: the defaults the training data carries. ``("user", "item")`` with no bags
        and no date bins is Bayesian biased MF with libFM's priors.
    bags : sequence of str
        Which implicit bags to add: ``"user"`` (:math:`N(u)`), ``"item"`` (:math:`N(i)`),
        built from the training ratings only.
    date_bins : int
        Equal-width bins of the training period as one more context field (0: none).
    sweeps, burn_in, max_samples, n_chains, noise_prior, init_std, seed, progress, device, clip
        As for :class:`BayesianMF`.
    prior_shape : float
        :math:`\alpha_\lambda = \beta_\lambda` of the groups' Gamma priors (libFM's 1).
    gamma0 : float
        :math:`\gamma_0` of the groups' mean priors (libFM's 1).
    output : str
        ``"regression"``: Gaussian ratings around the FM (noise precision sampled);
        ``"ordinal"``: the ordered probit of :class:`OrdinalProbit` over the distinct
        training ratings (no ``w_0``: the cut-points take its place), predicting the
        expected rating :math:`\sum_k r_k P(r = r_k)` averaged over the samples; its
        ``predict(..., return_std=True)`` noise term is each sample's mean predictive
        variance over the training ratings.
    cg_steps, cg_tol : int, float
        Each block draw runs conjugate gradients until the relative residual is below
        ``cg_tol``, for at most ``cg_steps`` steps (:func:`sample_block`); ``history``
        records the largest residual of each sweep (``cg_residual``), so the exactness of the
        draws is visible. A block of ids alone needs no step. Truncating early is not
        harmless: on ML-100K with both bags, before the ids were eliminated ahead of CG, 10
        steps (residual ~4e-2) cost 0.001-0.002 RMSE and 3 steps 0.07.

    Notes
    -----
    ``predict(..., timestamps=...)`` and ``predict_ratings`` use the context; ``predict``
    without timestamps and ``recommend`` leave it out (reserved buckets, zero).

    ``history`` has one row per sweep: ``train_rmse``, ``alpha`` (1 under the ordinal
    output), ``w0``, ``cg_residual`` and, per prior group, ``lambda_<group>`` (e.g.
    ``lambda_user``, ``lambda_bag_item``): the mean precision :math:`\lambda_g` of the
    group's factor columns drawn that sweep. The burn-in is over once these stop falling
    from their start. Under the ordinal output that takes far longer than ``burn_in``: on
    ML-100K at rank 16, ``lambda_user`` levels off after about 240 sweeps
    (``benchmarks/chains.py``'s trace), against about 40 for the regression at rank 10.
    """

    SEARCH_SPACE = {"n_factors": ("int", 4, 32, "log"), "date_bins": ("int", 0, 60)}
    OUTPUTS = ("regression", "ordinal")
    FIT_BUFFERS = (*_PosteriorModel.FIT_BUFFERS, "levels", "cutpoints")

    def __init__(
        self,
        n_factors: int = 10,
        *,
        fields: Sequence[str] | None = None,
        bags: Sequence[str] = BAGS,
        date_bins: int = 0,
        sweeps: int = 200,
        burn_in: int = 20,
        max_samples: int = 100,
        n_chains: int = 1,
        prior_shape: float = 1.0,
        gamma0: float = 1.0,
        noise_prior: float = 1.0,
        init_std: float = 0.1,
        output: str = "regression",
        cg_steps: int = 100,
        cg_tol: float = 1e-2,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if min(n_factors, max_samples, n_chains, cg_steps) < 1:
            raise ValueError(
                f"n_factors={n_factors}, max_samples={max_samples}, n_chains={n_chains} and "
                f"cg_steps={cg_steps} must be >= 1"
            )
        if output not in self.OUTPUTS:
            raise ValueError(f"output={output!r}; choose one of {self.OUTPUTS}")
        if not 0 < cg_tol < 1:
            raise ValueError(f"cg_tol={cg_tol} must lie in (0, 1)")
        if not 0 <= burn_in < sweeps:
            raise ValueError(f"burn_in={burn_in} must lie in [0, sweeps={sweeps})")
        if min(prior_shape, gamma0, noise_prior) <= 0 or init_std < 0 or date_bins < 0:
            raise ValueError(
                f"prior_shape={prior_shape}, gamma0={gamma0} and noise_prior="
                f"{noise_prior} must be > 0, init_std={init_std} and "
                f"date_bins={date_bins} >= 0"
            )
        if isinstance(bags, str) or not set(bags) <= set(BAGS):
            raise ValueError(f"bags={bags!r} must be a sequence of {BAGS}")
        FieldEncoder(fields)  # validates the field names now rather than at fit time
        self.config.update(  # normalized
            fields=None if fields is None else tuple(fields),
            bags=tuple(b for b in BAGS if b in bags),
        )
        self.encoder: FieldEncoder | None = None

    # ------------------------------------------------------------------ layout
    @property
    def fields_(self) -> tuple[str, ...]:
        """The fields the fitted model encodes (``fields``, or the resolved defaults)."""
        if self.encoder is None or self.encoder.fields is None:
            raise RuntimeError("BayesianFM is not fitted: call fit() first")
        return self.encoder.fields

    def _resolved_config(self) -> dict[str, Any]:
        return {**super()._resolved_config(), "fields": self.fields_}

    def _offsets(self) -> tuple[int, int, int]:
        """Where the encoder's item fields and time fields start, and its size."""
        sizes = self.encoder.field_sizes
        n_user = sum(sizes[f] for f in self.fields_ if f in USER_FIELDS)
        n_item = sum(sizes[f] for f in self.fields_ if f in ITEM_FIELDS)
        return n_user, n_user + n_item, self.encoder.n_features

    def _n_context(self) -> int:
        _, time_start, total = self._offsets()
        bins = self.config["date_bins"]
        return total - time_start + (bins + 1 if bins else 0)

    def fit(
        self, train: Ratings, *, valid: Ratings | None = None, weights: np.ndarray | None = None
    ) -> BayesianFM:
        """Fit the field encoder on ``train``, then sample (see :meth:`ExplicitModel.fit`);
        ``valid`` is not used (nothing is chosen on it)."""
        if len(train) == 0:
            raise ValueError("cannot fit on an empty Ratings")
        self.encoder = FieldEncoder(self.config["fields"]).fit(train, device=self.device)
        return super().fit(train, valid=valid, weights=weights)

    def _build(self, n_users: int, n_items: int) -> None:
        n_samples = len(self._sweep_of_sample())
        self.net = BayesianFMNet(
            n_users,
            n_items,
            self._n_context(),
            self.config["n_factors"],
            n_samples,
            device=self.device,
        )
        self.register_buffer("date_range", torch.zeros(2, dtype=torch.long, device=self.device))

    def _restore(self, ckpt: dict[str, Any], path) -> None:
        self.encoder = FieldEncoder(self.config["fields"]).allocate_like(
            ckpt["state"], prefix="encoder."
        )
        super()._restore(ckpt, path)

    def _context(self, user: torch.Tensor, timestamp: torch.Tensor | None) -> torch.Tensor | None:
        """Each rating's context rows (the time fields' buckets, the date bin), (n, C);
        without timestamps every one is a reserved bucket, whose row stays zero."""
        _, time_start, total = self._offsets()
        columns = []
        if total > time_start:
            encoded = self.encoder.encode(user, torch.zeros_like(user), timestamp)["index"]
            n_time = sum(f in TIME_FIELDS for f in self.fields_)  # one column per time field
            columns.append(encoded[:, encoded.shape[1] - n_time :] - time_start)
        bins = self.config["date_bins"]
        if bins:
            base = total - time_start
            if timestamp is None:
                columns.append(torch.full_like(user, base)[:, None])
            else:
                lo, hi = self.date_range.tolist()
                width = max(hi - lo + 1, 1)
                t = timestamp.to(self.device).clamp(lo, hi)
                columns.append(
                    base + 1 + torch.div((t - lo) * bins, width, rounding_mode="floor")[:, None]
                )
        return torch.cat(columns, 1) if columns else None

    def _design(self, train: Ratings) -> tuple[list[Block], torch.Tensor, list[str]]:
        """The blocks of the training design, every parameter row's group (``-1`` for rows
        no training entity carries) and the groups' names (fields, ``bag_*``, ``date_bin``)."""
        enc, dev = self.encoder, self.device
        item_start, time_start, total = self._offsets()
        t = train.tensors(dev)
        user, item = t["user"], t["item"]
        fields = list(self.fields_)
        field_of = torch.as_tensor(
            np.repeat(np.arange(len(fields)), [enc.field_sizes[f] for f in fields]), device=dev
        )
        group_names = fields + [f"bag_{b}" for b in self.config["bags"]]
        group_names += ["date_bin"] if self.config["date_bins"] else []
        blocks, groups, start = [], [], 0

        def side(
            name: str,
            index: torch.Tensor,
            value: torch.Tensor,
            offset: int,
            n_local: int,
            n_rows: int,
            entity: torch.Tensor,
            seen: torch.Tensor,
            bag_of: torch.Tensor,
            bag_size: int,
        ) -> None:
            nonlocal start
            rows = torch.arange(n_rows, device=dev)[:, None].expand_as(index).reshape(-1)
            cols, vals = (index - offset).reshape(-1), value.reshape(-1)
            vals = vals * seen[rows]  # entities without training ratings carry nothing
            group = field_of[offset : offset + n_local]
            if name in self.config["bags"]:
                counts = torch.bincount(entity, minlength=n_rows).clamp(min=1)
                rows = torch.cat([rows, entity])
                cols = torch.cat([cols, n_local + bag_of])
                vals = torch.cat([vals, counts[entity].rsqrt()])
                group = torch.cat(
                    [group, torch.full((bag_size,), group_names.index(f"bag_{name}"), device=dev)]
                )
            if not len(group):
                return
            block = design_block(name, entity, rows, cols, vals.float(), n_rows, len(group), start)
            carried = torch.zeros(len(group), dtype=torch.bool, device=dev)
            carried[block.design.col_indices()] = True
            groups.append(torch.where(carried, group, -1))
            blocks.append(block)
            start = block.stop

        seen_u = torch.as_tensor(train.user_counts() > 0, device=dev)
        seen_i = torch.as_tensor(train.item_counts() > 0, device=dev)
        side(
            "user",
            enc.user_index,
            enc.user_value,
            0,
            item_start,
            train.n_users,
            user,
            seen_u,
            item,
            train.n_items,
        )
        side(
            "item",
            enc.item_index,
            enc.item_value,
            item_start,
            time_start - item_start,
            train.n_items,
            item,
            seen_i,
            user,
            train.n_users,
        )
        if self.config["date_bins"]:
            self.date_range.copy_(torch.stack([t["timestamp"].min(), t["timestamp"].max()]))
        context = self._context(user, t["timestamp"])
        if context is not None:
            combos, entity = torch.unique(context, dim=0, return_inverse=True)
            rows = torch.arange(len(combos), device=dev)[:, None].expand_as(combos).reshape(-1)
            n_context = self._n_context()
            group = torch.cat(
                [
                    field_of[time_start:],
                    torch.full(
                        (n_context - (total - time_start),), len(group_names) - 1, device=dev
                    ),
                ]
            )
            block = design_block(
                "context",
                entity,
                rows,
                combos.reshape(-1),
                torch.ones(combos.numel(), device=dev),
                len(combos),
                n_context,
                start,
            )
            carried = torch.zeros(n_context, dtype=torch.bool, device=dev)
            carried[block.design.col_indices()] = True
            groups.append(torch.where(carried, group, -1))
            blocks.append(block)
        return blocks, torch.cat(groups), group_names

    # ------------------------------------------------------------------ sampling
    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        if weights is not None:
            raise ValueError("BayesianFM does not take per-rating weights")
        ordinal = self.config["output"] == "ordinal"
        levels = torch.as_tensor(
            np.unique(train.rating) if ordinal else np.zeros(0),
            dtype=torch.float32,
            device=self.device,
        )
        if ordinal and len(levels) < 2:
            raise ValueError("output='ordinal' needs at least two distinct training ratings")
        self.register_buffer("levels", levels)
        self.register_buffer(
            "cutpoints", torch.zeros(len(self.net.w0), max(len(levels) - 1, 0), device=self.device)
        )
        self._run_chains(train)

    def _layout(self, train: Ratings) -> tuple[list[Block], torch.Tensor, list[str]]:
        """The design's blocks and prior groups (:meth:`_design`), shared by the chains."""
        return self._design(train)

    def _sample(
        self, train: Ratings, layout: tuple[list[Block], torch.Tensor, int], *, first_slot: int
    ) -> pd.DataFrame:
        """One chain; its kept samples go to the slots from ``first_slot`` on."""
        c = self.config
        blocks, group, group_names = layout
        n_groups = len(group_names)
        rating = train.tensors(self.device)["rating"]  # shape: (N,)
        probit = None
        if c["output"] == "ordinal":
            probit = OrdinalProbit(rating.double(), self.levels.double())
            y = probit.update(torch.zeros_like(rating), adapt=True)  # the latents
        else:
            y = rating - self.mu
        f = c["n_factors"]
        theta = torch.randn(len(group), f + 1, device=self.device) * c["init_std"]
        theta[:, -1] = 0.0
        theta *= (group >= 0)[:, None]
        safe_group = group.clamp(min=0)
        mean = theta.new_zeros(n_groups, f + 1)
        w0 = theta.new_zeros(())
        noise = 1.0
        kept = kept_sweeps(c["sweeps"], c["burn_in"], c["max_samples"])
        keep = {sweep: first_slot + slot for slot, sweep in enumerate(kept)}
        aggregates = [b.aggregate(theta) for b in blocks]  # shape: (n_e, f+1) each
        per_rating = [a[b.entity] for a, b in zip(aggregates, blocks, strict=True)]
        # each block's Gram over the other blocks' entities, not the ratings
        partners = [Partners.of(blocks, k) for k in range(len(blocks))] if len(blocks) > 1 else None
        total = sum(per_rating)  # shape: (N, f+1): sum_B [a_B; w_B], kept as a running sum
        # the pairs of blocks that interact in the FM term without block k
        apart = [
            [pair for pair in itertools.combinations(range(len(blocks)), 2) if k not in pair]
            for k in range(len(blocks))
        ]
        history = []
        for sweep in tqdm(
            range(c["sweeps"]),
            desc="BayesianFM",
            unit="sweep",
            disable=not c["progress"],
            leave=False,
        ):
            mean, precision = _normal_gamma(
                theta, group, n_groups, mean, shape=c["prior_shape"], gamma0=c["gamma0"]
            )
            residuals = []
            for k, block in enumerate(blocks):
                rest_rows = total - per_rating[k]  # shape: (N, f+1) the other blocks' sum
                other = rest_rows[:, :-1]  # shape: (N, f)
                # shape: (N,) w0 + their linear terms + their pairwise interactions
                rest = w0 + rest_rows[:, -1]
                for j, m in apart[k]:
                    rest = rest + (per_rating[j][:, :-1] * per_rating[m][:, :-1]).sum(1)
                rows, residual = sample_block(
                    block,
                    theta,
                    y - rest,
                    other,
                    noise=noise,
                    prior_mean=mean[safe_group[block.start : block.stop]],
                    prior_precision=precision[safe_group[block.start : block.stop]],
                    cg_steps=c["cg_steps"],
                    cg_tol=c["cg_tol"],
                    gram=None
                    if partners is None
                    else partners[k].gram([a[:, :-1] for a in aggregates]),
                )
                theta[block.start : block.stop] = (
                    rows * (group[block.start : block.stop] >= 0)[:, None]
                )
                aggregates[k] = block.aggregate(theta)
                updated = aggregates[k][block.entity]  # shape: (N, f+1)
                total = rest_rows + updated
                per_rating[k] = updated
                residuals.append(residual)
            # shape: (N,) the FM less w0: the last block's rest and its own terms
            fm = rest - w0 + updated[:, -1] + (updated[:, :-1] * other).sum(1)
            if probit is not None:  # unit noise, no w0: the cut-points, then the latents
                y = probit.update(fm, adapt=sweep < c["burn_in"])
                probs = probit.probabilities(fm.double(), probit.cutpoints(probit.coords))
                expected = probs @ probit.levels  # shape: (N,)
                sse = (expected - rating).pow(2).sum()
                spread = (probs @ probit.levels.pow(2) - expected.pow(2)).mean()
                noise_t = 1.0 / spread.float()  # stored as the sample's noise variance
            else:
                scale = noise * len(y) + 1.0  # w0 ~ N(0, 1) a priori
                w0 = noise * (y - fm).sum() / scale + torch.randn(
                    (), device=self.device
                ) / math.sqrt(scale)
                sse = (y - fm - w0).pow(2).sum()
                noise_t, noise = _draw_noise(
                    sse, len(y), prior=c["noise_prior"], model="BayesianFM", sweep=sweep
                )
            if sweep in keep:
                self._keep(keep[sweep], blocks, theta, w0, noise_t)
                if probit is not None:
                    self.cutpoints[keep[sweep]] = probit.cutpoints(probit.coords).float()
            # one host sync: w0, the largest CG residual, each group's factor precision
            w0_now, worst_residual, *lam = torch.cat(
                [w0[None], torch.stack(residuals).max()[None], precision[:, :-1].mean(1)]
            ).tolist()
            history.append(
                {
                    "sweep": sweep + 1,
                    "train_rmse": float(sse / len(y)) ** 0.5,
                    "alpha": noise,
                    "w0": w0_now,
                    "cg_residual": worst_residual,
                    **{
                        f"lambda_{name}": value
                        for name, value in zip(group_names, lam, strict=True)
                    },
                }
            )
        return pd.DataFrame(history)

    def _link(self, draw: torch.Tensor, sample: int) -> torch.Tensor:
        """Ordinal output: the sample's expected rating (less ``mu``) from its latent mean."""
        if self.config["output"] != "ordinal":
            return draw
        probs = OrdinalProbit.probabilities(draw, self.cutpoints[sample])
        return probs @ self.levels - self.mu

    def _keep(
        self,
        slot: int,
        blocks: list[Block],
        theta: torch.Tensor,
        w0: torch.Tensor,
        noise: torch.Tensor,
    ) -> None:
        """Store one sample: the users' and items' summed rows, the context rows, w0."""
        net = self.net
        for block in blocks:
            if block.name == "context":
                net.context_samples[slot] = theta[block.start : block.stop]
            else:
                getattr(net, f"{block.name}_samples")[slot] = block.aggregate(theta)
        net.w0[slot] = w0
        net.noise_var[slot] = 1.0 / noise
