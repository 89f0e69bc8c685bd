"""A sweep: every (model, revision) of a plan measured on the same token subset.

``run_sweep`` is the one code path behind ``specprobe analyze`` (and recipes): it checks
everything that can be checked cheaply first (checkpoints exist, revisions resolve, the
models are causal LMs, the data is there and long enough), writes nothing until then, and
afterwards writes each checkpoint's record the moment it is finished. A checkpoint that
fails (NaN outputs, out of memory at micro-batch 1) is recorded as failed and the sweep
goes on.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from specprobe.choices import Device, DType
from specprobe.core.measure import Estimator, Measurement, measure
from specprobe.errors import SpecprobeError
from specprobe.models.data import DataSpec, TokenSubset, build_subset
from specprobe.models.fingerprint import fingerprint_tokenizer, fingerprint_weights
from specprobe.models.hub import Checkpoint, find_checkpoints, resolve_commit
from specprobe.models.loading import (
    IncompleteCheckpointError,
    LoadedCheckpoint,
    inspect_checkpoint,
    load_checkpoint,
)
from specprobe.store.folder import check_run_folder
from specprobe.store.results import ResultStore, settings_hash

if TYPE_CHECKING:
    from specprobe.pipeline.distributed import BatchShare, Parallel

KNOWN_TOKENS_PER_STEP = {"EleutherAI/pythia-": 2_097_152}
"""Tokens per optimizer step of known families: Pythia's batch is 1024 sequences × 2048 tokens."""

METADATA_FILE = "specprobe.json"
"""Optional metadata in a local training directory or checkpoint, e.g. {"tokens_per_step": 4096}."""

AGGREGATED = ("loss", "grad_norm_sq", "chi_loss", "chi_net", "spectral_position", "normalized_position")


MINIMUMS: dict[str, int] = {
    "num_sequences": 1,
    "seq_len": 2,
    "batch_size": 1,
    "seed": 0,
    "probes": 2,
    "micro_batch_size": 1,
    "eigen": 0,
    "tokens_per_step": 1,
    "params": 1,
}
"""The smallest value of each integer setting: the command line's limits, which recipes and
library plans are checked against too."""

MAXIMUMS: dict[str, int] = {"probes": 10_000, "eigen": 1_000}
"""The largest, where a larger value would run for hours rather than fail."""


