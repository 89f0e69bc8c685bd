"""The commands' options as a user meets them: each name meaning one thing, and the help
readable at 80 columns (every option name and default whole, flags shown as flags)."""

from __future__ import annotations

from enum import Enum
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from specprobe.choices import Split
from specprobe.cli import analyze as analyze_module
from specprobe.cli import run as run_module
from specprobe.cli.app import app

runner = CliRunner()
COMMANDS = ["analyze", "run", "report", "demo"]


def _command(name: str) -> Any:
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def _shown_default(param: Any) -> str | None:
    """The default the help shows for ``param`` as text, or None where it shows none."""
    default = param.default
    if default is None or isinstance(default, bool) or param.show_default is False:
        return None
    return str(default.value) if isinstance(default, Enum) else str(default)


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("name", COMMANDS)
def test_help_fits_the_terminal_whole(name: str, width: int) -> None:
    """At 80 and 100 columns: no line wider, nothing cut with '…', every option name (and
    its --no- twin) and every default present whole, no flag shown as taking a value."""
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= width
    assert "<bool>" not in text
    words = set(text.replace("│", " ").split())
    for param in _command(name).params:
        if param.param_type_name != "option" or param.hidden:
            continue
        for opt in [*param.opts, *param.secondary_opts]:
            assert opt in words, f"{opt} not whole in {name} --help at {width} columns:\n{text}"
        default = _shown_default(param)
        if default is not None:
            assert f"[default: {default}]" in " ".join(text.replace("│", " ").split()), (name, default)


def test_analyze_help_names_the_argument_and_groups_the_options() -> None:
    text = runner.invoke(app, ["analyze", "--help"], env={"COLUMNS": "80"}).output
    assert "Usage: specprobe analyze [OPTIONS] MODEL..." in text
    assert "{models}" not in text
    for panel in ("Models", "Data", "Probe", "Eigen", "Output", "Launch"):
        assert f"╭─ {panel} ─" in text, panel
    flat = " ".join(text.replace("│", " ").split())
    assert "from the hub or their folders" in flat  # --trust-remote-code covers local folders


def _captured(monkeypatch: pytest.MonkeyPatch, module: Any) -> dict[str, Any]:
    """The plan and parallel settings a command hands to execute_plan (nothing runs)."""
    seen: dict[str, Any] = {}

    def execute_plan(plan: Any, out: Any, **kwargs: Any) -> None:
        seen.update(plan=plan, **kwargs)

    monkeypatch.setattr(module, "execute_plan", execute_plan)
    return seen


def test_dataset_split_and_process_split_are_two_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """`analyze --split validation` sets the dataset's split (it was taken by the launcher's
    split and refused); the launcher's is --process-split."""
    seen = _captured(monkeypatch, analyze_module)
    result = runner.invoke(app, ["analyze", "org/model", "--split", "validation"])
    assert result.exit_code == 0, result.output
    assert seen["plan"].data.split == "validation"
    assert seen["parallel"].split is Split.checkpoints
    result = runner.invoke(app, ["analyze", "org/model", "--process-split", "batches"])
    assert result.exit_code == 0, result.output
    assert seen["plan"].data.split == "train"
    assert seen["parallel"].split is Split.batches
    refused = runner.invoke(app, ["analyze", "org/model", "--process-split", "validation"])
    assert refused.exit_code == 2 and "validation" in refused.output


def test_run_takes_the_process_split(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _captured(monkeypatch, run_module)
    result = runner.invoke(app, ["run", "tiny-local", "--set", "root=/nowhere", "--process-split", "batches"])
    assert result.exit_code == 0, result.output
    assert seen["parallel"].split is Split.batches


ALL_COMMANDS = ["selftest", "analyze", "report", "run", "validate", "plot", "demo"]


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("name", ALL_COMMANDS)
def test_help_examples_are_whole_commands(name: str, width: int) -> None:
    """Every example command of a command's help (an epilog paragraph that starts with
    ``specprobe``, ``accelerate`` or ``torchrun``) is printed on one line at 80 and 100
    columns, so it can be copied: none is wrapped mid-command."""
    epilog = _command(name).epilog or ""
    examples = [
        p.strip()
        for p in epilog.split("\n\n")
        if p.strip().startswith(("specprobe", "accelerate", "torchrun"))
    ]
    assert examples or name == "recipes"
    text = runner.invoke(app, [name, "--help"], env={"COLUMNS": str(width)}).output
    lines = [" ".join(line.split()) for line in text.splitlines()]
    for example in examples:
        assert "\n" not in example, f"{name}: one line per example: {example!r}"
        assert " ".join(example.split()) in lines, f"{name} --help at {width} columns wraps: {example}"


@pytest.mark.parametrize("name", ["analyze", "run", "demo", "report"])
def test_every_command_that_prints_the_report_takes_wide(name: str) -> None:
    """The report's closing note says "--wide shows every column": so each command that
    prints the report takes --wide (analyze's used to exit 2 on it)."""
    options = {o for p in _command(name).params for o in p.opts}
    assert "--wide" in options
