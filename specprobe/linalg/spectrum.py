"""Top-k eigenpairs of Θ: :class:`EigenMethod`, :class:`Spectrum`, and :func:`spectrum` / :func:`spectrum_of`.

:func:`spectrum_of` validates, dispatches to one solver (:mod:`.lanczos`, :mod:`.lobpcg`,
:mod:`.dense`) inside ``with op:`` (one shared forward graph), then adds what every method
reports: honest Ritz residuals, the residual overlaps q_k and, on request, the deflated trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from specprobe.choices import parse_enum
from specprobe.core.adapters import Adapter, AdapterKind
from specprobe.core.operator import KRYLOV_DTYPE, NTKOperator, ProductMode
from specprobe.errors import SpecprobeError
from specprobe.linalg.dense import DEFAULT_MAX_DENSE_OUTPUTS, dense_eigenpairs
from specprobe.linalg.lanczos import block_lanczos, default_block
from specprobe.linalg.lobpcg import lobpcg
from specprobe.linalg.numerics import fix_signs, floats, relative_residuals
from specprobe.linalg.protocol import SymmetricOperator, counts
from specprobe.linalg.trace import deflated_trace


class EigenMethod(str, Enum):
    """How the top-k eigenpairs of Θ are found."""

    LANCZOS = "lanczos"
    """Block Lanczos with full re-orthogonalisation in float64 and thick restarts: the basis
    grows by one block of b products per step up to ``basis_size`` vectors, then restarts
    from the best Ritz vectors and the next Lanczos block. Rayleigh–Ritz uses the stored
    products, so Ritz residuals are exact. Repeated eigenvalues (head-only kernels repeat
    each one V times) are noticed once b copies appear, and more random directions are
    added until all copies in the top k are found. Memory: 2·basis_size·D·8 bytes. The
    default."""

    LOBPCG = "lobpcg"
    """Locally optimal block preconditioned conjugate gradient (no preconditioner), own
    implementation in float64: Rayleigh–Ritz on [X, R, P] with a block X of k + guard
    vectors; one product per unconverged column per iteration. Needs fewer vectors in
    memory (≈ 6 blocks) than Lanczos, usually more products on clustered spectra."""

    DENSE = "dense"
    """Θ built column by column from D products, then a full eigendecomposition: exact, for
    tiny D only (refused above ``max_dense_outputs``, default 4096)."""


@dataclass(frozen=True)
class Spectrum:
    """The top-k eigenpairs of Θ on one batch, with their quality and the residual overlaps.

    Arrays have one entry per eigenpair, largest eigenvalue first.
    """

    eigenvalues: np.ndarray
    """λ_1 ≥ … ≥ λ_k (Ritz values), shape (k,)."""
    residuals: np.ndarray
    """Ritz residuals ‖Θv_k − λ_k v_k‖ / λ_k, shape (k,); for eigenvalues below √ε·λ_1
    (numerically zero) relative to √ε·λ_1 instead."""
    converged: np.ndarray
    """residual ≤ tol per pair, shape (k,) bool. A budget too small leaves pairs False."""
    overlaps: np.ndarray
    """q_k = (v_k·g)² / ‖g‖² of the loss residual g, shape (k,) (NaN when the operator has
    no residual)."""
    eigenvectors: Tensor | None
    """v_k as columns, (D, k) float64, sign fixed so each vector's largest entry is
    positive; None unless asked for (``return_eigenvectors=True``)."""
    num_outputs: int
    """D."""
    products: int
    """Columns of Θ·U used (each a vector–Jacobian plus a Jacobian–vector product),
    including an NTKOperator's one-time 2-product self-check when it ran in this call."""
    quadratic_forms: int
    """Columns of ‖Jᵀz‖² used for the trace (half a product each)."""
    iterations: int
    """Restarts (LANCZOS) or iterations (LOBPCG); 0 for DENSE."""
    method: str
    tol: float
    block_size: int
    seed: int
    time_s: float
    trace: float | None
    """χ_net = Tr Θ when computed: exact for DENSE, deflated Hutchinson with
    ``trace_probes`` > 0 (see :func:`deflated_trace`), else None."""
    trace_stderr: float | None
    chi_loss: float | None
    """‖g‖² (χ_loss), when the operator has a residual."""
    product_mode: str | None
    """How J·w was computed (:class:`specprobe.core.operator.ProductMode`), None for a matrix."""
    stopped_by: str = "tolerance"
    """Why the solve stopped: ``tolerance`` (every pair converged, or DENSE),
    ``products`` (``max_products`` spent), ``time`` (``max_seconds`` passed) or ``space``
    (the whole space of D vectors explored)."""

    @property
    def k(self) -> int:
        return int(self.eigenvalues.shape[0])

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    @property
    def num_converged(self) -> int:
        return int(self.converged.sum())

    def describe(self) -> str:
        """One line: what the solve reached and why it stopped (for a log or a report)."""
        reached = (
            f"{self.num_converged} of {self.k} eigenpairs converged to tol {self.tol:g} "
            f"(residuals {float(self.residuals.min()):.2g} to {float(self.residuals.max()):.2g}) "
            f"in {self.products} products, {self.time_s:.1f} s"
        )
        if self.all_converged:
            return reached
        why = {
            "products": "stopped at its budget of products (max_products): raise it to go on",
            "time": "stopped at its time budget (max_seconds): raise it to go on",
            "space": "the whole space was explored: the rest are as accurate as D allows",
        }.get(self.stopped_by, f"stopped ({self.stopped_by})")
        return f"{reached}; {why}"

    @property
    def captured_residual_mass(self) -> float:
        """Σ_{k≤K} q_k: the fraction of ‖g‖² in the top-K eigenspace."""
        return float(self.overlaps.sum())

    def to_dict(self) -> dict[str, Any]:
        """All fields except the eigenvectors, JSON-ready (lists and floats)."""
        return {
            "eigenvalues": floats(self.eigenvalues),
            "residuals": floats(self.residuals),
            "converged": [bool(c) for c in self.converged],
            "overlaps": floats(self.overlaps),
            "num_outputs": self.num_outputs,
            "products": self.products,
            "quadratic_forms": self.quadratic_forms,
            "iterations": self.iterations,
            "method": self.method,
            "tol": self.tol,
            "block_size": self.block_size,
            "seed": self.seed,
            "time_s": self.time_s,
            "trace": self.trace,
            "trace_stderr": self.trace_stderr,
            "chi_loss": self.chi_loss,
            "product_mode": self.product_mode,
        }


