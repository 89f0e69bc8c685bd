"""The installation self-check: a tiny random model measured matrix-free and compared with
its dense eNTK, quantity by quantity. ``specprobe selftest`` runs it and renders the rows
(:func:`specprobe.report.terminal.selftest_table`)."""

from __future__ import annotations

from dataclasses import dataclass

from specprobe.choices import Device, TinyArch


@dataclass(frozen=True)
class CheckRow:
    """One compared quantity of the self-check: the fast path against the dense reference."""

    name: str
    measured: float
    reference: float
    tolerance: float
    stderr: float | None = None

    @property
    def error(self) -> float:
        """Relative error for exact quantities; distance in standard errors for estimates."""
        if self.stderr:
            return abs(self.measured - self.reference) / self.stderr
        return abs(self.measured - self.reference) / max(abs(self.reference), 1e-300)

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance


@dataclass(frozen=True)
class Selftest:
    """The self-check's outcome: what was measured where, and one row per compared quantity."""

    arch: TinyArch
    device: str
    """Where it ran: ``cpu`` or ``cuda``."""
    num_outputs: int
    """D, the outputs of the batch (the eNTK is D × D)."""
    num_params: int
    """P, the parameters (J is D × P)."""
    rows: tuple[CheckRow, ...]

    @property
    def ok(self) -> bool:
        """Every quantity within its tolerance."""
        return all(row.ok for row in self.rows)


EXACT_TOLERANCE = 1e-6
"""Relative error allowed for the quantities computed exactly (float64 on both sides)."""
STDERR_TOLERANCE = 4.0
"""Standard errors the Hutchinson estimate of χ_net may be from the dense value."""


def run_selftest(arch: TinyArch, device: Device, probes: int = 64, seed: int = 0) -> Selftest:
    """Check this installation: measure a tiny random model and compare with the dense eNTK.

    Builds J and Θ = J Jᵀ explicitly in float64 for a tiny causal LM (vocabulary 32, width
    16) with a padded batch of 4 × 12 tokens, and checks that the matrix-free measurement
    agrees: exact quantities to 1e-6 relative, the Hutchinson estimate of χ_net (``probes``
    probes) to within 4 of its standard errors. Memory: the dense reference holds J (D × P)
    and Θ (D × D) in float64, small at this size. Raises SpecprobeError for ``Device.cuda``
    without a CUDA device.
    """
    import torch

    from specprobe.core.dense import dense_kernel
    from specprobe.core.measure import measure
    from specprobe.errors import SpecprobeError
    from specprobe.models.tiny import tiny_causal_lm

    if device is Device.cuda and not torch.cuda.is_available():
        raise SpecprobeError("expected a CUDA device, found none", "run with --device cpu")
    where = (
        "cuda" if device is Device.cuda or (device is Device.auto and torch.cuda.is_available()) else "cpu"
    )
    model = tiny_causal_lm(arch.value, vocab_size=32, hidden_size=16, seed=seed, dtype=torch.float64)
    model = model.to(where)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 32, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[3, 5:] = 0
    batch = {"input_ids": ids.to(where), "attention_mask": mask.to(where)}
    ref = dense_kernel(model, batch)
    exact = measure(model, batch, estimator="exact")
    est = measure(model, batch, estimator="hutchinson", probes=probes, seed=seed)
    rows = [
        CheckRow(name, getattr(exact, name), getattr(ref, name), EXACT_TOLERANCE)
        for name in ("loss", "grad_norm_sq", "chi_loss", "chi_net", "spectral_position")
    ]
    rows.append(
        CheckRow("chi_net (hutchinson)", est.chi_net, ref.chi_net, STDERR_TOLERANCE, est.chi_net_stderr)
    )
    return Selftest(arch, where, exact.num_outputs, exact.num_params, tuple(rows))
