"""The command line, through Typer's CliRunner: exit codes and messages."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import specprobe
from specprobe.cli.app import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "selftest" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"specprobe {specprobe.__version__}"


@pytest.mark.parametrize("arch", ["gpt_neox", "gpt2"])
def test_selftest_passes_and_shows_the_comparison(arch: str) -> None:
    result = runner.invoke(app, ["selftest", "--arch", arch, "--probes", "16"])
    assert result.exit_code == 0, result.output
    assert "spectral_position" in result.output
    assert result.output.count(" ok ") == 6 and "FAIL" not in result.output
    assert "all checks passed" in result.output


def test_library_error_is_one_line_with_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(app, ["selftest", "--device", "cuda"])
    assert result.exit_code == 2
    assert "error: expected a CUDA device, found none" in result.output
    assert "hint: run with --device cpu" in result.output
    assert "Traceback" not in result.output


def test_debug_shows_the_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(app, ["--debug", "selftest", "--device", "cuda"])
    assert result.exit_code != 0
    assert isinstance(result.exception, specprobe.SpecprobeError)


def test_bad_option_value_is_a_usage_error() -> None:
    result = runner.invoke(app, ["selftest", "--arch", "bert"])
    assert result.exit_code == 2
    assert "bert" in result.output


def test_public_api_resolves_and_help_stays_light() -> None:
    import subprocess
    import sys

    for name in specprobe.__all__:
        assert getattr(specprobe, name) is not None, name
    code = "import sys, specprobe.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the CLI imports torch only inside commands


@pytest.mark.slow
def test_demo_fast_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from specprobe.store.results import ResultStore

    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--fast", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = ResultStore(out / "run").records()
    assert {r["label"] for r in records} == {"neox-w16", "neox-w32", "neox-w64"}
    assert all(r["status"] == "ok" for r in records)
    assert "spectral reach" in result.output and "verdict (computed from the numbers above)" in result.output
    assert "position fell in" in result.output
    figures = sorted(p.name for p in (out / "run" / "figures").iterdir())
    assert "position_vs_compute.png" in figures and "loss_vs_size.svg" in figures
    assert all((out / "run" / "figures" / name).stat().st_size > 1000 for name in figures)
    # A second run reuses the trained family and the finished records.
    again = runner.invoke(app, ["demo", "--fast", "--out", str(out), "--no-plots"])
    assert again.exit_code == 0, again.output
    assert "reusing the family" in again.output and "0 measured, 12 resumed" in again.output
    shown = runner.invoke(app, ["plot", str(out / "run"), "--out", str(tmp_path / "figs")])
    assert shown.exit_code == 0 and (tmp_path / "figs" / "amplification.png").is_file()
