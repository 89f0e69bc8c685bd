"""Trace estimates of Θ: the deflated (Hutch++-style) trace over a top eigenspace.

Plain Hutchinson is :meth:`specprobe.core.operator.NTKOperator.trace_hutchinson` (for any
operator: :func:`specprobe.core.operator.hutchinson.hutchinson`); the deflated estimate
below uses the same estimator on projected probes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from specprobe.core.operator import KRYLOV_DTYPE
from specprobe.core.operator.hutchinson import check_probes, hutchinson
from specprobe.core.probes import rademacher_columns
from specprobe.errors import SpecprobeError
from specprobe.linalg.numerics import orthonormalize
from specprobe.linalg.protocol import SymmetricOperator, counts


@dataclass(frozen=True)
class TraceEstimate:
    """Tr Θ = exact part over a subspace Q + Hutchinson estimate of the deflated remainder."""

    trace: float
    """The estimate of Tr Θ (χ_net)."""
    stderr: float
    """Standard error (of the remainder's Hutchinson mean; the exact part has none)."""
    exact_part: float
    """Tr(QᵀΘQ) over the deflation space."""
    remainder: float
    """Hutchinson estimate of Tr((I−QQᵀ)Θ(I−QQᵀ))."""
    rank: int
    """Dimension of Q."""
    probes: int
    products: int
    """Columns of Θ·U used (the Hutch++ sketch; 0 with a given basis)."""
    quadratic_forms: int
    """Columns of ‖Jᵀz‖² used (half a product each)."""
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "stderr": self.stderr,
            "exact_part": self.exact_part,
            "remainder": self.remainder,
            "rank": self.rank,
            "probes": self.probes,
            "products": self.products,
            "quadratic_forms": self.quadratic_forms,
            "seed": self.seed,
        }


def deflated_trace(
    op: SymmetricOperator,
    *,
    rank: int = 20,
    probes: int = 32,
    seed: int = 0,
    basis: Tensor | None = None,
    basis_values: Tensor | None = None,
) -> TraceEstimate:
    """Tr Θ with the top eigenspace removed exactly and the rest estimated (Hutch++ style).

    For any orthonormal Q (D×r) with projector Π = QQᵀ, Tr Θ = Tr(QᵀΘQ) + Tr((I−Π)Θ(I−Π)).
    The first term is computed exactly; the second by Hutchinson with Rademacher probes
    z_j projected, z'_j = (I−Π)z_j: E ‖Jᵀz'‖² = Tr((I−Π)Θ(I−Π)). Q does not depend on the
    probes, so the estimate is unbiased; when Q spans the top eigenspace, the remainder's
    variance (2‖(I−Π)Θ(I−Π)‖_F² per probe) lacks the dominant eigenvalues' part.

    Q comes from ``basis`` (e.g. ``Spectrum.eigenvectors``: Ritz vectors; with their Ritz
    values as ``basis_values`` the exact part costs nothing), or, without one, from a
    Hutch++ sketch: Q = orth(Θ Ω) for Rademacher Ω (D×rank).

    Cost: sketch ``rank`` products + ``rank`` quadratic forms (none with a basis and its
    values), plus ``probes`` quadratic forms (vector–Jacobian products only). Probe j is
    the same Rademacher vector as probe j of :meth:`NTKOperator.trace_hutchinson` with
    this seed.
    """
    check_probes(probes)
    d = op.shape[0]
    products_before, forms_before = counts(op)
    with op:
        Q = _deflation_basis(op, d, rank, seed, basis, basis_values is None)
        if basis_values is not None and basis is not None:
            exact = float(basis_values.sum())
        else:
            exact = float(op.quadratic_form(Q).sum()) if Q.shape[1] else 0.0
        remainder, stderr = hutchinson(op, probes, seed, deflate=Q)
    products_after, forms_after = counts(op)
    return TraceEstimate(
        trace=exact + remainder,
        stderr=stderr,
        exact_part=exact,
        remainder=remainder,
        rank=int(Q.shape[1]),
        probes=probes,
        products=products_after - products_before,
        quadratic_forms=forms_after - forms_before,
        seed=seed,
    )


def _deflation_basis(
    op: SymmetricOperator, d: int, rank: int, seed: int, basis: Tensor | None, orthonormalize_basis: bool
) -> Tensor:
    """Q (D, r) orthonormal: the given basis (orthonormalised unless its values come with it),
    or the Hutch++ sketch orth(Θ Ω) from ``rank`` products."""
    device = op.device
    if basis is not None:
        Q = basis.to(device=device, dtype=KRYLOV_DTYPE)
        if Q.ndim != 2 or Q.shape[0] != d:
            raise SpecprobeError(
                f"expected a basis of shape (D={d}, r), found {tuple(Q.shape)}",
                "pass Spectrum.eigenvectors (spectrum(..., return_eigenvectors=True))",
            )
        return orthonormalize(Q, None) if orthonormalize_basis else Q
    if not 1 <= rank < d:
        raise SpecprobeError(f"expected 1 <= rank < D={d} for the sketch, found rank={rank}", "use rank=20")
    omega = rademacher_columns(d, rank, seed + 1, device=device)  # not the Hutchinson probes' stream
    return orthonormalize(op.matmat(omega), None)
