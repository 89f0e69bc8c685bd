"""The population position: χ_pos^∞, the gradient noise scale and their jackknife errors.

A measured set of n sequences s (iid from the data), with the per-sequence summed loss ℓ_s,
its residual r_s = ∂ℓ_s/∂f_s (the unnormalised residual g̃ restricted to s), v_s = J_sᵀ r_s,
V = Σ_s v_s (the unnormalised gradient) and τ_s = Tr Θ_ss:

    χ_pos(n) = ‖V‖² / (Σ_s ‖r_s‖² · Σ_s τ_s)         (``Measurement.spectral_position``)
    ‖M‖²^ = (‖V‖² − Σ_s ‖v_s‖²) / (n(n−1))          (a U-statistic: unbiased for ‖E v_s‖²)
    A^ = Σ_s ‖v_s‖²/n,  R^ = Σ_s ‖r_s‖²/n,  τ^ = Σ_s τ_s/n
    χ_pos^∞ = ‖M‖²^ / (R^ τ^),  B_noise = (A^ − ‖M‖²^) / ‖M‖²^,  χ_pos(1) = A^ / (R^ τ^)
    χ_pos(n) ≈ χ_pos^∞ + (χ_pos(1) − χ_pos^∞)/n

Standard errors are the delete-one-sequence jackknife, from the per-sequence a_s = ‖v_s‖²,
c_s = ⟨v_s, V⟩, ρ_s = ‖r_s‖² and τ_s (per parameter tensor, so per group as well).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from specprobe.core.ghost import GhostNorms


class PopulationStatus(str, Enum):
    """How far the population estimates can be trusted (``Measurement.population_status``)."""

    OK = "ok"
    """‖M‖²^ > 0 and the relative standard error of χ_pos^∞ is at most 0.5."""
    NOISY = "noisy"
    """‖M‖²^ > 0, but the relative standard error of χ_pos^∞ exceeds 0.5: n is not well above
    B_noise; measure more sequences (``Measurement.sequences_needed``)."""
    NONPOSITIVE = "nonpositive"
    """‖M‖²^ ≤ 0: the noise swamps the mean gradient; no position is reported (None), more
    sequences are needed."""


class Reduction(Protocol):
    """How one measurement's set of sequences is split across processes (``measure(reduce=...)``).

    Each process measures its own contiguous share of the sequences; the numbers are those
    of the whole set measured in one process. An implementation over torch.distributed lives
    in ``specprobe.pipeline``; every process calls the methods in the same order.
    """

    @property
    def offset(self) -> int:
        """The global index of this process's first sequence: probes are drawn per global
        sequence index, so they do not depend on the split."""
        ...

    def sum_(self, tensors: list[Tensor]) -> None:
        """All-reduce (sum) ``tensors`` in place across processes: the P-float gradient sum."""
        ...

    def gather(self, array: np.ndarray) -> np.ndarray:
        """The per-sequence ``array`` of every process (leading axis: this process's
        sequences), concatenated along axis 0 in rank (= sequence) order."""
        ...

    def sum_scalars(self, values: np.ndarray) -> np.ndarray:
        """The elementwise sum across processes of a float64 array (loss sums, counts,
        probe values): the same result on every process."""
        ...


RELATIVE_TARGET = 0.1
"""The relative standard error of χ_pos^∞ that ``sequences_needed`` aims at."""

NOISY_ABOVE = 0.5
"""A relative standard error of χ_pos^∞ above this makes the status ``noisy``."""


class SequenceSums:
    """The per-sequence terms of this process's sequences, per parameter tensor:
    a_s = ‖v_s‖², c_s = ⟨v_s, V⟩ (``(num_samples, tensors)``) and ρ_s = ‖r_s‖² (``(num_samples,)``).

    With one micro-batch in one process the terms come from the gradient's own backward
    pass (``GhostNorms.gradient_terms``: each tensor's a_s and c_s as its part of V
    arrives, then that part freed, so V is never held whole) and are added by :meth:`take`.
    Over several micro-batches or processes V is the sum of them all, so :meth:`add` takes
    each micro-batch in a second pass once V (kept as one P-float sum) is known: one
    backward pass of the residual to the hooked layer outputs (the ghost norms,
    ``specprobe.core.ghost``, with the residual as the one cotangent: a_s) and, per hooked
    call, the rule's inner product with V (c_s per tensor; fallback parameters from their
    per-sample gradients). No parameter-sized buffer per sequence; memory: the hooked
    outputs' gradients for one cotangent, like a training step.
    """

    def __init__(self, num_samples: int, num_tensors: int) -> None:
        self.a = np.zeros((num_samples, num_tensors))
        self.c = np.zeros((num_samples, num_tensors))
        self.rho = np.zeros(num_samples)

    def add(
        self,
        ghost: GhostNorms,
        f: Tensor,
        residual: Tensor,
        local: int,
        gradient: Sequence[Tensor],
    ) -> None:
        """Add the micro-batch with outputs ``f`` (graph alive) and unnormalised residual
        ``residual`` (shaped as ``f``, zero where masked), whose first sample is this
        process's sample ``local``; ``gradient`` is V, one tensor per parameter."""
        terms = ghost.group_norms(f, residual.unsqueeze(0).to(f.dtype), True, gradient)
        assert terms.inner is not None  # directions were given
        self.take(terms.values[0], terms.inner[0], residual_norms(residual), local)

    def take(self, values: Tensor, inner: Tensor, rho: np.ndarray, local: int) -> None:
        """Add a micro-batch's a_s (``values``) and c_s (``inner``), both ``(samples, tensors)``,
        and ρ_s (``rho``), its first sample being this process's sample ``local``."""
        rows = slice(local, local + rho.shape[0])
        self.a[rows] += values.numpy()
        self.c[rows] += inner.numpy()
        self.rho[rows] += rho

    def gathered(self, reduce: Reduction | None) -> SequenceSums:
        """The terms of every process's sequences, in sequence order."""
        if reduce is None:
            return self
        out = SequenceSums(0, self.a.shape[1])
        out.a, out.c, out.rho = reduce.gather(self.a), reduce.gather(self.c), reduce.gather(self.rho)
        return out


