"""The report as a new reader meets it (issue 30, item 4): the position figure's caption
names the axis it is drawn against; the --eigen figure's index axis reads 1, 2, 3 and its
legend explains only what is drawn; layer tables carry (D/N)·χ_pos^∞ as the model tables
do; a "bias of the minimum" of 0 is explained."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from specprobe.report import plots, tables
from specprobe.report.document import build_document
from specprobe.report.html import render_html
from tests.analysis.test_family import power_law_family
from tests.report.test_population_report import flagged_family


def _without_tokens(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in records:
        r.pop("tokens_seen", None)
    return records


@pytest.mark.parametrize(
    ("records", "axis"),
    [
        (power_law_family, "training compute C = 6·N·T"),
        (lambda: _without_tokens(power_law_family()), "training step"),
    ],
)
def test_the_position_caption_names_the_figures_axis(records: Any, axis: str) -> None:
    pytest.importorskip("matplotlib")
    rows = records()
    assert plots.position_axis(rows) == axis
    figure = plots.position_vs_compute_figure(rows)
    assert figure.axes[0].get_xlabel().startswith(axis)
    page = html.unescape(render_html(rows))
    assert f"Spectral position during training, against {axis}." in page
    other = ({"training step", "training compute C = 6·N·T"} - {axis}).pop()
    assert f"Spectral position during training, against {other}." not in page
    assert plots.position_chart(rows)[0].endswith(
        "(log) against compute C = 6·N·T, FLOPs (log)" if "compute" in axis else "(log) against step (log)"
    )


def _spectrum_records(k: int, position_inside: bool) -> list[dict[str, Any]]:
    records = power_law_family()
    for r in records:
        r["eigen_top"] = [r["chi_net"] * 0.5 / j**1.5 for j in range(1, k + 1)]
        last = 0.5 / k**1.5
        # inside the known top k: k* marked; below the last eigenvalue: nothing to mark
        r["spectral_position"] = 0.5 / 2.5**1.5 if position_inside else last / 10
    return records


def _drawn(figure: Any) -> tuple[list[str], list[str]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    ax = figure.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels(which="both") if t.get_text()]
    return ticks, ax.get_legend_handles_labels()[1]


@pytest.mark.parametrize("position_inside", [True, False])
def test_the_eigen_figure_reads_plainly(position_inside: bool) -> None:
    pytest.importorskip("matplotlib")
    ticks, labels = _drawn(plots.spectra_figure(_spectrum_records(5, position_inside)))
    assert ticks == ["1", "2", "3", "4", "5"]  # five indices, not 2×10⁰, 3×10⁰
    assert "χ_pos (λ/Tr Θ at the position)" in labels
    assert ("position index k*" in labels) is position_inside  # no entry for a marker not drawn
    many, _ = _drawn(plots.spectra_figure(_spectrum_records(40, True)))
    assert many == ["1", "2", "5", "10", "20"] and not any("times" in t or "×" in t for t in many)


def test_layer_tables_are_on_the_model_tables_scale() -> None:
    records = flagged_family()
    record = next(r for r in records if r.get("groups"))
    factor = record["normalized_population_position"] / record["population_position"]
    data = tables.groups_table(record)
    header = "(D/N)·χ_pos^∞ (θ = group)"
    column = [c.header for c in data.columns].index(header)
    head, whole = data.rows[0][column], data.rows[-1][column]
    assert head.text == tables.value_error(4.4e-4 * factor, 2e-5 * factor)
    # the whole model's row equals the model table's (D/N)·χ_pos^∞ for that revision
    model = tables.model_table(
        record["model"], [r for r in records if r["model"] == record["model"]], tables.Position.POPULATION
    )
    assert whole.text in {row[1].text for row in model.rows}


def test_a_zero_bias_of_the_minimum_is_explained() -> None:
    doc = build_document(power_law_family())
    assert doc.family is not None
    biases = [row[3].text for row in doc.family.reach.rows]
    assert biases == ["0"] * 4
    (note,) = [n for n in doc.family.notes if n.startswith("bias of the minimum 0")]
    assert "(every model)" in note and "within two combined standard errors" in note
    text = re.sub(r"\s+", " ", html.unescape(render_html(power_law_family(), figures=False)))
    assert note in text


@pytest.mark.parametrize(("family", "width"), [("crossed", 80), ("crossed", 100), ("flagged", 100)])
def test_loss_is_kept_where_it_fits(family: str, width: int) -> None:
    """At 80 and 100 columns the model tables keep the loss beside the position and B_noise
    (before B_noise in tokens, which says B_noise again): it is dropped only where it does
    not fit, as beside the flagged family's wide status column at 80."""
    from tests.analysis.test_population import crossed_family
    from tests.report.test_report import render

    records = crossed_family() if family == "crossed" else flagged_family()
    headers = [line for line in render(records, width).splitlines() if line.startswith("┃ checkpoint")]
    assert headers and all("┃ B_noise ┃" in h and " loss ┃" in h for h in headers)
    assert all(h.index(" loss ┃") < h.index("B_noise tokens") for h in headers if "B_noise tokens" in h)
