"""One checkpoint → one record: load, fingerprint, measure the subset, aggregate.

``measure_checkpoint`` is the same for every executor. The subset is measured as one set
(``measurement`` "whole", the default) or batch by batch (``data.batch_size`` set:
"batches"), :class:`specprobe.config.Measuring`. Which sequences or batches this process
measures, and how the measurements of several processes are put together, is a
:class:`BatchSplit` (here :class:`AllBatches`; a launch's share in
:mod:`specprobe.pipeline.processes`); where the model is loaded is the ``load`` callable.
A checkpoint that fails (NaN outputs, out of memory at micro-batch 1) gets a failed record.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from specprobe.choices import Device, Task
from specprobe.config import Measuring, ProbeSpec, Settings
from specprobe.core.measure import Measurement, measure
from specprobe.core.memory import MemoryPlan
from specprobe.core.population import Reduction
from specprobe.core.task_adapters import adapter_for, task_of
from specprobe.errors import SpecprobeError
from specprobe.models.data import TokenSubset
from specprobe.models.fingerprint import fingerprint_checkpoint, fingerprint_tokenizer
from specprobe.models.hub import Checkpoint
from specprobe.models.loading import IncompleteCheckpointError, LoadedCheckpoint, load_checkpoint
from specprobe.models.task_data import build_task_subset
from specprobe.pipeline.aggregate import aggregate
from specprobe.pipeline.plan import (
    Observer,
    PlannedCheckpoint,
    Subsets,
    SweepPlan,
    position_of,
    train_batch_sequences,
)
from specprobe.pipeline.writer import stamp
from specprobe.store.records import Record

Loader = Callable[[Checkpoint], LoadedCheckpoint]
"""Loads a checkpoint's model and tokenizer (where: the executor's choice)."""


class SharedReduction(Reduction, Protocol):
    """A :class:`~specprobe.core.population.Reduction` across processes that says whether it
    has entered a collective (after which a retry would put this process out of step)."""

    @property
    def started(self) -> bool: ...


class BatchSplit(Protocol):
    """Which of a checkpoint's batches (``batches``) or sequences (``whole``) this process
    measures, and how the measurements of all processes that share the checkpoint are put
    together."""

    lead: bool
    """Whether this process computes what is computed once (the eigenpairs)."""

    def indices(self, batches: int) -> range:
        """The batch indices this process measures."""
        ...

    def combine(self, own: dict[int, Measurement], error: BaseException | None) -> list[Measurement]:
        """Every batch's measurement in batch order; raises if a process failed."""
        ...

    def sequences(self, count: int) -> tuple[range, SharedReduction | None]:
        """The sequences of the whole-subset measurement this process measures, and the
        reduction that makes its measurement the whole set's (None: this process has all)."""
        ...

    def finish(self, own: Measurement | None, error: BaseException | None) -> Measurement:
        """The whole-subset measurement; raises if a process failed."""
        ...

    def settle(self, error: str | None) -> None:
        """End the checkpoint: join the exchange with ``error`` if it was never reached."""
        ...


class AllBatches:
    """One process measures every batch, or every sequence."""

    lead = True

    def indices(self, batches: int) -> range:
        return range(batches)

    def combine(self, own: dict[int, Measurement], error: BaseException | None) -> list[Measurement]:
        if error is not None:
            raise error
        return [own[index] for index in sorted(own)]

    def sequences(self, count: int) -> tuple[range, SharedReduction | None]:
        return range(count), None

    def finish(self, own: Measurement | None, error: BaseException | None) -> Measurement:
        if error is not None:
            raise error
        if own is None:
            raise SpecprobeError("expected a measurement or an error, found neither (a bug)")
        return own

    def settle(self, error: str | None) -> None:
        """Nothing to exchange."""


def loader(probe: ProbeSpec, gpus: tuple[int, ...] | None = None, task: Task = Task.AUTO) -> Loader:
    """Load with the probe's device, dtype and trust setting (onto ``gpus`` when given),
    with the head of ``task`` (``auto``: the one its config names)."""

    def load(checkpoint: Checkpoint) -> LoadedCheckpoint:
        return load_checkpoint(
            checkpoint,
            device=probe.device,
            dtype=probe.dtype,
            trust_remote_code=probe.trust_remote_code,
            gpus=gpus,
            task=task,
        )

    return load


