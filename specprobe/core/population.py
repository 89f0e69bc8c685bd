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

from enum import Enum
from typing import Protocol

import numpy as np
from torch import Tensor


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
