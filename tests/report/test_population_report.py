"""The report on the population position (issue 18, item 4) and the HTML page's reading
side (issue 20): which statistic is used, said in the terminal, the HTML and the CSV;
B_noise beside it; noisy and ≤ 0 estimates flagged; the title, the settings that apply, the
verdict list and the fit exponents with their errors; a one-model report without warnings."""

from __future__ import annotations

import csv
import html
import io
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.report import tables
from specprobe.report.document import build_document, family_name
from specprobe.report.html import render_html
from specprobe.report.spreadsheet import csv_text
from specprobe.store.results import ResultStore
from tests.analysis.test_population import crossed_family
from tests.cli.test_analyze import SMALL, analyze, corpus, tokenizer  # noqa: F401  (fixtures)
from tests.report.test_report import render, table_bodies


def flagged_family() -> list[dict[str, Any]]:
    records = crossed_family()
    s_rows = [r for r in records if r["model"] == "s"]
    s_rows[0].update(
        normalized_population_position=-0.4, population_status="nonpositive", sequences_needed=900
    )
    s_rows[1].update(population_status="noisy", sequences_needed=300)
    for r in records:
        r.update(train_batch_sequences=32, train_batch_position=2e-3, train_batch_position_stderr=1e-4)
    s_rows[2]["groups"] = [
        {
            "name": "head",
            "num_params": 100,
            "chi_net": 1e5,
            "chi_net_stderr": 1e3,
            "chi_net_share": 0.1,
            "grad_norm_sq_share": 0.2,
            "spectral_position": 1e-3,
            "spectral_position_stderr": 1e-5,
            "population_position": 4.4e-4,
            "population_position_stderr": 2e-5,
        }
    ]
    return records


def test_terminal_report_uses_the_population_position_with_b_noise_and_flags() -> None:
    records = flagged_family()
    text = render(records, 200)
    assert "statistic: positions are the population position (D/N)·χ_pos^∞" in text
    assert "comparable across models with the same tokenizer and sequence length" in text
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    assert "(D/N)·χ_pos^∞" in header and "B_noise" in header and "population estimate" in header
    assert "χ_pos at training batch" in header and "D·χ_pos (batches)" in header
    assert "≤ 0: ~900 sequences needed" in text and "noisy: ~300 sequences needed" in text
    assert "2.00e-3 ± 1.0e-4 (n = 32)" in text
    assert "spectral reach (lowest (D/N)·χ_pos^∞ over the revisions)" in text
    assert "χ_pos at that revision" in text and "χ_pos there" not in text
    flat = flagged_family()
    for r in flat:
        if r["model"] != "s":  # the other models' revisions equal within their errors
            r["normalized_population_position"] = 1.0
    flat_text = render(flat, 200)
    assert "bias of the minimum" in flat_text and "σ·E[max of k normals]" in flat_text
    # The layer table shows each group's population position, on the model tables' scale
    # (D/N = 3.0 / 0.03 = 100 for this record).
    assert "(D/N)·χ_pos^∞ (θ = group)" in text and tables.value_error(4.4e-2, 2e-3) in text
    # At 80 columns the flag stays (essential).
    narrow = render(records, 80)
    assert "≤ 0: ~900 sequences needed" in narrow


def test_older_records_render_with_d_chi_pos_and_say_which() -> None:
    from tests.report.test_report import full_run

    text = render(full_run(), 120)
    assert "statistic: positions are D·χ_pos, the mean over the measured batches" in text
    assert "B_noise" not in text and "(D/N)" not in text
    assert len(table_bodies(text)) == 7
    page = html.unescape(render_html(full_run(), figures=False))
    assert "Statistic: positions are D·χ_pos" in page


