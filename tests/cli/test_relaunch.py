"""``--processes N``: the torchrun relaunch and the exit code it passes on (the launch
itself is tested in tests/pipeline/test_distributed.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, ClassVar

import pytest
import typer

from specprobe.cli.relaunch import relaunch


class _Torchrun:
    """A torchrun that, like the real agent after Ctrl-C, gets the group's SIGINT, stops
    the workers and exits 1; the SIGINT reaches this process too (sent to itself here)."""

    launched: ClassVar[list[list[str]]] = []

    def __init__(self, command: list[str], env: dict[str, str], **options: Any) -> None:
        self.launched.append(command)
        self.waits = 0
        self.signals: list[int] = []

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)

    def wait(self) -> int:
        self.waits += 1
        if self.waits == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return 1


@pytest.mark.parametrize(
    "inherited", [signal.SIG_IGN, signal.default_int_handler], ids=["ignored", "default"]
)
def test_ctrl_c_exits_130_whatever_sigint_disposition_was_inherited(
    inherited: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background job of a script starts with SIGINT ignored; torchrun's agent handles
    SIGINT regardless (the sweep stops, the agent exits 1), so the relaunching process
    must see it too and exit 130, not pass on the agent's 1."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["specprobe", "run", "r.yaml", "--processes", "2", "--resume"])
    monkeypatch.setattr(subprocess, "Popen", _Torchrun)
    previous = signal.signal(signal.SIGINT, inherited)
    try:
        with pytest.raises(typer.Exit) as stopped:
            relaunch(2)
        assert signal.getsignal(signal.SIGINT) is inherited  # put back as it was
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.value.exit_code == 130
    command = _Torchrun.launched[-1]
    assert command[-4:] == ["specprobe", "run", "r.yaml", "--resume"]
    assert "--nproc-per-node=2" in command


def test_without_a_signal_the_launch_status_is_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    class Finished(_Torchrun):
        def wait(self) -> int:
            return 1  # a checkpoint failed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["specprobe", "run", "r.yaml", "--processes=2"])
    monkeypatch.setattr(subprocess, "Popen", Finished)
    with pytest.raises(typer.Exit) as ended:
        relaunch(2)
    assert ended.value.exit_code == 1
    assert relaunch(1) is None  # one process: nothing to relaunch


_PARENT = """
import subprocess, sys
import typer
from specprobe.cli.relaunch import relaunch

real = subprocess.Popen
child = [sys.executable, "-c", sys.argv[1]]
subprocess.Popen = lambda command, env, **options: real(child, **options)  # torchrun's stand-in
sys.argv = ["specprobe", "analyze", "m", "--processes", "2"]
try:
    relaunch(2)
except typer.Exit as ended:
    sys.exit(ended.exit_code)
"""

_CHILD = """
import signal, sys, time, pathlib
seen = pathlib.Path({seen!r})
def stop(signum, frame):
    seen.write_text(signal.Signals(signum).name)
    sys.exit(1)  # as torchrun's agent exits after stopping its workers
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
pathlib.Path({ready!r}).write_text("ready")
time.sleep(60)
"""


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_parent_alone_stops_torchrun(tmp_path: Any, signum: int, code: int) -> None:
    """SIGTERM to the parent exited 143 while torchrun and its workers went on writing
    (orphans); SIGINT to the parent alone ran to the end."""
    import time
    from pathlib import Path

    ready, seen = tmp_path / "ready", tmp_path / "seen"
    child = _CHILD.format(seen=str(seen), ready=str(ready))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("WORLD_SIZE", None)
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, child], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        parent.send_signal(signum)
        assert parent.wait(timeout=60) == code
        assert seen.read_text() == signal.Signals(signum).name  # torchrun got it, once, and ended
    finally:
        if parent.poll() is None:
            parent.kill()


_KILLED_WORKER = """
import os, signal, time
os.write(2, f"useful line from {os.environ['RANK']}\\n".encode())  # one write: lines never interleave
if os.environ["RANK"] == "1":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(30)
"""


def test_a_killed_worker_ends_in_one_line_not_torchruns_traceback(tmp_path: Any) -> None:
    """torchrun's agent printed a 40-line traceback of its own frames and a failure table
    after the useful lines; the launch --processes uses ends with one line instead."""
    from pathlib import Path

    worker = tmp_path / "worker.py"
    worker.write_text(_KILLED_WORKER)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [
        sys.executable,
        "-m",
        "specprobe.cli.torchrun",
        "--standalone",
        "--nproc-per-node=2",
        str(worker),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "useful line from 0" in done.stderr and "useful line from 1" in done.stderr
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("specprobe: process 1 of 2 (pid ") and "killed by SIGKILL" in last
    assert "--resume" in last
    assert len(done.stderr.strip().splitlines()) <= 6


def test_a_failed_worker_is_named_with_its_status() -> None:
    from types import SimpleNamespace

    from specprobe.cli.torchrun import failure_line

    line = failure_line(0, SimpleNamespace(exitcode=1, pid=42), 2)
    assert line.startswith("specprobe: process 0 of 2 (pid 42) exited with status 1 (its error is above)")
    assert "\n" not in line and line.isascii()
