"""The one symmetric-operator protocol every solver and estimator in :mod:`specprobe.linalg` consumes.

:class:`specprobe.core.operator.NTKOperator` (matrix-free, over a model) and
:class:`specprobe.core.operator.MatrixOperator` (an explicit Θ) both satisfy it. Vectors live
in output space R^D, float64 (:data:`specprobe.core.operator.KRYLOV_DTYPE`), on ``device``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor


class SymmetricOperator(Protocol):
    """What the solvers need: a symmetric (D, D) operator on float64 blocks."""

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def residual(self) -> Tensor | None: ...

    def matmat(self, U: Tensor) -> Tensor: ...

    def quadratic_form(self, Z: Tensor) -> Tensor: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


def counts(op: SymmetricOperator) -> tuple[int, int]:
    """The operator's (products, quadratic_forms) counters; 0 for an operator without them."""
    return int(getattr(op, "products", 0)), int(getattr(op, "quadratic_forms", 0))
