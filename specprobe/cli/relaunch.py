"""``--processes N``: the same command line again, in N local processes under torchrun."""

from __future__ import annotations

import sys
from types import FrameType

import typer

INTERRUPTED = 130
"""The exit code after Ctrl-C (128 + SIGINT), as the one-process run gives."""


def relaunch(processes: int) -> None:
    """With ``--processes N`` (N > 1) outside a launcher: run this same command in N local
    processes under torchrun, wait for them, and exit with their status, or with 130 when
    a SIGINT reached this process meanwhile.

    Ctrl-C sends SIGINT to the terminal's whole foreground process group: this process and
    torchrun's agent, which passes it on to the workers (each in a session of its own);
    they keep their finished records and end, and the agent exits 1 with a traceback. So
    this process decides the exit code, and it must see the SIGINT whatever disposition it
    inherited: a background job of a non-interactive shell (``cmd &`` in a script, many CI
    runners) starts with SIGINT ignored, and torchrun's agent installs its own handler
    regardless, so the sweep still stops. With the inherited "ignore" this process used to
    miss the signal and pass on the agent's 1, as if a checkpoint had failed.
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
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={processes}", "-m", "specprobe", *args]
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # the processes got it too: wait for them to end

    # Before the launch, so no SIGINT falls between torchrun's start and this handler.
    previous = signal.signal(signal.SIGINT, note)
    try:
        code = subprocess.Popen(command, env=env).wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    raise typer.Exit(code=INTERRUPTED if received else code)