def run_label(label: str | None, model: str, run: str) -> str:
    """The label of a checkpoint's records: the user's label, else the run's name (a run of
    separate repositories is named once); a sibling run of a stage (``model stage2-…``)
    keeps the stage beside the user's label, so that it never reads as the main run."""
    if label is None:
        return run
    suffix = run.removeprefix(f"{model} ") if run.startswith(f"{model} ") else ""
    return f"{label} {suffix}" if suffix else label


def describe(err: BaseException) -> str:
    """The text of a failed checkpoint's ``error``: a SpecprobeError's message and hint, or
    the exception's type and message."""
    if isinstance(err, SpecprobeError):
        return f"{err.message} (hint: {err.hint})" if err.hint else err.message
    return f"{type(err).__name__}: {err}"


def measure_checkpoint(
    item: PlannedCheckpoint,
    plan: SweepPlan,
    subsets: Subsets,
    observer: Observer,
    *,
    split: BatchSplit | None = None,
    load: Loader | None = None,
) -> Record:
    """The stamped record of one checkpoint (ok, or failed with the error); its
    ``duplicate_of`` is the writer's to settle. ``split`` (default: every batch here)
    decides which batches this process measures; ``load`` (default: :func:`loader`) loads it.
    KeyboardInterrupt and IncompleteCheckpointError propagate (the sweep stops)."""
    split = split or AllBatches()
    ckpt, probe = item.checkpoint, plan.probe
    position = position_of(item)
    record = record_head(
        ckpt.model, run_label(item.spec.label, ckpt.model, position.run), ckpt.revision, commit=item.commit
    )
    if item.model_path is not None:
        record["model_path"] = item.model_path
    if plan.data.task is not Task.AUTO:
        record["task"] = plan.data.task.value
    record.update(position.record_fields())  # type: ignore[typeddict-item]
    record["train_batch_sequences"] = train_batch_sequences(item)
    if probe.device is not Device.cpu and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    settle: BatchSplit | None = split
    try:
        observer.loading(ckpt)
        _measure_loaded(
            (load or loader(probe, task=plan.data.task))(ckpt), record, plan, subsets, observer, split
        )
        record["status"] = "ok"
    except (KeyboardInterrupt, IncompleteCheckpointError):
        # An interruption, or bad input (an incomplete checkpoint is not a failed
        # measurement: the sweep stops, exit 2); no exchange with other processes on the way out.
        settle = None
        raise
    except Exception as err:  # a failure in one checkpoint must not lose the others
        record["error"] = describe(err)
    finally:
        if settle is not None:
            settle.settle(record["error"])  # a process that failed before the exchange joins it
        record["peak_memory_bytes"] = _peak_memory(probe.device)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return stamp(record, plan.settings)


def _measure_loaded(
    loaded: LoadedCheckpoint,
    record: Record,
    plan: SweepPlan,
    subsets: Subsets,
    observer: Observer,
    split: BatchSplit,
) -> None:
    """Fill ``record`` from the loaded checkpoint: fingerprints, the measurement of its
    batches, the eigenpairs (``probe.eigen``), the timings."""
    ckpt = loaded.checkpoint
    start = time.perf_counter()
    fingerprint = fingerprint_checkpoint(loaded.model)  # weights and config: duplicate_of compares it
    fingerprint_s = time.perf_counter() - start
    record.update({"fingerprint": fingerprint, "num_params": loaded.num_params, "task": loaded.task.value})
    tok_fp = fingerprint_tokenizer(loaded.tokenizer)
    if tok_fp not in subsets:  # a revision whose tokenizer differs from its model's first
        subsets[tok_fp] = build_task_subset(plan.data, loaded.task, loaded.tokenizer, tok_fp)
    subset = subsets[tok_fp]
    record.update({"dataset_fingerprint": subset.fingerprint, "tokenizer_fingerprint": tok_fp})
    measuring = plan.data.measuring
    start = time.perf_counter()
    if measuring is Measuring.WHOLE:
        first = subset.batch()  # the eigenpairs are those of the measured set
        measurements = [_measure_whole(loaded, subset, plan.probe, observer, split)]
    else:
        batches = subset.batch_inputs(plan.data.measured_together)
        first = batches[0]
        measurements = _measure_batches(loaded, batches, plan.probe, observer, split)
    record.update(aggregate(measurements, measuring, record.get("train_batch_sequences")))
    if plan.probe.eigen and split.lead:
        observer.preparing(f"eigenpairs of {ckpt.name}")
        record["spectrum"] = _spectrum(loaded, first, measurements[0], plan.probe)
        record["eigen_top"] = record["spectrum"]["top_eigenvalues"]
    record["timings"] = {
        "load_s": loaded.load_time_s,
        "fingerprint_s": fingerprint_s,
        "measure_s": time.perf_counter() - start,
    }


