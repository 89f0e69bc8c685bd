"""The report document: every section built once, for the terminal and the HTML walkers."""

from __future__ import annotations

from specprobe.report.document import build_document
from specprobe.report.tables import Tone
from tests.report.test_report import full_run


def test_document_holds_every_section_of_a_full_run() -> None:
    config = {"invocations": [{"invocation": {"argv": ["run", "tiny-local"]}}]}
    doc = build_document(full_run(), config)
    assert [s.table.title.split(" · ")[0] for s in doc.models] == ["S", "M", "L", "XL"]
    small = doc.models[0]
    assert small.groups is not None and small.groups.title == "layer decomposition of S @ checkpoint-1000"
    assert all(s.groups is None for s in doc.models[1:])
    assert doc.comparison is not None and doc.comparison.kind == "comparison"
    family = doc.family
    assert family is not None and family.reach.kind == "reach"
    assert [f.quantity for f in family.fits] == ["final loss", "reach (D·χ_pos)"]
    assert family.fits[1].law.startswith("∝ N^-0.200") and family.fits[1].num_points == 4
    assert family.verdict.startswith("Across 4 models")
    assert [n.tone for n in doc.notes][:1] == [Tone.BAD]
    assert doc.settings.command == "specprobe run tiny-local"
    assert doc.settings.blocks[-1][0] == "measured"
    assert doc.analysed and doc.chart()[0].startswith("D·χ_pos (log) against compute")


def test_document_of_one_model_has_no_family_view() -> None:
    doc = build_document([r for r in full_run() if r["model"] == "m"])
    assert doc.family is None and doc.comparison is None and len(doc.models) == 1
    assert build_document([]).models == ()
