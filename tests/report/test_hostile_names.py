"""Names that are markup, TeX, line separators or empty (issue 20, item 6): user text is
text in every renderer — terminal (tables, notes, verdict panel, progress), figures, HTML
and CSV (no spreadsheet formulas)."""

from __future__ import annotations

import csv
import html
import io
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from specprobe.report.html import render_html
from specprobe.report.progress import SweepProgress, TrainingDisplay
from specprobe.report.spreadsheet import csv_text
from specprobe.report.terminal import recipes_table, render_run
from tests.analysis.test_family import power_law_family

HOSTILE = {
    "s": "[/]",
    "m": "[bold]x[/",
    "l": "$\\frac{$x_",
    "xl": "line\u2028break",
}
"""A label per model of the power-law family: Rich markup, TeX, a line separator."""


def hostile_run() -> list[dict[str, Any]]:
    records = power_law_family()
    for r in records:
        r["label"] = HOSTILE[r["model"]]
        r["model"] = f"runs/[red]{r['model']}[/red]"
        r["revision"] = f"[i]{r['revision']}"
    for r in records:
        if r["label"] == "[bold]x[/":  # an empty label: the model's name, itself markup
            r.update(label="", model="runs/[bold]x[/")
    records[4].update(status="failed", error="=cmd|' /C calc'!A0 [/]")
    return records


def console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, color_system=None, force_terminal=False), buffer


def test_terminal_report_shows_markup_as_text() -> None:
    out, buffer = console()
    render_run(hostile_run(), out)  # on main: MarkupError from the verdict panel ("[/]")
    text = buffer.getvalue()
    assert "\u2028" not in text  # a line separator never breaks a row
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "verdict (computed from the numbers above)" in line)
    panel = " ".join(line.strip("│ ") for line in lines[start + 1 :] if line.startswith("│"))
    for label in ("[/]", "runs/[bold]x[/", "$\\frac{$x_", "line\\u2028break"):
        assert label in text, label
        assert label in panel, label  # in the verdict's claims too, whole
    assert "runs/[bold]x[/@[i]checkpoint-100: =cmd|' /C calc'!A0 [/]" in text  # the failure note
    assert "verdict (computed from the numbers above)" in text


def test_progress_and_recipe_table_show_markup_as_text() -> None:
    out, buffer = console()
    checkpoint = SimpleNamespace(name="runs/[bold]x[/@[/]")
    with SweepProgress(out) as progress:
        progress.loading(checkpoint)
        progress.measuring(checkpoint, 2)
        progress.batch_done(checkpoint, 0)
        progress.finished(checkpoint, {"status": "failed", "error": "bad [/] thing\u2028more"})
    assert "failed runs/[bold]x[/@[/]: bad [/] thing\\u2028more" in buffer.getvalue()
    with TrainingDisplay(out, ["[/]"], 2) as display:
        display.update(SimpleNamespace(model="[/]", step=1, loss=2.0))
    out.print(recipes_table([("[/]", 1, "costs [bold]x[/")]))
    assert "costs [bold]x[/" in buffer.getvalue()


def test_figures_draw_tex_labels_as_text(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from specprobe.report import plots

    records = hostile_run()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mathtext error, no missing-glyph warning
        written = plots.write_figures(records, tmp_path, formats=("svg",))
    assert {p.name for p in written} >= {"loss_vs_size.svg", "position_vs_compute.svg"}
    figure = plots.position_vs_compute_figure(records)
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert any(label.startswith(r"\$\frac{\$x_") for label in labels), labels


def test_html_escapes_hostile_names() -> None:
    records = hostile_run()
    records[2]["label"] = "<script>alert(1)</script>"
    text = render_html(records, figures=False)
    assert "<script>alert(1)</script>" not in text and html.escape("<script>alert(1)</script>") in text
    assert html.escape("[bold]x[/") in text and html.escape("[/]") in text


def test_csv_neutralises_formulas_and_keeps_numbers() -> None:
    records = hostile_run()
    records[2]["label"] = '=HYPERLINK("http://x")'
    records[3]["label"] = "+1"
    records[4]["label"] = "-2"  # the failed record: its text cells too
    records[5]["label"] = "@SUM(A1)"
    records[6]["label"] = "\tx"
    records[7]["label"] = "\rx"
    rows = list(csv.DictReader(io.StringIO(csv_text(records), newline="")))
    labels = [row["label"] for row in rows]
    assert labels[2:8] == ['\'=HYPERLINK("http://x")', "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx"]
    assert rows[4]["error"] == "'=cmd|' /C calc'!A0 [/]"
    assert rows[0]["loss"] == repr(records[0]["loss"])  # numbers stay numbers
    negative = [dict(records[0], normalized_position=-2.5)]
    assert (
        next(iter(csv.DictReader(io.StringIO(csv_text(negative), newline=""))))["normalized_position"]
        == "-2.5"
    )
