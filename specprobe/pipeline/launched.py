"""One sweep across processes, GPUs and machines, under ``accelerate launch`` or ``torchrun``.

``run_sweep`` sees the launcher's environment (:func:`.processes.launched`) and runs
:class:`LaunchedExecutor` here, in every process (the process group and its store:
:mod:`specprobe.pipeline.processes`).

1. **The same checks everywhere.** Every process plans the sweep and prepares the data
   (the checks of a one-process run); the processes then compare a summary of what they
   were asked to do (settings, checkpoints, resume, split) and all refuse, before anything
   is written, if one failed a check or differs.
2. **One writer.** Process 0 opens the run directory (config.json records the world
   size), finds what ``--resume`` skips, and orders the rest largest first (bytes of
   weights on disk). It alone writes ``results.jsonl`` (:class:`.writer.RunWriter`): the
   others hand their finished records over through the store, and process 0 appends each
   as soon as it sees it (it looks after each of its own batches and while it waits at the end).
3. **Dynamic claims** (``split=checkpoints``, the default): a process takes the next
   unclaimed checkpoint with an atomic ``store.add`` and measures it on its own device (its
   local rank's GPU, its group of GPUs with ``gpus_per_model``, or the CPU), so a process
   that finishes early takes more and one slow checkpoint does not hold up the others.
4. **Shared checkpoints** (``split=batches``): every process loads each checkpoint and
   measures the batches ``rank, rank + N, …``; the measurements are exchanged and process 0
   writes the record. Probes are seeded per batch index, so the record equals the
   one-process record.

Records are keyed by (model, revision) and process 0 returns them in plan order, so the
report is the same whatever the number of processes and the order they finish in
(``duplicate_of`` is settled in plan order by the writer). A checkpoint that fails is
recorded as failed and the sweep goes on. When a process dies, the launcher stops the
others; what was written stays, and ``--resume`` measures the rest.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from specprobe.choices import Device, Split
from specprobe.core.memory import MemoryPlan
from specprobe.errors import SpecprobeError
from specprobe.models.hub import Checkpoint
from specprobe.pipeline.checkpoint import BatchSplit, loader, measure_checkpoint
from specprobe.pipeline.plan import (
    Observer,
    PlannedCheckpoint,
    Subsets,
    SweepRequest,
    SweepResult,
    preflight,
    subset_notes,
    weights_bytes,
)
from specprobe.pipeline.processes import (
    BatchShare,
    Parallel,
    SharedError,
    SweepStopped,
    Team,
    gpu_assignment,
    largest_first,
    or_stopped,
    refuse_differences,
    stopped_by_sigterm,
    terminated,
)
from specprobe.pipeline.writer import RunWriter, open_run
from specprobe.store.records import Record

POLL_S = 0.2
"""How often process 0 looks for records while it has nothing of its own to measure."""


class LaunchedExecutor:
    """The sweep for one process of a launch: every process runs it with the same plan.

    Process 0 writes the store and returns every record of the plan (in plan order); the
    other processes return the records they measured. Raises SpecprobeError on every
    process, before anything is written, when a check fails on any of them or they were
    started with different settings.
    """

    def __init__(self, team: Team, parallel: Parallel | None = None) -> None:
        self.team, self.parallel = team, parallel or Parallel()
        self.lead = team.rank == 0

    def run(self, request: SweepRequest) -> SweepResult:
        plan, observer = request.plan, request.observer
        self.plan, self.store, self.resume, self.invocation = (
            plan,
            request.store,
            request.resume,
            request.invocation,
        )
        self.observer = observer
        error: tuple[str, str] | None = None
        planned: list[PlannedCheckpoint] = []
        subsets: Subsets = {}
        gpus: tuple[int, ...] | None = None
        try:
            gpus = self.devices(plan.probe.device)
            planned, subsets = preflight(plan, observer if self.lead else Observer())
        except SpecprobeError as err:
            error = (err.message, err.hint)
        refuse_differences(self.team.all_gather((error, self._summary(planned))))
        self.planned, self.subsets, self.gpus = planned, subsets, gpus
        with ExitStack() as lock:
            self._open(lock)
            return self._shared() if self.parallel.split is Split.batches else self._claimed()

    # ---- checks, then the run directory ------------------------------------------------

    def _open(self, lock: ExitStack) -> None:
        """Process 0 takes the run folder's lock (held until the sweep ends: the other
        processes never touch --out), opens the run and orders what is left to measure;
        every process learns the order and the run's id."""
        opened: Any = None
        if self.lead:
            try:
                lock.enter_context(
                    self.store.open_for_writing(
                        wait=self.resume,
                        on_wait=lambda holder: self.observer.waiting(holder, self.store.directory),
                    )
                )
                done, warnings = open_run(
                    self.plan, self.store, resume=self.resume, invocation=self.invocation, extra=self._extra()
                )
                notes = subset_notes(self.subsets)
                self.writer = RunWriter(
                    self.plan, self.store, self.planned, done, self.observer, [*warnings, *notes]
                )
                todo = self.writer.todo
                if self.parallel.split is Split.checkpoints:
                    todo = [todo[i] for i in largest_first([weights_bytes(self.planned[i]) for i in todo])]
                opened = ("ok", uuid.uuid4().hex, todo)
            except SpecprobeError as err:
                opened = ("error", err.message, err.hint)
        opened = self.team.broadcast(opened)
        if opened[0] == "error":
            raise SharedError(opened[1], opened[2])
        _, run_id, self.todo = opened
        self.keys = _Keys(run_id)

    def devices(self, device: Device) -> tuple[int, ...] | None:
        """This process's GPUs for models on ``device`` (None on the CPU, or () for a
        process that only waits)."""
        import torch

        k = self.parallel.gpus_per_model
        if device is Device.cpu or not torch.cuda.is_available():
            if k > 1:
                raise SpecprobeError(
                    f"--gpus-per-model {k} needs GPUs, found --device cpu or no CUDA device",
                    "use --device auto on a machine with GPUs, or --gpus-per-model 1",
                )
            return None
        if k > 1 and self.parallel.split is Split.batches:
            raise SpecprobeError(
                "--process-split batches loads every checkpoint in every process; it does not combine "
                f"with --gpus-per-model {k}",
                "use --process-split checkpoints with --gpus-per-model, or --gpus-per-model 1",
            )
        launch = self.team.launch
        gpus = gpu_assignment(launch.local_rank, launch.local_world_size, k, torch.cuda.device_count())
        if gpus:
            torch.cuda.set_device(gpus[0])
        return gpus if gpus is not None else ()

    def _summary(self, planned: list[PlannedCheckpoint]) -> dict[str, Any]:
        """What every process must agree on."""
        probe = self.plan.probe
        return {
            "settings": self.plan.settings.to_dict(),
            "checkpoints": [[p.checkpoint.model, p.checkpoint.revision, p.commit] for p in planned],
            "device": probe.device.value,
            "dtype": probe.dtype.value,
            "micro_batch_size": probe.micro_batch_size,
            "trust_remote_code": probe.trust_remote_code,
            "resume": self.resume,
            "split": self.parallel.split.value,
            "gpus_per_model": self.parallel.gpus_per_model,
        }

    def _extra(self) -> dict[str, Any]:
        return {
            "world_size": self.team.world_size,
            "split": self.parallel.split.value,
            "gpus_per_model": self.parallel.gpus_per_model,
        }

    def _measure(self, index: int, observer: Observer, split: BatchSplit | None = None) -> Record:
        """The record of plan index ``index``, loaded onto this process's GPUs."""
        probe, gpus = self.plan.probe, self.gpus
        if gpus is not None and len(gpus) > 1 and probe.device is Device.cuda:
            probe = replace(probe, device=Device.auto)
        return measure_checkpoint(
            self.planned[index], self.plan, self.subsets, observer, split=split, load=loader(probe, gpus)
        )

    # ---- split=checkpoints: claims -------------------------------------------------------

    def _claimed(self) -> SweepResult:
        store, keys = self.team.store, self.keys
        lead = _LeadWriter(self) if self.lead else None
        observer: Observer = lead.observer if lead is not None else _Reporter(store, keys, self.team.rank)
        mine: list[Record] = []
        with stopped_by_sigterm(self.lead):
            try:
                if self.gpus != ():  # a process of a GPU group that only waits claims nothing
                    while True:
                        claim = or_stopped(store.add, keys.next, 1) - 1
                        if claim >= len(self.todo):
                            break
                        record = self._measure(self.todo[claim], observer)
                        mine.append(record)
                        if lead is not None:
                            lead.accept(claim, record)
                        else:
                            or_stopped(store.set, keys.record(claim), json.dumps(record, default=str))
                            or_stopped(store.add, keys.delivered, 1)
                    if lead is None:
                        or_stopped(store.set, keys.status(self.team.rank), "done")
                if lead is None:
                    return _measured_here(mine)
                lead.wait()
            except KeyboardInterrupt as err:
                if lead is None:
                    raise
                raise lead.stopped(err) from None
        return lead.writer.result()

    # ---- split=batches: every process on every checkpoint --------------------------------

    def _shared(self) -> SweepResult:
        share = BatchShare(self.team)
        lead = _LeadWriter(self) if self.lead else None
        observer = lead.observer if lead is not None else Observer()
        mine: list[Record] = []
        with stopped_by_sigterm(self.lead):
            try:
                for claim, index in enumerate(self.todo):
                    record = self._measure(index, observer, share)
                    if lead is not None:
                        lead.accept(claim, record)
                    mine.append(record)
            except KeyboardInterrupt as err:
                if lead is None:
                    raise
                raise lead.stopped(err) from None
        return lead.writer.result() if lead is not None else _measured_here(mine)


