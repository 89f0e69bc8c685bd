"""One sweep across processes, GPUs and machines, under ``accelerate launch`` or ``torchrun``.

A launcher starts the same command in every process and sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK`` and the rendezvous address; ``run_sweep`` sees them and calls
``sweep_across_processes`` here, in every process. The processes talk only through
torch.distributed: the process group (gloo: the messages are small Python objects, so no
GPU memory goes to communicators) and the key-value store the launcher set up with it.

1. **The same checks everywhere.** Every process plans the sweep and prepares the data
   (the checks of a one-process run); the processes then compare a summary of what they
   were asked to do (settings, checkpoints, resume, split) and all refuse, before anything
   is written, if one failed a check or differs.
2. **One writer.** Process 0 opens the run directory (config.json records the world
   size), finds what ``--resume`` skips, and orders the rest largest first (bytes of
   weights on disk). It alone writes ``results.jsonl``: the others hand their finished
   records over through the store, and process 0 appends each as soon as it sees it
   (it looks after each of its own batches and while it waits at the end).
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
(``duplicate_of`` is recomputed in plan order at the end). A checkpoint that fails is
recorded as failed and the sweep goes on. When a process dies, the launcher stops the
others; what was written stays, and ``--resume`` measures the rest.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from specprobe.choices import Device, Split
from specprobe.core.measure import Measurement
from specprobe.errors import SpecprobeError
from specprobe.models.hub import Checkpoint
from specprobe.pipeline.sweep import (
    Observer,
    SweepPlan,
    SweepResult,
    _measure_checkpoint,
    _open_run,
    _Planned,
    _preflight,
    _seen_fingerprints,
    stamp,
)
from specprobe.store.results import ResultStore, settings_hash

TIMEOUT = timedelta(hours=6)
"""How long a collective waits for the slowest process (a shared checkpoint's batches)."""

POLL_S = 0.2
"""How often process 0 looks for records while it has nothing of its own to measure."""


@dataclass(frozen=True)
class Parallel:
    """How a launched sweep uses its processes (ignored without a launcher)."""

    split: Split = Split.checkpoints
    gpus_per_model: int = 1
    """GPUs each model is spread over (``device_map`` within a group of GPUs)."""


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a launch (from the launcher's environment variables)."""

    world_size: int
    rank: int
    local_rank: int
    local_world_size: int

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Launch:
        env = dict(os.environ) if environ is None else environ
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
            local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        except ValueError as err:
            raise SpecprobeError(
                f"expected integer WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, found {err}",
                "start the processes with accelerate launch or torchrun",
            ) from None
        return cls(world, rank, local_rank, local_world)


def launched() -> bool:
    """Whether this process is one of several started by a launcher (``WORLD_SIZE`` > 1)."""
    return Launch.from_environment().world_size > 1


def process_rank() -> int:
    """This process's rank in a launch (0 without a launcher)."""
    return Launch.from_environment().rank if launched() else 0


def gpu_assignment(
    local_rank: int, local_world_size: int, gpus_per_model: int, device_count: int
) -> tuple[int, ...] | None:
    """The GPUs this process loads models onto, or None for a process that only waits.

    With one process per group of K GPUs (``local_world_size · K <= device_count``),
    process ``i`` owns GPUs ``i·K … i·K+K-1``. With one process per GPU (the launchers'
    default) processes form groups of K consecutive local ranks; the first of each group
    loads the model over the group's GPUs and the others wait. With K = 1 and more
    processes than GPUs, processes share GPUs round-robin (small models on a large GPU).
    """
    k = gpus_per_model
    if k < 1:
        raise SpecprobeError(f"expected --gpus-per-model 1 or more, found {k}", "use --gpus-per-model 1")
    if device_count < 1:
        raise SpecprobeError("expected a CUDA device, found none", "use --device cpu")
    if k == 1:
        return (local_rank % device_count,)
    if local_world_size * k <= device_count:
        return tuple(range(local_rank * k, local_rank * k + k))
    if local_world_size <= device_count and local_world_size % k == 0:
        return tuple(range(local_rank, local_rank + k)) if local_rank % k == 0 else None
    raise SpecprobeError(
        f"--gpus-per-model {k} with {local_world_size} processes on this machine needs "
        f"{local_world_size * k} GPUs (one process per group) or {local_world_size} GPUs in "
        f"groups of {k}, found {device_count} GPUs",
        f"launch {max(device_count // k, 1)} processes per machine (--num_processes), "
        "or lower --gpus-per-model",
    )


def largest_first(sizes: Sequence[int]) -> list[int]:
    """Indices ordered by size, largest first; equal sizes keep their order."""
    return sorted(range(len(sizes)), key=lambda i: -sizes[i])


class BatchShare:
    """This process's share of a checkpoint's batches and the exchange of the measurements.

    Each process of the group calls ``combine`` (or, when it failed before measuring,
    ``settle``) exactly once per checkpoint, so the collectives stay in step.
    """

    def __init__(self, team: Team) -> None:
        self.team = team
        self.writer = team.rank == 0
        self._exchanged = False

    def indices(self, batches: int) -> range:
        self._exchanged = False
        return range(self.team.rank, batches, self.team.world_size)

    def combine(self, own: dict[int, Measurement], error: str | None) -> list[Measurement]:
        """All processes' measurements in batch order; raises (on every process) if one failed."""
        self._exchanged = True
        shares = _or_stopped(self.team.all_gather, (own, error))
        failures = [(rank, err) for rank, (_, err) in enumerate(shares) if err is not None]
        if failures:
            rank, err = failures[0]
            raise SpecprobeError(f"process {rank}: {err}")
        merged: dict[int, Measurement] = {}
        for part, _ in shares:
            merged.update(part)
        return [merged[index] for index in sorted(merged)]

    def settle(self, error: str | None) -> None:
        """Join the exchange with ``error`` if this process never reached it."""
        if not self._exchanged:
            self._exchanged = True
            _or_stopped(self.team.all_gather, ({}, error or "failed before measuring"))


class Team:
    """The process group and its store (joined here unless the caller already did)."""

    def __init__(self, launch: Launch) -> None:
        import torch.distributed as dist

        self.launch = launch
        self.rank, self.world_size = launch.rank, launch.world_size
        self._owned = not dist.is_initialized()
        if self._owned:
            dist.init_process_group(
                backend="gloo",
                init_method="env://",
                rank=launch.rank,
                world_size=launch.world_size,
                timeout=TIMEOUT,
            )
        if dist.get_world_size() != launch.world_size:
            raise SpecprobeError(
                f"expected a process group of WORLD_SIZE={launch.world_size}, found {dist.get_world_size()}",
                "start the processes with accelerate launch or torchrun",
            )
        # The store the process group was set up with (the launcher's); torch.distributed
        # has no public accessor for it.
        self.store = dist.distributed_c10d._get_default_store()

    def all_gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Process 0's ``obj``, on every process."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        import torch.distributed as dist

        if self._owned and dist.is_initialized():
            dist.destroy_process_group()


class SharedError(SpecprobeError):
    """An error raised alike on every process of a launch (a failed common check, settings
    that differ): process 0 reports it, the others exit quietly with the same code."""

    shared = True


class SweepStopped(KeyboardInterrupt):
    """Process 0 was stopped (Ctrl-C, or the launcher ending the run after a process
    died); the records written are kept and ``missing`` were not measured."""

    def __init__(self, missing: Sequence[str], exit_code: int) -> None:
        super().__init__(f"{len(missing)} checkpoint(s) not measured")
        self.missing = list(missing)
        self.exit_code = exit_code


def sweep_across_processes(
    plan: SweepPlan,
    store: ResultStore,
    *,
    resume: bool = False,
    observer: Observer | None = None,
    invocation: dict[str, Any] | None = None,
    parallel: Parallel | None = None,
) -> SweepResult:
    """``run_sweep`` for one process of a launch: every process calls it with the same plan.

    Process 0 writes ``store`` and returns every record of the plan (in plan order); the
    other processes return the records they measured. Raises SpecprobeError on every
    process, before anything is written, when a check fails on any of them or they were
    started with different settings.
    """
    launch = Launch.from_environment()
    team = Team(launch)
    try:
        return _Sweep(team, plan, store, resume, observer, invocation, parallel or Parallel()).run()
    finally:
        team.close()


class _Sweep:
    def __init__(
        self,
        team: Team,
        plan: SweepPlan,
        store: ResultStore,
        resume: bool,
        observer: Observer | None,
        invocation: dict[str, Any] | None,
        parallel: Parallel,
    ) -> None:
        self.team, self.plan, self.store, self.resume = team, plan, store, resume
        self.invocation, self.parallel = invocation, parallel
        self.lead = team.rank == 0
        self.observer = observer or Observer()
        self.settings = plan.settings()

    # ---- checks, then the run directory ------------------------------------------------

    def run(self) -> SweepResult:
        quiet = self.observer if self.lead else Observer()
        error: tuple[str, str] | None = None
        planned: list[_Planned] = []
        subsets: dict[str, Any] = {}
        gpus: tuple[int, ...] | None = None
        try:
            gpus = self._devices()
            planned, subsets = _preflight(self.plan, quiet)
        except SpecprobeError as err:
            error = (err.message, err.hint)
        summary = self._summary(planned)
        gathered = self.team.all_gather((error, summary))
        _refuse_differences(gathered)
        with ExitStack() as lock:
            return self._open_and_measure(planned, subsets, gpus, lock)

    def _open_and_measure(
        self,
        planned: list[_Planned],
        subsets: dict[str, Any],
        gpus: tuple[int, ...] | None,
        lock: ExitStack,
    ) -> SweepResult:
        """Process 0 takes the run folder's lock (held until the sweep ends: the other
        processes never touch --out) and opens the run; then every process measures."""
        opened: Any = None
        warnings: list[str] = []
        if self.lead:
            try:
                lock.enter_context(self.store.open_for_writing(wait=self.resume))
                done, warnings = _open_run(
                    self.plan, self.store, resume=self.resume, invocation=self.invocation, extra=self._extra()
                )
                keys = {(p.checkpoint.model, p.checkpoint.revision) for p in planned}
                todo = [i for i, p in enumerate(planned) if _key(p) not in done]
                if self.parallel.split is Split.checkpoints:
                    todo = [todo[i] for i in largest_first([_weights_bytes(planned[i]) for i in todo])]
                done = {k: r for k, r in done.items() if k in keys}
                opened = ("ok", uuid.uuid4().hex, todo, done)
            except SpecprobeError as err:
                opened = ("error", err.message, err.hint, None)
        opened = self.team.broadcast(opened)
        if opened[0] == "error":
            raise SharedError(opened[1], opened[2])
        _, run_id, todo, done = opened
        self.keys = _Keys(run_id)
        self.planned, self.subsets, self.todo, self.done = planned, subsets, todo, done
        self.seen = _seen_fingerprints(done.values())
        result = self._shared(gpus) if self.parallel.split is Split.batches else self._claimed(gpus)
        return replace(result, warnings=warnings) if warnings else result

    def _devices(self) -> tuple[int, ...] | None:
        """This process's GPUs (None on the CPU, or () for a process that only waits)."""
        import torch

        k = self.parallel.gpus_per_model
        if self.plan.probe.device is Device.cpu or not torch.cuda.is_available():
            if k > 1:
                raise SpecprobeError(
                    f"--gpus-per-model {k} needs GPUs, found --device cpu or no CUDA device",
                    "use --device auto on a machine with GPUs, or --gpus-per-model 1",
                )
            return None
        if k > 1 and self.parallel.split is Split.batches:
            raise SpecprobeError(
                "--split batches loads every checkpoint in every process; it does not combine "
                f"with --gpus-per-model {k}",
                "use --split checkpoints with --gpus-per-model, or --gpus-per-model 1",
            )
        launch = self.team.launch
        gpus = gpu_assignment(launch.local_rank, launch.local_world_size, k, torch.cuda.device_count())
        if gpus:
            torch.cuda.set_device(gpus[0])
        return gpus if gpus is not None else ()

    def _summary(self, planned: list[_Planned]) -> dict[str, Any]:
        """What every process must agree on."""
        probe = self.plan.probe
        return {
            "settings": self.settings,
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

    # ---- split=checkpoints: claims -------------------------------------------------------

    def _claimed(self, gpus: tuple[int, ...] | None) -> SweepResult:
        store, keys = self.team.store, self.keys
        writer = _Writer(self) if self.lead else None
        observer: Observer = writer.observer if writer is not None else _Reporter(store, keys, self.team.rank)
        mine: list[dict[str, Any]] = []
        with _stopped_by_sigterm(self.lead):
            try:
                if gpus != ():  # a process of a GPU group that only waits claims nothing
                    while True:
                        claim = _or_stopped(store.add, keys.next, 1) - 1
                        if claim >= len(self.todo):
                            break
                        item = self.planned[self.todo[claim]]
                        record = self._measure(item, observer, gpus)
                        mine.append(record)
                        if writer is not None:
                            writer.accept(claim, record)
                        else:
                            _or_stopped(store.set, keys.record(claim), json.dumps(record, default=str))
                            _or_stopped(store.add, keys.delivered, 1)
                    if writer is None:
                        _or_stopped(store.set, keys.status(self.team.rank), "done")
                if writer is None:
                    return _result(mine, [])
                writer.wait()
            except KeyboardInterrupt as err:
                if writer is None:
                    raise
                raise writer.stopped(err) from None
        return writer.result()

    def _measure(
        self,
        item: _Planned,
        observer: Observer,
        gpus: tuple[int, ...] | None,
        share: BatchShare | None = None,
    ) -> dict[str, Any]:
        plan = self.plan
        if gpus is not None and len(gpus) > 1 and plan.probe.device is Device.cuda:
            plan = replace(plan, probe=replace(plan.probe, device=Device.auto))
        record = _measure_checkpoint(item, plan, self.subsets, self.seen, observer, share=share, gpus=gpus)
        return stamp(record, self.settings)

    # ---- split=batches: every process on every checkpoint --------------------------------

    def _shared(self, gpus: tuple[int, ...] | None) -> SweepResult:
        share = BatchShare(self.team)
        writer = _Writer(self) if self.lead else None
        observer = writer.observer if writer is not None else Observer()
        mine = []
        with _stopped_by_sigterm(self.lead):
            try:
                for claim, index in enumerate(self.todo):
                    record = self._measure(self.planned[index], observer, gpus, share)
                    if writer is not None:
                        writer.accept(claim, record)
                    mine.append(record)
            except KeyboardInterrupt as err:
                if writer is None:
                    raise
                raise writer.stopped(err) from None
        return writer.result() if writer is not None else _result(mine, [])


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


def _key(item: _Planned) -> tuple[str, str]:
    return item.checkpoint.model, item.checkpoint.revision


class _Reporter(Observer):
    """A worker's progress, published in the store for process 0's display."""

    def __init__(self, store: Any, keys: _Keys, rank: int) -> None:
        self.store, self.keys, self.rank = store, keys, rank
        self.total = self.done = 0

    def _say(self, text: str) -> None:
        _or_stopped(self.store.set, self.keys.status(self.rank), text)

    def loading(self, checkpoint: Checkpoint) -> None:
        self._say(f"loading {_name(checkpoint)}")

    def measuring(self, checkpoint: Checkpoint, batches: int) -> None:
        self.total = batches
        self.done = 0
        self._say(f"{_name(checkpoint)} 0/{batches}")

    def batch_done(self, checkpoint: Checkpoint, index: int) -> None:
        self.done += 1
        self._say(f"{_name(checkpoint)} {self.done}/{self.total}")


class _Writer:
    """Process 0: writes every record (its own and those handed over), shows the progress."""

    def __init__(self, sweep: _Sweep) -> None:
        self.sweep = sweep
        self.store, self.keys = sweep.team.store, sweep.keys
        self.results = sweep.store
        self.received: dict[int, dict[str, Any]] = {}
        self.counted = 0  # records handed over that were read
        self.status: dict[int, str] = {}
        self.last_status = 0.0
        self.observer = _LeadObserver(self)
        self.inner = sweep.observer
        self.inner.planned([p.checkpoint for p in sweep.planned])
        for item in sweep.planned:
            if _key(item) in sweep.done:
                self.inner.skipped(item.checkpoint, sweep.done[_key(item)])

    def accept(self, claim: int, record: dict[str, Any]) -> None:
        self.results.append(record)
        self.received[claim] = record
        self.inner.finished(self.sweep.planned[self.sweep.todo[claim]].checkpoint, record)

    def poll(self) -> None:
        """Write the records handed over since the last look; refresh the others' status."""
        if _terminated.signum is not None:
            raise SweepStopped([], 128 + _terminated.signum)
        _or_stopped(self._poll)

    def _poll(self) -> None:
        if self.sweep.team.world_size > 1 and self.sweep.parallel.split is Split.checkpoints:
            delivered = self.store.add(self.keys.delivered, 0)
            if delivered > self.counted:
                claimed = min(self.store.add(self.keys.next, 0), len(self.sweep.todo))
                for claim in range(claimed):
                    key = self.keys.record(claim)
                    if claim not in self.received and self.store.check([key]):
                        self.accept(claim, json.loads(self.store.get(key)))
                        self.store.delete_key(key)
                        self.counted += 1
            now = time.monotonic()
            if now - self.last_status > 0.5:
                self.last_status = now
                self._refresh_status()

    def _refresh_status(self) -> None:
        for rank in range(1, self.sweep.team.world_size):
            key = self.keys.status(rank)
            if self.store.check([key]):
                self.status[rank] = self.store.get(key).decode()
        if self.status:
            parts = [f"[{rank}] {text}" for rank, text in sorted(self.status.items())]
            self.inner.preparing(" · ".join([f"[0] {self.observer.own}", *parts]))

    def wait(self) -> None:
        """Until every claimed checkpoint's record is written."""
        self.observer.own = "done"
        while len(self.received) < len(self.sweep.todo):
            self.poll()
            time.sleep(POLL_S)

    def missing(self) -> list[str]:
        names = []
        for claim, index in enumerate(self.sweep.todo):
            if claim not in self.received:
                names.append(_name(self.sweep.planned[index].checkpoint))
        return names

    def stopped(self, err: KeyboardInterrupt) -> SweepStopped:
        """After Ctrl-C or SIGTERM: keep what was handed over, name what was not measured."""
        try:
            self.store.set_timeout(timedelta(seconds=5))
            self._poll()
        except Exception:  # the store went away with the launcher: what is written stays
            pass
        code = err.exit_code if isinstance(err, SweepStopped) else 130
        return SweepStopped(self.missing(), code)

    def result(self) -> SweepResult:
        """Every record of the plan in plan order, ``duplicate_of`` recomputed in plan order."""
        sweep = self.sweep
        by_key = {(r["model"], r["revision"]): r for r in self.received.values()}
        records = []
        seen: dict[str, tuple[str, str]] = {}
        for item in sweep.planned:
            key = _key(item)
            record = sweep.done.get(key) or by_key[key]
            fingerprint = record.get("fingerprint")
            if fingerprint and key in by_key:
                original = seen.setdefault(fingerprint, key)
                duplicate = None
                if original != key:
                    duplicate = original[1] if original[0] == key[0] else "@".join(original)
                if record.get("duplicate_of") != duplicate:
                    record["duplicate_of"] = duplicate
                    self.results.append(record)
            elif fingerprint:
                seen.setdefault(fingerprint, key)
            records.append(record)
        return _result(list(self.received.values()), records, skipped=len(sweep.done))


class _LeadObserver(Observer):
    """Process 0's own progress: forwarded to the display, with a look for handed-over
    records after each step."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer
        self.own = ""
        self.total = 0
        self.done = 0

    def loading(self, checkpoint: Checkpoint) -> None:
        self.own = f"loading {_name(checkpoint)}"
        self.writer.inner.loading(checkpoint)
        self.writer.poll()

    def measuring(self, checkpoint: Checkpoint, batches: int) -> None:
        self.total, self.done = batches, 0
        self.own = f"{_name(checkpoint)} 0/{batches}"
        self.writer.inner.measuring(checkpoint, batches)
        self.writer.poll()

    def batch_done(self, checkpoint: Checkpoint, index: int) -> None:
        self.done += 1
        self.own = f"{_name(checkpoint)} {self.done}/{self.total}"
        self.writer.inner.batch_done(checkpoint, index)
        self.writer.poll()

    def preparing(self, what: str) -> None:
        self.writer.inner.preparing(what)


def _or_stopped(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, with a lost peer or store (a process died, the launcher is ending
    the run) raised as an interruption, not as a failure of the checkpoint being measured."""
    try:
        return call(*args)
    except RuntimeError as err:  # torch.distributed's errors (DistError, gloo) are RuntimeErrors
        raise SweepStopped([], 1) from err


def _result(measured: list[dict[str, Any]], records: list[dict[str, Any]], skipped: int = 0) -> SweepResult:
    return SweepResult(
        records=records or measured,
        measured=len(measured),
        skipped=skipped,
        failed=sum(r.get("status") != "ok" for r in measured),
    )


def _name(checkpoint: Checkpoint) -> str:
    return f"{checkpoint.model} @ {checkpoint.revision}"


def _refuse_differences(gathered: list[tuple[tuple[str, str] | None, dict[str, Any]]]) -> None:
    """Raise (the same on every process) if a process failed its checks or was launched
    with settings that differ from process 0's."""
    for rank, (error, _) in enumerate(gathered):
        if error is not None:
            message, hint = error
            prefix = f"process {rank}: " if len(gathered) > 1 else ""
            raise SharedError(prefix + message, hint)
    reference = gathered[0][1]
    for rank, (_, summary) in enumerate(gathered[1:], 1):
        if settings_hash(summary) == settings_hash(reference):
            continue
        field_name = next(k for k in reference if reference[k] != summary.get(k))
        raise SharedError(
            f"the processes were launched with different settings: {field_name} is "
            f"{_short(reference[field_name])} in process 0 and {_short(summary.get(field_name))} "
            f"in process {rank}; nothing was written",
            "launch every process with the same command line, recipe and files",
        )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _weights_bytes(item: _Planned) -> int:
    """Bytes of the checkpoint's weight files on disk (0 when not known before loading)."""
    folder: Path | None = item.checkpoint.path
    if folder is None and item.commit is not None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(item.checkpoint.model, "config.json", revision=item.commit)
        folder = Path(found).parent if isinstance(found, str) else None
    if folder is None or not folder.is_dir():
        return 0
    return sum(
        f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin", ".pt", ".pth")
    )


@contextmanager
def _stopped_by_sigterm(active: bool) -> Iterator[None]:
    """On process 0, turn the launcher's SIGTERM (sent when another process died) into an
    interruption, so what was handed over is written and what is missing is named."""
    if not active:
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        if _terminated.signum is None:  # once: a second signal must not cut the clean-up
            _terminated.signum = signum
            raise SweepStopped([], 128 + signum)

    _terminated.signum = None
    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Terminated:
    """The signal that asked process 0 to stop. The handler raises at once, but an
    exception raised inside a finaliser is dropped by Python, so ``_Writer.poll`` checks
    this too."""

    signum: int | None = None


_terminated = _Terminated()


__all__ = [
    "BatchShare",
    "Launch",
    "SharedError",
    "Parallel",
    "Split",
    "SweepStopped",
    "Team",
    "gpu_assignment",
    "largest_first",
    "launched",
    "process_rank",
    "sweep_across_processes",
]
