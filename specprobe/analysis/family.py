"""The family view: spectral reach, position against compute, amplification, fits, a verdict.

Pure functions over results records (the dicts ``specprobe.pipeline.sweep.run_sweep`` writes to
``results.jsonl``). Only analysed records count: ``status == "ok"`` and not a duplicate of
another revision's weights (``duplicate_of`` null). Every function returns frozen
dataclasses with ``to_dict()``; nothing here prints or draws.

Names follow the README ("What the numbers mean"):

* spectral reach of a model: the lowest spectral position over its analysed revisions,
  with its standard error and the revision where it is attained;
* compute C = 6·N·T (N = ``num_params``, all parameters of the record; T = ``tokens_seen``),
  the usual estimate of training FLOPs (forward and backward pass, 6 FLOPs per parameter
  and token);
* gradient amplification: χ_net(t) / χ_net(t₀) relative to the first analysed revision;
* power laws y = a·N^b across sizes, fitted by least squares in log–log.

Positions are compared across models as D·χ_pos (:attr:`Position.NORMALIZED`, the default)
because χ_pos itself scales with the number of outputs D; the raw χ_pos is accepted only
when all models were measured at the same D.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from itertools import pairwise
from typing import Any

import numpy as np

from specprobe.errors import SpecprobeError
from specprobe.linalg.fit import power_law
from specprobe.text import count

SIGNIFICANCE = 2.0
"""A difference counts when it exceeds this many combined standard errors, √(se₁² + se₂²)."""

MIN_FIT_SIZES = 3
"""Fewest distinct model sizes a power law is fitted to (two points always fit exactly)."""


class Position(str, Enum):
    """Which position value is compared across records."""

    NORMALIZED = "normalized_position"
    """D·χ_pos: 1 for a residual with no alignment to the spectrum; comparable across D."""

    RAW = "spectral_position"
    """χ_pos itself: comparable only between records measured at the same D (num_outputs)."""


# ---- records ---------------------------------------------------------------------------------


def analysed(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The analysed records (``ok``, not duplicates) per model, each list sorted by step.

    Records without a step keep their order, after the stepped ones. Models keep the order
    of their first record.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("status") != "ok" or record.get("duplicate_of"):
            continue
        groups.setdefault(str(record.get("model")), []).append(record)
    for rows in groups.values():
        rows.sort(key=lambda r: (r.get("step") is None, r.get("step") or 0))
    return groups


def _value(record: dict[str, Any], position: Position) -> tuple[float, float]:
    """The position of ``record`` and its standard error, on the chosen scale."""
    name = position.value
    if name in record and record[name] is not None:
        return float(record[name]), float(record.get(f"{name}_stderr") or 0.0)
    if position is Position.NORMALIZED and record.get("num_outputs"):
        d = float(record["num_outputs"])
        return d * float(record["spectral_position"]), d * float(
            record.get("spectral_position_stderr") or 0.0
        )
    raise SpecprobeError(
        f"expected {name!r} in the record of {record.get('model')}@{record.get('revision')}, found "
        f"keys {', '.join(sorted(record))}",
        "pass records as specprobe analyze writes them (results.jsonl)",
    )


def _check_comparable(groups: dict[str, list[dict[str, Any]]], position: Position) -> None:
    if position is not Position.RAW:
        return
    sizes = {r.get("num_outputs") for rows in groups.values() for r in rows}
    if len(sizes) > 1:
        raise SpecprobeError(
            "χ_pos compares only at equal D, found records measured at D = "
            + ", ".join(str(s) for s in sorted(sizes, key=lambda s: (s is None, s or 0))),
            "compare D·χ_pos (position=Position.NORMALIZED), or measure every model on the same "
            "batch size, sequence length and vocabulary",
        )


def _label(rows: Sequence[dict[str, Any]], model: str) -> str:
    return str(rows[0].get("label") or model)


def _num_params(rows: Sequence[dict[str, Any]]) -> int | None:
    value = rows[0].get("num_params")
    return int(value) if value else None


def _combined(a: float, b: float) -> float:
    return math.sqrt(a * a + b * b)


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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["position"] = self.position.value
        return out


def spectral_reach(
    records: Iterable[dict[str, Any]], position: Position | str = Position.NORMALIZED
) -> list[Reach]:
    """Spectral reach per model, ranked by size: ascending ``num_params`` (unknown sizes last).

    A model without an analysed revision is left out. The minimum is over point estimates;
    its standard error is that revision's own (the selection bias of a minimum over noisy
    values is not corrected: with few revisions and small errors it is small).
    """
    position = Position(position)
    groups = analysed(records)
    _check_comparable(groups, position)
    out = []
    for model, rows in groups.items():
        values = [_value(r, position) for r in rows]
        best = int(np.argmin([v for v, _ in values]))
        low, final = rows[best], rows[-1]
        out.append(
            Reach(
                model=model,
                label=_label(rows, model),
                num_params=_num_params(rows),
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
            )
        )
    out.sort(key=lambda r: (r.num_params is None, r.num_params or 0))
    return out


# ---- position against compute -----------------------------------------------------------------


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
    records: Iterable[dict[str, Any]], position: Position | str = Position.NORMALIZED
) -> list[PositionSeries]:
    """Per model (ranked by size), the position at each analysed revision against compute.

    Points whose tokens seen are unknown keep ``compute=None`` (plots leave them out); step
    0 has compute 0 (log-scaled plots leave it out too).
    """
    position = Position(position)
    groups = analysed(records)
    _check_comparable(groups, position)
    out = []
    for model, rows in groups.items():
        n = _num_params(rows)
        points = []
        for r in rows:
            value, stderr = _value(r, position)
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
        out.append(PositionSeries(model, _label(rows, model), n, position, tuple(points)))
    out.sort(key=lambda s: (s.num_params is None, s.num_params or 0))
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


def amplification(records: Iterable[dict[str, Any]]) -> list[AmplificationSeries]:
    """Gradient amplification χ_net(t)/χ_net(t₀) per model (ranked by size) over training."""
    out = []
    for model, rows in analysed(records).items():
        first = rows[0]
        c0, s0 = float(first["chi_net"]), float(first.get("chi_net_stderr") or 0.0)
        points = []
        for i, r in enumerate(rows):
            c, s = float(r["chi_net"]), float(r.get("chi_net_stderr") or 0.0)
            ratio = c / c0
            stderr = 0.0 if i == 0 else ratio * _combined(s / c, s0 / c0)
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
                model, _label(rows, model), _num_params(rows), str(first.get("revision")), tuple(points)
            )
        )
    out.sort(key=lambda s: (s.num_params is None, s.num_params or 0))
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


def fit_loss_vs_size(records: Iterable[dict[str, Any]]) -> PowerLawFit:
    """Final loss (last analysed revision) against N across models: L ≈ a·N^b."""
    reaches = _sized(spectral_reach(records), "the final loss")
    return fit_power_law([r.num_params or 0 for r in reaches], [r.final_loss for r in reaches], "final_loss")


def fit_reach_vs_size(
    records: Iterable[dict[str, Any]], position: Position | str = Position.NORMALIZED
) -> PowerLawFit:
    """Spectral reach against N across models: reach ≈ a·N^b (b < 0: larger models reach lower)."""
    position = Position(position)
    reaches = _sized(spectral_reach(records, position), "the spectral reach")
    return fit_power_law(
        [r.num_params or 0 for r in reaches], [r.reach for r in reaches], f"reach ({position.value})"
    )


# ---- verdict ---------------------------------------------------------------------------------


class Outcome(str, Enum):
    """What the data say about one claim."""

    SUPPORTED = "supported"
    """The criterion holds."""
    CONTRADICTED = "contradicted"
    """The opposite holds (by the same margin)."""
    UNCLEAR = "unclear"
    """Neither: the differences are within the noise, or mixed."""
    UNTESTABLE = "untestable"
    """Too little data (a single revision or model)."""


@dataclass(frozen=True)
class Claim:
    """One claim of the family view, decided by a stated criterion."""

    name: str
    outcome: Outcome
    summary: str
    """One plain-language sentence with the numbers behind the outcome."""
    evidence_against: bool = False
    """Some comparison goes significantly against the claim (also when the outcome is unclear)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "summary": self.summary,
            "evidence_against": self.evidence_against,
        }