def check_range(name: str, value: Any, where: str | None = None) -> None:
    """Raise SpecprobeError unless ``value`` is None or an integer within ``MINIMUMS[name]``
    and ``MAXIMUMS[name]`` (when there is one); ``where`` names it (default: its flag)."""
    if value is None:
        return
    low, high = MINIMUMS[name], MAXIMUMS.get(name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        flag = "--" + name.replace("_", "-")
        bounds = f">= {low}" if high is None else f"from {low} to {high:,}"
        raise SpecprobeError(
            f"{where or flag}: expected an integer {bounds}, found {value!r}",
            f"give {where or flag} a value {bounds.replace('>=', 'of')}"
            + (" or more" if high is None else ""),
        )


def check_groups(groups: Any, where: str = "--groups") -> None:
    """Raise SpecprobeError unless ``groups`` is None, "auto" or {name: [glob, ...]}."""
    if groups is None or groups == "auto":
        return
    ok = (
        isinstance(groups, dict)
        and bool(groups)
        and all(
            isinstance(k, str)
            and isinstance(v, list | tuple)
            and v
            and all(isinstance(g, str) and g for g in v)
            for k, v in groups.items()
        )
    )
    if not ok:
        raise SpecprobeError(
            f"{where}: expected 'auto' or a mapping of group names to lists of parameter globs, found {groups!r}",
            "e.g. groups: auto, or groups: {attention: ['*.attention.*'], mlp: ['*.mlp.*']}",
        )


@dataclass(frozen=True)
class ProbeSpec:
    """How each checkpoint is measured."""

    estimator: Estimator = Estimator.HUTCHINSON_PER_SAMPLE
    probes: int = 32
    seed: int = 0
    params: tuple[str, ...] | None = None
    micro_batch_size: int | None = None
    device: Device = Device.cpu
    dtype: DType = DType.float32
    trust_remote_code: bool = False
    groups: str | dict[str, list[str]] | None = None
    """Split χ_net and ‖∇L‖² by parameter group: "auto" or {name: [globs]} (see measure)."""
    eigen: int = 0
    """Top eigenpairs of Θ on the first batch (0: none); adds the spectral summaries."""
    density: bool = False
    """With ``eigen``: also a stochastic-Lanczos-quadrature density (effective rank, the
    position index beyond the top K)."""
    exact: bool = False
    """With ``eigen``: the dense eigensolver (Θ built from D products; tiny D only)."""

    def validate(self) -> None:
        """Raise SpecprobeError naming the first value out of range (the command line's limits)."""
        for name in ("probes", "seed", "micro_batch_size", "eigen"):
            check_range(name, getattr(self, name))
        check_groups(self.groups)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("estimator", "device", "dtype"):
            out[key] = out[key].value
        out["params"] = list(self.params) if self.params else None
        return out


@dataclass(frozen=True)
class ModelSpec:
    """One model of a sweep: a hub id or local path, its revisions, and what is known of it."""

    id: str
    revisions: tuple[str, ...] | None = None
    label: str | None = None
    tokens_per_step: int | None = None


@dataclass(frozen=True)
class SweepPlan:
    models: tuple[ModelSpec, ...]
    data: DataSpec = field(default_factory=DataSpec)
    probe: ProbeSpec = field(default_factory=ProbeSpec)

    def settings(self) -> dict[str, Any]:
        """What changes the numbers: the data and the probe settings (not the device)."""
        probe = self.probe.to_dict()
        for key in ("device", "trust_remote_code", "micro_batch_size"):
            probe.pop(key)
        return {"data": self.data.to_dict(), "probe": probe}


class Observer:
    """Progress callbacks of a sweep; each does nothing here. The CLI's Rich display
    (``report.progress.SweepProgress``) overrides them."""

    def planned(self, checkpoints: Sequence[Checkpoint]) -> None:
        """All checkpoints to measure are known (after the checks, before any loading)."""

    def preparing(self, what: str) -> None:
        """A step of the checks before measuring (resolving, tokenising)."""

    def loading(self, checkpoint: Checkpoint) -> None:
        """The checkpoint's weights are being loaded."""

    def measuring(self, checkpoint: Checkpoint, batches: int) -> None:
        """Measurement of ``batches`` batches starts."""

    def batch_done(self, checkpoint: Checkpoint, index: int) -> None:
        """Batch ``index`` is measured."""

    def finished(self, checkpoint: Checkpoint, record: dict[str, Any]) -> None:
        """The checkpoint's record (ok or failed) is written."""

    def skipped(self, checkpoint: Checkpoint, record: dict[str, Any]) -> None:
        """The checkpoint was measured before with the same settings (--resume)."""


@dataclass
class SweepResult:
    records: list[dict[str, Any]]
    """The records of this sweep's checkpoints (resumed ones included), in plan order."""
    measured: int
    skipped: int
    failed: int
    warnings: list[str] = field(default_factory=list)
    """Lines of results.jsonl that were skipped (cut, from a newer version, incomplete)."""


@dataclass
class _Planned:
    spec: ModelSpec
    checkpoint: Checkpoint
    commit: str | None


def _preflight(plan: SweepPlan, observer: Observer) -> tuple[list[_Planned], dict[str, TokenSubset]]:
    """The checks before anything is written: settings, checkpoints, data. Returns the
    checkpoints in plan order and the token subsets by tokenizer fingerprint."""
    plan.data.validate()
    plan.probe.validate()
    for spec in plan.models:
        check_range("tokens_per_step", spec.tokens_per_step)
    planned = _plan_checkpoints(plan, observer)
    return planned, _prepare_data(plan, planned, observer)


def _check_store(store: ResultStore, resume: bool) -> None:
    """What must hold before anything is written into the run folder (read-only)."""
    check_run_folder(store.directory)
    contents = store.read()
    if not resume and (contents.records or contents.skipped):
        raise SpecprobeError(
            f"{store.directory} already holds results",
            "pass --resume to continue that run, or choose another --out directory",
        )
    store.config()  # a corrupt config.json is refused here, not after writing


def _open_run(
    plan: SweepPlan,
    store: ResultStore,
    *,
    resume: bool,
    invocation: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str]]:
    """With the run folder's lock held: check the folder again (another writer may have
    finished while we waited), set a cut last line aside when resuming, add this
    invocation to config.json (with ``extra``, e.g. the world size), and return the
    finished records and the warnings about skipped lines."""
    from specprobe.version import __version__

    _check_store(store, resume)
    settings = plan.settings()
    digest = settings_hash(settings)
    warnings = store.warnings()
    aside = store.set_aside_cut_line() if resume else None
    if aside is not None:
        warnings.append(f"the cut last line of {store.results_path} was moved to {aside}")
    entry = {
        "invocation": invocation or {},
        "settings": settings,
        "settings_hash": digest,
        "models": [asdict(m) for m in plan.models],
        "device": plan.probe.device.value,
        "trust_remote_code": plan.probe.trust_remote_code,
        "micro_batch_size": plan.probe.micro_batch_size,
        "specprobe_version": __version__,
        "started_at": _now(),
        **(extra or {}),
    }
    # config.json keeps every invocation that wrote into this directory (resumes included).
    store.update_config(lambda config: config.setdefault("invocations", []).append(entry))
    return (store.finished(digest) if resume else {}), warnings


