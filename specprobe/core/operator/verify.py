"""The one-time product check: zᵢᵀΘzⱼ through J·w against ⟨Jᵀzᵢ, Jᵀzⱼ⟩, the verified fallback."""

from __future__ import annotations

import torch

from specprobe.core.operator.modes import KRYLOV_DTYPE, ProductMode
from specprobe.core.operator.products import JacobianProducts
from specprobe.errors import SpecprobeError


class VerifiedProducts(JacobianProducts):
    """:class:`JacobianProducts` with the check that runs before an operator's first product."""

    products: int
    vector_batch_size: int
    _num_outputs: int
    _verified: bool

    def _verify_products(self) -> None:
        """Check zᵢᵀΘzⱼ = ⟨Jᵀzᵢ, Jᵀzⱼ⟩ on two random z; switch AUTO to JVP, or raise, when it fails.

        The left side goes through J·w (the mode under test), the right side only through
        vector–Jacobian products, which are computed inside the product anyway: the check
        costs 2 products. A J·w that misses a path (an autograd Function with a
        ``@once_differentiable`` backward drops it silently under double backward) gives a
        smaller quadratic form, even when the wrong Θ stays symmetric.

        The two columns go through the products ``vector_batch_size`` at a time, so the
        check holds no more parameter-sized vectors than a product does: with one column
        per pass it compares the two quadratic forms, with two the whole 2 × 2 Gram matrix.
        Gram entries are summed tensor by tensor in float64 (:func:`~.products.gram_matrix`).
        """
        self._verified = True
        tolerance = {torch.float64: 1e-8, torch.float32: 1e-4}.get(self.model_dtype, 3e-2)
        generator = torch.Generator().manual_seed(12345)
        Z = torch.randn(self._num_outputs, 2, generator=generator, dtype=KRYLOV_DTYPE).to(self._device)

        def mismatch() -> float:
            through_jvp, grams = [], []
            for lo in range(0, 2, self.vector_batch_size):
                chunk = Z[:, lo : lo + self.vector_batch_size]
                product, gram = self._product(chunk, gram=True)
                self.products += chunk.shape[1]
                through_jvp.append((chunk.T @ product).reshape(-1))
                grams.append(gram.reshape(-1))
            left, right = torch.cat(through_jvp), torch.cat(grams)
            return float((left - right).norm() / right.norm().clamp_min(1e-300))

        error = mismatch()
        if error <= tolerance:
            return
        mode = self.mode_used.value if self.mode_used is not None else "auto"
        found = f"zᵀΘz from J·w differs from ‖Jᵀz‖² by {error:.2e} (> {tolerance:.0e}) in mode {mode!r}"
        if self.mode is ProductMode.AUTO and self.mode_used is ProductMode.DOUBLE_VJP:
            self.mode_used = ProductMode.JVP
            self.fallback_reason = f"double_vjp products were inconsistent: {found}"
            for part in self._parts:
                part.cotangent = part.first_vjp = None
            error = mismatch()
            if error <= tolerance:
                return
            found += f", and by {error:.2e} with 'jvp'"
        raise SpecprobeError(
            f"expected products consistent with the Jacobian, found {found}",
            "a custom autograd Function in the model may lack a correct double backward "
            "(@once_differentiable) or jvp; use mode='jvp', or fix the Function",
        )
