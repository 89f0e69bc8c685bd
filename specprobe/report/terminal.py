"""Rendering with Rich: the one module that draws tables. Compute returns data; this shows it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

from specprobe.pipeline.plan import Observer
from specprobe.report import tables
from specprobe.report.tables import TableData, Tone


def fmt(value: float, stderr: float | None = None) -> str:
    """A number in 4 significant digits, with ``± stderr`` when one is given and non-zero."""
    text = f"{value:.4g}"
    return f"{text} ± {stderr:.2g}" if stderr else text


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


def selftest_table(rows: Sequence[CheckRow], title: str) -> Table:
    """The self-check as a table: value, reference, error and verdict per quantity."""
    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("specprobe", justify="right")
    table.add_column("dense reference", justify="right")
    table.add_column("error", justify="right")
    table.add_column("", justify="center")
    for row in rows:
        unit = " se" if row.stderr else " rel"
        table.add_row(
            row.name,
            fmt(row.measured, row.stderr),
            fmt(row.reference),
            f"{row.error:.1e}{unit}",
            "[green]ok[/]" if row.ok else "[red]FAIL[/]",
        )
    return table


# ---- sweep reports -------------------------------------------------------------------------


def group_by_model(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records per model, each list sorted by step (revisions without a step keep their order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["model"], []).append(record)
    for rows in groups.values():
        rows.sort(key=lambda r: (r.get("step") is None, r.get("step") or 0))
    return groups


# ---- fitting tables to the terminal ------------------------------------------------------------

_TONES = {Tone.GOOD: "green", Tone.WARN: "yellow", Tone.BAD: "red"}


def table_width(data: TableData) -> int:
    """Columns a table takes with Rich's default box and padding when no cell wraps: each
    column its widest cell (or header) plus two spaces of padding and one rule, plus one."""
    widths = [cell_len(c.header) for c in data.columns]
    for row in data.rows:
        widths = [max(w, cell_len(cell.text)) for w, cell in zip(widths, row, strict=True)]
    return sum(widths) + 3 * len(widths) + 1


def fit_columns(data: TableData, width: int) -> tuple[TableData, list[str]]:
    """The table with its least important columns dropped until it fits ``width`` columns
    (essential columns stay even when it does not), and the headers dropped."""
    keep = list(range(len(data.columns)))
    dropped: list[str] = []
    while table_width(data.keep(keep)) > width:
        optional = [i for i in keep if not data.columns[i].essential]
        if not optional:
            break
        keep.remove(optional[-1])
        dropped.append(data.columns[optional[-1]].header)
    return data.keep(keep), dropped[::-1]


def rich_table(data: TableData) -> Table:
    """A TableData as a Rich table: numbers right-aligned, cells never wrapped or cut."""
    table = Table()
    for column in data.columns:
        table.add_column(column.header, justify="right" if column.numeric else "left", no_wrap=True)
    for row in data.rows:
        table.add_row(*(Text(c.text, style=_TONES.get(c.tone, "")) for c in row))
    return table


def fit_alike(tables_: Sequence[TableData], width: int) -> tuple[list[TableData], list[str]]:
    """Tables of one kind fitted together: a column dropped from one is dropped from all,
    so that they read alike."""
    dropped: list[str] = []
    for data in tables_:
        dropped += [h for h in fit_columns(data, width)[1] if h not in dropped]
    fitted = [
        data.keep([i for i, c in enumerate(data.columns) if c.header not in dropped]) for data in tables_
    ]
    order = [c.header for data in tables_ for c in data.columns]
    return fitted, sorted(dropped, key=order.index)


class TablePrinter:
    """Prints tables fitted to the console (or whole with ``wide``), and remembers what it
    dropped so that the report can say so once, at its end."""

    def __init__(self, console: Console, wide: bool = False) -> None:
        self.console = console
        self.wide = wide
        self.dropped: dict[str, list[str]] = {}

    def fit(self, tables_: Sequence[TableData]) -> list[TableData]:
        """The tables as they will be printed (fitted alike, unless ``wide``)."""
        if self.wide or not tables_:
            return list(tables_)
        fitted, dropped = fit_alike(tables_, self.console.width)
        kind = tables_[0].kind
        for header in dropped:
            if header not in self.dropped.setdefault(kind, []):
                self.dropped[kind].append(header)
        return fitted

    def print(self, data: TableData, *, fitted: bool = False) -> None:
        """Print a table with its title, fitting it first unless ``fitted``."""
        shown = data if fitted else self.fit([data])[0]
        self.console.print(Text(data.title, style="bold"), overflow="fold")
        if self.wide:
            # Rendered at the table's own width, then printed uncropped: wider than the
            # terminal when it must be (for `less -S`, a file, or a wide window).
            width = max(self.console.width, table_width(shown))
            options = self.console.options.update(width=width, max_width=width)
            self.console.print(Segments(self.console.render(rich_table(shown), options)), crop=False)
        else:
            self.console.print(rich_table(shown))

    def note(self) -> str | None:
        """What was left out, and how to see it, or None when every column was shown."""
        if not self.dropped:
            return None
        names = "; ".join(f"{', '.join(h)} ({_KINDS.get(k, k)})" for k, h in self.dropped.items())
        return f"not shown at {self.console.width} columns: {names}. --wide shows every column."


_KINDS = {"model": "per model", "groups": "layers", "comparison": "comparison", "reach": "reach"}


def model_table(model: str, rows: Sequence[dict[str, Any]]) -> Table:
    """One model over its revisions, as a Rich table with every column (see
    :func:`specprobe.report.tables.model_table` for the columns)."""
    return rich_table(tables.model_table(model, rows))


SPARK = "▁▂▃▄▅▆▇█"


def density_line(record: dict[str, Any]) -> str | None:
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
    label = f"{record.get('label') or record['model']} @ {record['revision']}"
    return f"eNTK eigenvalue density of {label} (SLQ; λ from {lo:.2g} to {hi:.2g} on a log axis; log counts): {bars}"


def groups_table(record: dict[str, Any]) -> Table:
    """Which layers carry the kernel, as a Rich table (see :func:`specprobe.report.tables.groups_table`)."""
    return rich_table(tables.groups_table(record))


def comparison_table(groups: dict[str, list[dict[str, Any]]]) -> Table:
    """Across models, as a Rich table (see :func:`specprobe.report.tables.comparison_table`)."""
    return rich_table(tables.comparison_table(groups))


def run_notes(records: Sequence[dict[str, Any]]) -> list[str]:
    """Things a reader must know (failures, duplicated weights, differing data subsets), as
    Rich markup: :func:`specprobe.report.tables.run_notes` coloured by tone."""
    return [
        f"[{_TONES[tone]}]{escape(text)}[/]" if tone in _TONES else escape(text)
        for tone, text in tables.run_notes(records)
    ]


def render_run(records: Sequence[dict[str, Any]], console: Console, *, wide: bool = False) -> None:
    """The full report of a run: a table per model, the comparison, the family view and the
    notes. Tables fit the console's width by dropping their least important columns (a
    closing note names them); ``wide`` shows every column however wide the tables get."""
    if not records:
        console.print("no records yet")
        return
    printer = TablePrinter(console, wide)
    groups = group_by_model(records)
    per_model = printer.fit([tables.model_table(model, rows) for model, rows in groups.items()])
    for rows, data in zip(groups.values(), per_model, strict=True):
        printer.print(data, fitted=True)
        decomposed = [r for r in rows if r.get("status") == "ok" and r.get("groups")]
        if decomposed:
            printer.print(tables.groups_table(decomposed[-1]))
        with_density = [line for r in rows if r.get("status") == "ok" and (line := density_line(r))]
        if with_density:
            console.print(with_density[-1], highlight=False)
    if len(groups) > 1:
        printer.print(tables.comparison_table(groups))
    family_report(records, console, printer=printer)
    for note in run_notes(records):
        console.print(note, highlight=False)
    left_out = printer.note()
    if left_out:
        console.print(left_out, style="dim", highlight=False)


class SweepProgress(Observer):
    """A Rich progress display for ``run_sweep``: checkpoints overall, batches of the current one."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.overall = self.progress.add_task("preparing", total=None)
        self.batches = self.progress.add_task("", total=None, visible=False)

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def planned(self, checkpoints: Sequence[Any]) -> None:
        self.progress.update(self.overall, description="checkpoints", total=len(checkpoints), completed=0)

    def preparing(self, what: str) -> None:
        self.progress.update(self.overall, description=what)

    def loading(self, checkpoint: Any) -> None:
        self.progress.update(self.overall, description=f"loading {checkpoint.model} @ {checkpoint.revision}")

    def measuring(self, checkpoint: Any, batches: int) -> None:
        self.progress.update(self.overall, description=f"{checkpoint.model} @ {checkpoint.revision}")
        self.progress.reset(self.batches, total=batches, description="  batches", visible=True)

    def batch_done(self, checkpoint: Any, index: int) -> None:
        self.progress.advance(self.batches)

    def finished(self, checkpoint: Any, record: dict[str, Any]) -> None:
        self.progress.advance(self.overall)
        self.progress.update(self.batches, visible=False)
        if record.get("status") != "ok":
            self.progress.console.print(
                f"[red]failed[/] {checkpoint.model} @ {checkpoint.revision}: {record.get('error')}"
            )

    def skipped(self, checkpoint: Any, record: dict[str, Any]) -> None:
        self.progress.advance(self.overall)


