"""Alternating least squares for biased matrix factorization, batched on the device.

With the item side fixed, every user's ``theta_u = [p_u; b_u]`` solves a ridge regression
(explicit-models reference §2b; Zhou et al. 2008 for the weighted-lambda variant):

    (sum_{i in R(u)} c_ui x_i x_i^T + Lambda_u) theta_u = sum_{i in R(u)} c_ui y_ui x_i,
    x_i = [q_i; 1],  y_ui = r_ui - mu - b_i,  Lambda_u = lambda I  or  lambda n_u I  (ALS-WR).

The Gram matrices come from a sparse-dense product ``C @ vech(x_i x_i^T)`` (``C`` the
``users x items`` matrix of confidences, ``vech`` the lower triangle, so half the work of the
full outer products), the right-hand sides from a second one, ``(C * Y) @ x``, and the systems
are solved by a batched Cholesky factorization. Rows are solved in blocks, so memory stays at
``O(n_cols f^2 / 2)`` for the outer products plus one block of Gram matrices, whatever the
number of ratings: a (ratings x f) array is never built. The item step is the mirror image
with ``z_u = [p_u; 1]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

BLOCK_ELEMENTS = 2**25  # Gram entries solved at once: 128 MiB in float32


@dataclass(frozen=True, eq=False)
class Side:
    """The observed pairs of one side of the ratings matrix, in CSR order.

    Built once by :func:`build_side`; :meth:`matrix` then turns any per-rating values (given
    in the order of the ratings) into the sparse ``n_rows x n_cols`` matrix without sorting.

    Attributes
    ----------
    crow : Tensor, shape (n_rows + 1,)
        CSR row pointers.
    col : Tensor, shape (nnz,)
        Column of every entry, rows in order.
    order : Tensor, shape (nnz,)
        Position in the input ratings of every CSR entry.
    n_cols : int
    """

    crow: torch.Tensor
    col: torch.Tensor
    order: torch.Tensor
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.crow) - 1

    @property
    def counts(self) -> torch.Tensor:
        """Ratings per row, shape (n_rows,)."""
        return self.crow.diff()

    def matrix(self, values: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of the sparse CSR matrix holding ``values`` (rating order)."""
        stop = self.n_rows if stop is None else stop
        first, last = int(self.crow[start]), int(self.crow[stop])
        entries = self.order[first:last]  # shape: (nnz_block,)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                self.crow[start : stop + 1] - first,
                self.col[first:last],
                values[entries],
                (stop - start, self.n_cols),
                check_invariants=False,
            )


def build_side(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> Side:
    """The CSR pattern of the pairs ``(rows, cols)`` in an ``n_rows x n_cols`` matrix.

    Repeated pairs stay separate entries, so products with the matrix sum them.
    """
    order = torch.argsort(rows, stable=True)  # shape: (nnz,)
    counts = torch.bincount(rows, minlength=n_rows)  # shape: (n_rows,)
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # shape: (n_rows+1,)
    return Side(crow=crow, col=cols[order], order=order, n_cols=n_cols)


def normal_equations(
    side: Side, confidence: torch.Tensor, weighted_target: torch.Tensor, other: torch.Tensor
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """Blocks of every row's unpenalised normal equations against the fixed ``other`` side.

    Yields ``(start, stop, gram, rhs)`` for rows ``start:stop``: ``gram`` (shape ``(b, f+1,
    f+1)``) is ``sum_j c_j x_j x_j^T`` and ``rhs`` (shape ``(b, f+1)``) is
    ``sum_j c_j y_j x_j`` with ``x_j = [other_j; 1]``; arguments as for :func:`solve_side`.
    """
    n_cols, f = other.shape
    x = torch.cat([other, other.new_ones(n_cols, 1)], dim=1)  # shape: (n_cols, f+1)
    low_r, low_c = torch.tril_indices(f + 1, f + 1, device=x.device)  # shape: (T,), (T,)
    outer = x[:, low_r] * x[:, low_c]  # shape: (n_cols, T), T = (f+1)(f+2)/2
    block = max(1, BLOCK_ELEMENTS // (f + 1) ** 2)
    for start in range(0, side.n_rows, block):
        stop = min(start + block, side.n_rows)
        tri = torch.sparse.mm(side.matrix(confidence, start, stop), outer)  # shape: (b, T)
        gram = x.new_zeros(stop - start, f + 1, f + 1)  # shape: (b, f+1, f+1)
        gram[:, low_r, low_c] = tri
        gram[:, low_c, low_r] = tri
        rhs = torch.sparse.mm(side.matrix(weighted_target, start, stop), x)  # shape: (b, f+1)
        yield start, stop, gram, rhs


def solve_side(
    side: Side,
    confidence: torch.Tensor,
    weighted_target: torch.Tensor,
    other: torch.Tensor,
    *,
    reg: float,
    reg_bias: float,
    weighted_reg: bool,
) -> torch.Tensor:
    """Solve every row's ridge system against the fixed ``other`` side.

    Parameters
    ----------
    side : Side
        The observed pairs (rows on the side being solved, columns on the fixed side).
    confidence : Tensor, shape (nnz,)
        ``c_ui`` of every rating, in the order the pairs were given to :func:`build_side`.
    weighted_target : Tensor, shape (nnz,)
        ``c_ui * y_ui``, the targets with the fixed side's bias and ``mu`` removed, same order.
    other : Tensor, shape (n_cols, f)
        Factors of the fixed side.
    reg, reg_bias : float
        Ridge penalties of the factor coordinates and of the bias coordinate.
    weighted_reg : bool
        Use ALS-WR's ``lambda n_u I`` instead of ``lambda I``.

    Returns
    -------
    Tensor, shape (n_rows, f + 1)
        ``[factors, bias]`` of every row; rows without ratings get zeros.

    Raises
    ------
    FloatingPointError
        When a system is not positive definite (a zero penalty and too few ratings).
    """
    f = other.shape[1]
    penalty = other.new_full((f + 1,), reg)  # shape: (f+1,)
    penalty[-1] = reg_bias
    counts = side.counts.clamp(min=1).to(other.dtype)  # shape: (n_rows,)
    theta = other.new_empty(side.n_rows, f + 1)  # shape: (n_rows, f+1)
    for start, stop, gram, rhs in normal_equations(side, confidence, weighted_target, other):
        scale = counts[start:stop] if weighted_reg else counts.new_ones(stop - start)
        gram += torch.diag_embed(scale[:, None] * penalty)
        chol, info = torch.linalg.cholesky_ex(gram)
        if bool((info != 0).any()):
            raise FloatingPointError(
                "ALS: a ridge system is not positive definite; raise reg/reg_bias above 0"
            )
        theta[start:stop] = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
    return theta
