"""The verdict of the family view: the claims of the spectral-reach account, each decided
by a stated criterion (:func:`family_verdict`), and a paragraph saying what held.

The verdict consumes what :func:`specprobe.analysis.family.summarize` computed (the
analysed records, the reaches, the amplification series and the fits); it fits nothing
itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise
from typing import Any

from specprobe.analysis.position import SIGNIFICANCE, Position, combined, ordered, position_value
from specprobe.analysis.series import AmplificationSeries
from specprobe.analysis.sizes import PowerLawFit, SizeGroup
from specprobe.store.records import Record
from specprobe.text import count


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
    opening: str = ""
    """What was judged: ``Across 4 models (1k–1M parameters), on D·χ_pos``."""
    closing: str = ""
    """Which findings held, in a sentence or two."""

    @property
    def lines(self) -> tuple[str, ...]:
        """The verdict as a short list: what was judged, one claim a line with its numbers,
        and the closing sentence (the paragraph :attr:`text` says the same)."""
        head = (f"{self.opening}:",) if self.opening else ()
        tail = (self.closing,) if self.closing else ()
        return (*head, *(f"{c.outcome.value}: {c.summary}" for c in self.claims), *tail)

    def claim(self, name: str) -> Claim:
        for c in self.claims:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"claims": [c.to_dict() for c in self.claims], "text": self.text, "lines": list(self.lines)}


def _change(first: tuple[float, float], last: tuple[float, float]) -> int:
    """−1 if last is below first by more than SIGNIFICANCE combined errors, +1 above, else 0."""
    diff = last[0] - first[0]
    margin = SIGNIFICANCE * combined(first[1], last[1])
    if diff < -margin:
        return -1
    if diff > margin:
        return 1
    return 0


def _position_fell(groups: dict[str, list[Record]], position: Position) -> Claim:
    tracked = {m: rows for m, rows in groups.items() if len(rows) >= 2 and ordered(rows)}
    if not tracked:
        unordered = any(len(rows) >= 2 for rows in groups.values())
        return Claim(
            "position_falls",
            Outcome.UNTESTABLE,
            "position during training: untestable ("
            + (
                "no training position is known, so the revisions have no order"
                if unordered
                else "no model has two analysed revisions"
            )
            + ")",
        )
    changes = {
        m: _change(position_value(rows[0], position), position_value(rows[-1], position))
        for m, rows in tracked.items()
    }
    fell = sum(c < 0 for c in changes.values())
    rose = sum(c > 0 for c in changes.values())
    n = len(tracked)
    ratios = [
        position_value(rows[-1], position)[0] / position_value(rows[0], position)[0]
        for rows in tracked.values()
    ]
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


def monotone(
    items: Sequence[tuple[str, float, float]], name: str, lower_is: str, fit: PowerLawFit | None
) -> Claim:
    """Does the value fall with size? ``items`` are (label, value, stderr) in size order."""
    if len(items) < 2:
        return Claim(name, Outcome.UNTESTABLE, f"{lower_is}: untestable (fewer than two sizes)")
    steps = [_change((a[1], a[2]), (b[1], b[2])) for a, b in pairwise(items)]
    values = ", ".join(f"{label} {v:.3g} ± {se:.2g}" if se else f"{label} {v:.3g}" for label, v, se in items)
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
    # Every step said as what it is: below or above the next smaller, beyond the noise
    # (SIGNIFICANCE combined standard errors) or by less.
    notes = []
    for (a, b), s in zip(pairwise(items), steps, strict=True):
        side = "below" if b[1] < a[1] else "above" if b[1] > a[1] else "level with"
        margin = "beyond" if s else "by less than"
        notes.append(f"{b[0]} {side} {a[0]} {margin} {SIGNIFICANCE:g} standard errors")
    against = any(s > 0 for s in steps)
    in_order = all(b[1] < a[1] for a, b in pairwise(items))
    verdict_word = (
        "in order, but not every step beyond the noise"
        if in_order
        else "not in order"
        if against
        else "not shown beyond the noise"
    )
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


def family_verdict(
    groups: dict[str, list[Record]],
    sizes: Sequence[SizeGroup],
    amplification: Sequence[AmplificationSeries],
    fits: tuple[PowerLawFit | None, PowerLawFit | None],
    position: Position,
) -> Verdict:
    """Test the claims of the spectral-reach account on the analysed records; a paragraph
    saying so. ``groups`` are the analysed records per run (each in training order),
    ``sizes`` their reaches grouped by size (seeds of one size are one point, their mean
    with the seed spread as its error), ``amplification`` the runs' amplification, ``fits``
    the (loss, reach) power laws across sizes (None where none could be made). Runs whose
    checkpoints have no known training position take part in no claim that needs an order
    (position and χ_net from first to last, final loss).

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
    if not groups:
        empty = (Claim("records", Outcome.UNTESTABLE, "no analysed revision (all failed or duplicates)"),)
        return Verdict(empty, "Nothing to judge: no revision was analysed successfully.")
    loss_fit, reach_fit = fits
    sized = [g for g in sizes if g.num_params is not None]
    claims = (
        _position_fell(groups, position),
        monotone(
            [(g.label, g.reach, g.reach_stderr) for g in sized],
            "reach_grows_with_size",
            f"larger models reach lower positions (lowest {position.symbol})",
            reach_fit,
        ),
        monotone(
            [(g.label, g.final_loss, g.final_loss_stderr) for g in sized if g.final_loss is not None],
            "loss_falls_with_size",
            "larger models reach lower final loss",
            loss_fit,
        ),
        _amplified(amplification),
    )
    opening = f"{_opening(len(groups), sized)}, on {position.symbol}"
    closing = _closing(claims)
    text = f"{opening}: " + "; ".join(c.summary for c in claims) + ". " + closing
    return Verdict(claims, text, opening, closing)