@dataclass(frozen=True)
class Verdict:
    """The claims of the spectral-reach account, tested on a family, and a paragraph."""

    claims: tuple[Claim, ...]
    text: str

    def claim(self, name: str) -> Claim:
        for c in self.claims:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"claims": [c.to_dict() for c in self.claims], "text": self.text}


def _change(first: tuple[float, float], last: tuple[float, float]) -> int:
    """−1 if last is below first by more than SIGNIFICANCE combined errors, +1 above, else 0."""
    diff = last[0] - first[0]
    margin = SIGNIFICANCE * _combined(first[1], last[1])
    if diff < -margin:
        return -1
    if diff > margin:
        return 1
    return 0


def _position_fell(groups: dict[str, list[dict[str, Any]]], position: Position) -> Claim:
    tracked = {m: rows for m, rows in groups.items() if len(rows) >= 2}
    if not tracked:
        return Claim(
            "position_falls",
            Outcome.UNTESTABLE,
            "position during training: untestable (no model has two analysed revisions)",
        )
    changes = {
        m: _change(_value(rows[0], position), _value(rows[-1], position)) for m, rows in tracked.items()
    }
    fell = sum(c < 0 for c in changes.values())
    rose = sum(c > 0 for c in changes.values())
    n = len(tracked)
    ratios = [_value(rows[-1], position)[0] / _value(rows[0], position)[0] for rows in tracked.values()]
    detail = (
        f"last/first from {min(ratios):.2g} to {max(ratios):.2g}" if n > 1 else f"last/first {ratios[0]:.2g}"
    )
    if fell == n:
        outcome = Outcome.SUPPORTED
    elif rose == n:
        outcome = Outcome.CONTRADICTED
    else:
        outcome = Outcome.UNCLEAR
    text = f"position fell in {fell} of {n} model{'s' if n > 1 else ''} (first to last revision; {detail})"
    if rose:
        text += f" and rose in {rose}"
    return Claim("position_falls", outcome, text, evidence_against=rose > 0)