@dataclass(frozen=True)
class Terms:
    """Every process's per-sequence terms and traces τ_s ``(n, tensors)``, in sequence order:
    what the estimates read, once the pass over the sequences is done."""

    sums: SequenceSums
    tau: np.ndarray

    @classmethod
    def gather(
        cls,
        sums: SequenceSums | None,
        tau: np.ndarray | None,
        reduce: Reduction | None,
        counted: np.ndarray,
    ) -> Terms | None:
        """The terms of the whole set's sequences (gathered across processes with
        ``reduce``) that have a counted output, ``counted`` (boolean, one per sequence of
        the whole set): a row without one (all padding, or a single token, whose last
        position predicts nothing) is not a draw of the data, and counting it as a sequence
        with a zero gradient would move every estimate with the batch's layout. None
        without per-sequence terms or traces, or for n < 2 such sequences."""
        if sums is None or tau is None or int(counted.sum()) < 2:
            return None
        if reduce is not None:
            tau = reduce.gather(tau)
        whole = sums.gathered(reduce)
        kept = SequenceSums(0, whole.a.shape[1])
        kept.a, kept.c, kept.rho = whole.a[counted], whole.c[counted], whole.rho[counted]
        return cls(kept, tau[counted])

    def estimate(self, grad_sq: np.ndarray, members: np.ndarray) -> Estimate:
        """:func:`estimate` over the tensors in ``members``; ``grad_sq`` is ‖V_p‖² per tensor."""
        return estimate(grad_sq, self.sums, self.tau, members)


def residual_norms(residual: Tensor) -> np.ndarray:
    """ρ_s = ‖r_s‖² per sample of a micro-batch's unnormalised residual (samples first),
    summed in float64: ``(samples,)``. Their sum is the micro-batch's Σ‖g̃‖²."""
    return residual.double().square().reshape(residual.shape[0], -1).sum(1).cpu().numpy()


@dataclass(frozen=True)
class Estimate:
    """The population estimates of one set of tensors (all of them, or a group)."""

    mean_grad_sq: float
    mean_grad_sq_stderr: float | None
    population_position: float | None
    population_position_stderr: float | None
    single_position: float
    single_position_stderr: float | None
    noise_scale: float | None
    noise_scale_stderr: float | None
    status: PopulationStatus
    sequences_needed: int | None


def estimate(grad_sq: np.ndarray, terms: SequenceSums, tau: np.ndarray, members: np.ndarray) -> Estimate:
    """The estimates of the module docstring over the tensors in ``members`` (boolean mask).

    ``grad_sq`` is ‖V_p‖² per tensor (unnormalised), ``tau`` τ_s per sequence and tensor,
    ``terms`` the gathered per-sequence terms; n = len(tau) ≥ 2. Standard errors: the
    delete-one-sequence jackknife, √((n−1)/n · Σ_s (θ_(−s) − θ̄)²), with θ_(−s) from
    ‖V − v_s‖² = ‖V‖² − 2c_s + a_s and the other sums less sequence s (None for n < 3).
    """
    n = tau.shape[0]
    S = float(grad_sq[members].sum())
    a, c = terms.a[:, members].sum(1), terms.c[:, members].sum(1)
    t = tau[:, members].sum(1)
    full = _statistics(np.array(S), a.sum(), terms.rho.sum(), t.sum(), n)
    leave = (
        _statistics(S - 2 * c + a, a.sum() - a, terms.rho.sum() - terms.rho, t.sum() - t, n - 1)
        if n >= 3
        else None
    )

    def stderr(name: str) -> float | None:
        if leave is None:
            return None
        values = leave[name]
        if not np.isfinite(values).all():
            return math.inf
        return float(math.sqrt((n - 1) / n * float(np.square(values - values.mean()).sum())))

    m2, m2_se = float(full["m2"]), stderr("m2")
    positive = m2 > 0
    # Reported also when ≤ 0 (with its error and the status NONPOSITIVE, never silently): a
    # reader sees how far below zero the estimate fell, and a report keeps one scale.
    position, position_se = float(full["position"]), stderr("position")
    if not positive:
        status = PopulationStatus.NONPOSITIVE
    elif position_se is None or position_se > NOISY_ABOVE * position:
        status = PopulationStatus.NOISY
    else:
        status = PopulationStatus.OK
    return Estimate(
        mean_grad_sq=m2,
        mean_grad_sq_stderr=m2_se,
        population_position=position,
        population_position_stderr=position_se,
        single_position=float(full["single"]),
        single_position_stderr=stderr("single"),
        noise_scale=float(full["noise"]) if positive else None,
        noise_scale_stderr=stderr("noise") if positive else None,
        status=status,
        sequences_needed=_sequences_needed(n, m2, m2_se, position, position_se, c - a),
    )


