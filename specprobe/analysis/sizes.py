"""Across sizes: each model's spectral reach, and power laws y = a·N^b fitted to them.

* spectral reach of a model: the lowest spectral position over its analysed revisions,
  with its standard error, the revision where it is attained, the gradient noise scale
  there, and how far below the true values a minimum of noisy values is expected to lie
  (:func:`minimum_bias`);
* power laws y = a·N^b across sizes, fitted by least squares in log–log (the one fit,
  :func:`specprobe.linalg.fit.power_law`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from specprobe.analysis.position import (
    Position,
    comparable,
    label,
    num_params,
    population_problem,
    position_value,
    read,
    size_key,
    usable,
)
from specprobe.errors import SpecprobeError
from specprobe.linalg.fit import power_law
from specprobe.store.records import Record

MIN_FIT_SIZES = 3
"""Fewest distinct model sizes a power law is fitted to (two points always fit exactly)."""


# ---- spectral reach --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """The spectral reach of one model: its lowest position over the analysed revisions."""

    model: str
    label: str
    num_params: int | None
    position: Position
    """The scale of ``reach`` (D·χ_pos by default)."""
    reach: float
    """The lowest position over the analysed revisions."""
    reach_stderr: float
    revision: str
    """The revision where the lowest position is attained."""
    step: int | None
    tokens_seen: int | None
    spectral_position: float
    """χ_pos at that revision (whatever the scale of ``reach``)."""
    spectral_position_stderr: float
    num_revisions: int
    """Analysed revisions the minimum is taken over."""
    final_revision: str
    final_loss: float
    """Loss at the last analysed revision (by step)."""
    final_loss_stderr: float
    minimum_bias: float = 0.0
    """How far below equal true values the lowest of ``num_revisions`` noisy ones is
    expected to lie: σ̄·E[max of k standard normals] (:func:`minimum_bias`); 0 for one."""
    noise_scale: float | None = None
    """B_noise (sequences) at the reach's revision, when recorded."""
    noise_scale_stderr: float | None = None
    noise_scale_tokens: float | None = None
    problem: str | None = None
    """Why the population estimate at that revision is not to be trusted (noisy, ≤ 0), or None."""
    excluded: int = 0
    """Revisions left out of the minimum: population estimates ≤ 0 (more sequences needed)."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["position"] = self.position.value
        return out


def expected_max_normal(k: int) -> float:
    """E[max of k independent standard normals]: 0 for k = 1, 0.564 for 2, 0.846 for 3,
    1.029 for 4 (∫ x·k·φ(x)·Φ(x)^(k−1) dx on a fine grid, error below 1e-6)."""
    if k <= 1:
        return 0.0
    x = np.linspace(-10.0, 10.0, 40001)
    phi = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    return float(np.trapezoid(x * k * phi * cdf ** (k - 1), x))


def minimum_bias(stderrs: Sequence[float], values: Sequence[float] | None = None) -> float:
    """The selection bias of a minimum over k noisy values: were the k true values equal,
    their lowest estimate would lie on average σ̄·E[max of k normals] below them (σ̄ the
    mean standard error). With ``values``, only the revisions that could be the minimum
    count: those within two combined standard errors of the lowest (a position that fell
    300-fold in training has one candidate, and no bias). An upper bound for unequal values."""
    if values is not None:
        low = int(np.argmin(values))
        stderrs = [
            se
            for v, se in zip(values, stderrs, strict=True)
            if v - values[low] <= 2 * math.hypot(se, stderrs[low])
        ]
    if len(stderrs) <= 1:
        return 0.0
    return float(np.mean(stderrs)) * expected_max_normal(len(stderrs))


def spectral_reach(records: Iterable[Record], position: Position | str | None = None) -> list[Reach]:
    """Spectral reach per model, ranked by size: ascending ``num_params`` (unknown sizes last).

    A model without an analysed revision is left out. The minimum is over point estimates
    (population estimates ≤ 0 left out while another revision has one above 0); its
    standard error is that revision's own, and its expected selection bias is reported
    beside it (:attr:`Reach.minimum_bias`), not subtracted.
    """
    position, groups = comparable(records, position)
    return reaches_of(groups, position)


def reaches_of(groups: dict[str, list[Record]], position: Position) -> list[Reach]:
    """:func:`spectral_reach` of records already grouped by :func:`analysed` and checked."""
    out = []
    for model, rows in groups.items():
        values = [position_value(r, position) for r in rows]
        ranked = [i for i, r in enumerate(rows) if usable(r, position)] or list(range(len(rows)))
        best = min(ranked, key=lambda i: values[i][0])
        low, final = rows[best], rows[-1]
        out.append(
            Reach(
                model=model,
                label=label(rows, model),
                num_params=num_params(rows),
                position=position,
                reach=values[best][0],
                reach_stderr=values[best][1],
                revision=str(low.get("revision")),
                step=low.get("step"),
                tokens_seen=low.get("tokens_seen"),
                spectral_position=float(low["spectral_position"]),
                spectral_position_stderr=float(low.get("spectral_position_stderr") or 0.0),
                num_revisions=len(rows),
                final_revision=str(final.get("revision")),
                final_loss=float(final["loss"]),
                final_loss_stderr=float(final.get("loss_stderr") or 0.0),
                minimum_bias=minimum_bias([values[i][1] for i in ranked], [values[i][0] for i in ranked]),
                noise_scale=read(low, "noise_scale"),
                noise_scale_stderr=read(low, "noise_scale_stderr"),
                noise_scale_tokens=read(low, "noise_scale_tokens"),
                problem=population_problem(low) if position is Position.POPULATION else None,
                excluded=len(rows) - len(ranked) if len(ranked) < len(rows) else 0,
            )
        )
    out.sort(key=lambda r: size_key(r.num_params))
    return out


# ---- power laws across sizes -----------------------------------------------------------------


@dataclass(frozen=True)
class PowerLawFit:
    """y ≈ prefactor · N^exponent against model size N (:func:`specprobe.linalg.fit.power_law`)."""

    quantity: str
    """What y is: ``final_loss`` or ``reach`` (with its position scale)."""
    exponent: float
    exponent_stderr: float
    """Standard error of the slope from the regression residuals (n − 2 degrees of freedom)."""
    prefactor: float
    r_squared: float
    """Coefficient of determination in log–log space."""
    num_points: int
    sizes: tuple[int, ...]
    values: tuple[float, ...]

    def predict(self, num_params: float) -> float:
        return self.prefactor * float(num_params) ** self.exponent

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sizes"], out["values"] = list(self.sizes), list(self.values)
        return out


def fit_power_law(sizes: Sequence[float], values: Sequence[float], quantity: str) -> PowerLawFit:
    """Fit y = a·N^b to points (N, y) by least squares in log–log.

    Raises SpecprobeError below :data:`MIN_FIT_SIZES` distinct sizes, or on a non-positive
    size or value (no logarithm).
    """
    n = np.asarray(sizes, dtype=float)
    y = np.asarray(values, dtype=float)
    distinct = len(set(n.tolist()))
    if len(n) != len(y) or distinct < MIN_FIT_SIZES:
        raise SpecprobeError(
            f"a power law of {quantity} against size needs at least {MIN_FIT_SIZES} model sizes, "
            f"found {distinct}",
            "analyse at least three models of different size (two points always fit exactly)",
        )
    if not (np.all(n > 0) and np.all(y > 0) and np.all(np.isfinite(y))):
        raise SpecprobeError(
            f"a power law of {quantity} needs positive sizes and values, found sizes "
            f"{n.tolist()} and values {y.tolist()}",
            "check the records: every model needs num_params and a positive value",
        )
    fit = power_law(n, y)
    return PowerLawFit(
        quantity=quantity,
        exponent=fit.exponent,
        exponent_stderr=fit.exponent_stderr,
        prefactor=fit.prefactor,
        r_squared=fit.r_squared,
        num_points=fit.num_points,
        sizes=tuple(int(s) for s in n),
        values=tuple(float(v) for v in y),
    )


def _sized(reaches: Sequence[Reach], what: str) -> list[Reach]:
    missing = [r.label for r in reaches if r.num_params is None]
    if missing:
        raise SpecprobeError(
            f"a fit of {what} against size needs num_params for every model, found none for "
            + ", ".join(missing),
            "pass records as specprobe analyze writes them (they carry num_params)",
        )
    return list(reaches)


def fit_loss_vs_size(records: Iterable[Record]) -> PowerLawFit:
    """Final loss (last analysed revision) against N across models: L ≈ a·N^b."""
    return loss_fit(spectral_reach(records))


def fit_reach_vs_size(records: Iterable[Record], position: Position | str | None = None) -> PowerLawFit:
    """Spectral reach against N across models: reach ≈ a·N^b (b < 0: larger models reach lower)."""
    position, groups = comparable(records, position)
    return reach_fit(reaches_of(groups, position), position)


def loss_fit(reaches: Sequence[Reach]) -> PowerLawFit:
    """:func:`fit_loss_vs_size` of reaches already computed."""
    sized = _sized(reaches, "the final loss")
    return fit_power_law([r.num_params or 0 for r in sized], [r.final_loss for r in sized], "final_loss")


def reach_fit(reaches: Sequence[Reach], position: Position) -> PowerLawFit:
    """:func:`fit_reach_vs_size` of reaches already computed (on the scale ``position``)."""
    sized = _sized(reaches, "the spectral reach")
    return fit_power_law(
        [r.num_params or 0 for r in sized], [r.reach for r in sized], f"reach ({position.value})"
    )


def size_fits(
    reaches: Sequence[Reach], position: Position
) -> tuple[PowerLawFit | None, PowerLawFit | None, str | None]:
    """The loss and reach fits across sizes, each None when it cannot be made, and a note
    saying why (None when both were made)."""
    loss = reach = None
    try:
        loss = loss_fit(reaches)
        reach = reach_fit(reaches, position)
    except SpecprobeError as err:
        return loss, reach, f"no power-law fit: {err.message}"
    return loss, reach, None
