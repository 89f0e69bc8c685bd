"""A sweep: every (model, revision) of a plan measured on the same token subset.

``run_sweep`` is the one code path behind ``specprobe analyze`` and ``specprobe run`` (and
the demo): it checks everything that can be checked cheaply first (see
:func:`.plan.preflight`), writes nothing until then, and afterwards writes each
checkpoint's record the moment it is finished (:class:`.writer.RunWriter`). A checkpoint
that fails (NaN outputs, out of memory at micro-batch 1) is recorded as failed and the
sweep goes on. In one process the sweep runs here (:class:`.local.LocalExecutor`); under a
launcher every process runs its part (:class:`.launched.LaunchedExecutor`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from specprobe.pipeline.plan import Observer, SweepPlan, SweepRequest, SweepResult, resolve_plan_task
from specprobe.pipeline.processes import (
    Launch,
    Parallel,
    SweepStopped,
    Team,
    launched,
    process_rank,
    stopped_by_sigterm,
)
from specprobe.store.results import ResultStore


def run_sweep(
    plan: SweepPlan,
    store: ResultStore,
    *,
    resume: bool = False,
    observer: Observer | None = None,
    invocation: dict[str, Any] | None = None,
    parallel: Parallel | None = None,
) -> SweepResult:
    """Measure every checkpoint of ``plan`` and write its record into ``store``.

    Raises SpecprobeError before writing anything when the plan cannot run (values out of
    range, a folder that is not specprobe's, a corrupt config.json, ...). The run folder is
    written under its lock (:meth:`ResultStore.open_for_writing`): another process writing
    into it makes this one fail with RunLockedError, or, with ``resume``, wait its turn.
    With ``resume``, checkpoints that already have an ``ok`` record with the same settings
    are skipped (their records are returned as they are), and a cut last line of
    results.jsonl is set aside in results.partial.jsonl (its checkpoint is measured again).
    A checkpoint missing weights of its model (IncompleteCheckpointError) stops the sweep;
    the records finished before it are kept. Under a launcher (``accelerate launch``,
    ``torchrun``) every process calls this and they share the sweep: see
    :mod:`specprobe.pipeline.launched` (``parallel`` chooses how; it is ignored in one process).
    The plan's task is resolved first (:func:`.plan.resolve_plan_task`): a checkpoint of a
    task that cannot be told apart is refused before anything is written.
    """
    plan = resolve_plan_task(plan)  # the task measured is in every record and its settings hash
    request = SweepRequest(plan, store, resume, observer or Observer(), invocation)
    if not launched():
        from specprobe.pipeline.local import LocalExecutor

        return LocalExecutor().run(request)
    from specprobe.pipeline.launched import LaunchedExecutor

    team = Team(Launch.from_environment())
    try:
        return LaunchedExecutor(team, parallel).run(request)
    finally:
        team.close()


@dataclass
class SweepRun:
    """A finished sweep and the run folder it wrote."""

    store: ResultStore
    result: SweepResult

    @property
    def directory(self) -> Path:
        return self.store.directory


def sweep_into(
    plan: SweepPlan,
    out: str | Path | None,
    *,
    resume: bool = False,
    observer: Observer | None = None,
    invocation: dict[str, Any] | None = None,
    parallel: Parallel | None = None,
) -> SweepRun:
    """:func:`run_sweep` into the run folder ``out`` (default: :func:`default_out_dir`).

    An interruption (Ctrl-C, a launch stopped) is raised as :class:`SweepStopped` with the
    number of finished records kept in the folder (on process 0; the other processes of a
    launch re-raise it as it came). In one process SIGTERM stops the sweep the same way
    (exit code 143), so that what was kept is said; a launch handles its own."""
    store = ResultStore(out if out else default_out_dir())
    try:
        with stopped_by_sigterm(not launched()):
            result = run_sweep(
                plan, store, resume=resume, observer=observer, invocation=invocation, parallel=parallel
            )
    except KeyboardInterrupt as err:
        if process_rank() != 0:
            raise
        missing = err.missing if isinstance(err, SweepStopped) else []
        code = err.exit_code if isinstance(err, SweepStopped) else 130
        raise SweepStopped(missing, code, saved=len(store.records()), directory=store.directory) from None
    return SweepRun(store, result)


def plan_inputs(plan: SweepPlan) -> list[Path]:
    """The local files and folders a sweep reads (its dataset, its local models): no output
    may be written over them (``cli.common.check_outputs``)."""
    named = [plan.data.dataset, *(spec.id for spec in plan.models)]
    return [path for path in (Path(name).expanduser() for name in named) if path.exists()]


def default_out_dir() -> Path:
    """``./specprobe-runs/<UTC timestamp>``, made (empty) here: the folder is claimed with
    an exclusive ``mkdir``, so two runs started in the same second get two folders (the
    second ``<timestamp>-2``), never one shared folder. Under a launcher the processes
    agree on the timestamp's name instead (nothing is made)."""
    base = Path("specprobe-runs") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    if "WORLD_SIZE" in os.environ:  # launched: every process must name the same folder
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    path, n = base, 1
    while True:
        try:
            path.mkdir()  # exclusive: another run has it, then the next name
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def drop_if_empty(directory: Path) -> None:
    """Remove ``directory`` when it is empty (a claimed default folder of a run refused
    before it wrote anything)."""
    with contextlib.suppress(OSError):  # not empty, or gone: left as it is
        directory.rmdir()


__all__ = [
    "SweepRun",
    "default_out_dir",
    "drop_if_empty",
    "plan_inputs",
    "run_sweep",
    "sweep_into",
]
