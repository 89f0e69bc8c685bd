"""The one power-law fit: y ≈ prefactor · x^exponent, least squares of log y on log x.

One sign convention everywhere: ``exponent`` is the slope in log–log space, negative for a
falling y. The spectrum's decay α (λ_k ∝ k^−α) is ``−exponent`` of the fit of λ_k on k; the
family's loss and reach against size are the fit itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLaw:
    """y ≈ prefactor · x^exponent over ``num_points`` points."""

    exponent: float
    exponent_stderr: float
    """Standard error of the slope from the regression residuals (n − 2 degrees of freedom);
    NaN with two points."""
    prefactor: float
    r_squared: float
    """Coefficient of determination in log–log space (1 when log y does not vary)."""
    num_points: int


def power_law(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> PowerLaw:
    """Fit y ≈ a·x^b to points with x > 0 and y > 0 (the caller checks: no logarithm else).

    Cost: a 2-column least squares, O(n).
    """
    lx = np.log(np.asarray(x, dtype=np.float64))
    ly = np.log(np.asarray(y, dtype=np.float64))
    design = np.stack([lx, np.ones_like(lx)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, ly, rcond=None)
    residual = ly - (slope * lx + intercept)
    total = float(((ly - ly.mean()) ** 2).sum())
    ss_res = float((residual**2).sum())
    dof = len(lx) - 2
    sxx = float(((lx - lx.mean()) ** 2).sum())
    return PowerLaw(
        exponent=float(slope),
        exponent_stderr=math.sqrt(ss_res / dof / sxx) if dof > 0 and sxx > 0 else float("nan"),
        prefactor=float(math.exp(intercept)),
        r_squared=1.0 - ss_res / total if total > 0 else 1.0,
        num_points=len(lx),
    )
