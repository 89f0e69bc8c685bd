"""Generated names and records round-trip through the store and every renderer (issue 29,
"done when"): what is appended is read back exactly; the terminal, the HTML page and the
CSV each show every name whole, as text (one line, escaped, neutralised)."""

from __future__ import annotations

import csv
import html
import io
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from specprobe.report.html import render_html
from specprobe.report.spreadsheet import csv_text
from specprobe.report.tables import one_line
from specprobe.report.terminal import render_run
from specprobe.store.frames import spreadsheet_safe
from specprobe.store.results import ResultStore
from tests.store.test_results_safety import record

NAMES = st.text(
    alphabet=st.sampled_from([*"ab/-_.@ []$\\<>&\"',=+χé日", "\u2028", "\u2029", "\x85", "\r", "\t", "\x1b"]),
    min_size=1,
    max_size=10,
).filter(lambda s: s.strip() != "")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(NAMES, min_size=1, max_size=3, unique=True),
    revision=NAMES,
    chi_net=st.floats(1e-6, 1e9),
    loss=st.floats(0.0, 20.0),
)
def test_names_and_records_round_trip(names: list[str], revision: str, chi_net: float, loss: float) -> None:
    records: list[dict[str, Any]] = [
        record(revision, model=f"org/{name}", label=name, chi_net=chi_net, loss=loss) for name in names
    ]
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp) / "run")
        for r in records:
            store.append(r)
        assert store.records() == records  # exactly, in order
        assert not store.warnings()
    buffer = io.StringIO()
    render_run(records, Console(file=buffer, width=400, color_system=None, force_terminal=False))
    shown = buffer.getvalue()
    page = render_html(records, figures=False)
    rows = list(csv.DictReader(io.StringIO(csv_text(records), newline="")))
    assert [row["label"] for row in rows] == [spreadsheet_safe(name) for name in names]
    assert [row["revision"] for row in rows] == [spreadsheet_safe(revision)] * len(names)
    assert [float(row["chi_net"]) for row in rows] == [chi_net] * len(names)
    for name in names:
        assert one_line(name) in shown, (name, shown)
        assert html.escape(name) in page or html.escape(one_line(name)) in page, name
