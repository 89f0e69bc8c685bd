"""Hutchinson's trace estimate over any operator with ``quadratic_form``: the one implementation.

Used by :meth:`NTKOperator.trace_hutchinson` and, on projected probes, by
:func:`specprobe.linalg.trace.deflated_trace`.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from specprobe.core.probes import rademacher_columns
from specprobe.errors import SpecprobeError


class QuadraticForms(Protocol):
    """What Hutchinson needs: the size D, the device of vectors, and zᵀΘz per column."""

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def device(self) -> torch.device: ...

    def quadratic_form(self, Z: Tensor) -> Tensor: ...


def check_probes(probes: int) -> None:
    """Raise unless there are enough probes for a standard error (2)."""
    if probes < 2:
        raise SpecprobeError(
            f"expected at least 2 probes (for a standard error), found probes={probes}", "use probes=32"
        )


def hutchinson(
    op: QuadraticForms, probes: int, seed: int, *, deflate: Tensor | None = None
) -> tuple[float, float]:
    """Mean and standard error of zᵀ(I−Π)Θ(I−Π)z over Rademacher probes z ∈ {±1}^D.

    Π = QQᵀ for ``deflate`` = Q (D×r, orthonormal columns), none without one: then the mean
    estimates Tr Θ. Probe j is drawn from its own stream seeded by (seed, j)
    (:func:`specprobe.core.probes.rademacher_columns`), so the estimate does not depend on
    micro-batching. Cost: ``probes`` quadratic forms (vector–Jacobian products only).
    """
    check_probes(probes)
    z = rademacher_columns(op.shape[0], probes, seed, device=op.device)
    if deflate is not None:
        z = z - deflate @ (deflate.T @ z)
    values = op.quadratic_form(z).numpy()
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(probes))
