"""examples/random_features.py at a small size: frozen features against feature learning."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "random_features.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("random_features_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_frozen_features_keep_chi_net_and_feature_learning_moves_it(tmp_path: Path) -> None:
    example = load_example()
    figure = tmp_path / "rf.png"
    result = example.main(
        [
            "--widths",
            "8",
            "32",
            "--steps",
            "200",
            "--n",
            "48",
            "--points",
            "4",
            "--quiet",
            "--figure",
            str(figure),
        ]
    )
    rows, summary = result["rows"], result["summary"]
    assert {(r["width"], r["mode"]) for r in rows} == {
        (w, m) for w in (8, 32) for m in ("frozen", "feature learning")
    }
    assert sorted({r["step"] for r in rows}) == [0, 1, 6, 34, 200]
    for width, s in summary.items():
        frozen = [r for r in rows if r["width"] == width and r["mode"] == "frozen"]
        learning = [r for r in rows if r["width"] == width and r["mode"] == "feature learning"]
        # Frozen features: J = tanh(Wx)/√M does not change, neither does its trace.
        assert s["frozen_chi_net_drift"] < 1e-9
        assert all(r["amplification"] == pytest.approx(1.0, rel=1e-9) for r in frozen)
        # Feature learning: the kernel's trace moves.
        assert abs(s["learning_amplification"] - 1) > 0.05, s
        # Both start at the same loss (same initialisation), feature learning ends lower.
        assert frozen[0]["loss"] == pytest.approx(learning[0]["loss"], rel=1e-12)
        assert s["learning_final_loss"] < s["frozen_final_loss"]
        # Gradient descent moves the residual into the kernel's tail: the position falls.
        assert s["frozen_position_last"] < s["frozen_position_first"]
        assert s["learning_position_last"] < s["learning_position_first"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert result["figure"] == figure and figure.stat().st_size > 10_000
    else:
        assert result["figure"] is None


def test_family_view_of_frozen_and_learnt_features(tmp_path: Path) -> None:
    example = load_example()
    figure = tmp_path / "family.png"
    result = example.main(
        [
            *("--widths", "8", "16", "32", "--steps", "60", "--n", "32", "--points", "3"),
            *("--family-seeds", "2", "--quiet", "--figure", str(tmp_path / "rf.png")),
            *("--family-figure", str(figure)),
        ]
    )
    views, amplification = result["family"], result["family_amplification"]
    assert set(views) == {"frozen", "feature learning"}
    for view in views.values():
        # One model per width, ranked by N = M·(d + 1), reach with an error across the 2 seeds.
        assert [r["num_params"] for r in view["reach"]] == [8 * 9, 16 * 9, 32 * 9]
        assert all(r["reach_stderr"] > 0 for r in view["reach"])
        assert view["reach_fit"] is not None and view["loss_fit"] is not None
        assert {c["name"] for c in view["verdict"]["claims"]} >= {"reach_grows_with_size", "chi_net_grows"}
    for width in (8, 16, 32):
        # Frozen features: χ_net(T)/χ_net(0) is 1 in every seed, so its error is 0; learnt: it moves.
        assert amplification[f"frozen M={width}"] == pytest.approx((1.0, 0.0), abs=1e-9)
        assert abs(amplification[f"feature learning M={width}"][0] - 1) > 0.05
    # The mean over seeds of a family record is the mean of the per-seed rows.
    rows = [example.Row(**r) for r in result["rows"]]
    assert rows and {r.seed for r in rows} == {0}
    if importlib.util.find_spec("matplotlib") is not None:
        assert result["family_figure"] == figure and figure.stat().st_size > 10_000


def test_family_records_average_over_seeds() -> None:
    example = load_example()
    rows = [
        example.Row(4, "frozen", 10, loss, 2.0, pos, 0.0, 1.0, seed)
        for seed, (loss, pos) in enumerate([(1.0, 0.1), (3.0, 0.3)])
    ]
    (record,) = example.family_records(rows, d=3, n=5)
    assert record["loss"] == 2.0 and record["loss_stderr"] == pytest.approx(1.0)
    assert record["spectral_position"] == pytest.approx(0.2)
    assert record["spectral_position_stderr"] == pytest.approx(0.1)
    assert record["num_params"] == 16 and record["tokens_seen"] == 50 and record["num_outputs"] == 5