def spectrum(
    model: nn.Module,
    batch: Any,
    k: int = 20,
    *,
    method: EigenMethod | str = EigenMethod.LANCZOS,
    tol: float = 1e-6,
    max_products: int | None = None,
    max_seconds: float | None = None,
    adapter: Adapter | AdapterKind | str | Callable[[nn.Module, Any], Any] | None = None,
    params: Sequence[str] | str | None = None,
    micro_batch_size: int | None = None,
    return_eigenvectors: bool = False,
    seed: int = 0,
    block_size: int | None = None,
    basis_size: int | None = None,
    trace_probes: int = 0,
    mode: ProductMode | str = ProductMode.AUTO,
    cache_graph: bool = True,
    max_dense_outputs: int = DEFAULT_MAX_DENSE_OUTPUTS,
) -> Spectrum:
    """The top-k eigenpairs of the eNTK Θ of ``model`` on ``batch``.

    Builds an :class:`~specprobe.core.operator.NTKOperator` (arguments ``adapter``, ``params``,
    ``micro_batch_size``, ``mode``, ``cache_graph`` as there) and calls
    :func:`spectrum_of`, which documents the rest. The model is in measuring state during
    the solve and restored after. Cost: 1 forward pass per micro-batch to set up, one more
    for the shared graph, then the products (at most ``max_products``).
    """
    op = NTKOperator(
        model,
        batch,
        adapter=adapter,
        params=params,
        micro_batch_size=micro_batch_size,
        mode=mode,
        cache_graph=cache_graph,
    )
    return spectrum_of(
        op,
        k,
        method=method,
        tol=tol,
        max_products=max_products,
        max_seconds=max_seconds,
        return_eigenvectors=return_eigenvectors,
        seed=seed,
        block_size=block_size,
        basis_size=basis_size,
        trace_probes=trace_probes,
        max_dense_outputs=max_dense_outputs,
    )


