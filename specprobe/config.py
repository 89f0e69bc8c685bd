"""The settings of a measurement: one frozen, typed object, one table of limits, one hash.

Every entry point builds the same :class:`Settings`: the command line (``analyze``, ``run``),
a recipe (its ``data`` and ``probe`` sections are :class:`DataSpec` and :class:`ProbeSpec`),
a library :class:`~specprobe.Probe` and an ONNX measurement. It is validated once, against
:data:`LIMITS` (the command line's option bounds are read from it too), and hashed one way
(:meth:`Settings.hash`): equal settings give equal resume and compare keys, whichever entry
point wrote the record.

This is a base-layer module: it imports nothing heavy (no torch), so the command line can
read the limits while it builds its options.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from specprobe.choices import Device, DType, Estimator, Task
from specprobe.errors import SpecprobeError

DEFAULT_DATASET = "NeelNanda/pile-10k"
"""10,000 documents of the Pile, Pythia's training corpus (about 33 MB to download)."""


@dataclass(frozen=True)
class Limit:
    """The range of one integer setting: ``low`` to ``high`` (None: no upper bound)."""

    low: int
    high: int | None = None


LIMITS: dict[str, Limit] = {
    # the data
    "num_sequences": Limit(1),
    "seq_len": Limit(2),  # a sequence needs two tokens to predict one
    "batch_size": Limit(1),
    "seed": Limit(0),
    "train_batch_sequences": Limit(1),
    # the probe; the upper bounds are where a larger value would run for hours rather than fail
    "probes": Limit(2, 10_000),
    "micro_batch_size": Limit(1),
    "eigen": Limit(0, 1_000),
    # the models
    "tokens_per_step": Limit(1),
    "params": Limit(1),
    # the processes of a launched sweep
    "gpus_per_model": Limit(1),
    "processes": Limit(1),
    # recipe files: revision generators, includes, size
    "revisions": Limit(1, 10_000),  # revisions one generator may produce
    "log_points": Limit(2),
    "every_n": Limit(1),
    "every_start": Limit(0),
    "include_depth": Limit(1, 32),  # files an include chain may hold (the recipe given included)
    "recipe_bytes": Limit(1, 1_000_000),  # a recipe file larger than this is refused unread
}
"""The one table of limits: the command line's option bounds, the checks of recipes and of
library plans, and the recipe reader's bounds all come from here."""


def upper(name: str) -> int:
    """``LIMITS[name].high``, for a limit that has one."""
    high = LIMITS[name].high
    if high is None:
        raise KeyError(f"{name} has no upper limit")
    return high


def check_range(name: str, value: Any, where: str | None = None) -> None:
    """Raise SpecprobeError unless ``value`` is None or an integer within ``LIMITS[name]``;
    ``where`` names it (default: its flag)."""
    if value is None:
        return
    low, high = LIMITS[name].low, LIMITS[name].high
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


TASK_FIELDS = ("mask_rate", "mask_split", "target_column", "image_column", "label_column")
"""The data settings that only some tasks read."""
TASK_FIELDS_OF: dict[Task, tuple[str, ...]] = {
    Task.MASKED_LM: ("mask_rate", "mask_split"),
    Task.SEQ2SEQ_LM: ("mask_rate",),
    Task.IMAGE_CLASSIFICATION: ("image_column", "label_column"),
}
"""The task-only fields each task reads (seq2seq: ``target_column`` instead of
``mask_rate`` when a target column is given)."""


def check_mask(rate: Any, split: Any, prefix: str | None = None) -> None:
    """Raise SpecprobeError unless ``0 < rate ≤ 1`` and ``split`` is three fractions summing to 1."""
    where = f"{prefix}.mask_rate" if prefix else "--mask-rate"
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
        raise SpecprobeError(
            f"{where}: expected a fraction of positions in (0, 1], found {rate!r}",
            f"give {where} a value such as 0.15 (BERT's and T5's)",
        )
    parts = tuple(split) if isinstance(split, list | tuple) else ()
    if (
        len(parts) != 3
        or not all(isinstance(p, int | float) and not isinstance(p, bool) and p >= 0 for p in parts)
        or abs(sum(parts) - 1) > 1e-9
    ):
        where = f"{prefix}.mask_split" if prefix else "mask_split"
        raise SpecprobeError(
            f"{where}: expected three fractions (mask token, random token, unchanged) summing to 1, "
            f"found {split!r}",
            "BERT's is [0.8, 0.1, 0.1]",
        )


