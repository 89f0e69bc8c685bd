"""An explicit symmetric matrix as an operator: for tests and for an already dense Θ."""

from __future__ import annotations

import torch
from torch import Tensor

from specprobe.core.operator.modes import KRYLOV_DTYPE, ProductMode
from specprobe.errors import SpecprobeError


class MatrixOperator:
    """An explicit symmetric matrix with the operator interface of :class:`NTKOperator`.

    For tests and for solvers on a Θ that is already dense (e.g. from
    :func:`specprobe.core.dense.dense_kernel`): ``matmat``, ``matvec``, ``quadratic_form``,
    ``shape``, ``num_outputs``, ``residual`` (optional), and the same counters.
    """

    def __init__(self, theta: Tensor, residual: Tensor | None = None) -> None:
        if theta.ndim != 2 or theta.shape[0] != theta.shape[1]:
            raise SpecprobeError(
                f"expected a square matrix, found shape {tuple(theta.shape)}", "pass Θ of shape (D, D)"
            )
        self.theta = theta.to(KRYLOV_DTYPE)
        self._residual = None if residual is None else residual.reshape(-1).to(KRYLOV_DTYPE)
        self.products = 0
        self.quadratic_forms = 0
        self.mode_used: ProductMode | None = None

    @property
    def num_outputs(self) -> int:
        return int(self.theta.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_outputs, self.num_outputs)

    @property
    def device(self) -> torch.device:
        return self.theta.device

    @property
    def residual(self) -> Tensor | None:
        return self._residual

    def __enter__(self) -> MatrixOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def matmat(self, U: Tensor) -> Tensor:
        self.products += 1 if U.ndim == 1 else U.shape[1]
        return self.theta @ U.to(device=self.theta.device, dtype=KRYLOV_DTYPE)

    def matvec(self, u: Tensor) -> Tensor:
        return self.matmat(u)

    def quadratic_form(self, Z: Tensor) -> Tensor:
        block = Z.reshape(-1, 1) if Z.ndim == 1 else Z
        block = block.to(device=self.theta.device, dtype=KRYLOV_DTYPE)
        self.quadratic_forms += block.shape[1]
        return (block * (self.theta @ block)).sum(0).cpu()