def recipes_table(rows: Sequence[tuple[str, int, str]]) -> Table:
    """Bundled recipes: name, number of models, description (what a run costs)."""
    table = Table(title="bundled recipes (specprobe run NAME)", title_justify="left")
    table.add_column("name")
    table.add_column("models", justify="right")
    table.add_column("description")
    for name, models, description in rows:
        table.add_row(name, str(models), description)
    return table


# ---- family view ---------------------------------------------------------------------------


def family_report(
    records: Sequence[dict[str, Any]], console: Console, *, printer: TablePrinter | None = None
) -> None:
    """The family view: reach per model ranked by size, power-law fits, gradient
    amplification, a text chart of position against compute, and the verdict paragraph."""
    from rich.panel import Panel

    from specprobe.analysis.family import analysed, summarize
    from specprobe.report.plots import position_chart

    if len(analysed(records)) < 2:
        return
    summary = summarize(records)
    (printer or TablePrinter(console)).print(tables.reach_table(summary))
    for fit in (summary.loss_fit, summary.reach_fit):
        if fit is not None:
            quantity = tables.fit_name(fit.quantity)
            console.print(
                f"power law across {fit.num_points} sizes: {quantity} ∝ N^{fit.exponent:.3f} "
                f"± {fit.exponent_stderr:.2g}, R² {fit.r_squared:.2f}",
                highlight=False,
            )
    for note in summary.notes:
        console.print(note, highlight=False)
    chart = position_chart(records)
    if chart:
        console.print("\n".join(chart), highlight=False, markup=False)
    console.print(
        Panel(summary.verdict.text, title="verdict (computed from the numbers above)", expand=False)
    )


class TrainingDisplay:
    """A Rich progress display for the demo's training: one bar per model, loss and ETA."""

    def __init__(self, console: Console, models: Sequence[str], steps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("training {task.description:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks = {m: self.progress.add_task(m, total=steps, loss="") for m in models}

    def __enter__(self) -> TrainingDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, event: Any) -> None:
        """The ``progress_callback`` of ``specprobe.demo.demo.train_family``."""
        self.progress.update(self.tasks[event.model], completed=event.step, loss=f"{event.loss:.3f}")