def test_html_and_csv_say_which_statistic() -> None:
    records = flagged_family()
    page = html.unescape(render_html(records, figures=False))
    assert "Statistic: positions are the population position (D/N)·χ_pos^∞" in page
    assert "same tokenizer and sequence length" in page
    rows = list(csv.DictReader(io.StringIO(csv_text(records), newline="")))
    assert {row["position_statistic"] for row in rows} == {"normalized_population_position"}
    assert [float(row["position"]) for row in rows] == [r["normalized_population_position"] for r in records]
    old = crossed_family()[:1]
    del old[0]["normalized_population_position"]
    row = next(csv.DictReader(io.StringIO(csv_text(old), newline="")))
    assert (
        row["position_statistic"] == "normalized_position"
        and float(row["position"]) == old[0]["normalized_position"]
    )


def test_figures_fit_legends_carry_the_exponent_error() -> None:
    pytest.importorskip("matplotlib")
    from specprobe.report.plots import loss_vs_size_figure

    figure = loss_vs_size_figure(crossed_family())
    legends = [t.get_text() for ax in figure.axes for t in ax.get_legend().get_texts()]
    assert any(re.search(r"reach ∝ N\^\(-?\d\.\d{3} ± [\d.e-]+\)", t) for t in legends), legends
    assert any(re.search(r"L ∝ N\^\(-?\d\.\d{3} ± [\d.e-]+\)", t) for t in legends), legends


def test_family_name_is_the_recipe_or_the_models_common_name() -> None:
    records = crossed_family()
    for r in records:
        r["label"] = f"neox-w{r['num_params']}"
    assert family_name(records) == "neox"
    config = {"invocations": [{"invocation": {"argv": ["run", "x"], "recipe": {"name": "pythia-scan"}}}]}
    assert family_name(records, config) == "pythia-scan"
    assert family_name(records[:1]) == "neox-w1000"
    assert family_name([dict(records[0], label="a"), dict(records[3], label="b")]) == "specprobe report"
    page = render_html(records, figures=False)
    assert "<title>neox</title>" in page and "<h1>neox</h1>" in page


def test_settings_that_do_not_apply_are_left_out(tmp_path: Path) -> None:
    records = crossed_family()[:1]
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("a\n")
    data = {"dataset": str(text_file), "split": "train", "text_column": "text", "seq_len": 16}
    records[0].update(settings={"data": data, "probe": {"probes": 4}}, settings_hash="h")
    keys = dict(build_document(records).settings.blocks[0][1])
    assert "split" not in keys and "text_column" not in keys and keys["seq_len"] == "16"
    records[0]["settings"]["data"] = {**data, "dataset": str(tmp_path / "rows.jsonl")}
    keys = dict(build_document(records).settings.blocks[0][1])
    assert "split" not in keys and keys["text_column"] == "text"
    records[0]["settings"]["data"] = {**data, "dataset": "NeelNanda/pile-10k"}
    keys = dict(build_document(records).settings.blocks[0][1])
    assert keys["split"] == "train" and keys["text_column"] == "text"


def test_one_model_report_prints_no_matplotlib_warning(tokenizer: Any, corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    """``specprobe report --html`` on a run of one local checkpoint (revision ``local``, no
    step): on main matplotlib warned twice ("No artists with labels found to put in legend")."""
    pytest.importorskip("matplotlib")
    from specprobe.models.tiny import tiny_causal_lm

    model = tmp_path / "tiny-model"
    tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), seed=0, max_positions=64).save_pretrained(model)
    tokenizer.save_pretrained(model)
    out = tmp_path / "out"
    assert analyze(str(model), "--dataset", str(corpus), *SMALL, "--out", str(out)).exit_code == 0
    page = tmp_path / "report.html"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, ["report", str(out), "--html", str(page)])
    assert result.exit_code == 0, result.output
    # matplotlib's warnings name the caller's file (plots.py): every UserWarning counts.
    assert [str(w.message) for w in caught if w.category is UserWarning] == []
    text = html.unescape(page.read_text(encoding="utf-8"))
    assert "<title>tiny-model</title>" in text  # the model's name, not the folder's (out)
    assert "<dt>split</dt>" not in text and "<dt>text_column</dt>" not in text  # a .txt dataset
    assert len(ResultStore(out).records()) == 1