def _monotone(
    items: Sequence[tuple[str, float, float]], name: str, lower_is: str, fit: PowerLawFit | None
) -> Claim:
    """Does the value fall with size? ``items`` are (label, value, stderr) in size order."""
    if len(items) < 2:
        return Claim(name, Outcome.UNTESTABLE, f"{lower_is}: untestable (fewer than two sizes)")
    steps = [_change((a[1], a[2]), (b[1], b[2])) for a, b in pairwise(items)]
    values = ", ".join(f"{label} {v:.3g} ± {se:.2g}" for label, v, se in items)
    fit_text = (
        f"; fit ∝ N^{fit.exponent:.2f} ± {fit.exponent_stderr:.2f}, R² {fit.r_squared:.2f}" if fit else ""
    )
    # A fitted exponent significantly above 0 says the value grows with size.
    fit_against = fit is not None and fit.exponent > SIGNIFICANCE * fit.exponent_stderr
    if all(s < 0 for s in steps):
        return Claim(name, Outcome.SUPPORTED, f"{lower_is}: yes ({values}{fit_text})")
    if all(s > 0 for s in steps) or (fit_against and not any(s < 0 for s in steps)):
        return Claim(
            name,
            Outcome.CONTRADICTED,
            f"{lower_is}: no, the reverse ({values}{fit_text})",
            evidence_against=True,
        )
    notes = []
    for (a, b), s in zip(pairwise(items), steps, strict=True):
        if s > 0:
            notes.append(f"{b[0]} above {a[0]} beyond {SIGNIFICANCE:g} standard errors")
        elif s == 0:
            notes.append(f"{b[0]} {'below' if b[1] < a[1] else 'not below'} {a[0]} within the noise")
    against = any(s > 0 for s in steps)
    in_order = all(b[1] < a[1] for a, b in pairwise(items))
    verdict_word = "in order but not beyond the noise at every step" if in_order else "no"
    return Claim(
        name,
        Outcome.UNCLEAR,
        f"{lower_is}: {verdict_word} ({'; '.join(notes)}: {values}{fit_text})",
        evidence_against=against,
    )


