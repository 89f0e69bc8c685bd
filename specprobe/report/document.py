"""The report of a run as one document: its sections built once, as data, for both renderers.

:func:`build_document` reads the records once into typed sections: a table per model (with
the layer decomposition and the eigenvalue density of its last revision that has them),
the comparison across models, the family view (reach table, power-law fits, notes, the
verdict), the run's notes and the settings that produced the numbers. The terminal
(:func:`specprobe.report.terminal.render_run`, Rich) and the HTML file
(:func:`specprobe.report.html.render_html`) are two walkers over it: they choose the order
and the look, never the content, so both show the same numbers. Nothing here prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from specprobe.analysis.family import PowerLawFit, analysed, summarize
from specprobe.analysis.position import group_by_model
from specprobe.report import tables
from specprobe.report.plots import position_chart
from specprobe.report.tables import TableData, Tone
from specprobe.store.records import Record


@dataclass(frozen=True)
class Note:
    """A line a reader must know (a failure, duplicated weights, …), with its tone."""

    tone: Tone
    text: str


@dataclass(frozen=True)
class ModelSection:
    """One model: its table over the revisions, the layer decomposition of its last
    decomposed revision, and the eigenvalue density line of its last revision with one."""

    table: TableData
    groups: TableData | None
    density: str | None


@dataclass(frozen=True)
class FitLine:
    """A power law across sizes in words: ``reach (D·χ_pos)``, ``∝ N^-0.164 ± 0.11``,
    ``R² 0.69``, over ``num_points`` sizes."""

    quantity: str
    law: str
    r_squared: str
    num_points: int

    @classmethod
    def of(cls, fit: PowerLawFit) -> FitLine:
        return cls(
            tables.fit_name(fit.quantity),
            f"∝ N^{fit.exponent:.3f} ± {fit.exponent_stderr:.2g}",
            f"R² {fit.r_squared:.2f}",
            fit.num_points,
        )


@dataclass(frozen=True)
class FamilyView:
    """The family view (two analysed models or more): reach by size, the fits, why a fit
    is missing, and the verdict paragraph."""

    reach: TableData
    fits: tuple[FitLine, ...]
    notes: tuple[str, ...]
    verdict: str


@dataclass(frozen=True)
class SettingsSection:
    """What produced the numbers: the command (its argv), and named blocks of settings
    (data and probe settings per distinct settings, and what was measured)."""

    command: str | None
    blocks: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


@dataclass(frozen=True)
class Document:
    """The report of a run, section by section (see the module docstring)."""

    records: tuple[Record, ...]
    models: tuple[ModelSection, ...]
    comparison: TableData | None
    """Across models; None with a single model."""
    family: FamilyView | None
    """None with fewer than two analysed models."""
    notes: tuple[Note, ...]
    settings: SettingsSection

    @property
    def analysed(self) -> bool:
        """Whether any record was analysed (``ok``, not a duplicate): there is a figure to draw."""
        return bool(analysed(self.records))

    def chart(self) -> list[str]:
        """The text chart of position against compute (:func:`specprobe.report.plots.position_chart`)."""
        return position_chart(self.records)


def build_document(records: Sequence[Record], config: dict[str, Any] | None = None) -> Document:
    """The report of the records; ``config`` is the run's ``config.json`` (for the command
    that made it). Cost: one pass over the records and the family view's fits."""
    groups = group_by_model(records)
    return Document(
        records=tuple(records),
        models=tuple(_model_section(model, rows) for model, rows in groups.items()),
        comparison=tables.comparison_table(groups) if len(groups) > 1 else None,
        family=family_view(records),
        notes=tuple(Note(tone, text) for tone, text in tables.run_notes(records)),
        settings=settings(records, config),
    )


def _model_section(model: str, rows: Sequence[Record]) -> ModelSection:
    decomposed = [r for r in rows if r.get("status") == "ok" and r.get("groups")]
    lines = [line for r in rows if r.get("status") == "ok" and (line := density_line(r))]
    return ModelSection(
        tables.model_table(model, rows),
        tables.groups_table(decomposed[-1]) if decomposed else None,
        lines[-1] if lines else None,
    )


def family_view(records: Sequence[Record]) -> FamilyView | None:
    """The family view of the records, or None when fewer than two models were analysed."""
    if len(analysed(records)) < 2:
        return None
    summary = summarize(records)
    return FamilyView(
        reach=tables.reach_table(summary),
        fits=tuple(FitLine.of(fit) for fit in (summary.loss_fit, summary.reach_fit) if fit is not None),
        notes=summary.notes,
        verdict=summary.verdict.text,
    )


SPARK = "▁▂▃▄▅▆▇█"


def density_line(record: Record) -> str | None:
    """The SLQ eigenvalue density of a record as one line: counts per log-spaced bin."""
    density = (record.get("spectrum") or {}).get("spectral_density")
    if not density:
        return None
    # Bar heights on a log scale of the counts: a few large eigenvalues stay visible beside
    # the bulk of (near-)zero ones.
    counts = [math.log1p(max(c or 0.0, 0.0)) for c in density["counts"]]
    top = max(counts) or 1.0
    bars = "".join(SPARK[min(len(SPARK) - 1, int(len(SPARK) * c / top))] if c > 0.01 else " " for c in counts)
    lo, hi = density["edges"][0], density["edges"][-1]
    return (
        f"eNTK eigenvalue density of {tables.checkpoint_name(record)} (SLQ; λ from {lo:.2g} to {hi:.2g} "
        f"on a log axis; log counts): {bars}"
    )


def settings(records: Sequence[Record], config: dict[str, Any] | None) -> SettingsSection:
    """The settings that produced the numbers: the command, the data and probe settings
    (per distinct settings when a run mixes them), and what was measured."""
    blocks: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    invocations = (config or {}).get("invocations") or []
    argv = (invocations[-1].get("invocation") or {}).get("argv") if invocations else None
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("settings"):
            seen.setdefault(str(r.get("settings_hash")), r["settings"])
    for index, recorded in enumerate(seen.values()):
        suffix = f" ({index + 1})" if len(seen) > 1 else ""
        for section in ("data", "probe"):
            items = tuple((k, _plain(v)) for k, v in (recorded.get(section) or {}).items() if v is not None)
            if items:
                blocks.append((f"{section}{suffix}", items))
    models = list(dict.fromkeys(str(r.get("label") or r.get("model")) for r in records))
    run = [
        ("models", ", ".join(models)),
        ("checkpoints", f"{len(records)} ({sum(r.get('status') == 'ok' for r in records)} ok)"),
    ]
    versions = sorted({str(r["specprobe_version"]) for r in records if r.get("specprobe_version")})
    if versions:
        run.append(("specprobe", ", ".join(versions)))
    blocks.append(("measured", tuple(run)))
    command = f"specprobe {' '.join(str(a) for a in argv)}" if argv else None
    return SettingsSection(command, tuple(blocks))


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={_plain(v)}" for k, v in value.items())
    return str(value)
