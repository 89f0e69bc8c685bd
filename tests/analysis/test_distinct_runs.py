"""Every series named once (issue 29, section 3): records of one model measured with two
settings (run folders merged by hand), by two library Probe runs under one label, or two
models given one label by two recipes are never one series, never share a name, and never
give a ratio across settings. Held in one place, ``analysis.position.distinct_runs``;
checked here on generated record sets and on the listed cases, through the report."""

from __future__ import annotations

import copy
import io
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from specprobe.analysis.family import amplification
from specprobe.analysis.position import distinct_runs, group_by_model
from specprobe.report.document import build_document
from specprobe.report.terminal import render_run
from tests.analysis.test_family import record


def _rendered(records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    render_run(records, Console(file=out, width=160, force_terminal=False, color_system=None))
    return out.getvalue()


def _merged_by_hand() -> list[dict[str, Any]]:
    """One model, three checkpoints, measured twice with other settings (χ_net ×10 in the
    second), the two results.jsonl concatenated."""
    first = [
        record("m", s, 1.0, params=1000, chi_net=c, settings_hash="aaaa") for s, c in ((10, 1e6), (20, 2e6))
    ]
    second = [
        record("m", s, 1.0, params=1000, chi_net=c, settings_hash="bbbb") for s, c in ((10, 1e7), (20, 4e7))
    ]
    return first + second


def test_two_settings_of_one_model_are_two_series_with_their_own_ratio() -> None:
    groups = group_by_model(_merged_by_hand())
    assert [rows[0]["label"] for rows in groups.values()] == ["M (settings 1)", "M (settings 2)"]
    assert all(len({r["revision"] for r in rows}) == len(rows) == 2 for rows in groups.values())
    ratios = {s.label: [p.amplification for p in s.points] for s in amplification(_merged_by_hand())}
    assert ratios == {"M (settings 1)": [1.0, 2.0], "M (settings 2)": [1.0, 4.0]}  # never 1e7 / 1e6


def test_the_report_of_merged_settings_says_so_and_repeats_no_row() -> None:
    text = _rendered(_merged_by_hand())
    assert "2 different settings" in text
    assert "M (settings 1)" in text and "M (settings 2)" in text


def test_one_label_for_two_models_names_each_model() -> None:
    # Two recipes into one folder, each labelling its model "base".
    a = [record("org/a", s, 1.0, params=1000, label="base") for s in (10, 20)]
    b = [record("org/b", s, 2.0, params=2000, label="base") for s in (10, 20)]
    assert len(build_document([*a, *b]).models) == 2
    names = [rows[0]["label"] for rows in group_by_model([*a, *b]).values()]
    assert names == ["base (org/a)", "base (org/b)"]
    text = _rendered([*a, *b])
    assert "base (org/a)" in text and "base (org/b)" in text


def test_two_probe_runs_under_one_label_are_two_series() -> None:
    runs = [
        record("model", s, 1.0, params=1000, label="model", probe_run=p)
        for p in ("p1", "p2")
        for s in (5, 10)
    ]
    names = [rows[0]["label"] for rows in group_by_model(runs).values()]
    assert names == ["model (Probe run 1)", "model (Probe run 2)"]


names = st.sampled_from(["org/a", "org/b", "c"])
one = st.fixed_dictionaries(
    {
        "model": names,
        "label": st.one_of(st.none(), st.sampled_from(["base", "org/a", "c", "x"])),
        "run": st.one_of(st.none(), st.sampled_from(["org/a", "r1", "r2"])),
        "settings_hash": st.one_of(st.none(), st.sampled_from(["h1", "h2", "h3"])),
        "probe_run": st.one_of(st.none(), st.sampled_from(["p1", "p2"])),
        "step": st.integers(1, 4),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(one, max_size=12))
def test_generated_record_sets_give_series_named_once(fields: list[dict[str, Any]]) -> None:
    records = [
        {**record(f["model"], f["step"], 1.0, params=1000), **{k: v for k, v in f.items() if k != "step"}}
        for f in fields
    ]
    before = copy.deepcopy(records)
    out = distinct_runs(records)
    assert records == before  # the input is never modified
    assert distinct_runs(out) == out  # idempotent
    assert len(out) == len(records)
    groups = group_by_model(records)
    labels: dict[str, str] = {}
    for run, rows in groups.items():
        # One series: one settings hash and one Probe run.
        assert len({r.get("settings_hash") for r in rows}) == 1, run
        assert len({r.get("probe_run") for r in rows}) == 1, run
        for r in rows:
            name = str(r.get("label") or r.get("model"))
            assert labels.setdefault(name, run) == run, f"{name!r} names two series"
    # Each record is counted once, and nothing but label and run changes.
    flat = [r for rows in groups.values() for r in rows]
    assert len(flat) == len(records)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("label", "run")}  # noqa: E731
    assert sorted(map(repr, map(strip, flat))) == sorted(map(repr, map(strip, records)))