def _amplified(series: Sequence[AmplificationSeries]) -> Claim:
    tracked = [s for s in series if len(s.points) >= 2]
    if not tracked:
        return Claim("chi_net_grows", Outcome.UNTESTABLE, "gradient amplification: untestable (one revision)")
    changes = []
    for s in tracked:
        first, last = s.points[0], s.points[-1]
        changes.append(_change((first.chi_net, first.chi_net_stderr), (last.chi_net, last.chi_net_stderr)))
    grew = sum(c > 0 for c in changes)
    shrank = sum(c < 0 for c in changes)
    ratios = [s.points[-1].amplification for s in tracked]
    n = len(tracked)
    detail = _span(ratios, "×{:.3g}")
    outcome = Outcome.SUPPORTED if grew == n else Outcome.CONTRADICTED if shrank == n else Outcome.UNCLEAR
    return Claim(
        "chi_net_grows",
        outcome,
        f"χ_net grew in {grew} of {n} model{'s' if n > 1 else ''} ({detail} from first to last revision)",
        evidence_against=shrank > 0,
    )


def verdict(records: Sequence[dict[str, Any]], position: Position | str = Position.NORMALIZED) -> Verdict:
    """Test the claims of the spectral-reach account on the records; a paragraph saying so.

    Criteria (a difference is *significant* when it exceeds SIGNIFICANCE = 2 combined
    standard errors, √(se₁² + se₂²); no correction for the number of comparisons):

    * ``position_falls``: per model with at least two analysed revisions, the position at
      the last revision is significantly below the first. Supported when it holds for every
      such model, contradicted when every one rose significantly, unclear otherwise
      (``evidence_against`` when some model rose significantly).
    * ``reach_grows_with_size``: models ranked by ``num_params``, each model's reach (lowest
      position) is significantly below that of the next smaller model. Supported when every
      step holds. Contradicted when every step is significantly reversed, or when the fitted
      exponent (three sizes or more) is significantly positive and no step holds. Unclear
      otherwise; ``evidence_against`` when some step is significantly reversed (the text
      then says "do not support" rather than "do not establish ... beyond the noise").
    * ``loss_falls_with_size``: the same for the final loss (last analysed revision).
    * ``chi_net_grows``: χ_net at the last revision significantly above the first, per
      model, as for ``position_falls``.

    With at least three sizes the power-law exponents of reach and final loss against N
    are quoted too (least squares in log–log, exponent ± its standard error, R²). Nothing
    is concluded beyond the criteria: the text reports what held and what did not.
    """
    position = Position(position)
    groups = analysed(records)
    _check_comparable(groups, position)
    if not groups:
        empty = (Claim("records", Outcome.UNTESTABLE, "no analysed revision (all failed or duplicates)"),)
        return Verdict(empty, "Nothing to judge: no revision was analysed successfully.")
    reaches = spectral_reach(records, position)
    sized = [r for r in reaches if r.num_params is not None]
    reach_fit = loss_fit = None
    if len({r.num_params for r in sized}) >= MIN_FIT_SIZES:
        reach_fit = fit_power_law([r.num_params or 0 for r in sized], [r.reach for r in sized], "reach")
        loss_fit = fit_power_law(
            [r.num_params or 0 for r in sized], [r.final_loss for r in sized], "final_loss"
        )
    scale = "D·χ_pos" if position is Position.NORMALIZED else "χ_pos"
    claims = (
        _position_fell(groups, position),
        _monotone(
            [(r.label, r.reach, r.reach_stderr) for r in sized],
            "reach_grows_with_size",
            f"larger models reach lower positions (lowest {scale})",
            reach_fit,
        ),
        _monotone(
            [(r.label, r.final_loss, r.final_loss_stderr) for r in sized],
            "loss_falls_with_size",
            "larger models reach lower final loss",
            loss_fit,
        ),
        _amplified(amplification(records)),
    )
    sizes = [r.num_params for r in sized if r.num_params is not None]
    head = f"Across {len(groups)} model{'s' if len(groups) > 1 else ''}"
    if sizes:
        head += (
            f" ({count(min(sizes))}–{count(max(sizes))} parameters)"
            if len(sizes) > 1
            else (f" ({count(sizes[0])} parameters)")
        )
    by_name = {c.name: c for c in claims}
    findings = (
        ("position_falls", "a falling position"),
        ("reach_grows_with_size", "a reach that grows with size"),
    )
    outcomes = {key: by_name[key].outcome for key, _ in findings}
    if all(o is Outcome.SUPPORTED for o in outcomes.values()):
        close = "Both findings of the spectral-reach account hold on these records."
    else:
        sentences = []
        against = [what for key, what in findings if outcomes[key] is Outcome.CONTRADICTED]
        if against:
            sentences.append(f"These records contradict {' and '.join(against)}.")
        unsupported = [
            what
            for key, what in findings
            if outcomes[key] is Outcome.UNCLEAR and by_name[key].evidence_against
        ]
        if unsupported:
            sentences.append(
                f"These records do not support {' or '.join(unsupported)}: a comparison goes the other "
                "way beyond the noise, though not all of them."
            )
        noisy = [
            what
            for key, what in findings
            if outcomes[key] is Outcome.UNCLEAR and not by_name[key].evidence_against
        ]
        if noisy:
            sentences.append(f"These records do not establish {' or '.join(noisy)} beyond the noise.")
        untestable = [what for key, what in findings if outcomes[key] is Outcome.UNTESTABLE]
        if untestable:
            sentences.append(f"Too little data to test {' or '.join(untestable)}.")
        close = " ".join(sentences)
    text = f"{head}: " + "; ".join(c.summary for c in claims) + ". " + close
    return Verdict(claims, text)


