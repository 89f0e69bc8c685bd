"""The dense solver (:attr:`EigenMethod.DENSE`): Θ from D products, then a full eigendecomposition."""

from __future__ import annotations

import torch
from torch import Tensor

from specprobe.core.operator import KRYLOV_DTYPE
from specprobe.errors import TooLargeError
from specprobe.linalg.protocol import SymmetricOperator

DEFAULT_MAX_DENSE_OUTPUTS = 4096
"""EigenMethod.DENSE refuses D above this: D products and a D×D eigendecomposition (D²·8 bytes)."""


def dense_matrix(op: SymmetricOperator, d: int, b: int) -> Tensor:
    """Θ from D products, b columns at a time, symmetrised."""
    columns = []
    for lo in range(0, d, b):
        hi = min(lo + b, d)
        eye = torch.zeros(d, hi - lo, dtype=KRYLOV_DTYPE, device=op.device)
        eye[torch.arange(lo, hi), torch.arange(hi - lo)] = 1.0
        columns.append(op.matmat(eye))
    theta = torch.cat(columns, 1)
    return (theta + theta.T) / 2


def dense_eigenpairs(
    op: SymmetricOperator, k: int, b: int, max_dense_outputs: int
) -> tuple[Tensor, Tensor, Tensor, float]:
    """The top-k eigenpairs of Θ built densely: values (k,), vectors (D, k), Θ·vectors, Tr Θ.

    Cost: D products (b columns per block) and an O(D³) eigendecomposition; memory D²·8
    bytes. Raises TooLargeError above ``max_dense_outputs``.
    """
    d = op.shape[0]
    if d > max_dense_outputs:
        raise TooLargeError(
            f"method='dense' builds the D×D kernel from D products; D={d} exceeds "
            f"max_dense_outputs={max_dense_outputs}",
            "use method='lanczos', or raise max_dense_outputs",
        )
    theta = dense_matrix(op, d, b)
    values, vectors = torch.linalg.eigh(theta)
    values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k]
    return values, vectors, theta @ vectors, float(torch.trace(theta))
