"""Alternating least squares for biased matrix factorization, batched on the device.

With the item side fixed, every user's ``theta_u = [p_u; b_u]`` solves a ridge regression
(explicit-models reference §2b; Zhou et al. 2008 for the weighted-lambda variant):

    (sum_{i in R(u)} c_ui x_i x_i^T + Lambda_u) theta_u = sum_{i in R(u)} c_ui y_ui x_i,
    x_i = [q_i; 1],  y_ui = r_ui - mu - b_i,  Lambda_u = lambda I  or  lambda n_u I  (ALS-WR).

All Gram matrices come from one sparse-dense product ``C @ vec(x_i x_i^T)`` (``C`` the
``users x items`` matrix of confidences), the right-hand sides from one ``index_add_``, and
the ``n_users`` systems are solved together by a batched Cholesky factorization. The item step
is the mirror image with ``z_u = [p_u; 1]``.
"""

from __future__ import annotations

import warnings

import torch


def build_side(
    rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor, n_rows: int, n_cols: int
) -> torch.Tensor:
    """The ``n_rows x n_cols`` sparse CSR matrix of confidences ``c`` at ``(rows, cols)``."""
    coo = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), weights, (n_rows, n_cols), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


def solve_side(
    confidence: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    weighted_target: torch.Tensor,
    other: torch.Tensor,
    *,
    reg: float,
    reg_bias: float,
    counts: torch.Tensor,
    weighted_reg: bool,
) -> torch.Tensor:
    """Solve every row's ridge system against the fixed ``other`` side.

    Parameters
    ----------
    confidence : sparse CSR Tensor, shape (n_rows, n_cols)
        ``c_ui`` at the observed pairs.
    rows, cols : Tensor, shape (nnz,)
        The observed pairs (row ids on the side being solved, column ids on the fixed side).
    weighted_target : Tensor, shape (nnz,)
        ``c_ui * y_ui``, the targets with the fixed side's bias and ``mu`` removed.
    other : Tensor, shape (n_cols, f)
        Factors of the fixed side.
    reg, reg_bias : float
        Ridge penalties of the factor coordinates and of the bias coordinate.
    counts : Tensor, shape (n_rows,)
        Ratings per row, for the weighted-lambda penalty ``lambda n_u``.
    weighted_reg : bool
        Use ALS-WR's ``lambda n_u I`` instead of ``lambda I``.

    Returns
    -------
    Tensor, shape (n_rows, f + 1)
        ``[factors, bias]`` of every row; rows without ratings get zeros.
    """
    n_cols, f = other.shape
    x = torch.cat([other, other.new_ones(n_cols, 1)], dim=1)  # shape: (n_cols, f+1)
    # shape: (n_cols, (f+1)^2)
    outer = (x[:, :, None] * x[:, None, :]).reshape(n_cols, (f + 1) ** 2)
    gram = torch.sparse.mm(confidence, outer).view(-1, f + 1, f + 1)  # shape: (n_rows, f+1, f+1)
    rhs = x.new_zeros(gram.shape[0], f + 1)  # shape: (n_rows, f+1)
    rhs.index_add_(0, rows, weighted_target[:, None] * x[cols])
    penalty = x.new_full((f + 1,), reg)  # shape: (f+1,)
    penalty[-1] = reg_bias
    scale = counts.clamp(min=1).to(x.dtype) if weighted_reg else x.new_ones(gram.shape[0])
    gram = gram + torch.diag_embed(scale[:, None] * penalty)  # shape: (n_rows, f+1, f+1)
    chol, info = torch.linalg.cholesky_ex(gram)
    if bool((info != 0).any()):
        raise FloatingPointError(
            "ALS: a ridge system is not positive definite; raise reg/reg_bias above 0"
        )
    return torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
