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
    ordered,
    population_problem,
    position_value,
    read,
    size_key,
    usable,
)
from specprobe.errors import SpecprobeError
from specprobe.linalg.fit import power_law
from specprobe.store.records import Record
from specprobe.text import count

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
    ordered: bool = True
    """Whether the run's checkpoints have a training order: when not, ``final_*`` are those
    of the last revision by name and no claim uses them."""
    seed: int | None = None
    """The run's seed, where stated or known (``run_seed`` of its records)."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["position"] = self.position.value
        return out


@dataclass(frozen=True)
class SizeGroup:
    """The runs of one size (its seeds, or the one run): their mean reach and final loss,
    each with the seed spread as its error. Size laws are fitted to these, one point a size.

    With k ≥ 2 runs, ``*_stderr`` is the standard error of the seed mean, std/√k (the
    spread over seeds, which carries each run's own measurement noise too) and ``*_spread``
    the standard deviation over seeds; with one run, the run's own standard error and no
    spread."""

    num_params: int | None
    label: str
    runs: tuple[str, ...]
    reach: float
    reach_stderr: float
    reach_spread: float | None
    final_loss: float | None
    """The mean final loss over the size's ordered runs; None when no run has an order."""
    final_loss_stderr: float
    final_loss_spread: float | None

    by_seed: bool = True
    """Whether the runs are seeds (each run's seed known and distinct), rather than other
    runs of equal size (sibling stages of one run, runs declared without a seed)."""

    @property
    def seeds(self) -> int:
        """The runs of this size (its seeds, when :attr:`by_seed`)."""
        return len(self.runs)

    @property
    def kind(self) -> str:
        """``seeds`` or ``runs``: what the runs of this size are, in a word."""
        return "seeds" if self.by_seed else "runs"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["runs"] = list(self.runs)
        return out


def size_groups(reaches: Sequence[Reach]) -> list[SizeGroup]:
    """The reaches grouped by size (equal ``num_params``: seeds of one configuration, never
    fitted as sizes), ranked by size; each size's mean with the seed spread as its error."""
    by_size: dict[int | None, list[Reach]] = {}
    for r in reaches:
        by_size.setdefault(r.num_params, []).append(r)
    out = []
    for size, runs in sorted(by_size.items(), key=lambda kv: size_key(kv[0])):
        reach, reach_se, reach_spread = _seed_mean([(r.reach, r.reach_stderr) for r in runs])
        done = [(r.final_loss, r.final_loss_stderr) for r in runs if r.ordered]
        loss, loss_se, loss_spread = _seed_mean(done) if done else (None, 0.0, None)
        out.append(
            SizeGroup(
                num_params=size,
                label=_size_label(runs),
                runs=tuple(r.model for r in runs),
                reach=reach,
                reach_stderr=reach_se,
                reach_spread=reach_spread,
                final_loss=loss,
                final_loss_stderr=loss_se,
                final_loss_spread=loss_spread,
                by_seed=_by_seed(runs),
            )
        )
    return out


def _by_seed(runs: Sequence[Reach]) -> bool:
    seeds = [r.seed for r in runs]
    return None not in seeds and len(set(seeds)) == len(seeds)


def _seed_mean(values: Sequence[tuple[float, float]]) -> tuple[float, float, float | None]:
    """(mean, its standard error, the spread) of per-run values with their errors."""
    if len(values) == 1:
        return values[0][0], values[0][1], None
    numbers = np.array([v for v, _ in values], dtype=float)
    spread = float(numbers.std(ddof=1))
    return float(numbers.mean()), spread / math.sqrt(len(numbers)), spread


def _size_label(runs: Sequence[Reach]) -> str:
    """One run's label, or the runs' common label with the seeds counted."""
    if len(runs) == 1:
        return runs[0].label
    labels = [r.label for r in runs]
    common = labels[0]
    for other in labels[1:]:
        while not other.startswith(common):
            common = common[:-1]
    common = common.rstrip("-_ ./=:x") or f"{count(runs[0].num_params or 0)} parameters"
    return f"{common} ({len(runs)} {'seeds' if _by_seed(runs) else 'runs'})"


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
                ordered=ordered(rows),
                seed=read(rows[0], "run_seed"),
            )
        )
    out.sort(key=lambda r: (size_key(r.num_params), r.model))
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


def _sized(sizes: Sequence[SizeGroup], what: str) -> list[SizeGroup]:
    missing = [g.label for g in sizes if g.num_params is None]
    if missing:
        raise SpecprobeError(
            f"a fit of {what} against size needs num_params for every model, found none for "
            + ", ".join(missing),
            "pass records as specprobe analyze writes them (they carry num_params)",
        )
    return list(sizes)


def fit_loss_vs_size(records: Iterable[Record]) -> PowerLawFit:
    """Final loss (last analysed revision) against N across sizes (the seed mean of each
    size): L ≈ a·N^b."""
    return loss_fit(size_groups(spectral_reach(records)))


def fit_reach_vs_size(records: Iterable[Record], position: Position | str | None = None) -> PowerLawFit:
    """Spectral reach against N across sizes (the seed mean of each size): reach ≈ a·N^b
    (b < 0: larger models reach lower)."""
    position, groups = comparable(records, position)
    return reach_fit(size_groups(reaches_of(groups, position)), position)


def loss_fit(sizes: Sequence[SizeGroup]) -> PowerLawFit:
    """:func:`fit_loss_vs_size` of sizes already grouped (:func:`size_groups`); sizes whose
    runs have no training order have no final loss and are left out."""
    sized = [g for g in _sized(sizes, "the final loss") if g.final_loss is not None]
    return fit_power_law(
        [g.num_params or 0 for g in sized], [g.final_loss or 0.0 for g in sized], "final_loss"
    )


def reach_fit(sizes: Sequence[SizeGroup], position: Position) -> PowerLawFit:
    """:func:`fit_reach_vs_size` of sizes already grouped (on the scale ``position``)."""
    sized = _sized(sizes, "the spectral reach")
    return fit_power_law(
        [g.num_params or 0 for g in sized], [g.reach for g in sized], f"reach ({position.value})"
    )


def size_fits(
    sizes: Sequence[SizeGroup], position: Position
) -> tuple[PowerLawFit | None, PowerLawFit | None, str | None]:
    """The loss and reach fits across sizes (one point a size: the seed mean), each None
    when it cannot be made, and a note saying why (None when both were made)."""
    loss = reach = None
    try:
        loss = loss_fit(sizes)
        reach = reach_fit(sizes, position)
    except SpecprobeError as err:
        return loss, reach, f"no power-law fit: {err.message}"
    return loss, reach, None
