"""The plan of a sweep: its models and settings, the checks before anything is written, and
the checkpoints it measures, in plan order.

``preflight`` checks everything that can be checked cheaply first (settings within
:data:`specprobe.config.LIMITS`, checkpoints exist, revisions resolve, the models are causal
LMs, the data is there and long enough) and prepares one token subset per tokenizer. Every
executor (one process or a launch, see :mod:`specprobe.pipeline.sweep`) starts with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from specprobe.choices import Device, Task
from specprobe.config import DataSpec, ProbeSpec, Settings, check_range
from specprobe.core.measure import Estimator
from specprobe.core.memory import MemoryPlan
from specprobe.errors import SpecprobeError
from specprobe.models.data import TokenSubset, check_hub_dataset
from specprobe.models.fingerprint import fingerprint_tokenizer
from specprobe.models.hub import Checkpoint, cache_only, find_checkpoints, resolve_commit
from specprobe.models.loading import inspect_checkpoint, read_config
from specprobe.models.positions import Stated, StatedPosition, TrainingPosition, known, locate
from specprobe.models.task_data import build_task_subset
from specprobe.models.tasks import CHOICES, resolve_task
from specprobe.store.records import Record
from specprobe.store.results import ResultStore

METADATA_FILE = "specprobe.json"
"""Optional metadata in a local training directory or checkpoint, e.g. {"tokens_per_step": 4096}."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of a sweep: a hub id or local path, its revisions, and what is known of it."""

    id: str
    revisions: tuple[str, ...] | None = None
    label: str | None = None
    tokens_per_step: int | None = None
    """Stated tokens per optimizer step (trusted over the registry of families); an error
    where a checkpoint has no step for it to apply to."""
    train_batch_sequences: int | None = None
    """Sequences per optimizer step the model was trained with; None: from the registry of
    families (``specprobe/models/families.yaml``) or the training folder's
    ``specprobe.json``, when known."""
    run: str | None = None
    """The run the model's checkpoints belong to: models with the same run are one training
    run (one repository per checkpoint); None: the registry's, else the model's id."""
    seed: int | None = None
    """The run's seed, when the user states it (else the registry's, when known)."""
    stage_tokens: Mapping[str, int] = field(default_factory=dict)
    """Tokens seen before a stage whose step counter restarts (``stage2-ingredient1``)."""
    positions: Mapping[str, StatedPosition] = field(default_factory=dict)
    """Stated positions by revision (or by hub id), trusted over every other source."""

    def stated(self) -> Stated:
        """What the user states about this model's positions."""
        return Stated(
            tokens_per_step=self.tokens_per_step,
            stage_tokens=self.stage_tokens,
            positions=self.positions,
            run=self.run,
            seed=self.seed,
        )


@dataclass(frozen=True)
class SweepPlan:
    """The models of a sweep and the settings every checkpoint is measured with."""

    models: tuple[ModelSpec, ...]
    data: DataSpec = field(default_factory=DataSpec)
    probe: ProbeSpec = field(default_factory=ProbeSpec)

    @property
    def settings(self) -> Settings:
        """The settings object (its ``to_dict`` and ``hash`` go into every record)."""
        return Settings(data=self.data, probe=self.probe)


class Observer:
    """Progress callbacks of a sweep; each does nothing here. The CLI's Rich display
    (``report.SweepProgress``) overrides them."""

    def planned(self, checkpoints: Sequence[Checkpoint]) -> None:
        """All checkpoints to measure are known (after the checks, before any loading)."""

    def preparing(self, what: str) -> None:
        """A step of the checks before measuring (resolving, tokenising)."""

    def waiting(self, holder: str, directory: Path) -> None:
        """The run folder is locked by ``holder`` (as its lock file names it); this sweep
        (``--resume``) waits for it."""

    def loading(self, checkpoint: Checkpoint) -> None:
        """The checkpoint's weights are being loaded."""

    def measuring(self, checkpoint: Checkpoint, batches: int) -> None:
        """Measurement of ``batches`` batches starts."""

    def memory_plan(self, checkpoint: Checkpoint, plan: MemoryPlan) -> None:
        """measure's memory plan for the checkpoint (its first batch), before its first full
        pass: the estimated peak part by part, beside a training step's."""

    def batch_done(self, checkpoint: Checkpoint, index: int) -> None:
        """Batch ``index`` is measured."""

    def finished(self, checkpoint: Checkpoint, record: Record) -> None:
        """The checkpoint's record (ok or failed) is written."""

    def skipped(self, checkpoint: Checkpoint, record: Record) -> None:
        """The checkpoint was measured before with the same settings (--resume)."""