def _on(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device) for name, value in batch.items()}


def _measure_whole(
    loaded: LoadedCheckpoint,
    subset: TokenSubset,
    probe: ProbeSpec,
    observer: Observer,
    split: BatchSplit,
) -> Measurement:
    """The one measurement of the whole ``subset``: this process's share of the
    sequences through the split's reduction (every sequence, in one process), so the
    numbers are those of the whole set whatever the processes or the micro-batch (the
    masks and spans of the set were drawn before it was shared out)."""
    ckpt = loaded.checkpoint
    observer.measuring(ckpt, 1)
    try:
        share, reduction = split.sequences(subset.num_samples)
        batch = _on(subset.batch(share.start, share.stop), loaded.input_device)
        own = measure_with_retry(
            loaded.model, batch, probe, 0, reduce=reduction, task=loaded.task, plan=_told(observer, ckpt)
        )
    except KeyboardInterrupt:
        raise
    except Exception as err:
        return split.finish(None, err)
    result = split.finish(own, None)
    observer.batch_done(ckpt, 0)
    return result


def _measure_batches(
    loaded: LoadedCheckpoint,
    batches: Sequence[dict[str, torch.Tensor]],
    probe: ProbeSpec,
    observer: Observer,
    split: BatchSplit,
) -> list[Measurement]:
    """Every batch's measurement, in batch order: this process's share, then ``split``
    puts the shares together (or raises the first process's error)."""
    ckpt = loaded.checkpoint
    indices = split.indices(len(batches))
    observer.measuring(ckpt, len(indices))
    own: dict[int, Measurement] = {}
    try:
        for index in indices:
            batch = _on(batches[index], loaded.input_device)
            told = _told(observer, ckpt) if index == indices[0] else None  # one plan per checkpoint
            own[index] = measure_with_retry(loaded.model, batch, probe, index, task=loaded.task, plan=told)
            observer.batch_done(ckpt, index)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        return split.combine(own, err)
    return split.combine(own, None)


def _told(observer: Observer, checkpoint: Checkpoint) -> Callable[[MemoryPlan], None]:
    """measure's ``plan`` callback that tells ``observer`` the checkpoint's memory plan."""
    return lambda plan: observer.memory_plan(checkpoint, plan)


def measure_with(
    model: torch.nn.Module,
    batch: Any,
    probe: ProbeSpec,
    *,
    seed: int | None = None,
    micro_batch_size: int | None = None,
    adapter: Any = None,
    reduce: Reduction | None = None,
    plan: Callable[[MemoryPlan], None] | None = None,
) -> Measurement:
    """``specprobe.measure`` with the probe settings (``seed`` and ``micro_batch_size``
    override the probe's; ``reduce`` shares one set of sequences across processes; ``plan``
    is told measure's memory plan before its first full pass). Cost: one forward and
    (1 + probes) backward passes per micro-batch."""
    return measure(
        model,
        batch,
        estimator=probe.estimator,
        probes=probe.probes,
        seed=probe.seed if seed is None else seed,
        adapter=adapter,
        params=probe.params,
        micro_batch_size=micro_batch_size if micro_batch_size is not None else probe.micro_batch_size,
        groups=probe.groups,
        reduce=reduce,
        plan=plan,
    )