def _measured_here(records: list[Record]) -> SweepResult:
    """A worker's result: the records it measured (process 0 wrote them)."""
    return SweepResult(
        records=records,
        measured=len(records),
        skipped=0,
        failed=sum(r.get("status") != "ok" for r in records),
    )


@dataclass(frozen=True)
class _Keys:
    """The store keys of one run (prefixed, since a launcher's store outlives restarts)."""

    run: str

    @property
    def next(self) -> str:
        return f"specprobe/{self.run}/next"

    @property
    def delivered(self) -> str:
        return f"specprobe/{self.run}/delivered"

    def record(self, claim: int) -> str:
        return f"specprobe/{self.run}/record/{claim}"

    def status(self, rank: int) -> str:
        return f"specprobe/{self.run}/status/{rank}"


class _Reporter(Observer):
    """A worker's progress, published in the store for process 0's display."""

    def __init__(self, store: Any, keys: _Keys, rank: int) -> None:
        self.store, self.keys, self.rank = store, keys, rank
        self.total = self.done = 0

    def _say(self, text: str) -> None:
        or_stopped(self.store.set, self.keys.status(self.rank), text)

    def loading(self, checkpoint: Checkpoint) -> None:
        self._say(f"loading {checkpoint.name}")

    def measuring(self, checkpoint: Checkpoint, batches: int) -> None:
        self.total = batches
        self.done = 0
        self._say(f"{checkpoint.name} 0/{batches}")

    def batch_done(self, checkpoint: Checkpoint, index: int) -> None:
        self.done += 1
        self._say(f"{checkpoint.name} {self.done}/{self.total}")


