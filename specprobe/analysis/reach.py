"""Reach statistics beyond the lowest position: at equal loss, at equal compute, by index.

The family view (:mod:`specprobe.analysis.family`) takes a model's spectral reach to be the lowest
position over its analysed revisions. That statistic has a trap: at a true minimum of the
measured loss the gradient Jᵀg vanishes while the residual g does not, so χ_pos → 0 for
any model that converges on the measured batch — a model that fits its batch better
"reaches" lower whatever its size, and one that trains longer does too. The statistics
here compare models at a common point instead:

Positions are on the scale :func:`~specprobe.analysis.position.choose_position` picks: the
population position (D/N)·χ_pos^∞ when every record has it, else D·χ_pos (older runs).

* :func:`position_at_loss`: the position where each model first reaches a common loss L*
  (by default the highest of the models' lowest losses, so every model reaches it);
  log-linear interpolation between the two revisions around it;
* :func:`position_at_compute`: the position at a common training compute C* = 6·N·T (by default
  the smallest of the models' final computes), interpolated in log–log;
* :func:`position_index`: #{k : λ_k ≥ χ_pos·Tr Θ} at the last revision that has a
  spectrum (``--eigen`` with ``--density``), reported as its reciprocal 1/index so that,
  as for the positions, lower means deeper into the tail;
* ``rank_per_index`` (:func:`position_index` with ``per_rank=True``): the effective rank
  of the spectrum divided by the index, the depth measured in units of the spectrum's own
  extent — a larger model's spectrum is longer, so its index grows even at an equal
  D·χ_pos; this ratio does not.

:func:`judge` applies the family view's criterion (each larger model below the next
smaller one by more than two combined standard errors; a power-law fit of the values
against N) to any of them. Pure functions over results records; nothing here prints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from specprobe.analysis.position import Position, analysed, choose_position, position_value, size_key
from specprobe.analysis.series import training_compute
from specprobe.analysis.sizes import MIN_FIT_SIZES, PowerLawFit, fit_power_law, spectral_reach
from specprobe.analysis.verdict import Claim, monotone
from specprobe.errors import SpecprobeError
from specprobe.store.records import Record

STATISTICS = ("lowest", "final", "equal_loss", "equal_compute", "inverse_index", "rank_per_index")
"""The reach statistics :func:`reach_values` computes, by name."""


@dataclass(frozen=True)
class ReachValue:
    """One model's value of a reach statistic (lower: further into the tail)."""

    statistic: str
    model: str
    label: str
    num_params: int | None
    value: float
    stderr: float
    where: str
    """Where it was taken: the revision, or the two revisions interpolated between."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _interpolate(
    rows: Sequence[Record], xs: Sequence[float], target: float, falling: bool, position: Position
) -> tuple[float, float, str] | None:
    """The position where log x first crosses log ``target`` (x falling or rising along the
    rows), interpolated linearly in log–log between the two revisions around the crossing;
    the error bars are combined as if independent. None when x never crosses."""
    values = [position_value(r, position) for r in rows]
    for i, x in enumerate(xs):
        if x == target:
            return values[i][0], values[i][1], str(rows[i].get("revision"))
        if i == 0:
            if (x < target) if falling else (x > target):
                return None  # already past the target at the first revision
            continue
        if (xs[i - 1] > target > x) if falling else (xs[i - 1] < target < x):
            t = (math.log(xs[i - 1]) - math.log(target)) / (math.log(xs[i - 1]) - math.log(x))
            (p0, s0), (p1, s1) = values[i - 1], values[i]
            value = math.exp((1 - t) * math.log(p0) + t * math.log(p1))
            stderr = value * math.hypot((1 - t) * s0 / p0, t * s1 / p1)
            return value, stderr, f"{rows[i - 1].get('revision')}–{rows[i].get('revision')}"
    return None


def _sorted_groups(records: Iterable[Record]) -> list[tuple[str, list[Record]]]:
    groups = analysed(records)
    return sorted(groups.items(), key=lambda kv: size_key(kv[1][0].get("num_params")))


def common_loss(records: Iterable[Record]) -> float:
    """The default L*: the highest of the models' lowest losses (every model reaches it)."""
    groups = _sorted_groups(records)
    if not groups:
        raise SpecprobeError("expected analysed records, found none", "pass records with status ok")
    return max(min(float(r["loss"]) for r in rows) for _, rows in groups)


def common_compute(records: Iterable[Record]) -> float:
    """The default C*: the smallest of the models' final training computes 6·N·T."""
    finals = []
    for _, rows in _sorted_groups(records):
        c = training_compute(rows[-1].get("num_params"), rows[-1].get("tokens_seen"))
        if c is None:
            raise SpecprobeError(
                f"expected num_params and tokens_seen in the records of {rows[-1].get('model')}, found none",
                "measure checkpoints whose tokens per step are known (specprobe.json or --tokens-per-step)",
            )
        finals.append(c)
    if not finals:
        raise SpecprobeError("expected analysed records, found none", "pass records with status ok")
    return min(finals)


def position_at_loss(
    records: Sequence[Record], level: float | None = None, position: Position | str | None = None
) -> list[ReachValue]:
    """The position (:func:`choose_position`) of each model where its loss first falls to
    ``level`` (default :func:`common_loss`); models that never reach it, or start below it,
    are left out."""
    level = common_loss(records) if level is None else level
    scale = choose_position(records, position)
    out = []
    for model, rows in _sorted_groups(records):
        found = _interpolate(rows, [float(r["loss"]) for r in rows], level, True, scale)
        if found is not None:
            out.append(_reach_value("equal_loss", model, rows, *found))
    return out


