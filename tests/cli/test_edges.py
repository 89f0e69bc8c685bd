"""The edges of the command line (issue 29, section 6), run as a user's shell runs them: a
real process, a real pipe, a real encoding. Each case failed before the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.store.results import ResultStore
from tests.cli import test_analyze
from tests.store.test_results_safety import record

hub, corpus, tokenizer = test_analyze.hub, test_analyze.corpus, test_analyze.tokenizer

ROOT = Path(__file__).resolve().parents[2]


def _run(folder: Path, size: int) -> Path:
    store = ResultStore(folder)
    store.append(record("step1"))
    lines = [record("step1"), record("step143000", num_params=2000, chi_net=5.0)]
    lines += [record(f"step{n}", chi_net=3.0 + n / 1000) for n in range(2, size)]
    store.results_path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return store.directory


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of two revisions, step1 and step143000."""
    return _run(tmp_path_factory.mktemp("edges") / "run", 2)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 2,000 revisions: its report is larger than a pipe's buffer (64 KiB)."""
    return _run(tmp_path_factory.mktemp("edges") / "large", 2000)


def specprobe(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for name, value in env.items():
        if value == "":
            environ.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "specprobe", *args], env=environ, capture_output=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    "env",
    [
        {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""},
        {"PYTHONIOENCODING": "latin-1"},
        {"PYTHONIOENCODING": "ascii"},
    ],
)
def test_a_stdout_that_is_not_utf8_gets_the_report(run: Path, env: dict[str, str]) -> None:
    """A Rich UnicodeEncodeError traceback and exit 1, after the work was done."""
    done = specprobe("report", str(run), **env)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert b"Traceback" not in done.stderr
    out = done.stdout.decode("latin-1")
    assert "143000" in out and "org/m" in out


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_standard_output_that_refuses_writes_is_named_in_one_line(run: Path) -> None:
    """``report R > /dev/full``: "No space left on device" with a hint to check the paths
    given, though no path was at fault; the stream is named now."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "specprobe", "report", str(run)],
            env=environ,
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.splitlines()[0].startswith("error: expected to write the output to standard output, found it")
    assert "No space left on device" in err and "Traceback" not in err and len(err.splitlines()) == 2


def test_a_reader_that_stops_reading_ends_the_command_quietly(large: Path) -> None:
    """``| head -1``: exit 1 and nothing said."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["report", str(large), "--json"], ["report", str(large)]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "specprobe", *args],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        error = proc.stderr.read()
        assert proc.wait(timeout=120) == 141, error.decode(errors="replace")[-2000:]
        assert first.strip() and error == b""


@settings(max_examples=6, deadline=None)
@given(columns=st.sampled_from(["0", "1", "20", "40", "79"]))
def test_a_narrow_or_zero_width_still_shows_every_column(run: Path, columns: str) -> None:
    """``COLUMNS=40``: the revision column one character wide and empty; ``COLUMNS=0``: no output."""
    done = specprobe("report", str(run), COLUMNS=columns)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    out = done.stdout.decode()
    assert "143000" in out and "χ_net" in out


def test_resume_waiting_for_the_lock_says_so_without_a_terminal(
    hub: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    """``--resume`` waiting for the lock printed nothing without a TTY."""
    import time

    from specprobe.store.lock import RunLock
    from tests.cli.test_analyze import REPO, SMALL

    out = tmp_path / "run"
    holder = RunLock(out)
    holder.acquire()  # another writer: this test process
    log = tmp_path / "stderr.txt"
    args = [
        "analyze",
        REPO,
        "--revisions",
        "step1",
        "--dataset",
        str(corpus),
        *SMALL,
        "--out",
        str(out),
        "--resume",
    ]
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "specprobe", *args],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 120
            while (
                b"waiting for" not in log.read_bytes() and proc.poll() is None and time.monotonic() < deadline
            ):
                time.sleep(0.2)
        finally:
            holder.release()
        assert proc.wait(timeout=180) == 0, log.read_text()[-2000:]
    said = log.read_text()
    assert f"waiting for pid {os.getpid()} on " in said and f"to finish writing {out}" in said, said
    assert len(ResultStore(out).records()) == 1
