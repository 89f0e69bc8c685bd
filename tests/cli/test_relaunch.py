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

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.launched.append(command)
        self.waits = 0

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
