"""The report of a run as one document: its sections built once, as data, for both renderers.

:func:`build_document` reads the records once into typed sections: a table per model (with
the layer decomposition and the eigenvalue density of its last revision that has them),
the comparison across models, the family view (reach table, power-law fits, notes, the
verdict as a list of claims), the run's notes, the settings that produced the numbers
(those that apply), which position statistic the numbers are (one choice,
:func:`specprobe.analysis.position.choose_position`) and the family's name for the title. The terminal
(:func:`specprobe.report.terminal.render_run`, Rich) and the HTML file
(:func:`specprobe.report.html.render_html`) are two walkers over it: they choose the order
and the look, never the content, so both show the same numbers. Nothing here prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Any

from specprobe.analysis.family import PowerLawFit, analysed, summarize
from specprobe.analysis.position import Position, choose_position, describe, distinct_runs, group_by_model
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
        """The fit in words; the exponent with its standard error."""
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
    """The verdict as a paragraph (as ``--json`` has it)."""
    verdict_lines: tuple[str, ...] = ()
    """The verdict as a short list: what was judged, one claim a line with its numbers, the
    closing sentence."""


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
    position: Position = Position.NORMALIZED
    """The position statistic of the tables, the family view and the figures."""
    name: str = "specprobe report"
    """The family's name: the recipe's, or the models' common name (:func:`family_name`)."""

    @property
    def statistic(self) -> str:
        """Which statistic the positions are, in a sentence (every renderer says it), for the
        records' task."""
        return describe(self.position, [r for rows in analysed(self.records).values() for r in rows])

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
    records = distinct_runs(records)  # one name per series, everywhere below
    groups = group_by_model(records)
    scale = choose_position(records)
    return Document(
        records=tuple(records),
        models=tuple(_model_section(model, rows, scale) for model, rows in groups.items()),
        comparison=tables.comparison_table(groups, scale) if len(groups) > 1 else None,
        family=family_view(records, scale),
        notes=tuple(Note(tone, text) for tone, text in tables.run_notes(records)),
        settings=settings(records, config),
        position=scale,
        name=family_name(records, config),
    )


def family_name(records: Sequence[Record], config: dict[str, Any] | None = None) -> str:
    """The name of the family a run measured, for a title: the recipe's name when the run
    came from one, else the models' common name (their labels' longest common prefix,
    trimmed at a separator: ``neox-w16, neox-w32`` → ``neox``), else the one model's label
    (a local checkpoint's folder name), else ``specprobe report``. Never the run folder's name."""
    for invocation in reversed((config or {}).get("invocations") or []):
        recipe = (invocation.get("invocation") or invocation).get("recipe") or {}
        if isinstance(recipe, dict) and recipe.get("name"):
            return str(recipe["name"])
    # A local checkpoint's label is its path: the folder's own name is the model's.
    names = (str(r.get("label") or r.get("model") or "") for r in records)
    labels = list(dict.fromkeys(Path(n).name if n.startswith(("/", ".", "~")) else n for n in names))
    labels = [label for label in labels if label]
    if len(labels) == 1:
        return labels[0]
    # Character by character (the labels are names, not paths), then back to a whole word:
    # neox-w16, neox-w32 → neox-w → neox; neox-w1000, neox-w10000 → neox.
    shared = takewhile(lambda chars: len(set(chars)) == 1, zip(*labels, strict=False))
    common = "".join(chars[0] for chars in shared)
    if any(len(label) > len(common) and label[len(common)] not in _SEPARATORS for label in labels):
        common = common[: max((common.rfind(c) for c in _SEPARATORS), default=-1) + 1]
    common = common.rstrip(_SEPARATORS)
    if len(labels) > 1 and len(common) >= 2:
        return common
    return "specprobe report"


_SEPARATORS = "-_ ./=@:"
"""Where a model's name splits into words (``neox-w16``, ``pythia_160m``, ``org/model``)."""


def _model_section(model: str, rows: Sequence[Record], scale: Position) -> ModelSection:
    decomposed = [r for r in rows if r.get("status") == "ok" and r.get("groups")]
    lines = [line for r in rows if r.get("status") == "ok" and (line := density_line(r))]
    return ModelSection(
        tables.model_table(model, rows, scale),
        tables.groups_table(decomposed[-1]) if decomposed else None,
        lines[-1] if lines else None,
    )


def family_view(records: Sequence[Record], scale: Position | None = None) -> FamilyView | None:
    """The family view of the records on ``scale`` (None: the one choice,
    :func:`~specprobe.analysis.position.choose_position`), or None when fewer than two
    models were analysed."""
    if len(analysed(records)) < 2:
        return None
    summary = summarize(records, scale)
    return FamilyView(
        reach=tables.reach_table(summary),
        fits=tuple(FitLine.of(fit) for fit in (summary.loss_fit, summary.reach_fit) if fit is not None),
        notes=(*summary.notes, *zero_bias_note(summary.reach)),
        verdict=summary.verdict.text,
        verdict_lines=summary.verdict.lines,
    )


def zero_bias_note(reach: Sequence[Any]) -> tuple[str, ...]:
    """Why the reach table's "bias of the minimum" is 0 where it is (the family view's own
    note explains a bias above 0): only one revision lies within two combined standard
    errors of the lowest, so the minimum was not picked among look-alikes."""
    zero = [r.label for r in reach if not r.minimum_bias]
    if not zero:
        return ()
    which = "every model" if len(zero) == len(reach) else ", ".join(zero)
    return (
        f"bias of the minimum 0 ({which}): no other revision lies within two combined standard "
        "errors of the lowest, so the reach was not picked among look-alike values; where several do, "
        "the lowest of k lies about σ·E[max of k normals] below their true value (0.56σ for 2, 0.85σ for 3).",
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
            values = recorded.get(section) or {}
            skip = not_applying(values) if section == "data" else set()
            items = tuple((k, _plain(v)) for k, v in values.items() if v is not None and k not in skip)
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


_LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
"""The local data files specprobe reads (``specprobe.models.data``, not imported here: it
imports torch)."""


def not_applying(data: dict[str, Any]) -> set[str]:
    """Data settings that did not shape the numbers, so the report leaves them out: a local
    file or folder has no hub ``split`` or ``config``, and a .txt file's one column is its
    lines (``text_column`` unused)."""
    dataset = str(data.get("dataset") or "")
    path = Path(dataset).expanduser()
    suffixes = {path.suffix}
    if path.is_dir():
        suffixes = {p.suffix for p in path.iterdir() if p.suffix in _LOCAL_SUFFIXES}
    local = dataset.startswith((".", "/", "~")) or path.exists() or path.suffix in _LOCAL_SUFFIXES
    if not local:
        return set()
    return {"split", "config", "text_column"} if suffixes == {".txt"} else {"split", "config"}


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={_plain(v)}" for k, v in value.items())
    return str(value)