def position_at_compute(
    records: Sequence[Record], level: float | None = None, position: Position | str | None = None
) -> list[ReachValue]:
    """The position (:func:`choose_position`) of each model at training compute ``level``
    (default :func:`common_compute`); models whose first analysed revision is already past
    it are left out."""
    level = common_compute(records) if level is None else level
    scale = choose_position(records, position)
    out = []
    for model, rows in _sorted_groups(records):
        computes = [training_compute(r.get("num_params"), r.get("tokens_seen")) or 0.0 for r in rows]
        found = _interpolate(rows, computes, level, False, scale)
        if found is not None:
            out.append(_reach_value("equal_compute", model, rows, *found))
    return out


def position_index(records: Sequence[Record], *, per_rank: bool = False) -> list[ReachValue]:
    """1/index (index = #{k : λ_k ≥ χ_pos·Tr Θ}) at each model's last revision with a
    spectrum; lower is deeper. Standard error propagated from the index's (SLQ) error.
    ``per_rank``: the effective rank over the index instead (the rank's own SLQ error is
    not recorded and not included)."""
    out = []
    for model, rows in _sorted_groups(records):
        with_spectrum = [r for r in rows if (r.get("spectrum") or {}).get("position_index")]
        if per_rank:
            with_spectrum = [r for r in with_spectrum if r["spectrum"].get("effective_rank")]
        if not with_spectrum:
            continue
        row = with_spectrum[-1]
        spectrum = row["spectrum"]
        index = float(spectrum["position_index"])
        se = float(spectrum.get("position_index_stderr") or 0.0)
        scale = float(spectrum["effective_rank"]) if per_rank else 1.0
        out.append(
            _reach_value(
                "rank_per_index" if per_rank else "inverse_index",
                model,
                [row],
                scale / index,
                scale * se / index**2,
                str(row.get("revision")),
            )
        )
    return out


def position_at_step(
    records: Sequence[Record], step: int, position: Position | str | None = None
) -> list[ReachValue]:
    """The position (:func:`choose_position`) of each model at training step ``step`` (equal
    tokens seen when the models share the batch size, as a family trained together does);
    models without a record at that step are left out. The paper's "throughout training"
    comparison."""
    scale = choose_position(records, position)
    out = []
    for model, rows in _sorted_groups(records):
        for r in rows:
            if r.get("step") == step:
                value, stderr = position_value(r, scale)
                out.append(_reach_value(f"step {step}", model, [r], value, stderr, str(r.get("revision"))))
    return out


def _reach_value(
    statistic: str, model: str, rows: Sequence[Record], value: float, stderr: float, where: str
) -> ReachValue:
    n = rows[0].get("num_params")
    return ReachValue(
        statistic, model, str(rows[0].get("label") or model), int(n) if n else None, value, stderr, where
    )


def reach_values(
    records: Sequence[Record], statistic: str, position: Position | str | None = None
) -> list[ReachValue]:
    """One of :data:`STATISTICS` for every model, smallest first, on the position scale
    :func:`choose_position` picks (the index statistics have their own scale)."""
    scale = choose_position(records, position)
    if statistic == "lowest":
        return [
            ReachValue("lowest", r.model, r.label, r.num_params, r.reach, r.reach_stderr, r.revision)
            for r in spectral_reach(records, scale)
        ]
    if statistic == "final":
        out = []
        for model, rows in _sorted_groups(records):
            value, stderr = position_value(rows[-1], scale)
            out.append(_reach_value("final", model, rows, value, stderr, str(rows[-1].get("revision"))))
        return out
    if statistic == "equal_loss":
        return position_at_loss(records, position=scale)
    if statistic == "equal_compute":
        return position_at_compute(records, position=scale)
    if statistic == "inverse_index":
        return position_index(records)
    if statistic == "rank_per_index":
        return position_index(records, per_rank=True)
    raise SpecprobeError(
        f"expected a reach statistic, found {statistic!r}", f"choose one of {', '.join(STATISTICS)}"
    )


@dataclass(frozen=True)
class Judgement:
    """A statistic across sizes: the values, the power-law fit and the 2-standard-error claim."""

    statistic: str
    values: tuple[ReachValue, ...]
    fit: PowerLawFit | None
    claim: Claim

    def to_dict(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "values": [v.to_dict() for v in self.values],
            "fit": self.fit.to_dict() if self.fit else None,
            "claim": self.claim.to_dict(),
        }


def judge(values: Sequence[ReachValue]) -> Judgement:
    """The family view's criterion on one statistic: supported when every larger model is
    below the next smaller one by more than two combined standard errors (see
    :func:`specprobe.analysis.verdict.family_verdict`), with a power-law fit over three sizes or more."""
    sized = [v for v in values if v.num_params is not None and v.value > 0 and np.isfinite(v.value)]
    statistic = values[0].statistic if values else "none"
    fit = None
    if len({v.num_params for v in sized}) >= MIN_FIT_SIZES:
        fit = fit_power_law([v.num_params or 0 for v in sized], [v.value for v in sized], statistic)
    claim = monotone(
        [(v.label, v.value, v.stderr) for v in sized],
        "reach_grows_with_size",
        f"larger models reach lower ({statistic})",
        fit,
    )
    return Judgement(statistic, tuple(values), fit, claim)
