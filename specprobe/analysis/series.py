"""Over training: each model's position against compute, and its gradient amplification.

* compute C = 6·N·T (N = ``num_params``, all parameters of the record; T = ``tokens_seen``),
  the usual estimate of training FLOPs (forward and backward pass, 6 FLOPs per parameter
  and token);
* gradient amplification: χ_net(t) / χ_net(t₀) relative to the first analysed revision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from specprobe.analysis.position import (
    Position,
    analysed,
    combined,
    comparable,
    label,
    num_params,
    ordered,
    position_value,
    size_key,
)
from specprobe.store.records import Record


@dataclass(frozen=True)
class PositionPoint:
    """One analysed revision of a model, placed by training compute."""

    revision: str
    step: int | None
    tokens_seen: int | None
    compute: float | None
    """C = 6·N·tokens_seen FLOPs, or None when tokens seen or N are unknown."""
    position: float
    position_stderr: float
    loss: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PositionSeries:
    """A model's positions over its analysed revisions, in step order."""

    model: str
    label: str
    num_params: int | None
    position: Position
    points: tuple[PositionPoint, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "label": self.label,
            "num_params": self.num_params,
            "position": self.position.value,
            "points": [p.to_dict() for p in self.points],
        }


def training_compute(num_params: int | None, tokens_seen: int | None) -> float | None:
    """C = 6·N·T: training FLOPs of N parameters over T tokens (None when either is unknown)."""
    if num_params is None or tokens_seen is None:
        return None
    return 6.0 * float(num_params) * float(tokens_seen)


def position_vs_compute(
    records: Iterable[Record], position: Position | str | None = None
) -> list[PositionSeries]:
    """Per model (ranked by size), the position at each analysed revision against compute.

    Points whose tokens seen are unknown keep ``compute=None`` (plots leave them out); step
    0 has compute 0 (log-scaled plots leave it out too).
    """
    position, groups = comparable(records, position)
    return series_of(groups, position)


def series_of(groups: dict[str, list[Record]], position: Position) -> list[PositionSeries]:
    """:func:`position_vs_compute` of records already grouped by :func:`analysed` and checked."""
    out = []
    for model, rows in groups.items():
        n = num_params(rows)
        points = []
        for r in rows:
            value, stderr = position_value(r, position)
            points.append(
                PositionPoint(
                    revision=str(r.get("revision")),
                    step=r.get("step"),
                    tokens_seen=r.get("tokens_seen"),
                    compute=training_compute(n, r.get("tokens_seen")),
                    position=value,
                    position_stderr=stderr,
                    loss=float(r["loss"]),
                )
            )
        out.append(PositionSeries(model, label(rows, model), n, position, tuple(points)))
    out.sort(key=lambda s: (size_key(s.num_params), s.model))
    return out


# ---- gradient amplification ----------------------------------------------------------------


@dataclass(frozen=True)
class AmplificationPoint:
    revision: str
    step: int | None
    tokens_seen: int | None
    chi_net: float
    chi_net_stderr: float
    amplification: float
    """χ_net(t) / χ_net(t₀), t₀ the first analysed revision."""
    amplification_stderr: float
    """Propagated from both χ_net errors as if independent: r·√((se/χ)² + (se₀/χ₀)²); 0 at t₀."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AmplificationSeries:
    model: str
    label: str
    num_params: int | None
    reference_revision: str
    """t₀: the first analysed revision, the denominator of every ratio."""
    points: tuple[AmplificationPoint, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["points"] = [p.to_dict() for p in self.points]
        return out


def amplification(records: Iterable[Record]) -> list[AmplificationSeries]:
    """Gradient amplification χ_net(t)/χ_net(t₀) per model (ranked by size) over training."""
    return amplification_of(analysed(records))


def amplification_of(groups: dict[str, list[Record]]) -> list[AmplificationSeries]:
    """:func:`amplification` of records already grouped by :func:`analysed`; a run without
    a training order has no first revision, so no series."""
    out = []
    for model, rows in groups.items():
        if not ordered(rows):
            continue
        first = rows[0]
        c0, s0 = float(first["chi_net"]), float(first.get("chi_net_stderr") or 0.0)
        points = []
        for i, r in enumerate(rows):
            c, s = float(r["chi_net"]), float(r.get("chi_net_stderr") or 0.0)
            ratio = c / c0
            stderr = 0.0 if i == 0 else ratio * combined(s / c, s0 / c0)
            points.append(
                AmplificationPoint(
                    revision=str(r.get("revision")),
                    step=r.get("step"),
                    tokens_seen=r.get("tokens_seen"),
                    chi_net=c,
                    chi_net_stderr=s,
                    amplification=ratio,
                    amplification_stderr=stderr,
                )
            )
        out.append(
            AmplificationSeries(
                model, label(rows, model), num_params(rows), str(first.get("revision")), tuple(points)
            )
        )
    out.sort(key=lambda s: (size_key(s.num_params), s.model))
    return out
