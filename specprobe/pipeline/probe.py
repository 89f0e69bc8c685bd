"""A Probe: fix the data and the settings once, then measure checkpoints or training steps.

    probe = specprobe.Probe(batch, probes=32, out="runs/mine")
    for step in range(steps):
        ...  # the training step
        probe.maybe_measure(step, model)       # measures at log-spaced steps, writes records

Records have the same format as ``specprobe analyze`` writes, so ``specprobe report DIR``
and the family analysis work on library runs too. A measurement does not disturb
training: the model's training flags, ``requires_grad`` and ``.grad`` are restored (see
``specprobe.measure``), the optimizer is never touched, and the global RNG streams (CPU
and CUDA) are restored afterwards, so the training run continues exactly as without it.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from specprobe.choices import DType, parse_enum
from specprobe.config import BatchSpec, ProbeSpec, Settings, check_range
from specprobe.core.adapters import Adapter, AdapterKind, resolve_adapter
from specprobe.core.measure import Estimator, Measurement
from specprobe.errors import SpecprobeError
from specprobe.models.data import fingerprint_ids
from specprobe.pipeline.checkpoint import measure_with
from specprobe.store.folder import check_run_folder, output_path
from specprobe.store.records import Record
from specprobe.store.results import ResultStore

WRITE_WAIT_S = 0.5
"""How long a Probe's write waits for the folder's lock before it keeps the record for later."""


def log_steps(last: int, points: int, *, first: int = 1, include_zero: bool = True) -> list[int]:
    """About ``points`` integer steps, log-spaced from ``first`` to ``last`` (both included),
    and step 0 when ``include_zero``; duplicates after rounding are dropped."""
    if last < first or points < 1 or first < 1:
        raise SpecprobeError(
            f"expected 1 <= first <= last and points >= 1, found first={first}, last={last}, points={points}",
            "e.g. log_steps(10_000, 20)",
        )
    grid = [first * (last / first) ** (i / max(points - 1, 1)) for i in range(points)]
    steps = sorted({round(x) for x in grid} | {last})
    return [0, *steps] if include_zero else steps


class Probe:
    """Measures a model repeatedly on one fixed batch with fixed settings.

    Args:
        batch: the probe batch, as for ``specprobe.measure`` (kept as given).
        adapter, params, groups, estimator, probes, seed, micro_batch_size: as for
            ``specprobe.measure``, with its defaults (the command line's: per-sample
            Hutchinson with the population position); the same seed every time (common
            random probes make steps comparable).
        schedule: the steps ``maybe_measure`` measures at: an iterable of step numbers or a
            predicate ``step -> bool``; default ``log_steps(100_000, 40)``.
        out: a run directory; each measurement is appended to its ``results.jsonl`` as a
            record (label, revision ``step<N>``, step, tokens seen, every field). The
            folder may hold records of earlier Probes with the same settings (each run's
            records are kept: another run never replaces them); records measured with other
            settings (an ``analyze`` run's, another Probe's) are refused here, before
            training, since a report would mix them into one verdict. A record that cannot
            be written now (the folder is locked by another writer, the disk is full) is
            kept and written with the next one or by :meth:`flush`, with a warning: the
            training loop never sees the error.
        label: the model's name in the records; by default ``model``, or ``model-2``,
            ``model-3``, … when ``out`` already holds another run's ``model``.
        tokens_per_step: for ``tokens_seen`` in the records (and compute in family views).
        train_batch_sequences: the training batch in sequences, for χ_pos at it in the
            records (``train_batch_position``); the Trainer callback fills it in from the
            Trainer's arguments when it is not given.

    Cost per measurement: one forward and (1 + probes) backward passes of the batch.
    """

    def __init__(
        self,
        batch: Any,
        *,
        adapter: Adapter | AdapterKind | str | Callable[[nn.Module, Any], Any] | None = None,
        params: Sequence[str] | str | None = None,
        groups: str | Mapping[str, Sequence[str]] | None = None,
        estimator: Estimator | str = Estimator.HUTCHINSON_PER_SAMPLE,
        probes: int = 32,
        seed: int = 0,
        micro_batch_size: int | None = None,
        schedule: Iterable[int] | Callable[[int], bool] | None = None,
        out: str | Path | None = None,
        label: str | None = None,
        tokens_per_step: int | None = None,
        train_batch_sequences: int | None = None,
    ) -> None:
        check_range("train_batch_sequences", train_batch_sequences, "train_batch_sequences")
        self.batch = batch
        self.adapter = resolve_adapter(adapter, batch)
        self.spec = ProbeSpec(
            estimator=parse_enum(Estimator, estimator, "estimator"),
            probes=probes,
            seed=seed,
            params=(params,) if isinstance(params, str) else tuple(params) if params else None,
            micro_batch_size=micro_batch_size,
            groups=_plain_groups(groups),
        )
        """The probe settings (the measurement keywords), as a sweep's."""
        if schedule is None:
            schedule = log_steps(100_000, 40)
        self._due: Callable[[int], bool] = (
            schedule if callable(schedule) else frozenset(int(s) for s in schedule).__contains__
        )
        # the folder named now: a loop that changes directory later still writes here
        self.store = ResultStore(os.path.abspath(output_path(out))) if out is not None else None
        self.label = label or "model"
        self._label_given = label is not None
        self.run_id = uuid.uuid4().hex[:12]
        """This Probe's run: its records carry it (``probe_run``), so two training runs
        into one folder keep both runs' records."""
        self.pending: list[Record] = []
        """Records measured but not yet written (the folder was locked or unwritable)."""
        self.tokens_per_step = tokens_per_step
        self.train_batch_sequences = train_batch_sequences
        self.measurements: list[tuple[int | None, Measurement]] = []
        """Every measurement taken, with its step, in order."""
        if self.store is not None:  # checked before training: a folder of specprobe's, these settings
            check_run_folder(self.store.directory)
            self._refuse_other_settings(self.store)

    @property
    def estimator(self) -> Estimator:
        return self.spec.estimator

    @property
    def probes(self) -> int:
        return self.spec.probes

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def params(self) -> tuple[str, ...] | None:
        return self.spec.params

    @property
    def groups(self) -> str | dict[str, list[str]] | None:
        return self.spec.groups

    @property
    def micro_batch_size(self) -> int | None:
        return self.spec.micro_batch_size

    def settings(self, model: nn.Module | None = None) -> Settings:
        """What changes the numbers: the probe settings and the batch (its fingerprint and
        adapter), in the shape every entry point hashes; ``dtype`` is ``model``'s."""
        return Settings(
            data=BatchSpec(fingerprint=self.data_fingerprint(), adapter=self.adapter.name),
            probe=replace(self.spec, dtype=_dtype(model)) if model is not None else self.spec,
        )

    def data_fingerprint(self) -> str | None:
        """Hash of the batch's token ids (or first tensor), for the records."""
        tensors = _tensors(self.batch)
        return fingerprint_ids(tensors[0].detach().cpu()) if tensors else None

    def due(self, step: int) -> bool:
        """Whether the schedule measures at ``step``."""
        return self._due(step)

    def maybe_measure(self, step: int, model: nn.Module) -> Measurement | None:
        """Measure when ``step`` is on the schedule; otherwise do nothing and return None."""
        return self.measure(model, step=step) if self.due(step) else None

    def measure(
        self,
        model: nn.Module,
        *,
        step: int | None = None,
        revision: str | None = None,
        tokens_seen: int | None = None,
    ) -> Measurement:
        """Measure ``model`` now; append a record when the probe has an ``out`` directory."""
        result = measure_with(model, self.batch, self.spec, adapter=self.adapter)  # RNG kept
        self.measurements.append((step, result))
        if self.store is not None:
            self.pending.append(
                self.record(model, result, step=step, revision=revision, tokens_seen=tokens_seen)
            )
            self.flush()
        return result

    def flush(self) -> bool:
        """Write the records not yet written (:attr:`pending`); True when none is left.

        Never raises for the folder's sake: a locked folder (another writer) or a write
        the file system refuses leaves the records pending, with a warning, for the next
        measurement or the next ``flush`` (the Trainer callback flushes at the end of
        training)."""
        if self.store is None or not self.pending:
            return True
        try:
            with self.store.open_for_writing(wait=True, timeout=WRITE_WAIT_S):
                self._choose_label(self.store)
                while self.pending:
                    self.store.append({**self.pending[0], "model": self.label, "label": self.label})
                    self.pending.pop(0)
        except (SpecprobeError, OSError) as err:
            reason = err.message if isinstance(err, SpecprobeError) else str(err)
            warnings.warn(
                f"specprobe: {len(self.pending)} record(s) not written yet to {self.store.directory} "
                f"({reason}); kept, and written with the next measurement or Probe.flush()",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        return True

    def _choose_label(self, store: ResultStore) -> None:
        """The default label made unique in ``store`` (under its lock): ``model``, else
        ``model-2``, … — never a label another run's records carry."""
        if self._label_given:
            return
        others = {r.get("model") for r in store.records() if r.get("probe_run") != self.run_id}
        base, n = "model", 1
        while self.label in others:
            n += 1
            self.label = f"{base}-{n}"

    def _refuse_other_settings(self, store: ResultStore) -> None:
        """SpecprobeError when ``store`` holds records measured with other settings (in any
        precision of this Probe's): one folder, one set of settings, one verdict."""
        mine = {self.settings().hash()} | {
            replace(self.settings(), probe=replace(self.spec, dtype=dtype)).hash() for dtype in DType
        }
        other = sorted({str(r.get("settings_hash")) for r in store.records()} - mine)
        if other:
            raise SpecprobeError(
                f"{store.directory} holds records measured with other settings (settings hash "
                f"{', '.join(other[:3])}; this Probe's: {self.settings().hash()}); a report would mix them",
                "give the Probe another out folder (one folder per set of settings)",
            )

    def record(
        self,
        model: nn.Module,
        measurement: Measurement,
        *,
        step: int | None,
        revision: str | None = None,
        tokens_seen: int | None = None,
    ) -> Record:
        """The results record of one measurement, in the format ``specprobe analyze`` writes."""
        from specprobe.pipeline.checkpoint import measured_record

        if tokens_seen is None and step is not None and self.tokens_per_step:
            tokens_seen = step * self.tokens_per_step
        settings = self.settings(model)
        record = measured_record(
            model,
            [measurement],
            settings,
            name=self.label,
            label=self.label,
            revision=revision or (f"step{step}" if step is not None else "now"),
            step=step,
            tokens_seen=tokens_seen,
            dataset_fingerprint=self.data_fingerprint(),
            train_batch_sequences=self.train_batch_sequences,
        )
        record["probe_run"] = self.run_id
        return record

    def log_dict(self, measurement: Measurement, prefix: str = "specprobe/") -> dict[str, float]:
        """Scalars for a logger (TensorBoard, W&B): the decomposition and its errors."""
        values = {
            "loss": measurement.loss,
            "grad_norm_sq": measurement.grad_norm_sq,
            "chi_loss": measurement.chi_loss,
            "chi_net": measurement.chi_net,
            "chi_net_stderr": measurement.chi_net_stderr,
            "spectral_position": measurement.spectral_position,
            "spectral_position_stderr": measurement.spectral_position_stderr,
            "normalized_position": measurement.normalized_position,
        }
        for group in measurement.groups or ():
            values[f"chi_net_share/{group.name}"] = group.chi_net_share
        return {prefix + k: v for k, v in values.items() if math.isfinite(v)}


def _plain_groups(groups: str | Mapping[str, Sequence[str]] | None) -> str | dict[str, list[str]] | None:
    """Groups as the settings hold them: "auto", {name: [globs]}, or None."""
    if groups is None or isinstance(groups, str):
        return groups
    return {str(name): [str(g) for g in globs] for name, globs in groups.items()}


def _dtype(model: nn.Module) -> DType:
    """The precision of ``model``'s first floating-point parameter (float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            name = str(p.dtype).removeprefix("torch.")
            return DType(name) if name in DType.__members__ else DType.float32
    return DType.float32


def _tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        values = [batch[k] for k in ("input_ids", "inputs") if k in batch] or list(batch.values())
        return [t for v in values for t in _tensors(v)]
    if isinstance(batch, list | tuple):
        return [t for v in batch for t in _tensors(v)]
    return []