@dataclass
class SweepResult:
    records: list[Record]
    """The records of this sweep's checkpoints (resumed ones included), in plan order."""
    measured: int
    """Checkpoints measured ``ok`` by this sweep (a failed one is counted in ``failed`` only)."""
    skipped: int
    failed: int
    warnings: list[str] = field(default_factory=list)
    """Lines of results.jsonl that were skipped (cut, from a newer version, incomplete)."""


@dataclass(frozen=True)
class SweepRequest:
    """What an executor is asked to do: measure ``plan`` into ``store`` (skipping what is
    finished with ``resume``), telling ``observer``; ``invocation`` goes into config.json."""

    plan: SweepPlan
    store: ResultStore
    resume: bool = False
    observer: Observer = field(default_factory=Observer)
    invocation: dict[str, Any] | None = None


class Executor(Protocol):
    """How a sweep runs: in this process (:mod:`.local`) or across the processes of a launch
    (:mod:`.launched`). Both write the same records (see :class:`.writer.RunWriter`)."""

    def run(self, request: SweepRequest) -> SweepResult:
        """Measure every checkpoint of the request's plan not yet in its store."""
        ...


@dataclass
class PlannedCheckpoint:
    spec: ModelSpec
    checkpoint: Checkpoint
    commit: str | None
    position: TrainingPosition | None = None
    """Where in training the checkpoint is (:func:`position_of`; set by the preflight)."""

    @property
    def key(self) -> tuple[str, str]:
        """(model, revision): how records are matched (resume, duplicates, plan order)."""
        return self.checkpoint.model, self.checkpoint.revision

    @property
    def model_path(self) -> str | None:
        """A local model's folder as an absolute path, links resolved (None for a hub id):
        the same folder whatever the working directory, which ``model`` is not (written
        relative to it when it lies below it)."""
        return None if self.checkpoint.path is None else os.path.realpath(self.checkpoint.model)

    @property
    def keys(self) -> tuple[tuple[str, str], ...]:
        """Every key a finished record of this checkpoint may be found under: :attr:`key`,
        and for a local model (:attr:`model_path`, revision): ``--resume`` from another
        working directory finds the records written from the first."""
        path = self.model_path
        return (self.key,) if path is None else (self.key, (path, self.checkpoint.revision))


Subsets = dict[str, TokenSubset]
"""Token subsets by tokenizer fingerprint."""


def resolve_plan_task(plan: SweepPlan) -> SweepPlan:
    """The plan with its task resolved: ``auto`` becomes the task the first checkpoint of
    each model names in its config, which must be one task for the whole sweep (a family is
    measured under one objective); an explicit task is checked against every model's
    config. Reads configs only (no weights, nothing written). Raises SpecprobeError (exit 2)
    for a model whose task cannot be told apart, contradicts the one asked for, or differs
    from another model's."""
    plan.settings.validate()
    if not plan.models:
        raise SpecprobeError("expected at least one model, found none", "name a hub id or a local directory")
    if any(spec.id.endswith(".onnx") for spec in plan.models):
        return plan
    tasks: dict[Task, str] = {}
    for spec in plan.models:
        ckpt = find_checkpoints(spec.id, spec.revisions)[0]
        commit = resolve_commit(ckpt.model, ckpt.revision) if ckpt.path is None else None
        local = ckpt.path is None and cache_only()
        config = read_config(ckpt, commit, plan.probe.trust_remote_code, local)
        task = resolve_task(config, plan.data.task, ckpt.model, plan.probe.trust_remote_code)
        tasks.setdefault(task, ckpt.model)
    if len(tasks) > 1:
        named = "; ".join(f"{model} is {task.value}" for task, model in tasks.items())
        raise SpecprobeError(
            f"expected the models of one sweep to share a task, found several ({named})",
            f"measure each task in its own run (--task chooses one of: {CHOICES})",
        )
    return replace(plan, data=replace(plan.data, task=next(iter(tasks))))