def _statistics(S: np.ndarray, Q: np.ndarray, R: np.ndarray, T: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """‖M‖²^, χ_pos^∞, χ_pos(1) and B_noise from the sums S = ‖V‖², Q = Σa_s, R = Σρ_s,
    T = Στ_s over n sequences (arrays: one value per deleted sequence)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        m2 = (S - Q) / (n * (n - 1))
        return {
            "m2": m2,
            "position": (S - Q) * n / ((n - 1) * R * T),
            "single": Q * n / (R * T),
            "noise": Q * (n - 1) / (S - Q) - 1,
        }


def _sequences_needed(
    n: int,
    m2: float,
    m2_se: float | None,
    position: float | None,
    position_se: float | None,
    cross: np.ndarray,
) -> int | None:
    """Sequences for a relative standard error :data:`RELATIVE_TARGET` of χ_pos^∞.

    The variance of the U-statistic ‖M‖²^ over N sequences is modelled as 4ζ1/N + 2ζ2/N²
    (ζ1 = Var⟨v_s, M⟩, ζ2 ≈ E⟨v_s, v_s'⟩², the sequence and pair terms). Two measured
    quantities fix them: the jackknife variance of ‖M‖²^ at n, 4ζ1/n + 2ζ2/n², and the
    spread of c_s − a_s = ⟨v_s, V − v_s⟩ over the sequences, Var_s ≈ (n−1)²ζ1 + (n−1)ζ2;
    both ζ are clamped at 0. The relative variance of χ_pos^∞ (its jackknife at n) is taken
    to scale like the variance of ‖M‖²^, and solved for N. With ‖M‖²^ ≤ 0 the mean
    gradient's size is unknown; ‖M‖² is then taken as one standard error of its estimate,
    so the answer is a lower bound. None for n < 3.
    """
    if m2_se is None or not math.isfinite(m2_se) or m2_se == 0.0:
        return None
    spread = float(np.var(cross, ddof=1))
    var_n = m2_se**2
    zeta1 = max(0.0, (n * n * var_n - 2 * spread / (n - 1)) / (2 * n + 2))
    zeta2 = max(0.0, (spread - (n - 1) ** 2 * zeta1) / (n - 1))
    model_n = 4 * zeta1 / n + 2 * zeta2 / n**2
    if model_n <= 0:
        return None
    if position is not None and position_se is not None and math.isfinite(position_se):
        relative_var = (position_se / position) ** 2
    else:
        relative_var = 1.0  # ‖M‖² taken as one standard error of ‖M‖²^
    target = RELATIVE_TARGET**2 * model_n / relative_var  # the model variance needed
    if zeta2 > 0:
        x = (-4 * zeta1 + math.sqrt(16 * zeta1**2 + 8 * zeta2 * target)) / (4 * zeta2)
    else:
        x = target / (4 * zeta1)
    return max(2, math.ceil(1 / x)) if x > 0 else None


def measurement_fields(
    whole: Estimate, num_outputs: int, num_tokens: int, num_samples: int
) -> dict[str, Any]:
    """The ``Measurement`` fields of the estimate over all tensors: D/n·χ_pos^∞ with D the
    counted outputs, B_noise in tokens with the counted tokens per sequence."""
    per_sequence = num_outputs / num_samples

    def scaled(value: float | None, factor: float) -> float | None:
        return None if value is None else value * factor

    return {
        "population_position": whole.population_position,
        "population_position_stderr": whole.population_position_stderr,
        "normalized_population_position": scaled(whole.population_position, per_sequence),
        "normalized_population_position_stderr": scaled(whole.population_position_stderr, per_sequence),
        "noise_scale": whole.noise_scale,
        "noise_scale_stderr": whole.noise_scale_stderr,
        "noise_scale_tokens": scaled(whole.noise_scale, num_tokens / num_samples),
        "single_position": whole.single_position,
        "single_position_stderr": whole.single_position_stderr,
        "mean_grad_sq": whole.mean_grad_sq,
        "mean_grad_sq_stderr": whole.mean_grad_sq_stderr,
        "population_status": whole.status.value,
        "sequences_needed": whole.sequences_needed,
    }
