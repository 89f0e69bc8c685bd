"""Rendering with Rich: the one module that draws tables. Compute returns data; this shows it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table


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
