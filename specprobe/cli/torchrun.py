"""torchrun as ``--processes N`` runs it: ``python -m specprobe.cli.torchrun ARGS`` is
``python -m torch.distributed.run ARGS``, with torchrun's own argument parser and launch,
except for what it says when a worker fails.

torchrun's agent ends a failed launch with a 40-line traceback of its own frames and a
failure table, after the lines that matter (the worker's error, or nothing when the worker
was killed). Here that becomes one line naming the process, how it ended and what to do;
the worker's own traceback (printed by the worker, above) is left as it is. A signal that
stops the agent (Ctrl-C, SIGTERM; :mod:`specprobe.cli.relaunch` passes them on) ends it
quietly with 128 + the signal's number, without the agent's traceback.
"""

from __future__ import annotations

import signal
import sys
from typing import Any


def failure_line(rank: int, failure: Any, processes: int) -> str:
    """One line for torchrun's first failed worker (its ``ProcessFailure``): which process,
    how it ended and what to do next."""
    exitcode = int(failure.exitcode)
    if exitcode < 0:
        name = (
            signal.Signals(-exitcode).name
            if -exitcode in signal.Signals._value2member_map_
            else str(-exitcode)
        )
        cause = (
            " (the kernel's OOM killer sends it when memory runs out)" if -exitcode == signal.SIGKILL else ""
        )
        how = f"was killed by {name}{cause}"
        hint = "finished records are kept in the run folder; rerun with --resume to measure the rest"
    else:
        how = f"exited with status {exitcode} (its error is above)"
        hint = "finished records are kept in the run folder; fix the cause and rerun with --resume"
    return (
        f"specprobe: process {rank} of {processes} (pid {failure.pid}) {how}; the other processes were "
        f"stopped (hint: {hint})"
    )


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with ``argv``; return its exit status (0 when every worker succeeded)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        nproc = str(args.nproc_per_node)
        processes = max(len(err.failures), int(nproc) if nproc.isdigit() else 0)
        sys.stderr.write(failure_line(rank, failure, processes) + "\n")  # ASCII: any encoding
        return 1
    except SignalException as err:
        return 128 + int(err.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
