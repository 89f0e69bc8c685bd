"""The report as CSV: the records' scalar columns, led by the position the report uses.

``specprobe report --csv`` writes :func:`write_csv`: one row per checkpoint, the columns of
:func:`specprobe.store.frames.csv_text` (every scalar field, text cells neutralised against
spreadsheet formulas), after three that say which statistic the report compared and its
value: ``position_statistic`` (the record field, e.g. ``normalized_population_position``, or
``normalized_position`` for runs written by earlier versions), ``position`` and
``position_stderr``. The statistic is the one choice of
:func:`specprobe.analysis.position.choose_position`, as in the terminal and the HTML report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from specprobe.analysis.position import choose_position, position_value
from specprobe.errors import SpecprobeError
from specprobe.store import frames
from specprobe.store.records import Record


def report_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """The records, each led by ``position_statistic``, ``position`` and ``position_stderr``
    (empty where the record has no value on that scale: a failed revision)."""
    scale = choose_position(records)
    rows = []
    for record in records:
        try:
            value, stderr = position_value(record, scale) if record.get("status") == "ok" else (None, None)
        except SpecprobeError:
            value, stderr = None, None
        lead = {"position_statistic": scale.value, "position": value, "position_stderr": stderr}
        rows.append({**{k: record.get(k) for k in frames.IDENTITY if k in record}, **lead, **record})
    return rows


def csv_text(records: Sequence[Record]) -> str:
    """:func:`report_rows` as CSV text."""
    return frames.csv_text(report_rows(records))


def write_csv(records: Sequence[Record], path: Path | str) -> tuple[int, int]:
    """Write :func:`csv_text` to ``path`` atomically; return (rows, columns) written."""
    return frames.write_csv(report_rows(records), path)