def preflight(plan: SweepPlan, observer: Observer) -> tuple[list[PlannedCheckpoint], Subsets]:
    """The checks before anything is written: settings, checkpoints, data. Returns the
    checkpoints in plan order and the token subsets by tokenizer fingerprint."""
    plan.settings.validate()
    _check_device(plan.probe)
    for spec in plan.models:
        check_range("tokens_per_step", spec.tokens_per_step)
        check_range("train_batch_sequences", spec.train_batch_sequences)
    check_hub_dataset(plan.data)  # offline, a hub dataset fails here, at once
    planned = _plan_checkpoints(plan, observer)
    return planned, _prepare_data(plan, planned, observer)


def model_identity(model: str) -> str:
    """The one name of a local model folder: ``loc/run/``, ``./loc/run``, ``$PWD/loc/run``
    and ``~/…`` spellings of one folder are one model. The resolved path (links
    followed), written relative to the working directory when it lies below it (as the
    demo and most runs name it), absolute otherwise. Records, ``--resume`` and the verdict
    match models by it."""
    real = Path(os.path.realpath(Path(model).expanduser()))
    cwd = Path(os.path.realpath(Path.cwd()))
    return str(real.relative_to(cwd)) if cwd in real.parents else str(real)


def _plan_checkpoints(plan: SweepPlan, observer: Observer) -> list[PlannedCheckpoint]:
    if not plan.models:
        raise SpecprobeError("expected at least one model, found none", "name a hub id or a local directory")
    planned = []
    seen: set[tuple[str, str]] = set()
    for spec in plan.models:
        for found in find_checkpoints(spec.id, spec.revisions):
            ckpt = replace(found, model=model_identity(found.model)) if found.path is not None else found
            if (ckpt.model, ckpt.revision) in seen:  # listed twice (or two spellings): measured once
                continue
            observer.preparing(f"resolving {ckpt.name}")
            commit = resolve_commit(ckpt.model, ckpt.revision) if ckpt.path is None else None
            if commit is not None and (ckpt.model, commit) in seen:  # a name and its commit are one
                continue
            seen.update({(ckpt.model, ckpt.revision), (ckpt.model, commit or ckpt.revision)})
            item = PlannedCheckpoint(spec, ckpt, commit)
            item.position = position_of(item)  # a stated rule that cannot apply fails here
            planned.append(item)
    return planned


def _prepare_data(plan: SweepPlan, planned: list[PlannedCheckpoint], observer: Observer) -> Subsets:
    """One subset per distinct tokenizer, from the first checkpoint of each model."""
    subsets: Subsets = {}
    firsts: dict[str, PlannedCheckpoint] = {}
    for item in planned:
        firsts.setdefault(item.spec.id, item)
    for item in firsts.values():
        observer.preparing(f"checking {item.checkpoint.model}")
        info = inspect_checkpoint(item.checkpoint, item.commit, plan.probe.trust_remote_code, plan.data.task)
        if info.max_positions is not None and info.task.text and plan.data.seq_len > info.max_positions:
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
            subsets[tok_fp] = build_task_subset(plan.data, info.task, info.tokenizer, tok_fp)
        if info.skeleton is not None:
            _check_vocabulary(item.checkpoint, info.skeleton, subsets[tok_fp])
            _check_labels(item.checkpoint, info.skeleton, subsets[tok_fp])
    return subsets


