"""Every example runs at a small size and shows what it claims."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

import specprobe
from specprobe.store.results import ResultStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_mlp(capsys: pytest.CaptureFixture[str]) -> None:
    results = load("custom_mlp").main(["--width", "16", "--samples", "12"])
    exact, estimate = results["exact"], results["hutchinson"]
    assert abs(estimate.chi_net - exact.chi_net) <= 4 * estimate.chi_net_stderr
    assert exact.groups is not None
    assert sum(g.chi_net for g in exact.groups) == pytest.approx(exact.chi_net, rel=1e-12)
    assert "dense reference" in capsys.readouterr().out


def test_custom_cnn() -> None:
    measurements = load("custom_cnn").main(["--steps", "20", "--probes", "4"])
    assert measurements[0][0] == 0 and measurements[-1][0] == 20
    assert measurements[-1][1].loss < measurements[0][1].loss  # it learns


def test_plain_loop(tmp_path: Path) -> None:
    out = load("plain_loop").main(["--steps", "12", "--out", str(tmp_path / "run")])
    records = ResultStore(out).records()
    assert [r["step"] for r in records] == specprobe.log_steps(12, 6) == [0, 1, 2, 3, 4, 7, 12]
    assert records[-1]["tokens_seen"] == 12 * 16 * 24


def test_trainer_callback(tmp_path: Path) -> None:
    logged = load("trainer_callback").main(["--steps", "6", "--out", str(tmp_path / "run")])
    assert [entry["step"] for entry in logged] == [0, 1, 2, 3, 4, 6]
    assert len(ResultStore(tmp_path / "run").records()) == 6


def test_onnx_example(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    run = load("onnx_model").main(["--out", str(tmp_path)])
    (record,) = ResultStore(run).records()
    assert record["status"] == "ok" and record["onnx_check"]["max_rel_error"] < 1e-5


def test_main_job_example(capsys: pytest.CaptureFixture[str]) -> None:
    load("measure_tiny_model").main(["--steps", "8", "--probes", "4"])
    assert "spectral position during training" in capsys.readouterr().out