def spectrum_of(
    op: SymmetricOperator,
    k: int = 20,
    *,
    method: EigenMethod | str = EigenMethod.LANCZOS,
    tol: float = 1e-6,
    max_products: int | None = None,
    max_seconds: float | None = None,
    return_eigenvectors: bool = False,
    seed: int = 0,
    block_size: int | None = None,
    basis_size: int | None = None,
    trace_probes: int = 0,
    max_dense_outputs: int = DEFAULT_MAX_DENSE_OUTPUTS,
) -> Spectrum:
    """The top-k eigenpairs of a symmetric operator (an NTKOperator, or a MatrixOperator).

    Args:
        op: the operator; used inside ``with op:`` so a cached forward graph is shared by
            every product of the solve.
        k: number of eigenpairs, 1 ≤ k ≤ D.
        method: :class:`EigenMethod` (block Lanczos by default).
        tol: a pair is converged when its Ritz residual ‖Θv − λv‖/λ ≤ tol. Eigenvalue
            errors are about tol²·λ·(λ/gap), so 1e-6 gives eigenvalues to ~1e-10 relative
            when the spectrum is not clustered.
        max_products: the solver's budget of columns of Θ·U (default max(600, 40·k)); when
            it runs out the result says which pairs have not converged. An NTKOperator's
            one-time 2-product self-check (``verify``) comes on top.
        max_seconds: a time budget for the iterations (LANCZOS, LOBPCG): the solve stops
            after the first step that ends past it. None: no limit. Whichever budget stops
            it, the result says what it reached (``converged``, ``residuals``,
            ``stopped_by``, :meth:`Spectrum.describe`).
        return_eigenvectors: keep v_k (D·k float64) in the result.
        seed: seed of the random start block.
        block_size: b, columns per product block. LANCZOS: default 2 on CPU, min(k, 8) on
            accelerators; larger blocks use the hardware better (one batched backward pass
            per block), smaller ones need fewer products; b ≥ 2 is needed to notice
            repeated eigenvalues (see :attr:`EigenMethod.LANCZOS`). LOBPCG: default k + guard
            (k//4, at least 2); it finds up to b copies of a repeated eigenvalue.
        basis_size: LANCZOS basis size m before a restart (default max(3k, k + 6b), capped
            at D).
        trace_probes: > 0 also estimates Tr Θ by :func:`deflated_trace` over the computed
            eigenvectors with that many Hutchinson probes (quadratic forms only).
        max_dense_outputs: DENSE refuses D above this.

    Returns:
        A frozen :class:`Spectrum`; ``products`` counts every column used, ``time_s`` the
        wall time.

    Raises:
        SpecprobeError: on bad arguments; TooLargeError for DENSE above its limit.
    """
    start = time.perf_counter()
    chosen = parse_enum(EigenMethod, method, "eigen method")
    d = op.shape[0]
    budget = _checked_budget(k, d, tol, max_products, trace_probes)
    if max_seconds is not None and not max_seconds > 0:
        raise SpecprobeError(
            f"expected max_seconds > 0, found {max_seconds}", "leave it None for no time limit"
        )
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    counts_before = counts(op)
    generator = torch.Generator().manual_seed(seed)
    trace: float | None = None
    trace_stderr: float | None = None
    with op:
        if chosen is EigenMethod.DENSE:
            b = block_size or min(d, 64)
            values, vectors, applied, exact_trace = dense_eigenpairs(op, k, b, max_dense_outputs)
            trace, trace_stderr, iterations = exact_trace, 0.0, 0
        elif chosen is EigenMethod.LANCZOS:
            b = min(block_size or default_block(k, op.device), d)
            m = min(max(basis_size or max(3 * k, k + 6 * b), k + 2 * b), d)
            values, vectors, applied, iterations = block_lanczos(
                op, d, k, b, m, tol, budget, generator, deadline
            )
        else:
            b = _lobpcg_block(k, d, block_size, budget)
            values, vectors, applied, iterations = lobpcg(op, d, k, b, tol, budget, generator, deadline)
        residuals = relative_residuals(values, vectors, applied)
        vectors = fix_signs(vectors)
        chi_loss, overlaps = _overlaps(op.residual, vectors, k)
        if trace_probes and chosen is not EigenMethod.DENSE:
            estimate = deflated_trace(op, probes=trace_probes, seed=seed, basis=vectors, basis_values=values)
            trace, trace_stderr = estimate.trace, estimate.stderr
    products, quadratic_forms = (
        after - before for after, before in zip(counts(op), counts_before, strict=True)
    )
    mode_used = getattr(op, "mode_used", None)
    converged = residuals <= tol
    if chosen is EigenMethod.DENSE or bool(converged.all()):
        stopped_by = "tolerance"
    elif products >= budget:  # (an operator's one-time self-check counts too: a 2-product slack)
        stopped_by = "products"
    elif deadline is not None and time.monotonic() > deadline:
        stopped_by = "time"
    else:
        stopped_by = "space"
    return Spectrum(
        eigenvalues=values.cpu().numpy(),
        residuals=residuals,
        converged=converged,
        overlaps=overlaps,
        eigenvectors=vectors if return_eigenvectors else None,
        num_outputs=d,
        products=products,
        quadratic_forms=quadratic_forms,
        iterations=iterations,
        method=chosen.value,
        tol=tol,
        block_size=b,
        seed=seed,
        time_s=time.perf_counter() - start,
        trace=trace,
        trace_stderr=trace_stderr,
        chi_loss=chi_loss,
        product_mode=mode_used.value if isinstance(mode_used, ProductMode) else None,
        stopped_by=stopped_by,
    )


