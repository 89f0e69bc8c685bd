"""Results as data frames and CSV: one row per checkpoint, flat columns, nothing lost."""

from __future__ import annotations

import builtins
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import specprobe
from specprobe.cli.app import app
from specprobe.errors import SpecprobeError
from specprobe.store.results import ResultStore
from tests.report.test_report import full_run


def write_run(directory: Path) -> list[dict[str, Any]]:
    records = full_run()
    for i, r in enumerate(records):
        r["settings"] = {"data": {"seq_len": 64, "batch_size": 4}, "probe": {"estimator": "hutchinson"}}
        r["settings_hash"] = "abc"
        r["batches"] = [
            {
                "loss": r["loss"] + 0.1 * b,
                "chi_net": r["chi_net"] * (1 + b),
                "num_outputs": 500,
                "seed": i * 10 + b,
            }
            for b in range(2)
        ]
        r["eigen_top"] = [3.0, 2.0, 1.0]
    store = ResultStore(directory)
    for r in records:
        store.append(r)
    return store.records()


def test_load_results_one_row_per_checkpoint_with_flat_columns(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    records = write_run(tmp_path)
    df = specprobe.load_results(tmp_path)
    assert len(df) == len(records)
    assert list(df.columns[:6]) == ["model", "label", "revision", "step", "tokens_seen", "status"]
    assert list(df["revision"]) == [r["revision"] for r in records]
    assert df["normalized_position"].dtype.kind == "f"
    assert list(df["normalized_position"].iloc[:-2]) == [r["normalized_position"] for r in records[:-2]]
    # Nested dictionaries become dotted columns; lists stay whole in their cell.
    assert set(df["settings.data.seq_len"]) == {64}
    assert df["spectrum.effective_rank"].notna().sum() == 3
    assert df["batches"].iloc[0] == records[0]["batches"] and df["eigen_top"].iloc[0] == [3.0, 2.0, 1.0]
    assert df["groups"].iloc[0][0]["name"] == "embeddings"
    assert list(df["status"]).count("failed") == 1


def test_load_batches_one_row_per_batch(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    records = write_run(tmp_path)
    frame = specprobe.load_batches(tmp_path)
    assert len(frame) == 2 * len(records)
    assert list(frame.columns[:8]) == [
        "model",
        "label",
        "run",
        "revision",
        "step",
        "settings_hash",
        "probe_run",
        "batch",
    ]
    first = frame[(frame["revision"] == records[1]["revision"]) & (frame["model"] == records[1]["model"])]
    assert list(first["batch"]) == [0, 1]
    assert list(first["chi_net"]) == [b["chi_net"] for b in records[1]["batches"]]


def test_csv_holds_the_scalar_columns_and_reads_back_exactly(tmp_path: Path) -> None:
    records = write_run(tmp_path / "run")
    out = tmp_path / "results.csv"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert f"CSV ({len(records)} rows" in result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(records)
    assert "batches" not in rows[0] and "eigen_top" not in rows[0]  # lists are left out
    assert rows[0]["settings.data.seq_len"] == "64" and rows[0]["spectrum.effective_rank"] == "56.78"
    for row, record in zip(rows, records, strict=True):
        assert row["revision"] == record["revision"]
        if record["status"] == "ok":
            assert float(row["normalized_position"]) == record["normalized_position"]
    failed = next(row for row in rows if row["status"] == "failed")
    assert failed["error"].startswith("CUDA out of memory") and failed["duplicate_of"] == ""
    assert not list(tmp_path.glob(".results.csv.*"))  # written atomically, no leftovers


def test_missing_pandas_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path)
    real_import = builtins.__import__

    def no_pandas(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(SpecprobeError) as err:
        specprobe.load_results(tmp_path)
    assert "needs pandas" in err.value.message and "specprobe[pandas]" in (err.value.hint or "")
    # The CSV needs no pandas.
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--csv", str(tmp_path / "r.csv"), "--json"])
    assert result.exit_code == 0 and (tmp_path / "r.csv").is_file()
    first = next(line for line in result.output.splitlines() if line.startswith("{"))
    assert json.loads(first)["model"] == "s"


def test_load_results_of_a_missing_run(tmp_path: Path) -> None:
    with pytest.raises(SpecprobeError, match=r"results\.jsonl"):
        specprobe.load_results(tmp_path / "nothing")