def _opening(models: int, sized: Sequence[SizeGroup]) -> str:
    """``Across 4 models (1k–1M parameters)``; with seeds ``Across 10 runs of 2 sizes
    (seeds averaged per size; 1k–1M parameters)``."""
    sizes = [g.num_params for g in sized if g.num_params is not None]
    if any(g.seeds > 1 for g in sized):
        span = f"{count(min(sizes))}–{count(max(sizes))}" if len(sizes) > 1 else count(sizes[0])
        return (
            f"Across {models} runs of {len(sized)} size{'s' if len(sized) > 1 else ''} "
            f"({'seeds' if all(g.by_seed for g in sized) else 'runs of equal size'} averaged per size, "
            f"their spread as error; {span} parameters)"
        )
    head = f"Across {models} model{'s' if models > 1 else ''}"
    if sizes:
        head += (
            f" ({count(min(sizes))}–{count(max(sizes))} parameters)"
            if len(sizes) > 1
            else (f" ({count(sizes[0])} parameters)")
        )
    return head


_FINDINGS = (
    ("position_falls", "a falling position"),
    ("reach_grows_with_size", "a reach that grows with size"),
)
"""The two findings of the spectral-reach account the closing sentence speaks of."""


def _closing(claims: Sequence[Claim]) -> str:
    """The closing sentences: which of the two findings hold, are contradicted, are not
    supported (some comparison against), not established (within the noise), or untestable."""
    by_name = {c.name: c for c in claims}
    outcomes = {key: by_name[key].outcome for key, _ in _FINDINGS}
    if all(o is Outcome.SUPPORTED for o in outcomes.values()):
        return "Both findings of the spectral-reach account hold on these records."

    def findings(outcome: Outcome, against: bool | None = None) -> list[str]:
        return [
            what
            for key, what in _FINDINGS
            if outcomes[key] is outcome and (against is None or by_name[key].evidence_against is against)
        ]

    sentences = []
    if contradicted := findings(Outcome.CONTRADICTED):
        sentences.append(f"These records contradict {' and '.join(contradicted)}.")
    if unsupported := findings(Outcome.UNCLEAR, against=True):
        sentences.append(
            f"These records do not support {' or '.join(unsupported)}: a comparison goes the other "
            "way beyond the noise, though not all of them."
        )
    if noisy := findings(Outcome.UNCLEAR, against=False):
        sentences.append(f"These records do not establish {' or '.join(noisy)} beyond the noise.")
    if untestable := findings(Outcome.UNTESTABLE):
        sentences.append(f"Too little data to test {' or '.join(untestable)}.")
    return " ".join(sentences)


def _span(values: Sequence[float], fmt: str) -> str:
    """``fmt`` of the one value, or "from <min> to <max>" when they differ at that precision."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"from {low} to {high}"
