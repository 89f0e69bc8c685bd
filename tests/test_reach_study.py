"""examples/reach_study.py on tiny configurations: train, measure, summarise, report (both rounds)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from specprobe.demo.presets import PRESETS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPT = EXAMPLES / "reach_study.py"


def load_study(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the script imports its second round from beside it
    spec = importlib.util.spec_from_file_location("reach_study_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_study_runs_a_configuration_and_reports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = load_study(monkeypatch)
    tiny = replace(PRESETS["llama-cpu"].reduced, widths=(8, 16, 24), steps=8, checkpoints=3)
    monkeypatch.setattr(study, "CONFIGS", {"tiny": study.Study("a tiny family", tiny)})
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
    assert "population" not in summary  # the first round's measurement
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


@pytest.mark.slow
def test_second_round_measures_the_population_and_the_crossover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = load_study(monkeypatch)
    smoke = study.CONFIGS["smoke"]
    seeds = {f"smoke-{seed}": replace(smoke, config=replace(smoke.config, seed=seed)) for seed in (0, 1)}
    monkeypatch.setattr(study, "CONFIGS", seeds)
    monkeypatch.setattr(study, "SEED_GROUPS", {"smoke": tuple(seeds)})
    summaries = [study.run_one(name, tmp_path / "out") for name in seeds]
    s = summaries[0]
    ok = [r for r in s["records"] if r["status"] == "ok"]
    assert ok and all(r["measurement"] == "whole" and r["num_sequences"] == 16 for r in ok)
    assert all(r["train_batch_sequences"] == smoke.config.batch_size for r in ok)
    assert any(r.get("normalized_population_position") for r in ok)
    # The crossover: n = 4, 8, 16 in batches and 32 as one set, at the first and last checkpoint.
    crossover = s["crossover"]
    steps = smoke.config.checkpoint_steps()
    assert {(r["crossover_n"], r["step"]) for r in crossover} == {
        (n, step) for n in (4, 8, 16, 32) for step in (steps[0], steps[-1])
    }
    assert {r["measurement"] for r in crossover if r["crossover_n"] < 32} == {"batches"}
    # The prediction at n = the whole set is the measured χ_pos there (χ_pos(n) is exact at n).
    whole = [r for r in crossover if r["crossover_n"] == 32 and r.get("population_position") is not None]
    for r in whole:
        predicted = study.population.predicted_position(r, 32)
        assert predicted == pytest.approx(r["spectral_position"], rel=1e-6)
    # The first round's statistics stay on D·χ_pos, though these records carry χ_pos^∞ too.
    lowest = study.judgements(s["records"])["lowest"]["values"]
    assert lowest
    for value in lowest:
        mine = [r["spectral_position"] * r["num_outputs"] for r in ok if r["label"] == value["label"]]
        assert value["value"] == pytest.approx(min(mine), rel=1e-12)
    text = study.report(tmp_path / "out", tmp_path / "docs")
    assert "| `smoke-0` |" in text and "n = 4 | n = 8 | n = 16 | n = 32" in text
    assert "seeds (2 of `smoke`)" in text or "(S−1)·V·χ_pos^∞" in text
    assert (tmp_path / "docs" / "reach-study-population.md").read_text().strip() == text.strip()


def test_the_long_preset_is_the_studys_longest_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    study = load_study(monkeypatch)
    assert study.CONFIGS["longest"].config == PRESETS["llama-cpu-long"].config
    # Every first-round configuration differs from the base; seeds are the only thing the
    # seed runs change; the second round's differ from its base in the named field.
    for name, entry in study.CONFIGS.items():
        assert name in ("base", "mup-full", "smoke") or entry.config not in (study.BASE, study.SECOND)
        assert entry.config.seed in (0, 1, 2)
    assert study.SECOND.lr_rule == "mup-full" and study.CONFIGS["mup-full"].crossover is not None
    width_depth = study.CONFIGS["width-depth"].config
    assert width_depth.widths == (16, 32, 64, 128) and width_depth.layers() == (1, 2, 3, 4)