def _checked_budget(k: int, d: int, tol: float, max_products: int | None, trace_probes: int) -> int:
    """The product budget (default max(600, 40·k)), after checking :func:`spectrum_of`'s settings."""
    if not 1 <= k <= d:
        raise SpecprobeError(
            f"expected 1 <= k <= D={d} eigenpairs, found k={k}", f"ask for at most {d} eigenpairs"
        )
    if not tol > 0:
        raise SpecprobeError(f"expected tol > 0, found {tol}", "use tol=1e-6")
    budget = max_products if max_products is not None else max(600, 40 * k)
    if budget < k:
        raise SpecprobeError(
            f"expected max_products >= k={k} (a basis of k vectors at least), found {budget}",
            f"raise max_products to {40 * k} or more",
        )
    if trace_probes == 1 or trace_probes < 0:
        raise SpecprobeError(
            f"expected trace_probes = 0 or >= 2 (for a standard error), found {trace_probes}",
            "use trace_probes=32, or 0 for no trace",
        )
    return budget


def _lobpcg_block(k: int, d: int, block_size: int | None, budget: int) -> int:
    """LOBPCG's block: default k + guard (k//4, at least 2), capped at D and the budget; ≥ k."""
    b = min(block_size or k + max(2, k // 4), d, budget)
    if b < k:
        raise SpecprobeError(
            f"expected an LOBPCG block of at least k={k} vectors, found block_size={b}",
            "leave block_size unset",
        )
    return b


def _overlaps(g: Tensor | None, vectors: Tensor, k: int) -> tuple[float | None, np.ndarray]:
    """χ_loss = ‖g‖² and q_k = (v_k·g)²/‖g‖² (zeros when g = 0; None and NaN without g)."""
    if g is None:
        return None, np.full(k, np.nan)
    g = g.to(device=vectors.device, dtype=KRYLOV_DTYPE)
    chi_loss = float(g @ g)
    overlaps = ((vectors.T @ g).square() / chi_loss).cpu().numpy() if chi_loss else np.zeros(k)
    return chi_loss, np.asarray(overlaps, dtype=np.float64)
