"""Stochastic Lanczos quadrature (SLQ): a spectral density estimate of Θ, Tr f(Θ) for any f, #{λ ≥ t}."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from specprobe.core.adapters import Adapter, AdapterKind
from specprobe.core.operator import KRYLOV_DTYPE, NTKOperator
from specprobe.core.probes import rademacher_columns
from specprobe.errors import SpecprobeError
from specprobe.linalg.numerics import floats
from specprobe.linalg.protocol import SymmetricOperator, counts


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
        return {"edges": floats(self.edges), "counts": floats(self.counts), "below": self.below}


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
    before = counts(op)[0]
    q = rademacher_columns(d, probes, seed, device=op.device) / math.sqrt(d)  # unit vectors
    with op:
        alpha, beta, length = _lanczos_coefficients(op, q, steps, reorthogonalize)
    nodes, weights = _gauss_rules(alpha, beta, length)
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        num_outputs=d,
        steps=steps,
        products=counts(op)[0] - before,
        seed=seed,
        time_s=time.perf_counter() - start,
    )


def _lanczos_coefficients(
    op: SymmetricOperator, q: Tensor, steps: int, reorthogonalize: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lanczos from each column of q (D, probes, unit norm) side by side: α, β (probes, steps), lengths.

    Row p of α and β holds probe p's tridiagonal matrix for its first ``length[p]`` steps.
    """
    d, probes = q.shape
    device = q.device
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
    return alpha, beta, length


def _gauss_rules(alpha: np.ndarray, beta: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss nodes θ_j (eigenvalues of each tridiagonal) and weights τ_j (first components²)."""
    probes, steps = alpha.shape
    nodes = np.zeros((probes, steps))
    weights = np.zeros((probes, steps))
    for p in range(probes):
        n = int(length[p])
        tri = np.diag(alpha[p, :n]) + np.diag(beta[p, : n - 1], 1) + np.diag(beta[p, : n - 1], -1)
        values, vectors = np.linalg.eigh(tri)
        nodes[p, :n] = values
        weights[p, :n] = vectors[0] ** 2
    return nodes, weights