def _span(values: Sequence[float], fmt: str) -> str:
    """``fmt`` of the one value, or "from <min> to <max>" when they differ at that precision."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"from {low} to {high}"


# ---- everything at once ----------------------------------------------------------------------


@dataclass(frozen=True)
class FamilySummary:
    """The family view of a run: what the report and ``--json`` show."""

    position: Position
    reach: tuple[Reach, ...]
    series: tuple[PositionSeries, ...]
    amplification: tuple[AmplificationSeries, ...]
    loss_fit: PowerLawFit | None
    reach_fit: PowerLawFit | None
    notes: tuple[str, ...]
    """Why a fit is missing, and similar."""
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position.value,
            "reach": [r.to_dict() for r in self.reach],
            "series": [s.to_dict() for s in self.series],
            "amplification": [a.to_dict() for a in self.amplification],
            "loss_fit": self.loss_fit.to_dict() if self.loss_fit else None,
            "reach_fit": self.reach_fit.to_dict() if self.reach_fit else None,
            "notes": list(self.notes),
            "verdict": self.verdict.to_dict(),
        }


def summarize(
    records: Sequence[dict[str, Any]], position: Position | str = Position.NORMALIZED
) -> FamilySummary:
    """All of the family view; fits that cannot be made are None with a note saying why."""
    position = Position(position)
    notes = []
    loss_fit = reach_fit = None
    try:
        loss_fit = fit_loss_vs_size(records)
        reach_fit = fit_reach_vs_size(records, position)
    except SpecprobeError as err:
        notes.append(f"no power-law fit: {err.message}")
    return FamilySummary(
        position=position,
        reach=tuple(spectral_reach(records, position)),
        series=tuple(position_vs_compute(records, position)),
        amplification=tuple(amplification(records)),
        loss_fit=loss_fit,
        reach_fit=reach_fit,
        notes=tuple(notes),
        verdict=verdict(records, position),
    )
