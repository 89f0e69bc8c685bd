"""LOBPCG without preconditioner, own implementation in float64 (:attr:`EigenMethod.LOBPCG`)."""

from __future__ import annotations

import torch
from torch import Tensor

from specprobe.core.operator import KRYLOV_DTYPE
from specprobe.linalg.numerics import (
    eigh_desc,
    orthonormal_basis,
    orthonormalize,
    past,
    randn,
    residual_ratios,
    sym,
)
from specprobe.linalg.protocol import SymmetricOperator


def lobpcg(
    op: SymmetricOperator,
    d: int,
    k: int,
    b: int,
    tol: float,
    budget: int,
    generator: torch.Generator,
    deadline: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """LOBPCG without preconditioner, block X of b ≥ k vectors, soft locking, float64.
    Stops when the top k pairs converge, after ``budget`` products, or at the first
    iteration that ends past ``deadline`` (``time.monotonic()``).

    Each iteration: residuals R = ΘX − XΛ of the unconverged columns become W
    (orthonormalised against X and P), ΘW costs one product per column, and Rayleigh–Ritz
    on S = [X, W, P] (orthonormal) gives the new X; P, the new X's component along [W, P],
    carries the conjugate direction. ΘP and ΘX are kept as linear combinations of stored
    products, never recomputed.

    Returns the top-k Ritz values (k,), vectors (D, k), their products (D, k) and the
    number of iterations. Memory: about 6 blocks of D×b float64.
    """
    device = op.device
    X = orthonormalize(randn(d, b, generator, device), None)
    AX = op.matmat(X)
    used, iterations = X.shape[1], 0
    theta, C = eigh_desc(sym(X.T @ AX))
    X, AX = X @ C, AX @ C
    P = torch.empty(d, 0, dtype=KRYLOV_DTYPE, device=device)
    AP = torch.empty_like(P)
    while True:
        R = AX - X * theta
        res = residual_ratios(theta, R.norm(dim=0))
        if bool((res[:k] <= tol).all()) or used >= budget or X.shape[1] >= d or past(deadline):
            break
        if P.shape[1]:
            c = X.T @ P
            # P and ΘP get the same column transform: ΘP stays a combination of stored products.
            P, transform = orthonormal_basis(P - X @ c, scale=float(P.norm(dim=0).max()), drop=1e-8)
            AP = (AP - AX @ c) @ transform
        W = orthonormalize(R[:, res > tol], torch.cat([X, P], 1))
        W = W[:, : budget - used]
        if W.shape[1] == 0:
            break
        AW = op.matmat(W)
        used += W.shape[1]
        S = torch.cat([X, W, P], 1)
        AS = torch.cat([AX, AW, AP], 1)
        theta_all, C = eigh_desc(sym(S.T @ AS))
        C = C[:, : X.shape[1]]
        n = X.shape[1]
        X_new, AX_new = S @ C, AS @ C
        P, AP = S[:, n:] @ C[n:], AS[:, n:] @ C[n:]
        X, AX, theta = X_new, AX_new, theta_all[: X.shape[1]]
        iterations += 1
    return theta[:k], X[:, :k], AX[:, :k], iterations