def _seen_fingerprints(records: Iterable[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Weight fingerprint -> the first (model, revision) with it, from finished records."""
    seen: dict[str, tuple[str, str]] = {}
    for record in records:
        if record.get("fingerprint"):
            seen.setdefault(record["fingerprint"], (record["model"], record["revision"]))
    return seen


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
    ``specprobe.pipeline.distributed`` (``parallel`` chooses how; it is ignored in one process).
    """
    from specprobe.pipeline import distributed

    if distributed.launched():
        return distributed.sweep_across_processes(
            plan, store, resume=resume, observer=observer, invocation=invocation, parallel=parallel
        )
    observer = observer or Observer()
    _check_store(store, resume)  # cheap, before the slow checks
    planned, subsets = _preflight(plan, observer)
    settings = plan.settings()

    def waiting(holder: str) -> None:
        observer.preparing(f"waiting for {holder} to finish writing {store.directory}")

    with store.open_for_writing(wait=resume, on_wait=waiting):
        done, warnings = _open_run(plan, store, resume=resume, invocation=invocation)
        seen = _seen_fingerprints(done.values())
        records, measured, skipped, failed = [], 0, 0, 0
        observer.planned([p.checkpoint for p in planned])
        for item in planned:
            ckpt = item.checkpoint
            previous = done.get((ckpt.model, ckpt.revision))
            if previous is not None:
                observer.skipped(ckpt, previous)
                records.append(previous)
                skipped += 1
                continue
            record = stamp(_measure_checkpoint(item, plan, subsets, seen, observer), settings)
            store.append(record)
            observer.finished(ckpt, record)
            records.append(record)
            measured += 1
            failed += record["status"] != "ok"
    return SweepResult(records=records, measured=measured, skipped=skipped, failed=failed, warnings=warnings)


def _plan_checkpoints(plan: SweepPlan, observer: Observer) -> list[_Planned]:
    if not plan.models:
        raise SpecprobeError("expected at least one model, found none", "name a hub id or a local directory")
    planned = []
    for spec in plan.models:
        for ckpt in find_checkpoints(spec.id, spec.revisions):
            observer.preparing(f"resolving {ckpt.model} @ {ckpt.revision}")
            commit = resolve_commit(ckpt.model, ckpt.revision) if ckpt.path is None else None
            planned.append(_Planned(spec, ckpt, commit))
    return planned


def _prepare_data(plan: SweepPlan, planned: list[_Planned], observer: Observer) -> dict[str, TokenSubset]:
    """One subset per distinct tokenizer, from the first checkpoint of each model."""
    subsets: dict[str, TokenSubset] = {}
    firsts: dict[str, _Planned] = {}
    for item in planned:
        firsts.setdefault(item.spec.id, item)
    for item in firsts.values():
        observer.preparing(f"checking {item.checkpoint.model}")
        info = inspect_checkpoint(item.checkpoint, item.commit, plan.probe.trust_remote_code)
        if info.max_positions is not None and plan.data.seq_len > info.max_positions:
            raise SpecprobeError(
                f"--seq-len {plan.data.seq_len} exceeds the context of {item.checkpoint.model} "
                f"({info.max_positions} positions)",
                f"use --seq-len {info.max_positions} or less",
            )
        if info.skeleton is not None:
            _check_against_skeleton(plan, item.checkpoint, info.skeleton)
        tok_fp = fingerprint_tokenizer(info.tokenizer)
        if tok_fp not in subsets:
            observer.preparing(f"tokenising {plan.data.dataset}")
            subsets[tok_fp] = build_subset(plan.data, info.tokenizer, tok_fp)
    return subsets


def _check_against_skeleton(plan: SweepPlan, ckpt: Checkpoint, skeleton: torch.nn.Module) -> None:
    """What would fail every checkpoint late, found before loading any weights: parameter
    patterns that match nothing, an exact estimator on more outputs than it affords."""
    from specprobe.core.measure import DEFAULT_MAX_EXACT_OUTPUTS
    from specprobe.core.params import select_parameters

    if plan.probe.params:
        select_parameters(skeleton, plan.probe.params)
    get_head = getattr(skeleton, "get_output_embeddings", None)
    weight = getattr(get_head(), "weight", None) if callable(get_head) else None
    if plan.probe.estimator is Estimator.EXACT and isinstance(weight, torch.Tensor):
        outputs = plan.data.batch_size * (plan.data.seq_len - 1) * weight.shape[0]
        if outputs > DEFAULT_MAX_EXACT_OUTPUTS:
            raise SpecprobeError(
                f"--estimator exact needs one backward pass per output, and a batch of {ckpt.model} has "
                f"D = {plan.data.batch_size} × {plan.data.seq_len - 1} × {weight.shape[0]} = {outputs:,} outputs "
                f"(at most {DEFAULT_MAX_EXACT_OUTPUTS:,})",
                "use --estimator hutchinson, or a smaller --batch-size or --seq-len",
            )


def _measure_checkpoint(
    item: _Planned,
    plan: SweepPlan,
    subsets: dict[str, TokenSubset],
    seen: dict[str, tuple[str, str]],
    observer: Observer,
    *,
    share: BatchShare | None = None,
    gpus: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The record of one checkpoint (ok, or failed with the error). With ``share`` this
    process measures its share of the batches and the shares are exchanged (every process
    of the share calls this for the same checkpoint); ``gpus`` are the GPUs to load onto."""
    ckpt, probe = item.checkpoint, plan.probe
    record: dict[str, Any] = {
        "model": ckpt.model,
        "label": item.spec.label or ckpt.model,
        "revision": ckpt.revision,
        "commit": item.commit,
        "step": ckpt.step,
        "tokens_seen": _tokens_seen(item),
        "fingerprint": None,
        "duplicate_of": None,
        "status": "failed",
        "error": None,
    }
    loaded: LoadedCheckpoint | None = None
    if probe.device is not Device.cpu and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        observer.loading(ckpt)
        loaded = load_checkpoint(
            ckpt,
            device=probe.device,
            dtype=probe.dtype,
            trust_remote_code=probe.trust_remote_code,
            gpus=gpus,
        )
        start = time.perf_counter()
        fingerprint = fingerprint_weights(loaded.model)
        fingerprint_s = time.perf_counter() - start
        original = seen.setdefault(fingerprint, (ckpt.model, ckpt.revision))
        if original != (ckpt.model, ckpt.revision):
            # The same model's revision by name; another model's as model@revision.
            record["duplicate_of"] = original[1] if original[0] == ckpt.model else "@".join(original)
        record.update(fingerprint=fingerprint, num_params=loaded.num_params)
        tok_fp = fingerprint_tokenizer(loaded.tokenizer)
        if tok_fp not in subsets:  # a revision whose tokenizer differs from its model's first
            subsets[tok_fp] = build_subset(plan.data, loaded.tokenizer, tok_fp)
        subset = subsets[tok_fp]
        record.update(dataset_fingerprint=subset.fingerprint, tokenizer_fingerprint=tok_fp)
        batches = subset.batches(plan.data.batch_size)
        start = time.perf_counter()
        measurements = _measure_batches(loaded, batches, probe, observer, share)
        record.update(aggregate(measurements))
        if probe.eigen and (share is None or share.writer):
            observer.preparing(f"eigenpairs of {ckpt.model} @ {ckpt.revision}")
            record["spectrum"] = _spectrum(loaded, batches[0], measurements[0], probe)
            record["eigen_top"] = record["spectrum"]["top_eigenvalues"]
        record["timings"] = {
            "load_s": loaded.load_time_s,
            "fingerprint_s": fingerprint_s,
            "measure_s": time.perf_counter() - start,
        }
        record["status"] = "ok"
    except (KeyboardInterrupt, IncompleteCheckpointError):
        # An interruption, or bad input (an incomplete checkpoint is not a failed
        # measurement: the sweep stops, exit 2); no exchange with other processes on the way out.
        share = None
        raise
    except SpecprobeError as err:
        record["error"] = f"{err.message} (hint: {err.hint})" if err.hint else err.message
    except Exception as err:  # a failure in one checkpoint must not lose the others
        record["error"] = f"{type(err).__name__}: {err}"
    finally:
        if share is not None:
            share.settle(record["error"])  # a process that failed before the exchange joins it
        record["peak_memory_bytes"] = _peak_memory(probe.device)
        del loaded
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return record


def _measure_batches(
    loaded: LoadedCheckpoint,
    batches: Sequence[torch.Tensor],
    probe: ProbeSpec,
    observer: Observer,
    share: BatchShare | None,
) -> list[Measurement]:
    """Every batch's measurement, in batch order. With ``share``: this process's share,
    then the exchange that returns all of them (or raises the first process's error)."""
    ckpt = loaded.checkpoint
    indices = share.indices(len(batches)) if share is not None else range(len(batches))
    observer.measuring(ckpt, len(indices))
    own: dict[int, Measurement] = {}
    error: str | None = None
    try:
        for index in indices:
            batch = {"input_ids": batches[index].to(loaded.input_device)}
            own[index] = _measure_with_retry(loaded, batch, probe, index)
            observer.batch_done(ckpt, index)
    except KeyboardInterrupt:
        raise
    except SpecprobeError as err:
        if share is None:
            raise
        error = f"{err.message} (hint: {err.hint})" if err.hint else err.message
    except Exception as err:
        if share is None:
            raise
        error = f"{type(err).__name__}: {err}"
    if share is None:
        return [own[index] for index in indices]
    return share.combine(own, error)


def _measure_with_retry(
    loaded: LoadedCheckpoint, batch: dict[str, torch.Tensor], probe: ProbeSpec, index: int
) -> Measurement:
    """measure(), halving the micro-batch on out-of-memory until one sequence per pass."""
    micro = probe.micro_batch_size
    seed = int(np.random.SeedSequence([probe.seed, index]).generate_state(1)[0])
    while True:
        try:
            return measure(
                loaded.model,
                batch,
                estimator=probe.estimator,
                probes=probe.probes,
                seed=seed,
                params=probe.params,
                micro_batch_size=micro,
                groups=probe.groups,
            )
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err):
                raise
            size = micro or batch["input_ids"].shape[0]
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
    loaded: LoadedCheckpoint, ids: torch.Tensor, first: Measurement, probe: ProbeSpec
) -> dict[str, Any]:
    """The spectral summaries of the first batch (``spectrum_batch`` 0 in the record)."""
    from specprobe.linalg.spectrum import EigenMethod
    from specprobe.linalg.summary import spectral_record

    summary = spectral_record(
        loaded.model,
        {"input_ids": ids.to(loaded.input_device)},
        k=probe.eigen,
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


def stamp(record: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Add what every record ends with: its settings, their hash, the version, the time."""
    from specprobe.version import __version__

    record.update(
        settings=settings,
        settings_hash=settings_hash(settings),
        specprobe_version=__version__,
        finished_at=_now(),
    )
    return record


def measured_record(
    model: torch.nn.Module,
    measurements: Sequence[Measurement],
    settings: dict[str, Any],
    *,
    name: str,
    label: str,
    revision: str,
    step: int | None = None,
    tokens_seen: int | None = None,
    dataset_fingerprint: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A finished ``ok`` record in the format ``run_sweep`` writes, for a model measured in
    memory (library probes, ONNX graphs): no commit, no duplicate check across a run."""
    record = {
        "model": name,
        "label": label,
        "revision": revision,
        "commit": None,
        "step": step,
        "tokens_seen": tokens_seen,
        "fingerprint": fingerprint_weights(model),
        "duplicate_of": None,
        "num_params": sum(p.numel() for p in model.parameters()),
        "dataset_fingerprint": dataset_fingerprint,
        "status": "ok",
        "error": None,
        **aggregate(measurements),
        "timings": {"measure_s": sum(m.time_s for m in measurements)},
        **extra,
    }
    return stamp(record, settings)


def aggregate(measurements: Sequence[Measurement]) -> dict[str, Any]:
    """Mean over batches with a standard error (positions compare only at equal D per batch).

    With several batches the standard error is the spread of the batch values over
    √batches (it includes the probes' noise); with one batch it is the measurement's own.
    """
    first = measurements[0]
    out: dict[str, Any] = {}
    for name in AGGREGATED:
        values = np.array([getattr(m, name) for m in measurements])
        out[name] = float(values.mean())
        if len(values) > 1:
            out[f"{name}_stderr"] = float(values.std(ddof=1) / np.sqrt(len(values)))
        elif name in ("chi_net", "spectral_position"):
            out[f"{name}_stderr"] = getattr(first, f"{name}_stderr")
        elif name == "normalized_position":
            out[f"{name}_stderr"] = first.num_outputs * first.spectral_position_stderr
        else:
            out[f"{name}_stderr"] = 0.0
    out.update(
        num_batches=len(measurements),
        num_outputs=first.num_outputs,
        num_params_selected=first.num_params,
        num_tokens=sum(m.num_tokens for m in measurements),
        estimator=first.estimator,
        probes=first.probes,
        micro_batch_size=max(m.micro_batch_size for m in measurements),
        dtype=first.dtype,
        batches=[m.to_dict() for m in measurements],
    )
    if first.groups is not None:
        out["groups"] = _aggregate_groups(measurements)
    return out


def _aggregate_groups(measurements: Sequence[Measurement]) -> list[dict[str, Any]]:
    """Per group, the mean over batches of each value (χ_net with a standard error)."""
    rows = []
    for i, share in enumerate(measurements[0].groups or ()):
        per_batch = [m.groups[i] for m in measurements if m.groups is not None]
        row: dict[str, Any] = {"name": share.name, "num_params": share.num_params}
        for name in ("chi_net", "grad_norm_sq", "spectral_position", "chi_net_share", "grad_norm_sq_share"):
            row[name] = float(np.mean([getattr(g, name) for g in per_batch]))
        chi = np.array([g.chi_net for g in per_batch])
        row["chi_net_stderr"] = (
            float(chi.std(ddof=1) / np.sqrt(len(chi))) if len(chi) > 1 else per_batch[0].chi_net_stderr
        )
        rows.append(row)
    return rows


def _tokens_seen(item: _Planned) -> int | None:
    step = item.checkpoint.step
    if step is None:
        return None
    per_step = item.spec.tokens_per_step
    if per_step is None:
        for prefix, value in KNOWN_TOKENS_PER_STEP.items():
            if item.checkpoint.model.startswith(prefix):
                per_step = value
    if per_step is None and item.checkpoint.path is not None:
        for folder in (item.checkpoint.path, item.checkpoint.path.parent):
            meta = folder / METADATA_FILE
            if meta.is_file():
                per_step = json.loads(meta.read_text()).get("tokens_per_step")
                break
    return step * per_step if per_step else None


def _is_oom(err: BaseException) -> bool:
    text = str(err).lower()
    return (
        isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text
    )


def _peak_memory(device: Device) -> int:
    """Peak GPU memory of this checkpoint, or the process's peak resident memory on CPU."""
    if device is not Device.cpu and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_out_dir() -> Path:
    """``./specprobe-runs/<UTC timestamp>``."""
    return Path("specprobe-runs") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