def settings_hash(settings: dict[str, Any]) -> str:
    """A short hash of the settings that change the numbers (data and probe settings)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Measuring(str, Enum):
    """How a sweep measures its subset of ``num_sequences`` sequences (the record's
    ``measurement``). The two give different numbers: χ_pos of n sequences is
    χ_pos^∞·(1 + B_noise/n), so a batch's position depends on its size (DESIGN section 6)."""

    WHOLE = "whole"
    """The subset measured as one set of ``num_sequences`` (micro-batched for memory by
    ``measure``, identical numbers whatever the micro-batch or the number of processes):
    one gradient of the whole set, so the population position χ_pos^∞, the noise scale
    B_noise and their errors come from every sequence. The default (``batch_size`` unset)."""

    BATCHES = "batches"
    """The subset cut into consecutive batches of ``batch_size`` sequences, each measured
    on its own, the record the mean over batches (the only way before issue 18; for
    comparison with earlier runs: their settings hash is unchanged). With batches well
    below B_noise, χ_pos measures mostly the gradient noise."""


@dataclass(frozen=True)
class DataSpec:
    """Where the text comes from and how the token subset is cut."""

    dataset: str = DEFAULT_DATASET
    """A hub dataset name, or a local .txt/.jsonl/.parquet file or a folder of them."""
    config: str | None = None
    """The hub dataset's configuration name, if it has several."""
    split: str = "train"
    text_column: str = "text"
    """Column holding the text (a .txt file has one, ``text``: one document per line)."""
    num_sequences: int = 256
    """Sequences in the subset. The default is sized by the error of χ_pos^∞ it gives and
    the time it costs (docs/cli.md, "How many sequences")."""
    seq_len: int = 64
    """Tokens per sequence; D = sequences measured together × (seq_len − 1) × vocabulary."""
    batch_size: int | None = None
    """None (default): the subset measured as one set (:attr:`Measuring.WHOLE`). A number:
    the subset measured in batches of that many sequences and averaged
    (:attr:`Measuring.BATCHES`, the way before issue 18)."""
    seed: int = 0
    task: Task = Task.AUTO
    """What the checkpoints were trained for (:class:`~specprobe.choices.Task`); ``auto``
    reads it from their config. A sweep resolves it before anything is written, so records
    and their settings hash carry the task measured."""
    mask_rate: float = 0.15
    """masked-lm: the fraction of positions masked; seq2seq-lm from plain text: the
    fraction of tokens in the corrupted spans (T5's noise density)."""
    mask_split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """masked-lm: of the masked positions, the fractions given the mask token, a random
    token, and left unchanged (BERT's 80/10/10)."""
    target_column: str | None = None
    """seq2seq-lm: the column holding each source text's target; None: T5's span
    corruption of ``text_column``."""
    image_column: str = "image"
    """image-classification: the column holding the image."""
    label_column: str = "label"
    """image-classification: the column holding the class index."""

    @property
    def measuring(self) -> Measuring:
        """:attr:`Measuring.BATCHES` when ``batch_size`` is set, else :attr:`Measuring.WHOLE`."""
        return Measuring.WHOLE if self.batch_size is None else Measuring.BATCHES

    @property
    def measured_together(self) -> int:
        """Sequences in one measurement: ``batch_size``, or the whole subset."""
        return self.num_sequences if self.batch_size is None else self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """The fields that change the numbers: those of every task, and the task with its
        own fields for every task but the causal LM (whose settings, and so their hash,
        are those of the versions before tasks: its runs still resume)."""
        out = asdict(self)
        task = out.pop("task")
        for name in TASK_FIELDS:
            out.pop(name)
        if task not in (Task.AUTO, Task.CAUSAL_LM):
            out["task"] = task.value
            own = TASK_FIELDS_OF[task]
            if task is Task.SEQ2SEQ_LM and self.target_column is not None:
                own = ("target_column",)
            out.update({name: getattr(self, name) for name in own})
            if "mask_split" in out:
                out["mask_split"] = list(self.mask_split)
        return out

    def validate(self, prefix: str | None = None) -> None:
        """Raise SpecprobeError naming the first value out of :data:`LIMITS`, or a subset
        that does not cut into equal batches. ``prefix`` (e.g. "data") names the values by
        key path instead of by flag."""
        for name in ("num_sequences", "seq_len", "batch_size", "seed"):
            check_range(name, getattr(self, name), f"{prefix}.{name}" if prefix else None)
        check_mask(self.mask_rate, self.mask_split, prefix)
        if self.batch_size is not None and self.num_sequences % self.batch_size:
            raise SpecprobeError(
                f"expected num_sequences to be a multiple of batch_size (equal D per batch), found "
                f"{self.num_sequences} sequences in batches of {self.batch_size}",
                f"use --num-sequences {self.num_sequences - self.num_sequences % self.batch_size or self.batch_size}",
            )


