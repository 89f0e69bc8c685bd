"""The family view: spectral reach, position against compute, amplification, fits, a verdict.

Pure functions over results records (the dicts ``specprobe.pipeline.sweep.run_sweep`` writes to
``results.jsonl``, :class:`specprobe.store.records.Record`). Only analysed records count: ``status == "ok"`` and not a duplicate of
another revision's weights (``duplicate_of`` null). Every function returns frozen
dataclasses with ``to_dict()``; nothing here prints or draws.

Names follow docs/concepts.md ("The fields of a measurement"):

* spectral reach of a model: the lowest spectral position over its analysed revisions,
  with its standard error and the revision where it is attained;
* compute C = 6·N·T (N = ``num_params``, all parameters of the record; T = ``tokens_seen``),
  the usual estimate of training FLOPs (forward and backward pass, 6 FLOPs per parameter
  and token);
* gradient amplification: χ_net(t) / χ_net(t₀) relative to the first analysed revision;
* power laws y = a·N^b across sizes, fitted by least squares in log–log.

Positions are compared across models in a normalised form, chosen once by
:func:`~specprobe.analysis.position.choose_position`: the population position (D/N)·χ_pos^∞
when every analysed record has it, else D·χ_pos (runs written by earlier versions); the
raw χ_pos is accepted only when all models were measured at the same D.

The parts live in their own modules (this one gathers them, and keeps their names):
:mod:`~specprobe.analysis.position` (which records count, the position read from each),
:mod:`~specprobe.analysis.sizes` (reach and power laws across sizes),
:mod:`~specprobe.analysis.series` (position against compute, amplification) and
:mod:`~specprobe.analysis.verdict` (the claims and the paragraph). :func:`summarize` computes
each once; the verdict consumes the summary's numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from specprobe.analysis.position import (
    SIGNIFICANCE,
    Position,
    analysed,
    comparable,
)
from specprobe.analysis.series import (
    AmplificationPoint,
    AmplificationSeries,
    PositionPoint,
    PositionSeries,
    amplification,
    amplification_of,
    position_vs_compute,
    series_of,
    training_compute,
)
from specprobe.analysis.sizes import (
    MIN_FIT_SIZES,
    PowerLawFit,
    Reach,
    SizeGroup,
    fit_loss_vs_size,
    fit_power_law,
    fit_reach_vs_size,
    reaches_of,
    size_fits,
    size_groups,
    spectral_reach,
)
from specprobe.analysis.verdict import Claim, Outcome, Verdict, family_verdict
from specprobe.store.records import Record

__all__ = [
    "MIN_FIT_SIZES",
    "SIGNIFICANCE",
    "AmplificationPoint",
    "AmplificationSeries",
    "Claim",
    "FamilySummary",
    "Outcome",
    "Position",
    "PositionPoint",
    "PositionSeries",
    "PowerLawFit",
    "Reach",
    "SizeGroup",
    "Verdict",
    "amplification",
    "analysed",
    "fit_loss_vs_size",
    "fit_power_law",
    "fit_reach_vs_size",
    "position_vs_compute",
    "spectral_reach",
    "summarize",
    "training_compute",
    "verdict",
]


@dataclass(frozen=True)
class FamilySummary:
    """The family view of a run: what the report and ``--json`` show."""

    position: Position
    reach: tuple[Reach, ...]
    """One per run."""
    sizes: tuple[SizeGroup, ...]
    """One per size: its runs' (seeds') mean reach and final loss, with the seed spread."""
    series: tuple[PositionSeries, ...]
    amplification: tuple[AmplificationSeries, ...]
    loss_fit: PowerLawFit | None
    reach_fit: PowerLawFit | None
    notes: tuple[str, ...]
    """Why a fit is missing, reaches that rest on noisy estimates, and similar."""
    verdict: Verdict

    @property
    def statistic(self) -> str:
        """Which statistic the positions are, in one sentence."""
        return self.position.description

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position.value,
            "statistic": self.statistic,
            "reach": [r.to_dict() for r in self.reach],
            "sizes": [g.to_dict() for g in self.sizes],
            "series": [s.to_dict() for s in self.series],
            "amplification": [a.to_dict() for a in self.amplification],
            "loss_fit": self.loss_fit.to_dict() if self.loss_fit else None,
            "reach_fit": self.reach_fit.to_dict() if self.reach_fit else None,
            "notes": list(self.notes),
            "verdict": self.verdict.to_dict(),
        }


def summarize(records: Iterable[Record], position: Position | str | None = None) -> FamilySummary:
    """All of the family view, each part computed once; fits that cannot be made are None
    with a note saying why, and the verdict judges the summary's own reaches and fits.
    ``position`` None: the statistic :func:`~specprobe.analysis.position.choose_position` picks."""
    position, groups = comparable(records, position)
    reach = reaches_of(groups, position)
    sizes = size_groups(reach)
    growth = amplification_of(groups)
    loss_fit, reach_fit, note = size_fits(sizes, position)
    return FamilySummary(
        position=position,
        reach=tuple(reach),
        sizes=tuple(sizes),
        series=tuple(series_of(groups, position)),
        amplification=tuple(growth),
        loss_fit=loss_fit,
        reach_fit=reach_fit,
        notes=tuple(n for n in (note, *reach_notes(reach)) if n),
        verdict=family_verdict(groups, sizes, growth, (loss_fit, reach_fit), position),
    )


def reach_notes(reach: Sequence[Reach]) -> list[str]:
    """What a reader must know about the reaches: the bias of a minimum over noisy
    revisions, and reaches that rest on a noisy population estimate or left some out."""
    notes = []
    biased = [r for r in reach if r.minimum_bias > 0]
    if biased:
        span = ", ".join(f"{r.label} {r.minimum_bias:.2g} ({r.num_revisions} revisions)" for r in biased)
        notes.append(
            "a reach is the lowest of k noisy values, so it lies low: were a model's true values "
            "equal, the lowest estimate would be about σ·E[max of k normals] below them "
            f"(σ the mean standard error; k = 2: 0.56σ, 3: 0.85σ, 4: 1.03σ): {span}"
        )
    for r in reach:
        if r.problem:
            notes.append(
                f"the reach of {r.label} at {r.revision} rests on a population estimate that is {r.problem}"
            )
        if r.excluded:
            notes.append(
                f"{r.excluded} revision(s) of {r.label} left out of its reach: population estimate ≤ 0 "
                "(more sequences needed)"
            )
    return notes


def verdict(records: Iterable[Record], position: Position | str | None = None) -> Verdict:
    """Test the claims of the spectral-reach account on the records; a paragraph saying so
    (the criteria: :func:`specprobe.analysis.verdict.family_verdict`). The verdict of
    :func:`summarize`."""
    return summarize(records, position).verdict
