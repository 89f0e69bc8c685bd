"""Rendering with Rich: the one module that draws tables. Compute returns data; this shows it.

:func:`render_run` walks the report document (:mod:`specprobe.report.document`) as the HTML
file does, fitting its tables to the terminal; the progress displays are in
:mod:`specprobe.report.progress`. Every string that may hold user text (a model folder, a
revision, a recipe label) is printed as a Rich ``Text`` of :func:`~specprobe.report.tables.one_line`,
never as markup: ``[bold]x[/`` shows as itself and cannot break the report."""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

from specprobe.pipeline.selftest import Selftest
from specprobe.report.document import Document, Note, build_document
from specprobe.report.tables import TableData, Tone, one_line
from specprobe.store.records import Record
from specprobe.text import significant


def selftest_table(check: Selftest) -> Table:
    """The self-check as a table: value, reference, error and verdict per quantity."""
    title = (
        f"selftest: tiny {check.arch.value} on {check.device}, D={check.num_outputs} outputs, "
        f"P={check.num_params} parameters"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("specprobe", justify="right")
    table.add_column("dense reference", justify="right")
    table.add_column("error", justify="right")
    table.add_column("", justify="center")
    for row in check.rows:
        unit = " se" if row.stderr else " rel"
        table.add_row(
            row.name,
            significant(row.measured, row.stderr),
            significant(row.reference),
            f"{row.error:.1e}{unit}",
            "[green]ok[/]" if row.ok else "[red]FAIL[/]",
        )
    return table


# ---- fitting tables to the terminal ------------------------------------------------------------

_TONES = {Tone.GOOD: "green", Tone.WARN: "yellow", Tone.BAD: "red"}


def plain(text: object, style: str = "") -> Text:
    """User text as Rich shows it literally: one line (:func:`one_line`), no markup."""
    return Text(one_line(text), style=style)


def table_width(data: TableData) -> int:
    """Columns a table takes with Rich's default box and padding when no cell wraps: each
    column its widest cell (or header) plus two spaces of padding and one rule, plus one."""
    widths = [cell_len(one_line(c.header)) for c in data.columns]
    for row in data.rows:
        widths = [max(w, cell_len(one_line(cell.text))) for w, cell in zip(widths, row, strict=True)]
    return sum(widths) + 3 * len(widths) + 1


def fit_columns(data: TableData, width: int) -> tuple[TableData, list[str]]:
    """The table as it fits ``width`` columns, and the headers left out: the essential
    columns always, then each other column in order of importance if it still fits beside
    those already shown. So a column is left out only when it would not fit, and a narrow
    less important one may fill the room a wide more important one could not."""
    keep = [i for i, c in enumerate(data.columns) if c.essential]
    for i, column in enumerate(data.columns):
        if not column.essential and table_width(data.keep(sorted([*keep, i]))) <= width:
            keep.append(i)
    keep.sort()
    dropped = [c.header for i, c in enumerate(data.columns) if i not in keep]
    return data.keep(keep), dropped


def rich_table(data: TableData) -> Table:
    """A TableData as a Rich table: numbers right-aligned, cells never wrapped or cut."""
    table = Table()
    for column in data.columns:
        table.add_column(plain(column.header), justify="right" if column.numeric else "left", no_wrap=True)
    for row in data.rows:
        table.add_row(*(plain(c.text, _TONES.get(c.tone, "")) for c in row))
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
        self.console.print(plain(data.title, "bold"), overflow="fold")
        if self.wide:
            # Rendered at the table's own width, then printed uncropped: wider than the
            # terminal when it must be (for `less -S`, a file, or a wide window).
            width = max(self.console.width, table_width(shown))
            options = self.console.options.update(width=width, max_width=width)
            self.console.print(Segments(self.console.render(rich_table(shown), options)), crop=False)
        else:
            self.console.print(rich_table(shown))

    def note(self) -> str | None:
        """How many columns were left out and how to see them, in one short line (``--wide``
        and the HTML report show and name them all), or None when every column was shown."""
        left_out = sum(len(headers) for headers in self.dropped.values())
        if not left_out:
            return None
        return f"{left_out} columns not shown at {self.console.width} columns: --wide shows every column."


def _note(note: Note) -> Text:
    """A note as text, coloured by its tone."""
    return plain(note.text, _TONES.get(note.tone, ""))


def render_run(records: Sequence[Record], console: Console, *, wide: bool = False) -> None:
    """The full report of a run (:func:`specprobe.report.document.build_document`): a table
    per model, the comparison, the family view and the notes. Tables fit the console's
    width by dropping their least important columns (a closing note names them); ``wide``
    shows every column however wide the tables get."""
    if not records:
        console.print("no records yet")
        return
    doc = build_document(records)
    printer = TablePrinter(console, wide)
    per_model = printer.fit([section.table for section in doc.models])
    for section, data in zip(doc.models, per_model, strict=True):
        printer.print(data, fitted=True)
        if section.groups is not None:
            printer.print(section.groups)
        if section.density is not None:
            console.print(plain(section.density))
    if doc.comparison is not None:
        printer.print(doc.comparison)
    console.print(plain(f"statistic: {doc.statistic}.", "dim"))
    if doc.family is not None:
        _print_family(doc, console, printer)
    for note in doc.notes:
        console.print(_note(note))
    left_out = printer.note()
    if left_out:
        console.print(plain(left_out, "dim"))


def _print_family(doc: Document, console: Console, printer: TablePrinter) -> None:
    """The family view: reach per model ranked by size, power-law fits, a text chart of
    position against compute, and the verdict paragraph."""
    from rich.panel import Panel

    family = doc.family
    if family is None:
        return
    printer.print(family.reach)
    for fit in family.fits:
        console.print(
            plain(f"power law across {fit.num_points} sizes: {fit.quantity} {fit.law}, {fit.r_squared}")
        )
    for note in family.notes:
        console.print(plain(note))
    chart = doc.chart()
    if chart:
        console.print(Text("\n".join(one_line(line) for line in chart)))
    # One claim a line, each with its numbers (the paragraph is --json's).
    lines = family.verdict_lines or (family.verdict,)
    body = Text("\n").join(plain(line if i == 0 else f"• {line}") for i, line in enumerate(lines))
    console.print(Panel(body, title="verdict (computed from the numbers above)", expand=False))


def recipes_table(rows: Sequence[tuple[str, int, str]]) -> Table:
    """Bundled recipes: name, number of models, description (what a run costs)."""
    table = Table(title="bundled recipes (specprobe run NAME)", title_justify="left")
    table.add_column("name")
    table.add_column("models", justify="right")
    table.add_column("description")
    for name, models, description in rows:
        table.add_row(plain(name), str(models), plain(description))
    return table
