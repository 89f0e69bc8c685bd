"""Block Lanczos with full re-orthogonalisation and thick restarts (:attr:`EigenMethod.LANCZOS`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from specprobe.core.operator import KRYLOV_DTYPE
from specprobe.linalg.numerics import eigh_desc, orthonormalize, past, residual_ratios, sym
from specprobe.linalg.protocol import SymmetricOperator


def default_block(k: int, device: torch.device) -> int:
    """2 on CPU (the fewest products that still reveal repeated eigenvalues), min(k, 8) on
    accelerators (a block of products costs little more than one there)."""
    return min(k, 2) if device.type == "cpu" else min(k, 8)


def block_lanczos(
    op: SymmetricOperator,
    d: int,
    k: int,
    b: int,
    m: int,
    tol: float,
    budget: int,
    generator: torch.Generator,
    deadline: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Block Lanczos, full re-orthogonalisation (two Gram–Schmidt passes), thick restarts.
    Stops when the top k pairs converge, after ``budget`` products, or at the first step
    that ends past ``deadline`` (``time.monotonic()``) once the basis holds k vectors,
    whichever comes first.

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
    device = op.device
    krylov = _Krylov.empty(m, d, device)
    Q = _orthonormal_rows(torch.randn(b, d, generator=generator, dtype=KRYLOV_DTYPE).to(device), None)
    added = [(0, Q.shape[0])]  # (step, count) of random directions put into the basis
    first_convergence: int | None = None  # steps the first convergence took
    used = restarts = step = 0
    keep = max(k, min(m - 2 * b, k + (m - k) // 2))
    while Q.shape[0] > 0 and used < budget and not (krylov.n >= k and past(deadline)):
        if krylov.n + Q.shape[0] > krylov.size:  # thick restart: Q is orthogonal to all of V
            krylov.restart(keep, Q.shape[0], b, d)
            restarts += 1
        Q = Q[: budget - used]
        q = Q.shape[0]
        AQ = op.matmat(Q.T).T.contiguous()
        used += q
        step += 1
        W = krylov.append(Q, AQ)
        Q = _orthonormal_rows(W, None, scale=float(AQ.norm(dim=1).max()))
        extra = 0
        if krylov.n >= k:
            theta = krylov.converged_top(W, q, k, d, tol)
            if theta is not None:
                if first_convergence is None:
                    first_convergence = step
                more = _more_directions(theta, k, added, step, first_convergence, full=krylov.n >= d)
                if more is None:
                    break
                extra = more
        # Refill a deficient block, or add the directions asked for, with random vectors.
        missing = min(max(b - Q.shape[0], extra), d - krylov.n - Q.shape[0])
        if missing > 0:
            fresh = torch.randn(missing, d, generator=generator, dtype=KRYLOV_DTYPE).to(device)
            fresh = _orthonormal_rows(fresh, torch.cat([krylov.V[: krylov.n], Q]))
            Q = torch.cat([Q, fresh])
            added.append((step, fresh.shape[0]))
    return (*krylov.top(k), restarts)


@dataclass
class _Krylov:
    """The Lanczos basis V, its products AV = ΘV and H = VᵀΘV; rows 0..n−1 in use.

    Blocks are stored as rows, (vectors, D), so every product with the basis reads it
    contiguously: about 3× faster than column slices of a (D, m) buffer. Memory:
    2·m·D·8 bytes.
    """

    V: Tensor
    AV: Tensor
    H: Tensor
    n: int = 0

    @classmethod
    def empty(cls, m: int, d: int, device: torch.device) -> _Krylov:
        V = torch.empty(m, d, dtype=KRYLOV_DTYPE, device=device)
        return cls(V, torch.empty_like(V), torch.zeros(m, m, dtype=KRYLOV_DTYPE, device=device))

    @property
    def size(self) -> int:
        """m, the rows the buffers hold."""
        return int(self.V.shape[0])

    def restart(self, keep: int, width: int, b: int, d: int) -> None:
        """Keep the top ``keep`` Ritz vectors Y = Sᵀ V (the pending block is orthogonal to them)."""
        n, device = self.n, self.V.device
        theta, S = eigh_desc(self.H[:n, :n])
        top = S[:, :keep].T
        self.V[:keep] = top @ self.V[:n]
        self.AV[:keep] = top @ self.AV[:n]
        self.H.zero_()
        self.H[:keep, :keep] = torch.diag(theta[:keep])
        self.n = n = keep
        if n + width > self.size:  # blocks widened by added directions: make room
            m = min(d, n + 2 * width + b)
            self.V = torch.cat([self.V[:n], torch.empty(m - n, d, dtype=self.V.dtype, device=device)])
            self.AV = torch.cat([self.AV[:n], torch.empty(m - n, d, dtype=self.V.dtype, device=device)])
            grown = torch.zeros(m, m, dtype=self.H.dtype, device=device)
            grown[:n, :n] = self.H[:n, :n]
            self.H = grown

    def append(self, Q: Tensor, AQ: Tensor) -> Tensor:
        """Add the block Q (q, D) and its product AQ; return W = (I − VVᵀ)ΘQ, (q, D)."""
        n, q = self.n, Q.shape[0]
        self.V[n : n + q] = Q
        self.AV[n : n + q] = AQ
        basis = self.V[: n + q]
        coeff = basis @ AQ.T  # (n + q, q): the new columns of H = VᵀΘV
        self.H[: n + q, n : n + q] = coeff
        self.H[n : n + q, :n] = coeff[:n].T
        self.H[n : n + q, n : n + q] = sym(coeff[n:])
        W = AQ - coeff.T @ basis
        W = W - (W @ basis.T) @ basis  # second Gram–Schmidt pass: orthogonality to rounding
        self.n = n + q
        return W

    def converged_top(self, W: Tensor, q: int, k: int, d: int, tol: float) -> Tensor | None:
        """The Ritz values (all n) when the top k pairs have converged, else None.

        The free estimate ‖W s_last‖ screens first; explicit residuals ‖Sᵀ(AV) − θ SᵀV‖
        confirm (a full basis, n = D, skips the screen).
        """
        n = self.n
        theta, S = eigh_desc(self.H[:n, :n])
        # ‖W s_last‖ for each top-k Ritz vector, from the q×q Gram matrix of W.
        last = S[n - q : n, :k]
        estimate = residual_ratios(theta[:k], ((W @ W.T) @ last * last).sum(0).clamp_min(0).sqrt())
        if not (n >= d or bool((estimate <= tol).all())):
            return None
        top = S[:, :k]
        R = top.T @ self.AV[:n] - theta[:k, None] * (top.T @ self.V[:n])
        return theta if bool((residual_ratios(theta[:k], R.norm(dim=1)) <= tol).all()) else None

    def top(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """The top-k Ritz values (k,), vectors (D, k) and their products (D, k)."""
        theta, S = eigh_desc(self.H[: self.n, : self.n])
        top = S[:, :k].T
        return theta[:k], (top @ self.V[: self.n]).T, (top @ self.AV[: self.n]).T


def _more_directions(
    theta: Tensor, k: int, added: list[tuple[int, int]], step: int, first_convergence: int, *, full: bool
) -> int | None:
    """After a convergence at ``step``: None to stop, else how many fresh random directions to add.

    ``added`` lists (step, count) of the random directions put into the basis, and
    ``first_convergence`` the steps the first convergence took (see :func:`block_lanczos`,
    repeated eigenvalues).
    """
    cluster = _largest_open_cluster(theta, k)
    total = sum(c for _, c in added)
    developed = sum(c for t, c in added if step - t >= first_convergence)
    if full or cluster < 2:
        return None
    if cluster >= total:
        return min(total, k)  # look for more copies: double the random directions
    if developed == total:
        return None  # every random direction has grown its copies: none are missing
    return 0


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


def _orthonormal_rows(W: Tensor, against: Tensor | None, *, scale: float | None = None) -> Tensor:
    """:func:`~specprobe.linalg.numerics.orthonormalize` on rows: W (b, D) → orthonormal rows ⊥ ``against`` (n, D)."""
    return orthonormalize(W.T, None if against is None else against.T, scale=scale).T
