"""``--processes N``: the same command line again, in N local processes under torchrun."""

from __future__ import annotations

import contextlib
import sys
from types import FrameType
from typing import Any

import typer

INTERRUPTED = 130
"""The exit code after Ctrl-C (128 + SIGINT), as the one-process run gives."""
TERMINATED = 143
"""The exit code after SIGTERM (128 + SIGTERM), as the one-process run gives."""


def relaunch(processes: int) -> None:
    """With ``--processes N`` (N > 1) outside a launcher: run this same command in N local
    processes under torchrun, wait for them, and exit with their status, or with 130 when
    a SIGINT reached this process meanwhile.

    torchrun runs in a session of its own, and this process passes SIGINT and SIGTERM on
    to it, once, whether they came from the terminal (Ctrl-C) or were sent to this process
    alone (``kill PID``: before, torchrun and its workers went on writing, orphaned). The
    agent passes the signal on to the workers (each in a session of its own); they keep
    their finished records and end, and the agent exits 1 with a traceback. So this process
    decides the exit code (130 after SIGINT, 143 after SIGTERM), and it handles SIGINT
    whatever disposition it inherited: a background job of a non-interactive shell
    (``cmd &`` in a script, many CI runners) starts with SIGINT ignored. With the inherited
    "ignore" this process used to miss the signal and pass on the agent's 1, as if a
    checkpoint had failed.
    """
    import os
    import signal
    import subprocess

    if processes <= 1 or "WORLD_SIZE" in os.environ:  # already launched (this stays torch-free)
        return
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            args.append(arg)
    command = [sys.executable, "-m", "specprobe.cli.torchrun", "--standalone"]  # torchrun, one-line failures
    command += [f"--nproc-per-node={processes}", "-m", "specprobe", *args]
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    received: list[int] = []
    child: list[Any] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        for launched in child:  # torchrun's agent stops its workers, then exits
            with contextlib.suppress(OSError):
                launched.send_signal(signum)

    # Before the launch, so no signal falls between torchrun's start and these handlers.
    previous = {signum: signal.signal(signum, note) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        # In a session of its own: a signal reaches torchrun once, from here, whether it
        # came from the terminal (Ctrl-C reaches the whole foreground group) or was sent to
        # this process alone (kill PID: before, torchrun and its workers went on writing).
        launched = subprocess.Popen(command, env=env, start_new_session=True)
        child.append(launched)
        for signum in received:  # one that came before torchrun existed
            with contextlib.suppress(OSError):
                launched.send_signal(signum)
        code = launched.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise typer.Exit(code=TERMINATED if received[0] == signal.SIGTERM else INTERRUPTED)
    raise typer.Exit(code=code)