def measure_with_retry(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    probe: ProbeSpec,
    index: int,
    *,
    reduce: SharedReduction | None = None,
    task: Task = Task.CAUSAL_LM,
    plan: Callable[[MemoryPlan], None] | None = None,
) -> Measurement:
    """:func:`measure_with` on batch ``index`` of ``task`` (probes seeded by the probe's seed and the
    index, so a batch's numbers do not depend on which process measures it; the whole
    subset is index 0), halving the micro-batch on out-of-memory until one sequence per
    pass — not once a shared measurement (``reduce``) has entered a collective, where a
    retry would put this process out of step with the others."""
    micro = probe.micro_batch_size
    seed = int(np.random.SeedSequence([probe.seed, index]).generate_state(1)[0])
    adapter = adapter_for(task)
    while True:
        try:
            return measure_with(
                model,
                batch,
                probe,
                seed=seed,
                micro_batch_size=micro,
                reduce=reduce,
                adapter=adapter,
                plan=plan,
            )
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
            if not _is_oom(err) or (reduce is not None and reduce.started):
                raise
            size = micro or adapter.num_samples(batch)
            if size <= 1:
                raise SpecprobeError(
                    "out of memory even with one sequence per forward pass",
                    "use --dtype bfloat16, a shorter --seq-len, --params to measure part of the model, "
                    "or --device auto to spread the model over GPUs",
                ) from None
            micro = size // 2
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _spectrum(
    loaded: LoadedCheckpoint, batch: dict[str, torch.Tensor], first: Measurement, probe: ProbeSpec
) -> dict[str, Any]:
    """The spectral summaries of the first batch, or of the whole subset when it is
    measured as one set (``spectrum_batch`` 0 in the record). Cost: each Lanczos step
    is one pass over ``ids``."""
    from specprobe.linalg.spectrum import EigenMethod
    from specprobe.linalg.summary import spectral_record

    summary = spectral_record(
        loaded.model,
        _on(batch, loaded.input_device),
        k=probe.eigen,
        adapter=adapter_for(loaded.task),
        chi_net=first.chi_net,
        chi_pos=first.spectral_position,
        density=probe.density,
        method=EigenMethod.DENSE if probe.exact else EigenMethod.LANCZOS,
        params=probe.params,
        micro_batch_size=probe.micro_batch_size,
        trace_probes=max(probe.probes, 2),
        seed=probe.seed,
    )
    summary["spectrum_batch"] = 0
    return summary


def measured_record(
    model: torch.nn.Module,
    measurements: Sequence[Measurement],
    settings: Settings,
    *,
    name: str,
    label: str,
    revision: str,
    step: int | None = None,
    tokens_seen: int | None = None,
    dataset_fingerprint: str | None = None,
    extra: Record | None = None,
    train_batch_sequences: int | None = None,
) -> Record:
    """A finished ``ok`` record in the format a sweep writes, for a model measured in
    memory (library probes, ONNX graphs): no commit, no duplicate check across a run.
    One measurement is the batch measured as one set (``measurement`` "whole"), several
    are averaged ("batches"). ``extra`` are fields added after the measurement's (an ONNX
    graph's ``onnx_check``); ``train_batch_sequences``: the training batch, when known."""
    record = record_head(name, label, revision, step=step, tokens_seen=tokens_seen)
    task = task_of(measurements[0].adapter) if measurements else None
    if task is not None:  # the adapter of a task (not a generic classifier or regressor)
        record["task"] = task.value
    record.update(
        {
            "fingerprint": fingerprint_checkpoint(model),
            "num_params": sum(p.numel() for p in model.parameters()),
            "dataset_fingerprint": dataset_fingerprint,
            "status": "ok",
        }
    )
    measuring = Measuring.WHOLE if len(measurements) == 1 else Measuring.BATCHES
    record.update(aggregate(measurements, measuring, train_batch_sequences))
    record["timings"] = {"measure_s": sum(m.time_s for m in measurements)}
    record.update(extra or {})
    return stamp(record, settings)


def record_head(
    model: str,
    label: str,
    revision: str,
    *,
    commit: str | None = None,
    step: int | None = None,
    tokens_seen: int | None = None,
) -> Record:
    """The fields every record starts with, in the order records show them; ``failed``
    with no error until the measurement fills it in."""
    return {
        "model": model,
        "label": label,
        "revision": revision,
        "commit": commit,
        "step": step,
        "tokens_seen": tokens_seen,
        "fingerprint": None,
        "duplicate_of": None,
        "status": "failed",
        "error": None,
    }


_ALLOCATION_FAILED = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "could not create a primitive",  # oneDNN, when its workspace cannot be allocated (ulimit -v)
    "bad_alloc",
)


def _is_oom(err: BaseException) -> bool:
    """Whether ``err`` is an allocation that failed (then a smaller micro-batch may fit)."""
    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError | MemoryError) or any(s in text for s in _ALLOCATION_FAILED)


def _peak_memory(device: Device) -> int:
    """Peak GPU memory of this checkpoint, or the process's peak resident memory on CPU."""
    if device is not Device.cpu and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
