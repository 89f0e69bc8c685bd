"""examples/reach_study.py on a tiny configuration: train, measure, summarise, report."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from specprobe.demo.presets import PRESETS

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "reach_study.py"


def load_study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reach_study_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_study_runs_a_configuration_and_reports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = load_study()
    tiny = replace(PRESETS["llama-cpu"].reduced, widths=(8, 16, 24), steps=8, checkpoints=3)
    monkeypatch.setattr(study, "CONFIGS", {"tiny": ("a tiny family", tiny, False)})
    summary = study.run_one("tiny", tmp_path / "out")
    assert set(summary["judgements"]) == set(study.STATISTICS) - {
        "inverse_index",
        "rank_per_index",
    }  # no spectra
    assert [m["label"] for m in summary["models"]] == list(tiny.model_names())
    assert all(m["train_loss_final"] > 0 for m in summary["models"])
    lowest = summary["judgements"]["lowest"]
    assert lowest["fit"]["num_points"] == 3 and lowest["claim"]["outcome"] in (
        "supported",
        "contradicted",
        "unclear",
    )
    # A second run reads the summary back instead of training again.
    assert study.run_one("tiny", tmp_path / "out") == json.loads(
        (tmp_path / "out/tiny/summary.json").read_text()
    )
    table = study.report(tmp_path / "out", tmp_path / "docs")
    main, steps, verdicts = table.split("\n\n")
    assert main.count("\n") == 2 and "`tiny`: a tiny family" in main
    assert "| `tiny` |" in steps and "`lowest`: 1 configuration" in verdicts
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "docs" / "reach-study-exponents.png").stat().st_size > 5_000


def test_the_long_preset_is_the_studys_longest_configuration() -> None:
    study = load_study()
    assert study.CONFIGS["longest"][1] == PRESETS["llama-cpu-long"].config
    # Every configuration differs from the base; seeds are the only thing the seed runs change.
    for name, (_, config, _) in study.CONFIGS.items():
        assert name == "base" or config != study.BASE
        assert config.seed in (0, 1, 2)
