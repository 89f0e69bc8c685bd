"""Small dense linear algebra shared by the solvers: one orthonormalisation, Rayleigh–Ritz helpers.

Everything here works on float64 tensors (:data:`specprobe.core.operator.KRYLOV_DTYPE`) of
a few blocks; costs are O(D·b²) flops for a (D, b) block.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from specprobe.core.operator import KRYLOV_DTYPE


def orthonormal_basis(
    W: Tensor, against: Tensor | None = None, *, scale: float | None = None, drop: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """An orthonormal basis U of span(W) (columns) orthogonal to ``against``, and T with U = W'T.

    W' is W after two Gram–Schmidt passes against ``against`` (orthonormal columns); an SVD
    of W' then drops directions below ``drop`` × ``scale`` (default: the largest column norm
    of W before projection): dependent ones, or ones already in ``against``. T (b, r) maps
    W' to U, so a block of products ΘW' becomes ΘU = (ΘW')T without new products.
    """
    if scale is None:
        scale = float(W.norm(dim=0).max()) if W.numel() else 0.0
    if scale == 0.0:
        return W[:, :0], W.new_zeros(W.shape[1], 0)
    if against is not None and against.shape[1]:
        for _ in range(2):
            W = W - against @ (against.T @ W)
    U, sv, Vh = torch.linalg.svd(W, full_matrices=False)
    keep = sv > drop * scale
    return U[:, keep], Vh[keep].T / sv[keep]


def orthonormalize(
    W: Tensor, against: Tensor | None = None, *, scale: float | None = None, drop: float = 1e-10
) -> Tensor:
    """The basis U of :func:`orthonormal_basis` alone."""
    return orthonormal_basis(W, against, scale=scale, drop=drop)[0]


def randn(d: int, b: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """A (d, b) float64 Gaussian block from ``generator`` (drawn on the CPU, then moved)."""
    return torch.randn(d, b, generator=generator, dtype=KRYLOV_DTYPE).to(device)


def sym(H: Tensor) -> Tensor:
    return (H + H.T) / 2


def eigh_desc(H: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs of the symmetric part of H, largest first."""
    values, vectors = torch.linalg.eigh(sym(H))
    return values.flip(0), vectors.flip(1)


def residual_ratios(theta: Tensor, norms: Tensor) -> Tensor:
    """‖r_j‖ / max(θ_j, √ε·θ_1) from the residual norms: relative, finite for numerically zero θ."""
    floor = math.sqrt(torch.finfo(KRYLOV_DTYPE).eps) * max(float(theta[0]) if theta.numel() else 0.0, 1e-300)
    return norms / theta.clamp_min(floor)


def relative_residuals(values: Tensor, vectors: Tensor, applied: Tensor) -> np.ndarray:
    """Ritz residuals ‖Θv − λv‖ / λ per column, from the products ``applied`` = Θ·vectors."""
    return residual_ratios(values, (applied - vectors * values).norm(dim=0)).cpu().numpy()


def fix_signs(vectors: Tensor) -> Tensor:
    """Each column's entry of largest magnitude made positive (a deterministic sign)."""
    idx = vectors.abs().argmax(0)
    signs = torch.sign(vectors[idx, torch.arange(vectors.shape[1], device=vectors.device)])
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def floats(values: np.ndarray) -> list[float | None]:
    """JSON-ready floats: None for NaN or inf."""
    return [float(v) if np.isfinite(v) else None for v in values]


def finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def past(deadline: float | None) -> bool:
    """Whether ``time.monotonic()`` is beyond ``deadline`` (never, for None)."""
    return deadline is not None and time.monotonic() > deadline
