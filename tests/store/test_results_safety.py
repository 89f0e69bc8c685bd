"""The results store keeps every record: line breaks that are not ``\\n``, hand-edited
numbers, a full disk, a killed writer's temporary files, the files' permissions, and
outputs that would overwrite the run folder's own files."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from specprobe.errors import SpecprobeError
from specprobe.store.folder import CONFIG_FILE, LOCK_FILE, MARKER_FILE, RESULTS_FILE, check_output
from specprobe.store.results import ResultStore

LINE_BREAKS = ["\u2028", "\u2029", "\x85", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
"""Characters ``str.splitlines`` breaks at besides ``\\n`` (JSON allows all raw in a string
but ``\\r``, ``\\x0b``, ``\\x0c`` and ``\\x1c``-``\\x1e``, which JSON tools still write raw)."""


def record(revision: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "org/m",
        "revision": revision,
        "status": "ok",
        "loss": 1.0,
        "grad_norm_sq": 2.0,
        "chi_loss": 0.5,
        "chi_net": 3.0,
        "spectral_position": 0.1,
        "normalized_position": 0.2,
        "num_outputs": 10,
        "settings_hash": "h",
    }
    return {**base, **extra}


@pytest.mark.parametrize("brk", ["\u2028", "\u2029", "\x85"])
def test_records_with_raw_line_breaks_survive_appends(tmp_path: Path, brk: str) -> None:
    """A record another JSON tool wrote with U+2028 raw inside a string (valid JSON) is
    neither cut in two by the next append nor lost."""
    store = ResultStore(tmp_path / "run")
    store.append(record("step1"))
    raw = json.dumps(record("step2", label=f"a{brk}b"), ensure_ascii=False)
    assert brk in raw
    with store.results_path.open("a", encoding="utf-8", newline="") as f:
        f.write(raw + "\n")
    store.append(record("step3"))
    store.append(record("step1"))  # a rewrite that replaces a record
    contents = store.read()
    assert contents.skipped == []
    assert [r["revision"] for r in contents.records] == ["step2", "step3", "step1"]
    assert contents.records[0]["label"] == f"a{brk}b"
    assert raw.encode() in store.results_path.read_bytes()  # kept byte for byte


def test_specprobe_writes_no_raw_line_break(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.append(record("step1", label="".join(LINE_BREAKS) + "é"))
    store.update_config(lambda c: c.update(note="".join(LINE_BREAKS)))
    for path in (store.results_path, store.config_path):
        text = path.read_bytes().decode("ascii")  # ASCII only: nothing any tool reads as a break
        assert not any(b in text for b in LINE_BREAKS)
    assert store.records()[0]["label"].startswith("\u2028")


def test_a_cut_line_after_a_raw_line_break_is_set_aside_alone(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.append(record("step1"))
    raw = json.dumps(record("step2", label="x\u2028y"), ensure_ascii=False)
    with store.results_path.open("a", encoding="utf-8") as f:
        f.write(raw + "\n" + '{"model": "org/m", "rev')
    store.append(record("step3"))
    assert [r["revision"] for r in store.records()] == ["step1", "step2", "step3"]
    assert store.partial_path.read_text() == '{"model": "org/m", "rev\n'


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("chi_net", "NaN", "not finite"),
        ("spectral_position", "Infinity", "not finite"),
        ("loss", "-Infinity", "not finite"),
        ("chi_net", "0", "chi_net is 0"),
    ],
)
def test_hand_edited_records_with_nan_or_zero_trace_are_not_ok(
    tmp_path: Path, field: str, value: str, needle: str
) -> None:
    store = ResultStore(tmp_path / "run")
    store.append(record("step1"))
    line = json.dumps(record("step2")).replace(
        f'"{field}": {json.dumps(record("step2")[field])}', f'"{field}": {value}'
    )
    assert value in line
    with store.results_path.open("a") as f:
        f.write(line + "\n")
    contents = store.read()
    assert [r["revision"] for r in contents.records] == ["step1"]
    (skipped,) = contents.skipped
    assert skipped.number == 2 and needle in skipped.reason
    store.append(record("step3"))  # kept verbatim by the writer
    assert line in store.results_path.read_text()


def test_files_are_created_with_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = ResultStore(tmp_path / "run")
        store.append(record("step1"))
        store.update_config(lambda c: None)
    finally:
        os.umask(old)
    for path in (store.results_path, store.config_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_full_disk_names_the_path_and_suggests_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ResultStore(tmp_path / "run")
    store.append(record("step1"))
    before = store.results_path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SpecprobeError) as err:
        store.append(record("step2"))
    assert str(store.results_path) in err.value.message and "No space left" in err.value.message
    assert "--resume" in (err.value.hint or "")
    monkeypatch.undo()
    assert store.results_path.read_bytes() == before
    assert not [p for p in store.directory.iterdir() if p.suffix == ".tmp"]


def test_temporary_files_of_a_killed_writer_are_removed_on_the_next_open(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.append(record("step1"))
    left = [store.directory / f".{RESULTS_FILE}.abc123.tmp", store.directory / f".{CONFIG_FILE}.x.tmp"]
    for path in left:
        path.write_text("half a record")
    mine = store.directory / "notes.tmp"  # not a name specprobe writes: left alone
    mine.write_text("mine")
    with store.open_for_writing():
        pass
    assert not any(p.exists() for p in left)
    assert mine.read_text() == "mine"
    assert [r["revision"] for r in store.records()] == ["step1"]


@pytest.mark.parametrize("name", [RESULTS_FILE, CONFIG_FILE, MARKER_FILE, LOCK_FILE])
def test_no_output_over_a_file_the_store_owns(tmp_path: Path, name: str) -> None:
    run = tmp_path / "run"
    ResultStore(run).append(record("step1"))
    with pytest.raises(SpecprobeError) as err:
        check_output(run / name, "--html")
    assert f"would overwrite {name}" in err.value.message and "report" in (err.value.hint or "")
    fresh = tmp_path / "not-yet"  # the run folder of this command, not made yet
    with pytest.raises(SpecprobeError):
        check_output(fresh / name, "--html", runs=[fresh])
    assert check_output(run / "report.html", "--html") == run / "report.html"


def test_no_output_over_an_input(tmp_path: Path) -> None:
    data = tmp_path / "corpus.txt"
    data.write_text("text")
    model = tmp_path / "model"
    model.mkdir()
    for target in (data, model / "config.json"):
        with pytest.raises(SpecprobeError) as err:
            check_output(target, "--html", inputs=[data, model])
        assert "would overwrite an input" in err.value.message


def test_paths_expand_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    store = ResultStore("~/runs/a")
    store.append(record("step1"))
    assert (tmp_path / "runs" / "a" / RESULTS_FILE).is_file() and not (tmp_path / "~").exists()
    assert check_output("~/report.html", "--html") == tmp_path / "report.html"
