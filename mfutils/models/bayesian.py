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

import math

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from mfutils.data.container import Ratings
from mfutils.metrics import rmse
from mfutils.models.als import Side, build_side, normal_equations
from mfutils.models.base import ExplicitModel

__all__ = ["BayesianMF", "BayesianMFNet", "kept_sweeps", "sample_rows"]


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
    chi2 = torch.distributions.Chi2(torch.arange(df, df - d, -1, dtype=scale.dtype,
                                                 device=scale.device))
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


def sample_rows(side: Side, target: torch.Tensor, other: torch.Tensor, *, noise: float,
                 mu: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
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
        rows[start:stop] = (mean + torch.linalg.solve_triangular(
            chol.mT, z, upper=True))[:, :, 0]
    return rows


class BayesianMFNet(nn.Module):
    """The kept Gibbs samples: ``[p_u; b_u]``, ``[q_i; b_i]`` and the noise variance.

    Buffers ``user_samples`` (S, n_users, f+1), ``item_samples`` (S, n_items, f+1) and
    ``noise_var`` (S,), so a checkpoint holds the whole posterior sample.
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int, n_samples: int, *,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        width = n_factors + 1
        self.register_buffer("user_samples", torch.zeros(n_samples, n_users, width,
                                                         device=device))
        self.register_buffer("item_samples", torch.zeros(n_samples, n_items, width,
                                                         device=device))
        self.register_buffer("noise_var", torch.ones(n_samples, device=device))

    def moments(self, user: torch.Tensor, item: torch.Tensor, user_known: torch.Tensor,
                item_known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance over the samples of ``b_u + b_i + p_u^T q_i``, shape (n,) each.

        Unknown users (items) lose their row: the item's (user's) bias alone remains.
        """
        total = torch.zeros(len(user), device=user.device)
        square = torch.zeros_like(total)
        for theta, phi in zip(self.user_samples, self.item_samples, strict=True):  # S samples
            u = theta[user] * user_known[:, None]  # shape: (n, f+1)
            v = phi[item] * item_known[:, None]  # shape: (n, f+1)
            pred = (u[:, :-1] * v[:, :-1]).sum(1) + u[:, -1] + v[:, -1]  # shape: (n,)
            total += pred
            square += pred * pred
        n = len(self.user_samples)
        mean = total / n
        return mean, (square / n - mean * mean).clamp(min=0)


class BayesianMF(ExplicitModel):
    """Bayesian biased MF (BPMF with biases) by Gibbs sampling, ``fit`` / ``predict``.

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
    RMSE of that sweep's sample (``train_rmse``) and the noise precision drawn (``alpha``).
    """

    SEARCH_SPACE = {"n_factors": ("int", 4, 32, "log"), "sweeps": ("int", 50, 400, "log")}

    def __init__(
        self, n_factors: int = 10, *, sweeps: int = 200, burn_in: int = 20,
        max_samples: int = 50, beta0: float = 2.0, noise_prior: float = 1.0,
        init_std: float = 0.1, seed: int = 0, progress: bool = False,
        device: str | torch.device | None = None, clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if n_factors < 1 or max_samples < 1:
            raise ValueError(f"n_factors={n_factors} and max_samples={max_samples} must be >= 1")
        if not 0 <= burn_in < sweeps:
            raise ValueError(f"burn_in={burn_in} must lie in [0, sweeps={sweeps})")
        if min(beta0, noise_prior) <= 0 or init_std < 0:
            raise ValueError(f"beta0={beta0} and noise_prior={noise_prior} must be > 0, "
                             f"init_std={init_std} >= 0")
        self.config.update(n_factors=n_factors, sweeps=sweeps, burn_in=burn_in,
                           max_samples=max_samples, beta0=beta0, noise_prior=noise_prior,
                           init_std=init_std, seed=seed, progress=progress)

    def _build(self, n_users: int, n_items: int) -> None:
        c = self.config
        n_samples = len(kept_sweeps(c["sweeps"], c["burn_in"], c["max_samples"]))
        self.net = BayesianMFNet(n_users, n_items, c["n_factors"], n_samples, device=self.device)

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        if weights is not None:
            raise ValueError("BayesianMF does not take per-rating weights")
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config["seed"])
            self._sample(train)

    def _sample(self, train: Ratings) -> None:
        c, net = self.config, self.net
        tensors = train.tensors(self.device)
        user, item = tensors["user"], tensors["item"]  # shape: (N,)
        centred = tensors["rating"] - self.mu  # shape: (N,)
        users = build_side(user, item, train.n_users, train.n_items)
        items = build_side(item, user, train.n_items, train.n_users)
        width = c["n_factors"] + 1
        theta = torch.randn(train.n_users, width, device=self.device) * c["init_std"]
        phi = torch.randn(train.n_items, width, device=self.device) * c["init_std"]
        theta[:, -1] = 0.0
        phi[:, -1] = 0.0
        noise = 1.0
        keep = {sweep: slot for slot, sweep in enumerate(
            kept_sweeps(c["sweeps"], c["burn_in"], c["max_samples"]))}
        seen_u = torch.as_tensor(train.user_counts() > 0, device=self.device)
        seen_i = torch.as_tensor(train.item_counts() > 0, device=self.device)
        rows = []
        for sweep in tqdm(range(c["sweeps"]), desc="BayesianMF", unit="sweep",
                          disable=not c["progress"], leave=False):
            mu_u, lam_u = _normal_wishart(theta[seen_u], beta0=c["beta0"])
            theta = sample_rows(users, centred - phi[item, -1], phi[:, :-1], noise=noise,
                                 mu=mu_u, precision=lam_u)
            mu_i, lam_i = _normal_wishart(phi[seen_i], beta0=c["beta0"])
            phi = sample_rows(items, centred - theta[user, -1], theta[:, :-1], noise=noise,
                               mu=mu_i, precision=lam_i)
            resid = centred - ((theta[user, :-1] * phi[item, :-1]).sum(1)
                               + theta[user, -1] + phi[item, -1])  # shape: (N,)
            sse = resid.pow(2).sum()
            noise_t = torch.distributions.Gamma(
                (c["noise_prior"] + len(resid)) / 2, (c["noise_prior"] + sse) / 2).sample()
            noise = float(noise_t)  # one host sync per sweep, for the next sweep's scalars
            if not math.isfinite(noise):
                raise FloatingPointError(f"BayesianMF: the noise precision became {noise} in "
                                         f"sweep {sweep + 1}")
            if sweep in keep:
                slot = keep[sweep]
                net.user_samples[slot] = theta
                net.item_samples[slot] = phi
                net.noise_var[slot] = 1.0 / noise_t
            rows.append({"sweep": sweep + 1, "train_rmse": float(sse / len(resid)) ** 0.5,
                         "alpha": noise})
        self.history = pd.DataFrame(rows)

    # ------------------------------------------------------------------ prediction
    def _predict_known(self, user, item, user_known, item_known):
        return self.mu + self.net.moments(user, item, user_known, item_known)[0]

    @torch.no_grad()
    def predict(
        self, users: np.ndarray | list[int], items: np.ndarray | list[int], *,
        batch_size: int = 1 << 16, return_std: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior-mean ratings (float32); with ``return_std`` also their predictive
        standard deviation (sample spread plus the mean noise variance, not clipped)."""
        if not return_std:
            return super().predict(users, items, batch_size=batch_size)
        self._require_fitted()
        user = torch.as_tensor(np.asarray(users), dtype=torch.long, device=self.device)
        item = torch.as_tensor(np.asarray(items), dtype=torch.long, device=self.device)
        if user.shape != item.shape or user.dim() != 1:
            raise ValueError(f"users and items must be 1-d and equally long; got "
                             f"{tuple(user.shape)} and {tuple(item.shape)}")
        means, stds = [], []
        noise_var = self.net.noise_var.mean()
        for lo in range(0, len(user), batch_size):
            known = self._known(user[lo:lo + batch_size], item[lo:lo + batch_size])
            mean, var = self.net.moments(*known)
            means.append(self._output(self.mu + mean))
            stds.append((var + noise_var).sqrt())
        if not means:
            empty = np.empty(0, dtype=np.float32)
            return empty, empty.copy()
        return torch.cat(means).cpu().numpy(), torch.cat(stds).cpu().numpy()

    @torch.no_grad()
    def sample_curve(self, data: Ratings) -> pd.DataFrame:
        """RMSE on ``data`` of each kept sample alone and of the mean of the first ``k``.

        Returns one row per kept sample: ``samples`` (``k``), ``sweep`` (the sample's sweep),
        ``single`` (that sample's predictions) and ``mean`` (the average of the first ``k``
        samples' predictions, clipped like :meth:`predict`): what averaging the posterior
        buys over a point estimate.
        """
        self._require_fitted()
        tensors = data.tensors(self.device)
        user, item, known_u, known_i = self._known(tensors["user"], tensors["item"])
        c = self.config
        total = torch.zeros(len(user), device=self.device)
        rows = []
        for k, (theta, phi, sweep) in enumerate(zip(
                self.net.user_samples, self.net.item_samples,
                kept_sweeps(c["sweeps"], c["burn_in"], c["max_samples"]), strict=True), 1):
            u = theta[user] * known_u[:, None]  # shape: (n, f+1)
            v = phi[item] * known_i[:, None]  # shape: (n, f+1)
            pred = self.mu + (u[:, :-1] * v[:, :-1]).sum(1) + u[:, -1] + v[:, -1]
            total += pred
            rows.append({"samples": k, "sweep": sweep + 1,
                         "single": rmse(self._output(pred), tensors["rating"]),
                         "mean": rmse(self._output(total / k), tensors["rating"])})
        return pd.DataFrame(rows)

    @torch.no_grad()
    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Posterior-mean scores of every item for compact user ids, (len(users), n_items)."""
        self._require_fitted()
        safe, known = self._known_users(users)
        scores = torch.zeros(len(safe), self.n_items, device=self.device)
        for theta, phi in zip(self.net.user_samples, self.net.item_samples, strict=True):
            u = theta[safe] * known[:, None]  # shape: (B, f+1)
            scores += u[:, :-1] @ phi[:, :-1].T + u[:, -1:] + phi[:, -1]
        return self._output(self.mu + scores / len(self.net.user_samples))
