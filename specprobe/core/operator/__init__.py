"""The matrix-free eNTK operator Θ·U = J (Jᵀ U), one concern per module.

* :mod:`.ntk`: :class:`NTKOperator`, the operator (shape, residual, measuring state, counted
  products and quadratic forms, conversions).
* :mod:`.parts`: the one-pass preparation (micro-batches, masks, D, loss and residual).
* :mod:`.products`: the product itself, J·(Jᵀ U), in either :class:`ProductMode`.
* :mod:`.verify`: the one-time product check behind the verified AUTO fallback.
* :mod:`.hutchinson`: Hutchinson's trace estimate over any operator.
* :mod:`.matrix`: :class:`MatrixOperator`, an explicit Θ with the same interface.
* :mod:`.modes`: :data:`KRYLOV_DTYPE` and :class:`ProductMode`; :mod:`.vjp`: ``batched_vjp``.
"""

from specprobe.core.operator.matrix import MatrixOperator
from specprobe.core.operator.modes import KRYLOV_DTYPE, ProductMode
from specprobe.core.operator.ntk import NTKOperator
from specprobe.core.operator.vjp import batched_vjp

__all__ = ["KRYLOV_DTYPE", "MatrixOperator", "NTKOperator", "ProductMode", "batched_vjp"]
