"""Figures and the text chart of the family view, on hand-made records."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from specprobe.errors import SpecprobeError
from specprobe.report.plots import position_chart, write_figures
from tests.analysis.test_family import power_law_family, record


def test_write_figures_png_and_svg(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    records = power_law_family()
    # Eigenvalues on the last revision of two models: the spectra figure appears.
    for r in records:
        if r["step"] == 1000 and r["model"] in ("s", "l"):
            r["eigen_top"] = [r["chi_net"] * 0.5 / k**1.5 for k in range(1, 33)]
    written = write_figures(records, tmp_path / "figs")
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"{n}.{ext}"
        for n in ("loss_vs_size", "position_vs_compute", "amplification", "spectra")
        for ext in ("png", "svg")
    )
    for path in written:
        assert path.parent == tmp_path / "figs" and path.stat().st_size > 5_000, path
        head = path.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in path.read_bytes()
    svg = (tmp_path / "figs" / "position_vs_compute.svg").read_text()
    assert "FLOPs" in svg  # axis labels carry units


def test_write_figures_without_eigenvalues_or_fits(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    # Two sizes (no fit), a step-0 revision (no place on a log axis), unknown tokens seen.
    records = [
        record("a", 0, 3.0, params=100),
        record("a", 10, 2.0, params=100),
        {**record("b", 10, 1.0, params=1000), "tokens_seen": None},
    ]
    written = write_figures(records, tmp_path, formats=("png",))
    assert sorted(p.name for p in written) == [
        "amplification.png",
        "loss_vs_size.png",
        "position_vs_compute.png",
    ]


def test_write_figures_refuses_empty_records(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(SpecprobeError, match="at least one successfully analysed record"):
        write_figures([{"model": "a", "status": "failed"}], tmp_path)


def test_missing_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(SpecprobeError) as info:
        write_figures(power_law_family(), tmp_path)
    assert "matplotlib" in info.value.message
    assert info.value.hint == 'pip install "specprobe[plots]"'


def test_position_chart_places_every_model() -> None:
    lines = position_chart(power_law_family(), width=40, height=10)
    assert lines[0] == "D·χ_pos (log) against compute C = 6·N·T, FLOPs (log)"
    grid = lines[1:11]
    assert all(len(line.split("|", 1)[1]) == 40 for line in grid)
    body = "".join(line.split("|", 1)[1] for line in grid)
    for marker in "1234":
        assert marker in body or "*" in body
    assert grid[0].lstrip().startswith("3 |")  # the highest position, 3, labels the top row
    legend = [
        "  1  S (1k parameters)",
        "  2  M (10k parameters)",
        "  3  L (100k parameters)",
        "  4  XL (1M parameters)",
    ]
    # the overlap marker has its legend line exactly when it is drawn
    assert lines[13:] == legend + (["  *  several models in one cell"] if "*" in body else [])
    apart = position_chart(power_law_family(), width=200, height=60)
    overlapping = position_chart(power_law_family(), width=2, height=2)
    assert "*" not in "".join(apart[1:61]) and apart[-1] == legend[-1]
    assert "*" in "".join(overlapping[1:3]) and overlapping[-1] == "  *  several models in one cell"
    assert position_chart([{"model": "a", "status": "failed"}]) == []


def test_position_chart_falls_back_to_steps() -> None:
    records = [{**record("a", s, p, params=10), "tokens_seen": None} for s, p in ((1, 2.0), (100, 1.0))]
    lines = position_chart(records, width=20, height=5)
    assert "against step (log)" in lines[0]
    assert lines[1].split("|")[1] == "1" + " " * 19 and lines[5].split("|")[1] == " " * 19 + "1"
