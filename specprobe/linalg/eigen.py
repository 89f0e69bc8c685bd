"""Top eigenpairs, spectral density and trace estimates of the eNTK, over its products.

Everything here consumes an operator with the interface of
:class:`specprobe.core.operator.NTKOperator` (``matmat``, ``quadratic_form``, ``shape``,
``residual``): Θ is never formed except by :attr:`EigenMethod.DENSE`. Vectors live in output
space R^D (flat order ``outputs[mask].reshape(-1)``) in float64, so the full
re-orthogonalisation of the Krylov bases costs O(D·m²) flops for a basis of m vectors and
m·D·8 bytes of memory, small against the m products (each a backward pass and a
Jacobian–vector product over the batch).

* :func:`spectrum` / :func:`spectrum_of`: top-k eigenpairs (λ_k, v_k) with honest Ritz
  residuals ‖Θv − λv‖/λ, convergence flags, and the overlaps q_k = (v_k·g)²/‖g‖² of the loss
  residual g (see specprobe.core.measure).
* :func:`spectral_density` / :func:`spectral_density_of`: stochastic Lanczos quadrature
  (SLQ): a spectral density estimate, Tr f(Θ) for any f, and the eigenvalue counting
  function #{λ ≥ t}.
* :func:`deflated_trace`: Tr Θ = Tr(QᵀΘQ) + Tr((I−QQᵀ)Θ(I−QQᵀ)), the first term exact over
  a top eigenspace Q (from a spectrum, or sketched as in Hutch++), the second by
  Hutchinson: a much smaller standard error than plain Hutchinson on top-heavy spectra.
* :func:`summarize_spectrum`: a JSON-ready dict of spectrum summaries (top eigenvalues,
  λ_k/TrΘ, captured residual mass, position index, effective rank, power-law exponent).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from specprobe.choices import parse_enum
from specprobe.core.adapters import Adapter, AdapterKind
from specprobe.core.operator import KRYLOV_DTYPE, NTKOperator, ProductMode
from specprobe.core.probes import rademacher_columns
from specprobe.errors import SpecprobeError, TooLargeError
from specprobe.linalg.fit import power_law

DEFAULT_MAX_DENSE_OUTPUTS = 4096
"""EigenMethod.DENSE refuses D above this: D products and a D×D eigendecomposition (D²·8 bytes)."""


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

    @property
    def k(self) -> int:
        return int(self.eigenvalues.shape[0])

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    @property
    def num_converged(self) -> int:
        return int(self.converged.sum())

    @property
    def captured_residual_mass(self) -> float:
        """Σ_{k≤K} q_k: the fraction of ‖g‖² in the top-K eigenspace."""
        return float(self.overlaps.sum())

    def to_dict(self) -> dict[str, Any]:
        """All fields except the eigenvectors, JSON-ready (lists and floats)."""
        return {
            "eigenvalues": _floats(self.eigenvalues),
            "residuals": _floats(self.residuals),
            "converged": [bool(c) for c in self.converged],
            "overlaps": _floats(self.overlaps),
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
        SpecprobeError on bad arguments, TooLargeError for DENSE above its limit.
    """
    start = time.perf_counter()
    chosen = parse_enum(EigenMethod, method, "eigen method")
    d = op.shape[0]
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
    counts_before = _counts(op)
    generator = torch.Generator().manual_seed(seed)
    trace: float | None = None
    trace_stderr: float | None = None
    with op:
        if chosen is EigenMethod.DENSE:
            if d > max_dense_outputs:
                raise TooLargeError(
                    f"method='dense' builds the D×D kernel from D products; D={d} exceeds "
                    f"max_dense_outputs={max_dense_outputs}",
                    "use method='lanczos', or raise max_dense_outputs",
                )
            b = block_size or min(d, 64)
            theta = _dense(op, d, b)
            values, vectors = torch.linalg.eigh(theta)
            values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k]
            applied = theta @ vectors
            trace, trace_stderr = float(torch.trace(theta)), 0.0
            iterations = 0
        elif chosen is EigenMethod.LANCZOS:
            b = min(block_size or _default_block(k, op.device), d)
            m = min(max(basis_size or max(3 * k, k + 6 * b), k + 2 * b), d)
            values, vectors, applied, iterations = _block_lanczos(op, d, k, b, m, tol, budget, generator)
        else:
            b = min(block_size or k + max(2, k // 4), d, budget)
            if b < k:
                raise SpecprobeError(
                    f"expected an LOBPCG block of at least k={k} vectors, found block_size={b}",
                    "leave block_size unset",
                )
            values, vectors, applied, iterations = _lobpcg(op, d, k, b, tol, budget, generator)
        residuals = _relative_residuals(values, vectors, applied)
        vectors = _fix_signs(vectors)
        g = op.residual
        if g is not None:
            g = g.to(device=vectors.device, dtype=KRYLOV_DTYPE)
            chi_loss: float | None = float(g @ g)
            overlaps = ((vectors.T @ g).square() / chi_loss).cpu().numpy() if chi_loss else np.zeros(k)
        else:
            chi_loss, overlaps = None, np.full(k, np.nan)
        if trace_probes and chosen is not EigenMethod.DENSE:
            estimate = deflated_trace(op, probes=trace_probes, seed=seed, basis=vectors, basis_values=values)
            trace, trace_stderr = estimate.trace, estimate.stderr
    products, quadratic_forms = (
        after - before for after, before in zip(_counts(op), counts_before, strict=True)
    )
    mode_used = getattr(op, "mode_used", None)
    return Spectrum(
        eigenvalues=values.cpu().numpy(),
        residuals=residuals,
        converged=residuals <= tol,
        overlaps=np.asarray(overlaps, dtype=np.float64),
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
    )


# ---- solvers ------------------------------------------------------------------------------


def _block_lanczos(
    op: SymmetricOperator,
    d: int,
    k: int,
    b: int,
    m: int,
    tol: float,
    budget: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Block Lanczos, full re-orthogonalisation (two Gram–Schmidt passes), thick restarts.

    The basis V (D×m, orthonormal) and its products AV = ΘV are both stored, so the
    Rayleigh quotient H = VᵀΘV is exact and the final Ritz residuals ‖AV s − θ V s‖ are
    computed explicitly. Each step appends one block Q and its product; the next block is
    W = (I − VVᵀ)ΘQ, orthonormalised. In exact arithmetic (I − VVᵀ)ΘV = W E_lastᵀ, so the
    residual of the Ritz vector V s is ‖W s_last‖ (s_last: s's entries on the last block): a
    free convergence test, confirmed explicitly before stopping. When the basis is full it
    restarts from the top ``keep`` Ritz vectors Y and the pending block, which is orthogonal
    to them and holds ΘY's component outside span(Y) ("thick restart"). Deficient blocks
    (an invariant subspace found, or Θ of low rank) are refilled with random vectors
    orthogonal to the basis.

    Repeated eigenvalues: a Krylov space grown from r random directions holds at most r
    copies of an eigenvalue, with small residuals, so a missing copy cannot be seen in the
    residuals. (Head-only kernels are like that: Θ = HHᵀ ⊗ I_V repeats every eigenvalue V
    times.) So when the converged top-k Ritz values contain a cluster of c ≥ 2 equal values
    and another copy would change the top k, the solve goes on: with as many fresh random
    directions as used so far (at most k) when c ≥ their number, and until every random
    direction has had as many steps as the first convergence took (to grow its copies). With b = 1 a
    repeated eigenvalue shows one copy and cannot be noticed: the default b is at least 2.

    Returns the top-k Ritz values (k,), vectors (D, k), their products Θ·vectors (D, k)
    and the number of restarts. Cost per step: b products plus O(D·m·b) flops.
    """
    # Blocks are stored as rows, (vectors, D), so every product with the basis reads it
    # contiguously: about 3× faster than column slices of a (D, m) buffer.
    device = op.device
    V = torch.empty(m, d, dtype=KRYLOV_DTYPE, device=device)
    AV = torch.empty_like(V)
    H = torch.zeros(m, m, dtype=KRYLOV_DTYPE, device=device)
    Q = _orthonormal_rows(torch.randn(b, d, generator=generator, dtype=KRYLOV_DTYPE).to(device), None)
    added = [(0, Q.shape[0])]  # (step, count) of random directions put into the basis
    first_convergence: int | None = None  # steps the first convergence took
    n = used = restarts = step = 0
    keep = max(k, min(m - 2 * b, k + (m - k) // 2))
    while Q.shape[0] > 0 and used < budget:
        if n + Q.shape[0] > m:  # thick restart: Q is orthogonal to all of V, so to Y = Sᵀ V
            theta, S = _eigh_desc(H[:n, :n])
            top = S[:, :keep].T
            V[:keep] = top @ V[:n]
            AV[:keep] = top @ AV[:n]
            H.zero_()
            H[:keep, :keep] = torch.diag(theta[:keep])
            n = keep
            restarts += 1
            if n + Q.shape[0] > m:  # blocks widened by added directions: make room
                m = min(d, n + 2 * Q.shape[0] + b)
                V = torch.cat([V[:n], torch.empty(m - n, d, dtype=V.dtype, device=device)])
                AV = torch.cat([AV[:n], torch.empty(m - n, d, dtype=V.dtype, device=device)])
                grown = torch.zeros(m, m, dtype=H.dtype, device=device)
                grown[:n, :n] = H[:n, :n]
                H = grown
        Q = Q[: budget - used]
        q = Q.shape[0]
        AQ = op.matmat(Q.T).T.contiguous()
        used += q
        step += 1
        V[n : n + q] = Q
        AV[n : n + q] = AQ
        basis = V[: n + q]
        coeff = basis @ AQ.T  # (n + q, q): the new columns of H = VᵀΘV
        H[: n + q, n : n + q] = coeff
        H[n : n + q, :n] = coeff[:n].T
        H[n : n + q, n : n + q] = _sym(coeff[n:])
        W = AQ - coeff.T @ basis
        W = W - (W @ basis.T) @ basis  # second Gram–Schmidt pass: orthogonality to rounding
        n += q
        Q = _orthonormal_rows(W, None, scale=float(AQ.norm(dim=1).max()))
        extra = 0
        if n >= k:
            theta, S = _eigh_desc(H[:n, :n])
            # ‖W s_last‖ for each top-k Ritz vector, from the q×q Gram matrix of W.
            last = S[n - q : n, :k]
            estimate = _residual_ratios(theta[:k], ((W @ W.T) @ last * last).sum(0).clamp_min(0).sqrt())
            if (n >= d or bool((estimate <= tol).all())) and _converged_rows(
                V[:n], AV[:n], theta[:k], S[:, :k], tol
            ):
                if first_convergence is None:
                    first_convergence = step
                cluster = _largest_open_cluster(theta, k)
                total = sum(c for _, c in added)
                developed = sum(c for t, c in added if step - t >= first_convergence)
                if n >= d or cluster < 2:
                    break
                if cluster >= total:
                    extra = min(total, k)  # look for more copies: double the random directions
                elif developed == total:
                    break  # every random direction has grown its copies: none are missing
        # Refill a deficient block, or add the directions asked for, with random vectors.
        missing = min(max(b - Q.shape[0], extra), d - n - Q.shape[0])
        if missing > 0:
            fresh = torch.randn(missing, d, generator=generator, dtype=KRYLOV_DTYPE).to(device)
            fresh = _orthonormal_rows(fresh, torch.cat([V[:n], Q]))
            Q = torch.cat([Q, fresh])
            added.append((step, fresh.shape[0]))
    theta, S = _eigh_desc(H[:n, :n])
    top = S[:, :k].T
    return theta[:k], (top @ V[:n]).T, (top @ AV[:n]).T, restarts


def _orthonormal_rows(W: Tensor, against: Tensor | None, *, scale: float | None = None) -> Tensor:
    """Rows version of :func:`_orthonormalize`: W (b, D) → orthonormal rows ⊥ ``against`` (n, D)."""
    if scale is None:
        scale = float(W.norm(dim=1).max()) if W.numel() else 0.0
    if scale == 0.0:
        return W[:0]
    if against is not None and against.shape[0]:
        for _ in range(2):
            W = W - (W @ against.T) @ against
    _, sv, vh = torch.linalg.svd(W, full_matrices=False)
    return vh[sv > 1e-10 * scale]


def _converged_rows(V: Tensor, AV: Tensor, theta: Tensor, S: Tensor, tol: float) -> bool:
    """Explicit Ritz residuals ‖Sᵀ(AV) − θ SᵀV‖ ≤ tol for basis rows V and products AV."""
    R = S.T @ AV - theta[:, None] * (S.T @ V)
    return bool((_residual_ratios(theta, R.norm(dim=1)) <= tol).all())


def _largest_open_cluster(theta: Tensor, k: int) -> int:
    """Size of the largest cluster of equal Ritz values that another copy would push into the top k.

    Values within 1e-9·θ_1 count as equal. A cluster of c values starting at index i counts
    when i + c < k (1 when there is none).
    """
    values = theta.cpu().numpy()
    close = 1e-9 * max(abs(float(values[0])), 1e-300)
    largest, i = 1, 0
    while i < min(k, values.size):
        j = i
        while j + 1 < values.size and values[i] - values[j + 1] <= close:
            j += 1
        if i + (j - i + 1) < k:
            largest = max(largest, j - i + 1)
        i = j + 1
    return largest


def _lobpcg(
    op: SymmetricOperator,
    d: int,
    k: int,
    b: int,
    tol: float,
    budget: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """LOBPCG without preconditioner, block X of b ≥ k vectors, soft locking, float64.

    Each iteration: residuals R = ΘX − XΛ of the unconverged columns become W
    (orthonormalised against X and P), ΘW costs one product per column, and Rayleigh–Ritz
    on S = [X, W, P] (orthonormal) gives the new X; P, the new X's component along [W, P],
    carries the conjugate direction. ΘP and ΘX are kept as linear combinations of stored
    products, never recomputed.
    """
    device = op.device
    X = _orthonormalize(_randn(d, b, generator, device), None)
    AX = op.matmat(X)
    used, iterations = X.shape[1], 0
    theta, C = _eigh_desc(_sym(X.T @ AX))
    X, AX = X @ C, AX @ C
    P = torch.empty(d, 0, dtype=KRYLOV_DTYPE, device=device)
    AP = torch.empty_like(P)
    while True:
        R = AX - X * theta
        res = _residual_ratios(theta, R.norm(dim=0))
        if bool((res[:k] <= tol).all()) or used >= budget or X.shape[1] >= d:
            break
        if P.shape[1]:
            c = X.T @ P
            P, AP = _orthonormalize_pair(P - X @ c, AP - AX @ c, P.norm(dim=0).max())
        W = _orthonormalize(R[:, res > tol], torch.cat([X, P], 1))
        W = W[:, : budget - used]
        if W.shape[1] == 0:
            break
        AW = op.matmat(W)
        used += W.shape[1]
        S = torch.cat([X, W, P], 1)
        AS = torch.cat([AX, AW, AP], 1)
        theta_all, C = _eigh_desc(_sym(S.T @ AS))
        C = C[:, : X.shape[1]]
        n = X.shape[1]
        X_new, AX_new = S @ C, AS @ C
        P, AP = S[:, n:] @ C[n:], AS[:, n:] @ C[n:]
        X, AX, theta = X_new, AX_new, theta_all[: X.shape[1]]
        iterations += 1
    return theta[:k], X[:, :k], AX[:, :k], iterations


def _default_block(k: int, device: torch.device) -> int:
    """2 on CPU (the fewest products that still reveal repeated eigenvalues), min(k, 8) on
    accelerators (a block of products costs little more than one there)."""
    return min(k, 2) if device.type == "cpu" else min(k, 8)


def _dense(op: SymmetricOperator, d: int, b: int) -> Tensor:
    """Θ from D products, b columns at a time, symmetrised."""
    columns = []
    for lo in range(0, d, b):
        hi = min(lo + b, d)
        eye = torch.zeros(d, hi - lo, dtype=KRYLOV_DTYPE, device=op.device)
        eye[torch.arange(lo, hi), torch.arange(hi - lo)] = 1.0
        columns.append(op.matmat(eye))
    theta = torch.cat(columns, 1)
    return (theta + theta.T) / 2


# ---- linear algebra helpers ---------------------------------------------------------------


def _randn(d: int, b: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randn(d, b, generator=generator, dtype=KRYLOV_DTYPE).to(device)


def _sym(H: Tensor) -> Tensor:
    return (H + H.T) / 2


def _eigh_desc(H: Tensor) -> tuple[Tensor, Tensor]:
    values, vectors = torch.linalg.eigh(_sym(H))
    return values.flip(0), vectors.flip(1)


def _grow_symmetric(H: Tensor, coeff: Tensor, old: int) -> Tensor:
    """H extended by the columns ``coeff`` = Vᵀ(ΘQ) of the new block (rows: old basis + block)."""
    n = coeff.shape[0]
    out = torch.empty(n, n, dtype=H.dtype, device=H.device)
    out[:old, :old] = H
    out[:, old:] = coeff
    out[old:, :old] = coeff[:old].T
    out[old:, old:] = _sym(coeff[old:])
    return out


def _orthonormalize(W: Tensor, against: Tensor | None, *, drop: float = 1e-10) -> Tensor:
    """An orthonormal basis of span(W) (columns) orthogonal to ``against`` (orthonormal columns).

    Two Gram–Schmidt passes against ``against``, then an SVD that drops directions below
    ``drop`` × the largest column norm of W before projection (dependent ones, or ones
    already in ``against``).
    """
    scale = float(W.norm(dim=0).max()) if W.numel() else 0.0
    if scale == 0.0:
        return W[:, :0]
    for _ in range(2):
        if against is not None and against.shape[1]:
            W = W - against @ (against.T @ W)
    U, sv, _ = torch.linalg.svd(W, full_matrices=False)
    return U[:, sv > drop * scale]


def _orthonormalize_pair(P: Tensor, AP: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Orthonormalise P and apply the same column transform to AP (= ΘP), dropping tiny directions."""
    U, sv, Vh = torch.linalg.svd(P, full_matrices=False)
    keep = sv > 1e-8 * float(scale)
    transform = Vh[keep].T / sv[keep]
    return U[:, keep], AP @ transform


def _residual_ratios(theta: Tensor, norms: Tensor) -> Tensor:
    """‖r_j‖ / max(θ_j, √ε·θ_1) from the residual norms: relative, finite for numerically zero θ."""
    floor = math.sqrt(torch.finfo(KRYLOV_DTYPE).eps) * max(float(theta[0]) if theta.numel() else 0.0, 1e-300)
    return norms / theta.clamp_min(floor)


def _relative_residuals(values: Tensor, vectors: Tensor, applied: Tensor) -> np.ndarray:
    return _residual_ratios(values, (applied - vectors * values).norm(dim=0)).cpu().numpy()


def _fix_signs(vectors: Tensor) -> Tensor:
    """Each column's entry of largest magnitude made positive (a deterministic sign)."""
    idx = vectors.abs().argmax(0)
    signs = torch.sign(vectors[idx, torch.arange(vectors.shape[1], device=vectors.device)])
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def _counts(op: SymmetricOperator) -> tuple[int, int]:
    return int(getattr(op, "products", 0)), int(getattr(op, "quadratic_forms", 0))


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


# ---- stochastic Lanczos quadrature --------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    """Expected eigenvalue counts in log-spaced bins: counts[i] ≈ #{λ ∈ [edges[i], edges[i+1])}."""

    edges: np.ndarray
    """Bin edges, (bins + 1,), log-spaced."""
    counts: np.ndarray
    """Estimated number of eigenvalues per bin, (bins,); sums to D − below − above."""
    below: float
    """Estimated number of eigenvalues below edges[0] (numerically zero ones included)."""

    def to_dict(self) -> dict[str, Any]:
        return {"edges": _floats(self.edges), "counts": _floats(self.counts), "below": self.below}


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of Θ: per probe l, Gauss nodes θ_j and weights τ_j.

    With Rademacher z_l ∈ {±1}^D and q_l = z_l/√D, m Lanczos steps from q_l give
    q_lᵀ f(Θ) q_l ≈ Σ_j τ_j f(θ_j), so Tr f(Θ) ≈ D · mean_l Σ_j τ_j f(θ_j); the density is
    φ(t) ≈ D · mean_l Σ_j τ_j δ(t − θ_j) (in eigenvalues per unit t).
    """

    nodes: np.ndarray
    """θ_j per probe, (probes, steps); padded with 0 (weight 0) after an early stop."""
    weights: np.ndarray
    """τ_j per probe, (probes, steps); each row sums to 1."""
    num_outputs: int
    """D."""
    steps: int
    products: int
    seed: int
    time_s: float

    @property
    def probes(self) -> int:
        return int(self.nodes.shape[0])

    def trace_of(self, f: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
        """SLQ estimate of Tr f(Θ) and its standard error (over probes).

        ``f`` maps an array of eigenvalues to values elementwise (numpy).
        """
        per_probe = self.num_outputs * (self.weights * f(self.nodes)).sum(1)
        stderr = float(per_probe.std(ddof=1) / math.sqrt(self.probes)) if self.probes > 1 else math.nan
        return float(per_probe.mean()), stderr

    def trace(self) -> tuple[float, float]:
        """SLQ estimate of Tr Θ (the same as Hutchinson with these probes) and its standard error."""
        return self.trace_of(lambda x: x)

    def count_above(self, threshold: float) -> tuple[float, float]:
        """#{λ ≥ threshold}: the eigenvalue counting function, estimate and standard error."""
        return self.trace_of(lambda x: (x >= threshold).astype(np.float64))

    def histogram(self, bins: int = 40, lo: float | None = None, hi: float | None = None) -> Histogram:
        """Expected eigenvalue counts on a log grid from ``lo`` to ``hi``.

        Defaults: ``hi`` just above the largest node, ``lo`` = ``hi``·1e-8 or the smallest
        node with weight, whichever is larger. Nodes above ``hi`` go to the last bin.
        """
        mass = self.weights * self.num_outputs / self.probes
        positive = self.nodes[(self.weights > 0) & (self.nodes > 0)]
        top = float(positive.max()) if positive.size else 1.0
        hi = hi if hi is not None else top * (1 + 1e-9)
        lo = lo if lo is not None else max(hi * 1e-8, float(positive.min()) if positive.size else hi * 1e-8)
        if not 0 < lo < hi:
            raise SpecprobeError(f"expected 0 < lo < hi, found lo={lo}, hi={hi}", "pass a positive range")
        edges = np.geomspace(lo, hi, bins + 1)
        nodes = self.nodes.reshape(-1)
        flat_mass = mass.reshape(-1)
        below = float(flat_mass[nodes < lo].sum())
        inside = nodes >= lo
        index = np.clip(np.searchsorted(edges, nodes[inside], side="right") - 1, 0, bins - 1)
        counts = np.bincount(index, weights=flat_mass[inside], minlength=bins).astype(np.float64)
        return Histogram(edges=edges, counts=counts, below=below)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes.tolist(),
            "weights": self.weights.tolist(),
            "num_outputs": self.num_outputs,
            "steps": self.steps,
            "probes": self.probes,
            "products": self.products,
            "seed": self.seed,
            "time_s": self.time_s,
        }


def eigenvalue_count(density: SpectralDensity, threshold: float) -> tuple[float, float]:
    """#{λ_k ≥ threshold} estimated from SLQ, with its standard error (see SpectralDensity)."""
    return density.count_above(threshold)


def spectral_density(
    model: nn.Module,
    batch: Any,
    *,
    probes: int = 8,
    steps: int = 40,
    seed: int = 0,
    adapter: Adapter | AdapterKind | str | Callable[[nn.Module, Any], Any] | None = None,
    params: Sequence[str] | str | None = None,
    micro_batch_size: int | None = None,
    reorthogonalize: bool = True,
) -> SpectralDensity:
    """SLQ spectral density of the eNTK of ``model`` on ``batch``; see :func:`spectral_density_of`."""
    op = NTKOperator(model, batch, adapter=adapter, params=params, micro_batch_size=micro_batch_size)
    return spectral_density_of(op, probes=probes, steps=steps, seed=seed, reorthogonalize=reorthogonalize)


def spectral_density_of(
    op: SymmetricOperator,
    *,
    probes: int = 8,
    steps: int = 40,
    seed: int = 0,
    reorthogonalize: bool = True,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature: ``steps`` Lanczos steps from each of ``probes`` probes.

    The probes run side by side (one block product of up to ``probes`` columns per step);
    a probe stops early when its Krylov space becomes invariant (the quadrature is then
    exact). Cost: probes × steps products. Memory with ``reorthogonalize`` (full
    re-orthogonalisation in float64, no ghost eigenvalues): probes·steps·D·8 bytes;
    without: 3·probes·D·8 bytes.
    """
    start = time.perf_counter()
    if probes < 2 or steps < 1:
        raise SpecprobeError(
            f"expected probes >= 2 (for a standard error) and steps >= 1, found probes={probes}, steps={steps}",
            "use probes=8, steps=40",
        )
    d = op.shape[0]
    steps = min(steps, d)
    before = _counts(op)[0]
    device = op.device
    q = rademacher_columns(d, probes, seed, device=device) / math.sqrt(d)  # unit vectors
    alpha = np.zeros((probes, steps))
    beta = np.zeros((probes, steps))
    length = np.zeros(probes, dtype=int)
    # Full re-orthogonalisation keeps every Lanczos vector: (probes, steps + 1, D).
    basis = torch.zeros(probes, steps + 1 if reorthogonalize else 0, d, dtype=KRYLOV_DTYPE, device=device)
    if reorthogonalize:
        basis[:, 0] = q.T
    q_prev = torch.zeros_like(q)
    b_prev = torch.zeros(probes, dtype=KRYLOV_DTYPE, device=device)
    active = torch.ones(probes, dtype=torch.bool)
    with op:
        for i in range(steps):
            cols = active.nonzero().squeeze(1)
            if cols.numel() == 0:
                break
            aq = torch.zeros_like(q)
            aq[:, cols.to(device)] = op.matmat(q[:, cols.to(device)])
            a = (q * aq).sum(0)
            r = aq - q * a - q_prev * b_prev
            if reorthogonalize:
                stacked = basis[:, : i + 1]
                for _ in range(2):
                    r = r - torch.einsum("pid,pi->dp", stacked, torch.einsum("pid,dp->pi", stacked, r))
            bnorm = r.norm(dim=0)
            a_np, b_np = a.cpu().numpy(), bnorm.cpu().numpy()
            for p in cols.tolist():
                alpha[p, i] = a_np[p]
                beta[p, i] = b_np[p]
                length[p] = i + 1
            # An (almost) invariant Krylov space: this probe's quadrature is exact now.
            scale = np.abs(alpha[:, : i + 1]).max(1) + 1e-300
            stop = torch.from_numpy(b_np <= 1e-12 * scale)
            active &= ~stop
            q_prev, b_prev = q, bnorm
            q = torch.where(active.to(device), r / bnorm.clamp_min(1e-300), torch.zeros_like(r))
            if reorthogonalize:
                basis[:, i + 1] = q.T
    nodes = np.zeros((probes, steps))
    weights = np.zeros((probes, steps))
    for p in range(probes):
        n = int(length[p])
        tri = np.diag(alpha[p, :n]) + np.diag(beta[p, : n - 1], 1) + np.diag(beta[p, : n - 1], -1)
        values, vectors = np.linalg.eigh(tri)
        nodes[p, :n] = values
        weights[p, :n] = vectors[0] ** 2
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        num_outputs=d,
        steps=steps,
        products=_counts(op)[0] - before,
        seed=seed,
        time_s=time.perf_counter() - start,
    )


# ---- deflated trace -----------------------------------------------------------------------


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
    if probes < 2:
        raise SpecprobeError(
            f"expected at least 2 probes (for a standard error), found probes={probes}", "use probes=32"
        )
    d = op.shape[0]
    products_before, forms_before = _counts(op)
    device = op.device
    with op:
        if basis is not None:
            Q = basis.to(device=device, dtype=KRYLOV_DTYPE)
            if Q.ndim != 2 or Q.shape[0] != d:
                raise SpecprobeError(
                    f"expected a basis of shape (D={d}, r), found {tuple(Q.shape)}",
                    "pass Spectrum.eigenvectors (spectrum(..., return_eigenvectors=True))",
                )
            Q = _orthonormalize(Q, None) if basis_values is None else Q
        else:
            if not 1 <= rank < d:
                raise SpecprobeError(
                    f"expected 1 <= rank < D={d} for the sketch, found rank={rank}", "use rank=20"
                )
            omega = rademacher_columns(d, rank, seed + 1, device=device)  # not the Hutchinson probes' stream
            Q = _orthonormalize(op.matmat(omega), None)
        if basis_values is not None and basis is not None:
            exact = float(basis_values.sum())
        else:
            exact = float(op.quadratic_form(Q).sum()) if Q.shape[1] else 0.0
        z = rademacher_columns(d, probes, seed, device=device)
        z = z - Q @ (Q.T @ z)
        values = op.quadratic_form(z).numpy()
    products_after, forms_after = _counts(op)
    remainder = float(values.mean())
    return TraceEstimate(
        trace=exact + remainder,
        stderr=float(values.std(ddof=1) / math.sqrt(probes)),
        exact_part=exact,
        remainder=remainder,
        rank=int(Q.shape[1]),
        probes=probes,
        products=products_after - products_before,
        quadratic_forms=forms_after - forms_before,
        seed=seed,
    )


# ---- summaries ----------------------------------------------------------------------------


def summarize_spectrum(
    spectrum: Spectrum,
    *,
    chi_net: float | None = None,
    chi_pos: float | None = None,
    density: SpectralDensity | None = None,
) -> dict[str, Any]:
    """Spectrum summaries (the derived quantities of the decomposition) as a JSON-ready dict.

    Pure: no products. ``chi_net`` and ``chi_pos`` come from :func:`specprobe.measure` on the
    same batch and parameters; TrΘ is ``chi_net`` if given, else ``spectrum.trace``, else
    the SLQ estimate of ``density``. A value that cannot be computed from what is given is
    None.

    Keys:
        spectrum_method, spectrum_k, spectrum_num_outputs, spectrum_products: how the
            spectrum was obtained: method, K eigenpairs, D, columns of Θ·U used.
        spectrum_converged: every top-K pair has Ritz residual ≤ tol;
            spectrum_num_converged: how many have.
        spectrum_trace: the TrΘ used below; spectrum_trace_source: "chi_net",
            "spectrum" or "density".
        top_eigenvalues: λ_1 ≥ … ≥ λ_K.
        top_eigenvalue_residuals: their Ritz residuals ‖Θv − λv‖/λ.
        top_eigenvalue_fractions: λ_k / TrΘ.
        top_overlaps: q_k = (v_k·g)²/‖g‖², the share of the loss residual in mode k.
        captured_residual_mass: Σ_{k≤K} q_k, the share of ‖g‖² in the top-K eigenspace.
        position_threshold: χ_pos·TrΘ = gᵀΘg/‖g‖², the eigenvalue at the spectral position.
        position_index: #{k : λ_k ≥ χ_pos·TrΘ}, how deep into the spectrum learning acts.
            Counted from the top-K eigenvalues when the threshold lies inside them (λ_K <
            threshold); otherwise max(K, SLQ count of eigenvalues ≥ threshold), and None
            without a density.
        position_index_is_estimate: False only when counted from converged top-K pairs.
        position_index_stderr: SLQ standard error of the count (0 when counted exactly).
        position_index_lower_bound: K when the threshold lies beyond the top K, else the
            index itself.
        effective_rank: exp(H), H = −Σ_k (λ_k/T) log(λ_k/T) over all D eigenvalues, T =
            TrΘ, estimated by SLQ as Tr f(Θ) with f(λ) = −(λ/T) log(λ/T); needs a density.
        effective_rank_stderr: its standard error, exp(H)·se(H).
        power_law_alpha, power_law_r2: least-squares fit of log λ_k = c − α log k over the
            positive top-K eigenvalues (at least 3), and its R² in log space.
    """
    k = spectrum.k
    lam = spectrum.eigenvalues.astype(np.float64)
    trace: float | None = None
    source: str | None = None
    if chi_net is not None:
        trace, source = float(chi_net), "chi_net"
    elif spectrum.trace is not None:
        trace, source = float(spectrum.trace), "spectrum"
    elif density is not None:
        trace, source = density.trace()[0], "density"

    record: dict[str, Any] = {
        "spectrum_method": spectrum.method,
        "spectrum_k": k,
        "spectrum_num_outputs": spectrum.num_outputs,
        "spectrum_products": spectrum.products,
        "spectrum_converged": spectrum.all_converged,
        "spectrum_num_converged": spectrum.num_converged,
        "spectrum_trace": trace,
        "spectrum_trace_source": source,
        "top_eigenvalues": _floats(lam),
        "top_eigenvalue_residuals": _floats(spectrum.residuals),
        "top_eigenvalue_fractions": _floats(lam / trace) if trace else None,
        "top_overlaps": _floats(spectrum.overlaps),
        "captured_residual_mass": _finite(spectrum.captured_residual_mass),
    }

    index: int | float | None = None
    is_estimate = True
    index_stderr: float | None = None
    lower_bound: int | None = None
    threshold: float | None = None
    if chi_pos is not None and trace is not None:
        threshold = float(chi_pos) * trace
        if lam[-1] < threshold:
            index = int((lam >= threshold).sum())
            # Exact when the pairs that decide the count (up to the first one below) converged.
            is_estimate = not bool(spectrum.converged[: min(index + 1, k)].all())
            index_stderr = 0.0
            lower_bound = index
        else:
            lower_bound = k
            if density is not None:
                count, count_se = density.count_above(threshold)
                index, index_stderr = max(float(k), count), count_se
    record.update(
        position_threshold=threshold,
        position_index=index,
        position_index_is_estimate=is_estimate,
        position_index_stderr=index_stderr,
        position_index_lower_bound=lower_bound,
    )

    effective_rank: float | None = None
    effective_rank_stderr: float | None = None
    if density is not None and trace:
        total = trace

        def entropy_term(x: np.ndarray) -> np.ndarray:
            p = np.clip(x, 0.0, None) / total
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)

        entropy, entropy_se = density.trace_of(entropy_term)
        effective_rank = math.exp(entropy)
        effective_rank_stderr = effective_rank * entropy_se
    record.update(effective_rank=effective_rank, effective_rank_stderr=effective_rank_stderr)

    alpha, r2 = power_law_fit(lam)
    record.update(power_law_alpha=alpha, power_law_r2=r2)
    return record


def power_law_fit(eigenvalues: np.ndarray | Sequence[float]) -> tuple[float | None, float | None]:
    """The decay α and R² of λ_k ≈ c·k^−α over the positive λ_k (k from 1): α is −exponent
    of :func:`specprobe.linalg.fit.power_law` of λ_k on k.

    Returns (None, None) with fewer than 3 positive eigenvalues.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ranks = np.arange(1, lam.size + 1, dtype=np.float64)
    ok = lam > 0
    if ok.sum() < 3:
        return None, None
    fit = power_law(ranks[ok], lam[ok])
    return -fit.exponent, fit.r_squared


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def spectral_record(
    model: nn.Module,
    batch: Any,
    *,
    k: int,
    chi_net: float,
    chi_pos: float,
    density: bool = False,
    method: EigenMethod | str = EigenMethod.LANCZOS,
    adapter: Any = None,
    params: Sequence[str] | str | None = None,
    micro_batch_size: int | None = None,
    trace_probes: int = 32,
    seed: int = 0,
    tol: float = 1e-6,
) -> dict[str, Any]:
    """The spectral fields of a results record for one batch (as analyze writes them).

    Runs :func:`spectrum_of` for the top ``k`` pairs (with a deflated trace estimate from
    ``trace_probes`` probes over the Ritz vectors), optionally :func:`spectral_density_of`,
    and returns :func:`summarize_spectrum`'s dict plus ``deflated_trace``,
    ``deflated_trace_stderr``, ``spectrum_time_s`` and, with ``density``,
    ``spectral_density`` (a log-spaced histogram: ``edges``, ``counts``, ``below``).
    ``chi_net`` and ``chi_pos`` are the measurement's on the same batch and parameters.
    """
    start = time.perf_counter()
    op = NTKOperator(model, batch, adapter=adapter, params=params, micro_batch_size=micro_batch_size)
    with op:
        spec = spectrum_of(
            op, k=min(k, op.shape[0]), method=method, tol=tol, seed=seed, trace_probes=trace_probes
        )
        slq = spectral_density_of(op, seed=seed) if density else None
    out = summarize_spectrum(spec, chi_net=chi_net, chi_pos=chi_pos, density=slq)
    out["deflated_trace"] = spec.trace
    out["deflated_trace_stderr"] = spec.trace_stderr
    out["spectrum_time_s"] = time.perf_counter() - start
    if slq is not None:
        out["spectral_density"] = slq.histogram().to_dict()
    return out
