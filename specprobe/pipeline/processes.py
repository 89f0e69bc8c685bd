"""The processes of a launch (``accelerate launch``, ``torchrun``): where this process stands,
the process group it talks through, its share of a checkpoint's batches, and how a launch
stops together.

A launcher starts the same command in every process and sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK`` and the rendezvous address. The processes talk only through
torch.distributed: the process group (gloo: the messages are small Python objects, so no
GPU memory goes to communicators) and the key-value store the launcher set up with it.
The sweep across them is :mod:`specprobe.pipeline.launched`.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from specprobe.choices import Split
from specprobe.config import settings_hash
from specprobe.core.measure import Measurement
from specprobe.errors import SpecprobeError
from specprobe.pipeline.checkpoint import describe

if TYPE_CHECKING:
    from torch import Tensor

TIMEOUT = timedelta(hours=6)
"""How long a collective waits for the slowest process (a shared checkpoint's batches)."""

SUM_BUCKET = 2**23
"""Most elements of the gradient sum in one all-reduce (64 MiB in float64)."""

Piece = tuple[int, int, int]
"""Elements ``start:stop`` of the flattened tensor ``index``."""


def buckets(sizes: Sequence[int], limit: int) -> Iterator[list[Piece]]:
    """The elements of tensors of ``sizes`` elements, in order, as groups of pieces of at
    most ``limit`` elements in all (a tensor larger than ``limit`` is cut into pieces)."""
    group: list[Piece] = []
    room = limit
    for index, n in enumerate(sizes):
        start = 0
        while start < n:
            take = min(n - start, room)
            group.append((index, start, start + take))
            start, room = start + take, room - take
            if room == 0:
                yield group
                group, room = [], limit
    if group:
        yield group


def gather_pieces(tensors: Sequence[Tensor], bucket: Sequence[Piece]) -> Tensor:
    """The bucket's pieces of ``tensors`` as one float64 vector on the host."""
    import torch

    return torch.cat([tensors[i].detach().reshape(-1)[a:b].to("cpu", torch.float64) for i, a, b in bucket])


def put_pieces(tensors: Sequence[Tensor], bucket: Sequence[Piece], flat: Tensor) -> None:
    """Write ``flat`` (as :func:`gather_pieces` laid it out) back into ``tensors``' pieces."""
    begin = 0
    for index, start, stop in bucket:
        piece = tensors[index].detach().view(-1)[start:stop]
        piece.copy_(flat[begin : begin + stop - start])
        begin += stop - start


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
    """This process's share of a checkpoint and the exchange of the measurements.

    Batches (``measurement`` "batches"): each process measures every W-th batch and
    ``combine`` gathers the measurements. The whole subset ("whole"): each process measures
    a contiguous share of the sequences through a :class:`TeamReduction`, whose collectives
    make the one measurement of the whole set on every process, and ``finish`` ends it.

    Each process of the group reaches ``combine``/``finish`` (or, when it failed before,
    ``settle``) once per checkpoint, so the collectives stay in step: every exchange starts
    with the same small all-gather of (payload, error), so a process that failed joins the
    others' next exchange with its error and all raise it together.
    """

    def __init__(self, team: Team) -> None:
        self.team = team
        self.lead = team.rank == 0
        self._exchanged = False
        self._reduction: TeamReduction | None = None

    def indices(self, batches: int) -> range:
        self._exchanged = False
        return range(self.team.rank, batches, self.team.world_size)

    def combine(self, own: dict[int, Measurement], error: BaseException | None) -> list[Measurement]:
        """All processes' measurements in batch order; raises (on every process) if one failed."""
        self._exchanged = True
        shares = or_stopped(self.team.all_gather, (own, None if error is None else describe(error)))
        _raise_first(shares)
        merged: dict[int, Measurement] = {}
        for part, _ in shares:
            merged.update(part)
        return [merged[index] for index in sorted(merged)]

    def sequences(self, count: int) -> tuple[range, TeamReduction | None]:
        """This process's contiguous share of ``count`` sequences (rank r: sequences
        r·count//W to (r+1)·count//W) and the reduction its measurement goes through."""
        world, rank = self.team.world_size, self.team.rank
        if count < world:
            raise SpecprobeError(
                f"--process-split batches shares the {count} sequences of the measurement among {world} "
                f"processes, found fewer sequences than processes",
                f"use --num-sequences {world} or more, or fewer processes",
            )
        share = range(rank * count // world, (rank + 1) * count // world)
        self._exchanged = False
        self._reduction = TeamReduction(self, share.start)
        return share, self._reduction

    def finish(self, own: Measurement | None, error: BaseException | None) -> Measurement:
        """The whole-subset measurement, equal on every process; raises (on every process) if
        one failed (the others learn it at their next exchange)."""
        reduction, self._reduction = self._reduction, None
        if error is not None and reduction is not None and reduction.failed:
            raise error  # an exchange saw the failure and every process raised it there
        self.exchange(None, error)
        if error is not None:
            raise error
        if own is None:
            raise SpecprobeError("expected a measurement or an error, found neither (a bug)")
        return own

    def exchange(self, payload: Any, error: BaseException | None) -> list[Any]:
        """Every process's ``payload`` (an all-gather); raises the first process's error on
        every process."""
        self._exchanged = True
        shares = or_stopped(self.team.all_gather, (payload, None if error is None else describe(error)))
        _raise_first(shares)
        return [part for part, _ in shares]

    def settle(self, error: str | None) -> None:
        """End the checkpoint: join the exchange with ``error`` if this process never
        reached it (the same all-gather as :meth:`combine` and :meth:`exchange`)."""
        if not self._exchanged:
            or_stopped(self.team.all_gather, ({}, error or "failed before measuring"))
        self._exchanged = False
        self._reduction = None


def _raise_first(shares: list[tuple[Any, str | None]]) -> None:
    """Raise the first process's error of an exchange (the same on every process)."""
    failures = [(rank, err) for rank, (_, err) in enumerate(shares) if err is not None]
    if failures:
        rank, err = failures[0]
        raise SpecprobeError(f"process {rank}: {err}")


class TeamReduction:
    """``specprobe.core.population.Reduction`` over torch.distributed: one measurement of a
    set of sequences split across the processes of a team, with the numbers of one process.

    Each collective is preceded by an exchange (:meth:`BatchShare.exchange`), so a process
    that failed in between makes every process raise instead of waiting in a collective.
    Tensors are summed in float64 on the CPU (gloo; the P-float gradient sum once per
    measurement), so the sum of the shares equals one process's to rounding (relative 1e-15).
    """

    def __init__(self, share: BatchShare, offset: int) -> None:
        self._share = share
        self._offset = offset
        self.failed = False
        """Whether an exchange of this measurement saw a process fail (and raised it here)."""
        self.started = False
        """Whether a collective was entered: a retry (smaller micro-batch after out of
        memory) would put this process out of step, so it is not tried after this."""

    @property
    def offset(self) -> int:
        return self._offset

    def _ready(self) -> None:
        self.started = True
        try:
            self._share.exchange(None, None)
        except SpecprobeError:
            self.failed = True
            raise

    def sum_(self, tensors: list[Tensor]) -> None:
        """All-reduce (sum) ``tensors`` in place, through float64 buffers on the host of at
        most :data:`SUM_BUCKET` elements each (a bucket holds whole small tensors, or a
        piece of a large one): the sum is exact to float64 whatever the tensors' device and
        dtype, and the extra memory is one bucket, never a copy of V (P floats: 48 GB at
        12B in float32, twice that in float64)."""
        import torch.distributed as dist

        self._ready()
        for bucket in buckets([t.numel() for t in tensors], SUM_BUCKET):
            flat = gather_pieces(tensors, bucket)
            or_stopped(dist.all_reduce, flat)
            put_pieces(tensors, bucket, flat)

    def gather(self, array: np.ndarray) -> np.ndarray:
        """Every process's per-sequence rows, concatenated in rank (= sequence) order."""
        self._ready()
        parts = or_stopped(self._share.team.all_gather, np.asarray(array))
        return np.concatenate(parts, axis=0)

    def sum_scalars(self, values: np.ndarray) -> np.ndarray:
        """The elementwise float64 sum across processes (summed in rank order: the same on
        every process)."""
        self._ready()
        parts = or_stopped(self._share.team.all_gather, np.asarray(values, dtype=np.float64))
        return np.sum(np.stack(parts), axis=0)


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
    """The sweep was stopped (Ctrl-C, or the launcher ending the run after a process
    died); the records written are kept and ``missing`` were not measured. ``saved`` is
    the number of finished records kept in the run folder ``directory`` (where counted:
    :func:`specprobe.pipeline.sweep.sweep_into`)."""

    def __init__(
        self,
        missing: Sequence[str],
        exit_code: int,
        saved: int | None = None,
        directory: Path | None = None,
    ) -> None:
        super().__init__(f"{len(missing)} checkpoint(s) not measured")
        self.missing = list(missing)
        self.exit_code = exit_code
        self.saved = saved
        self.directory = directory


def or_stopped(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, with a lost peer or store (a process died, the launcher is ending
    the run) raised as an interruption, not as a failure of the checkpoint being measured."""
    try:
        return call(*args)
    except RuntimeError as err:  # torch.distributed's errors (DistError, gloo) are RuntimeErrors
        raise SweepStopped([], 1) from err


def refuse_differences(gathered: list[tuple[tuple[str, str] | None, dict[str, Any]]]) -> None:
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
        where, mine, theirs = first_difference(reference, summary)
        raise SharedError(
            f"the processes were launched with different settings: {where} is "
            f"{_short(mine)} in process 0 and {_short(theirs)} in process {rank}; nothing was written",
            "launch every process with the same command line, recipe and files",
        )


_MISSING = "(absent)"


def first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any]:
    """The first place two JSON-like values differ: its dotted path (``settings.probe.probes``,
    ``checkpoints[2]``) and the two values there, so a message shows the setting that
    differs, not two long truncated strings that look alike."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if a.get(key, _MISSING) != b.get(key, _MISSING):
                return first_difference(
                    a.get(key, _MISSING), b.get(key, _MISSING), f"{path}.{key}" if path else str(key)
                )
    elif isinstance(a, list) and isinstance(b, list):
        for index in range(max(len(a), len(b))):
            left = a[index] if index < len(a) else _MISSING
            right = b[index] if index < len(b) else _MISSING
            if left != right:
                return first_difference(left, right, f"{path}[{index}]")
    return path or "the settings", a, b


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


@contextmanager
def stopped_by_sigterm(active: bool) -> Iterator[None]:
    """On process 0, turn the launcher's SIGTERM (sent when another process died) into an
    interruption, so what was handed over is written and what is missing is named."""
    if not active:
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        if terminated.signum is None:  # once: a second signal must not cut the clean-up
            terminated.signum = signum
            raise SweepStopped([], 128 + signum)

    terminated.signum = None
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


terminated = _Terminated()


__all__ = [
    "BatchShare",
    "Launch",
    "Parallel",
    "SharedError",
    "Split",
    "SweepStopped",
    "Team",
    "TeamReduction",
    "gpu_assignment",
    "largest_first",
    "launched",
    "or_stopped",
    "process_rank",
    "first_difference",
    "refuse_differences",
    "stopped_by_sigterm",
]
