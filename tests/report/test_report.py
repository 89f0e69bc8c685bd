"""The terminal report at 80, 100 and 120 columns: no row wraps, no cell is cut, the least
important columns go first; and the compact value ± error cells."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

from specprobe.report import tables
from specprobe.report.tables import short_revisions, value_error
from specprobe.report.terminal import fit_columns, render_run, table_width
from tests.analysis.test_family import power_law_family, record


def full_run() -> list[dict[str, Any]]:
    """A family run with everything a report can show: layer groups and spectra on one
    model, a failed revision, a duplicate revision, hub-style revision names on another."""
    records = power_law_family()
    for r in records:
        r["chi_loss"] = 0.008 + r["step"] * 1e-7
        r["chi_loss_stderr"] = 7.8e-7
        r["grad_norm_sq"] = 0.78
        r["grad_norm_sq_stderr"] = 0.011
        if r["model"] == "s":
            r["groups"] = [
                {
                    "name": name,
                    "num_params": 250,
                    "chi_net": r["chi_net"] * share,
                    "chi_net_stderr": r["chi_net"] * share * 0.02,
                    "chi_net_share": share,
                    "grad_norm_sq_share": share,
                    "spectral_position": r["spectral_position"] * (1 + share),
                    "spectral_position_stderr": r["spectral_position_stderr"],
                }
                for name, share in (("embeddings", 0.1), ("block 0", 0.3), ("block 1", 0.4), ("head", 0.2))
            ]
            r["num_params_selected"] = 1000
            r["spectrum"] = {
                "position_index": 123.4,
                "position_index_stderr": 7.1,
                "position_index_is_estimate": True,
                "captured_residual_mass": 0.4321,
                "effective_rank": 56.78,
                "power_law_alpha": 1.234,
            }
        if r["model"] == "m":
            r["revision"] = f"step{r['step']}"
    failed = record("xl", 2000, 0.0, params=1_000_000)
    failed.update(status="failed", error="CUDA out of memory [while loading] after 3 tries")
    duplicate = record("l", 2000, 0.5, params=100_000, duplicate_of="checkpoint-1000")
    return [*records, failed, duplicate]


def render(records: list[dict[str, Any]], width: int, wide: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    render_run(records, console, wide=wide)
    return buffer.getvalue()


def table_bodies(text: str) -> list[list[str]]:
    """The body lines of each table (between the header rule and the bottom rule)."""
    bodies: list[list[str]] = []
    body: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("┡"):
            body = []
        elif line.startswith("└") and body is not None:
            bodies.append(body)
            body = None
        elif body is not None:
            body.append(line)
    return bodies


@pytest.mark.parametrize("width", [80, 100, 120])
def test_report_fits_without_wrapping_or_cutting(width: int) -> None:
    records = full_run()
    text = render(records, width)
    lines = text.splitlines()
    assert max(cell_len(line) for line in lines) <= width
    assert "…" not in text  # no cell or header truncated
    bodies = table_bodies(text)
    # One body line per row in every table (a wrapped row would take several): the models'
    # tables (s, m, l, xl), s's layer table, the comparison and the reach table.
    rows = [sum(r["model"] == m for r in records) for m in ("s", "m", "l", "xl")]
    assert [len(b) for b in bodies] == [rows[0], 5, *rows[1:], 4, 4]
    assert all(line.startswith("│") and line.endswith("│") for body in bodies for line in body)
    # The numbers that matter are there at every width: revision, D·χ_pos ± its error.
    for r in records:
        if r["status"] == "ok":
            assert value_error(r["normalized_position"], r["normalized_position_stderr"]) in text
    # Revisions lose their shared prefix to the header; the step they name is not repeated.
    headers = [line for line in text.splitlines() if line.startswith("┃")]
    assert headers[0].startswith("┃ checkpoint ┃") and "step" not in headers[0]
    assert any(line.startswith("┃ step ┃") for line in headers)  # model m: step1000 → 1000
    # Failures keep their error message, below the tables, whole.
    assert "xl@checkpoint-2000: CUDA out of memory [while loading] after 3 tries" in text
    assert "duplicate of 1000" in text


def test_narrow_report_drops_least_important_columns_and_says_so() -> None:
    records = full_run()
    narrow, wide = render(records, 80), render(records, 80, wide=True)
    # The closing note is short: how many columns, of which tables, and how to see them.
    note = next(line for line in narrow.splitlines() if "columns not shown at 80 columns" in line)
    assert note.endswith(": --wide shows every column.") and len(note) <= 80
    # the count is of distinct columns per kind of table (a column left out of every
    # model's table counts once)
    left_out: set[tuple[str, str]] = set()
    for data in tables_of(records):
        left_out |= {(data.kind, header) for header in fit_columns(data, 80)[1]}
    assert note.startswith(f"{len(left_out)} columns not shown")
    # χ_loss is the least important: dropped first; D·χ_pos and loss stay.
    first_header = next(line for line in narrow.splitlines() if line.startswith("┃"))
    assert "D·χ_pos" in first_header and "loss" in first_header and "χ_loss" not in first_header
    # --wide shows every column, uncut, however wide the lines get.
    assert "not shown" not in wide and "…" not in wide
    for header in ("χ_loss", "‖∇L‖²", "χ_net", "position index", "top-K mass", "eff. rank"):
        assert header in wide
    assert max(cell_len(line) for line in wide.splitlines()) > 80
    assert len(table_bodies(wide)) == len(table_bodies(narrow))
    at_120 = render(records, 120)
    assert len(at_120.splitlines()[1]) > len(narrow.splitlines()[1])  # more columns when wider


def tables_of(records: list[Any]) -> list[tables.TableData]:
    """Every table the report prints, as data."""
    from specprobe.report.document import build_document

    doc = build_document(records)
    out = [s.table for s in doc.models] + [s.groups for s in doc.models if s.groups is not None]
    out += [doc.comparison] if doc.comparison is not None else []
    return out + ([doc.family.reach] if doc.family is not None else [])


def test_table_width_is_what_rich_draws() -> None:
    data = tables.model_table("s", [r for r in full_run() if r["model"] == "s"])
    text = render([r for r in full_run() if r["model"] == "s"], 1000, wide=True)
    top = next(line for line in text.splitlines() if line.startswith("┏"))
    assert cell_len(top) == table_width(data)


@pytest.mark.parametrize(
    ("value", "stderr", "text"),
    [
        (5.6378, 0.01315, "5.638 ± 0.013"),
        (2.918458, 0.04685, "2.92 ± 0.05"),
        (1323053.43, 39269.4, "1.32e6 ± 4e4"),
        (7.354985e-5, 1.18069e-6, "7.35e-5 ± 1.2e-6"),
        (4.176, 0.0047, "4.176 ± 0.005"),
        (12345.6, 400, "12300 ± 400"),
        (0.0123, 0.0012, "0.0123 ± 0.0012"),
        (-2.5, 0.3, "-2.5 ± 0.3"),
        (2.44, None, "2.44"),
        (1.0, 0.0, "1"),
        (8.0e-3, None, "8e-3"),
    ],
)
def test_value_error_cells(value: float, stderr: float | None, text: str) -> None:
    assert value_error(value, stderr) == text


def test_revision_labels_shorten_without_losing_identity() -> None:
    assert short_revisions(["checkpoint-4", "checkpoint-1024"]) == (
        "checkpoint",
        {"checkpoint-4": "4", "checkpoint-1024": "1024"},
    )
    assert short_revisions(["step1000", "step143000"])[0] == "step"
    assert short_revisions(["run-v2-100", "run-v2-200"])[0] == "run-v2"
    # Mixed names or prefixes stay whole.
    assert short_revisions(["main", "step1"]) == ("revision", {"main": "main", "step1": "step1"})
    assert short_revisions(["a-1", "b-2"])[0] == "revision"


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 30), st.booleans()), min_size=1, max_size=9),
    st.integers(20, 140),
)
def test_a_column_is_left_out_only_when_it_would_not_fit(columns: list[tuple[int, bool]], width: int) -> None:
    """fit_columns keeps every essential column, keeps the others in order of importance
    while they fit, and leaves one out only when it would not fit beside those shown: so
    loss is never dropped at 80 columns while there is room for it."""
    data = tables.TableData(
        "t",
        tuple(tables.Column(f"c{i}", essential=essential) for i, (_, essential) in enumerate(columns)),
        (tuple(tables.Cell("x" * n) for n, _ in columns),),
    )
    shown, dropped = fit_columns(data, width)
    kept = [c.header for c in shown.columns]
    assert [c.header for c in data.columns if c.header not in kept] == dropped
    assert all(c.header in kept for c in data.columns if c.essential)
    if any(not c.essential for c in shown.columns):
        assert table_width(shown) <= width
    for header in dropped:
        index = [c.header for c in data.columns].index(header)
        shown_indices = [i for i, c in enumerate(data.columns) if c.header in kept]
        assert table_width(data.keep(sorted([*shown_indices, index]))) > width
