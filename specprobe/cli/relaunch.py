"""``--processes N``: the same command line again, in N local processes under torchrun."""

from __future__ import annotations

import sys

import typer


def relaunch(processes: int) -> None:
    """With ``--processes N`` (N > 1) outside a launcher: run this same command in N local
    processes under torchrun, wait for them, and exit with their status."""
    import os
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
    launcher = subprocess.Popen(command, env=env)
    interrupted = False
    while True:  # Ctrl-C reaches the processes too: let them keep their records and end
        try:
            code = launcher.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
    raise typer.Exit(code=130 if interrupted else code)