@dataclass(frozen=True)
class BatchSpec:
    """The data of an in-memory measurement: a library Probe's batch, an ONNX file's inputs."""

    fingerprint: str | None
    """Hash of the batch's token ids (or first tensor, or targets)."""
    adapter: str
    """How the batch is read (the adapter's name: causal_lm, classification, ...)."""
    source: str | None = None
    """The file the batch was read from, if any."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, prefix: str | None = None) -> None:
        """Nothing to check: the batch was checked when it was read."""


RUN_ONLY = ("device", "trust_remote_code", "micro_batch_size")
"""Probe settings that change where and how a checkpoint runs, not its numbers: left out of
the settings hash (a run resumed on another device finds its records)."""


@dataclass(frozen=True)
class ProbeSpec:
    """How each checkpoint is measured (the ``probe`` section of a recipe)."""

    estimator: Estimator = Estimator.HUTCHINSON_PER_SAMPLE
    probes: int = 32
    seed: int = 0
    """Seed of the probes (a recipe has none of its own: its ``data.seed`` seeds both)."""
    params: tuple[str, ...] | None = None
    """Parameter-name globs; None for all trainable parameters."""
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

    def validate(self, prefix: str | None = None) -> None:
        """Raise SpecprobeError naming the first value out of :data:`LIMITS` (by flag, or by
        key path under ``prefix``)."""
        for name in ("probes", "seed", "micro_batch_size", "eigen"):
            check_range(name, getattr(self, name), f"{prefix}.{name}" if prefix else None)
        check_groups(self.groups, f"{prefix}.groups" if prefix else "--groups")

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (enums as their values, params as a list)."""
        out = asdict(self)
        for key in ("estimator", "device", "dtype"):
            out[key] = out[key].value
        out["params"] = list(self.params) if self.params else None
        return out

    def measured(self) -> dict[str, Any]:
        """The fields that change the numbers (all but :data:`RUN_ONLY`)."""
        out = self.to_dict()
        for key in RUN_ONLY:
            out.pop(key)
        return out


@dataclass(frozen=True)
class Settings:
    """What a measurement is: its data and its probe settings. Frozen; checked by
    :meth:`validate`; :meth:`to_dict` and :meth:`hash` are the records' ``settings`` and
    ``settings_hash`` (the resume and compare key), the same for every entry point."""

    data: DataSpec | BatchSpec = field(default_factory=DataSpec)
    probe: ProbeSpec = field(default_factory=ProbeSpec)

    def validate(self) -> None:
        """Raise SpecprobeError naming the first value out of :data:`LIMITS`."""
        self.data.validate()
        self.probe.validate()

    def to_dict(self) -> dict[str, Any]:
        """What changes the numbers: the data and the probe settings (not the device)."""
        return {"data": self.data.to_dict(), "probe": self.probe.measured()}

    def hash(self) -> str:
        """:func:`settings_hash` of :meth:`to_dict`."""
        return settings_hash(self.to_dict())


__all__ = [
    "LIMITS",
    "BatchSpec",
    "DataSpec",
    "Limit",
    "Measuring",
    "ProbeSpec",
    "Settings",
    "check_groups",
    "check_range",
    "upper",
    "settings_hash",
]