class _LeadWriter:
    """Process 0: hands every record (its own and those handed over through the store) to
    the run's writer, and shows the others' progress."""

    def __init__(self, executor: LaunchedExecutor) -> None:
        self.executor = executor
        self.writer: RunWriter = executor.writer
        self.store, self.keys, self.todo = executor.team.store, executor.keys, executor.todo
        self.counted = 0  # records handed over that were read
        self.claims: set[int] = set()
        self.status: dict[int, str] = {}
        self.last_status = 0.0
        self.observer = _LeadObserver(self)

    def accept(self, claim: int, record: Record) -> None:
        self.claims.add(claim)
        self.writer.accept(self.todo[claim], record)

    def poll(self) -> None:
        """Write the records handed over since the last look; refresh the others' status."""
        if terminated.signum is not None:
            raise SweepStopped([], 128 + terminated.signum)
        or_stopped(self._poll)

    def _poll(self) -> None:
        team = self.executor.team
        if team.world_size > 1 and self.executor.parallel.split is Split.checkpoints:
            delivered = self.store.add(self.keys.delivered, 0)
            if delivered > self.counted:
                claimed = min(self.store.add(self.keys.next, 0), len(self.todo))
                for claim in range(claimed):
                    key = self.keys.record(claim)
                    if claim not in self.claims and self.store.check([key]):
                        self.accept(claim, json.loads(self.store.get(key)))
                        self.store.delete_key(key)
                        self.counted += 1
            now = time.monotonic()
            if now - self.last_status > 0.5:
                self.last_status = now
                self._refresh_status()

    def _refresh_status(self) -> None:
        for rank in range(1, self.executor.team.world_size):
            key = self.keys.status(rank)
            if self.store.check([key]):
                self.status[rank] = self.store.get(key).decode()
        if self.status:
            parts = [f"[{rank}] {text}" for rank, text in sorted(self.status.items())]
            self.writer.observer.preparing(" · ".join([f"[0] {self.observer.own}", *parts]))

    def wait(self) -> None:
        """Until every claimed checkpoint's record is written."""
        self.observer.own = "done"
        while len(self.claims) < len(self.todo):
            self.poll()
            time.sleep(POLL_S)

    def stopped(self, err: KeyboardInterrupt) -> SweepStopped:
        """After Ctrl-C or SIGTERM: keep what was handed over, name what was not measured."""
        try:
            self.store.set_timeout(timedelta(seconds=5))
            self._poll()
        except Exception:  # the store went away with the launcher: what is written stays
            pass
        code = err.exit_code if isinstance(err, SweepStopped) else 130
        return SweepStopped(self.writer.missing(self.todo), code)


class _LeadObserver(Observer):
    """Process 0's own progress: forwarded to the display, with a look for handed-over
    records after each step."""

    def __init__(self, lead: _LeadWriter) -> None:
        self.lead = lead
        self.inner = lead.writer.observer
        self.own = ""
        self.total = 0
        self.done = 0

    def loading(self, checkpoint: Checkpoint) -> None:
        self.own = f"loading {checkpoint.name}"
        self.inner.loading(checkpoint)
        self.lead.poll()

    def measuring(self, checkpoint: Checkpoint, batches: int) -> None:
        self.total, self.done = batches, 0
        self.own = f"{checkpoint.name} 0/{batches}"
        self.inner.measuring(checkpoint, batches)
        self.lead.poll()

    def batch_done(self, checkpoint: Checkpoint, index: int) -> None:
        self.done += 1
        self.own = f"{checkpoint.name} {self.done}/{self.total}"
        self.inner.batch_done(checkpoint, index)
        self.lead.poll()

    def memory_plan(self, checkpoint: Checkpoint, plan: MemoryPlan) -> None:
        self.inner.memory_plan(checkpoint, plan)  # process 0's; under a batch split each holds a share

    def preparing(self, what: str) -> None:
        self.inner.preparing(what)