def subset_notes(subsets: Subsets) -> list[str]:
    """What the token subsets say the user should know (warning lines), once each."""
    return list(dict.fromkeys(s.note for s in subsets.values() if s.note))


def _check_vocabulary(ckpt: Checkpoint, skeleton: torch.nn.Module, subset: TokenSubset) -> None:
    """Refuse token ids the model has no embedding for (a tokenizer larger than the model's
    vocabulary), which would fail every batch with an IndexError."""
    get_embeddings = getattr(skeleton, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    size = getattr(embeddings, "num_embeddings", None)
    if not isinstance(size, int):
        return
    over = subset.input_ids[subset.input_ids >= size].unique()
    if over.numel():
        shown = ", ".join(str(int(i)) for i in over[:5]) + (
            f" and {over.numel() - 5} more" if over.numel() > 5 else ""
        )
        raise SpecprobeError(
            f"the tokenizer of {ckpt.model} gives token ids {shown}, beyond the model's vocabulary of "
            f"{size} embeddings (ids 0 to {size - 1})",
            "use the tokenizer the model was trained with, or resize the model's embeddings "
            "(model.resize_token_embeddings(len(tokenizer))) and save it again",
        )


def _check_labels(ckpt: Checkpoint, skeleton: torch.nn.Module, subset: TokenSubset) -> None:
    """Refuse image labels beyond the classifier's classes (every batch would fail)."""
    classes = getattr(getattr(skeleton, "config", None), "num_labels", None)
    labels = (subset.fields or {}).get("labels")
    if "pixel_values" not in (subset.fields or {}) or labels is None or not isinstance(classes, int):
        return
    over = labels[(labels >= classes) | (labels < 0)].unique()
    if over.numel():
        raise SpecprobeError(
            f"the dataset's labels include {', '.join(str(int(i)) for i in over[:5])}, beyond the "
            f"{classes} classes of {ckpt.model} (0 to {classes - 1})",
            "use the dataset the classifier was trained on, or pass --label-column with its class indices",
        )


def _check_against_skeleton(plan: SweepPlan, ckpt: Checkpoint, skeleton: torch.nn.Module) -> None:
    """What would fail every checkpoint late, found before loading any weights: parameter
    patterns that match nothing, an exact estimator on more outputs than it affords."""
    from specprobe.core.measure import DEFAULT_MAX_EXACT_OUTPUTS
    from specprobe.core.params import select_parameters

    if plan.probe.params:
        select_parameters(skeleton, plan.probe.params)
    get_head = getattr(skeleton, "get_output_embeddings", None)
    weight = getattr(get_head(), "weight", None) if callable(get_head) else None
    if plan.probe.eigen and isinstance(weight, torch.Tensor):
        _check_eigen(plan, ckpt, weight.shape[0])
    if (
        plan.probe.estimator is Estimator.EXACT
        and plan.data.task is Task.CAUSAL_LM
        and isinstance(weight, torch.Tensor)
    ):
        together = plan.data.measured_together
        outputs = together * (plan.data.seq_len - 1) * weight.shape[0]
        if outputs > DEFAULT_MAX_EXACT_OUTPUTS:
            raise SpecprobeError(
                f"--estimator exact needs one backward pass per output, and a measurement of {ckpt.model} has "
                f"D = {together} × {plan.data.seq_len - 1} × {weight.shape[0]} = {outputs:,} outputs "
                f"(at most {DEFAULT_MAX_EXACT_OUTPUTS:,})",
                "use --estimator hutchinson, or fewer --num-sequences (or a --batch-size) or a shorter --seq-len",
            )


def position_of(item: PlannedCheckpoint) -> TrainingPosition:
    """The checkpoint's training position (:func:`specprobe.models.positions.locate`): what
    the plan states, the registry of families, the revision name, ``trainer_state.json``;
    tokens per step from the training folder's ``specprobe.json`` when nothing else says."""
    if item.position is not None:
        return item.position
    per_step = _metadata(item).get("tokens_per_step")
    return locate(
        item.checkpoint.model,
        item.checkpoint.revision,
        item.spec.stated(),
        item.checkpoint.path,
        per_step if isinstance(per_step, int) and not isinstance(per_step, bool) and per_step >= 1 else None,
    )


def _check_device(probe: ProbeSpec) -> None:
    """``--device cuda`` without a GPU, refused before anything is written (not one failed
    record per checkpoint)."""
    if probe.device is Device.cuda and not torch.cuda.is_available():
        raise SpecprobeError(
            "expected a CUDA device (--device cuda), found none (torch.cuda.is_available() is False)",
            "use --device cpu, or --device auto to use a GPU where there is one",
        )


def _check_eigen(plan: SweepPlan, ckpt: Checkpoint, vocab: int) -> None:
    """``--eigen K`` on the first batch's D outputs, refused before any work when it cannot
    run: ``--exact`` (the dense solver builds the D×D matrix) beyond its limit, or a
    Lanczos basis and its products (2·m·D float64, m as ``spectrum_of`` chooses it) larger
    than the memory there is."""
    from specprobe.core.memory import available_bytes, human_bytes
    from specprobe.linalg.dense import DEFAULT_MAX_DENSE_OUTPUTS
    from specprobe.linalg.lanczos import default_block

    k, together, positions = plan.probe.eigen, plan.data.measured_together, plan.data.seq_len - 1
    d = together * positions * vocab
    shape = f"D = {together} × {positions} × {vocab:,} = {d:,} outputs"
    if plan.probe.exact and d > DEFAULT_MAX_DENSE_OUTPUTS:
        raise SpecprobeError(
            f"--eigen {k} --exact builds the D×D eNTK of the first batch, and {ckpt.model} has {shape} "
            f"(at most {DEFAULT_MAX_DENSE_OUTPUTS:,})",
            "drop --exact (Lanczos needs no D×D matrix), or fewer --num-sequences (or a --batch-size) "
            "or a shorter --seq-len",
        )
    if plan.probe.exact:
        return
    device = torch.device(
        "cuda" if plan.probe.device is not Device.cpu and torch.cuda.is_available() else "cpu"
    )
    m = min(max(3 * k, k + 6 * default_block(k, device)), d)  # spectrum_of's basis size
    need, have = 2 * m * d * 8, available_bytes(device)
    if have is not None and need > have:
        raise SpecprobeError(
            f"--eigen {k} keeps a Lanczos basis of {m:,} vectors of {shape} and their products: "
            f"{human_bytes(need)}, more than the {human_bytes(have)} available",
            "lower --eigen, or fewer --num-sequences (or a --batch-size) or a shorter --seq-len",
        )


def tokens_seen(item: PlannedCheckpoint) -> int | None:
    """Tokens the checkpoint was trained on (:func:`position_of`), or None when not known."""
    return position_of(item).tokens


def train_batch_sequences(item: PlannedCheckpoint) -> int | None:
    """Sequences per optimizer step the checkpoint was trained with (from the plan, the
    registry of families, or the training folder's ``specprobe.json`` key
    ``train_batch_sequences``), or None when not known."""
    if item.spec.train_batch_sequences is not None:
        return item.spec.train_batch_sequences
    entry = known(item.checkpoint.model) if item.checkpoint.path is None else None
    if entry is not None and entry.family.train_batch_sequences is not None:
        return entry.family.train_batch_sequences
    value = _metadata(item).get("train_batch_sequences")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _metadata(item: PlannedCheckpoint) -> dict[str, Any]:
    """The ``specprobe.json`` of a local checkpoint or its training folder ({} if none)."""
    if item.checkpoint.path is None:
        return {}
    for folder in (item.checkpoint.path, item.checkpoint.path.parent):
        meta = folder / METADATA_FILE
        if meta.is_file():
            loaded = json.loads(meta.read_text())
            return loaded if isinstance(loaded, dict) else {}
    return {}


def weights_bytes(item: PlannedCheckpoint) -> int:
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
