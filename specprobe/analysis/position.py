"""Which records the family view counts, and the position it reads from each.

Only analysed records count: ``status == "ok"`` and not a duplicate of another revision's
weights (``duplicate_of`` null). Positions are compared across models in a normalised form,
because χ_pos itself scales with the number of outputs D. Which one is picked in one place,
:func:`choose_position`: the population position (D/N)·χ_pos^∞ (:attr:`Position.POPULATION`)
when every analysed record carries it, else — runs written by earlier versions — the mean
D·χ_pos over batches (:attr:`Position.NORMALIZED`); the raw χ_pos is accepted only when all
models were measured at the same D.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, cast

from specprobe.errors import SpecprobeError
from specprobe.store.records import Record, record_task

SIGNIFICANCE = 2.0
"""A difference counts when it exceeds this many combined standard errors, √(se₁² + se₂²)."""


class Position(str, Enum):
    """Which position value is compared across records."""

    POPULATION = "normalized_population_position"
    """(D/N)·χ_pos^∞, the population position per sequence's outputs ((S−1)·V·χ_pos^∞ for a
    causal LM): the position of the data's own gradient, free of the batch size and of the
    gradient noise; comparable across models with the same tokenizer and sequence length."""

    NORMALIZED = "normalized_position"
    """D·χ_pos: 1 for a residual with no alignment to the spectrum; comparable across D."""

    RAW = "spectral_position"
    """χ_pos itself: comparable only between records measured at the same D (num_outputs)."""

    @property
    def symbol(self) -> str:
        """How a reader writes the scale: ``(D/N)·χ_pos^∞``, ``D·χ_pos`` or ``χ_pos``."""
        return _SYMBOLS[self]

    @property
    def description(self) -> str:
        """One sentence a report prints to say which statistic its positions are."""
        return _DESCRIPTIONS[self]


_SYMBOLS = {Position.POPULATION: "(D/N)·χ_pos^∞", Position.NORMALIZED: "D·χ_pos", Position.RAW: "χ_pos"}
_DESCRIPTIONS = {
    Position.POPULATION: (
        "positions are the population position (D/N)·χ_pos^∞ ((S−1)·V·χ_pos^∞ for a causal LM): "
        "the position of the data's own gradient, free of the batch size and the gradient noise "
        "B_noise; comparable across models with the same tokenizer and sequence length"
    ),
    Position.NORMALIZED: (
        "positions are D·χ_pos, the mean over the measured batches (records without the "
        "population position: from earlier versions, plain Hutchinson or population=False): it mixes the data's position with "
        "gradient noise and depends on the batch size"
    ),
    Position.RAW: "positions are the raw χ_pos, comparable only at equal D",
}


_TASK_STATISTICS = {
    "masked-lm": (
        "positions are the population position (D/N)·χ_pos^∞ (masked positions per sequence × V "
        "times χ_pos^∞, for a masked LM): the position of the data's own gradient, free of the batch "
        "size and the gradient noise B_noise; comparable across models with the same tokenizer, "
        "sequence length and masks"
    ),
    "seq2seq-lm": (
        "positions are the population position (D/N)·χ_pos^∞ (target tokens per pair × V times "
        "χ_pos^∞, for a seq2seq model): the position of the data's own gradient, free of the batch "
        "size and the gradient noise B_noise; comparable across models with the same tokenizer and "
        "targets"
    ),
    "image-classification": (
        "positions are the population position (D/N)·χ_pos^∞ (classes·χ_pos^∞ for an image "
        "classifier): the position of the data's own gradient, free of the batch size and the "
        "gradient noise B_noise (in images); comparable across models with the same classes and images"
    ),
}


def describe(position: Position, records: Iterable[Mapping[str, Any]]) -> str:
    """:attr:`Position.description`, said for the records' task where they share one that is
    not a causal LM (an image classifier's D/N is its classes, not (S−1)·V)."""
    tasks = {record_task(r) for r in records}
    if position is Position.POPULATION and len(tasks) == 1:
        return _TASK_STATISTICS.get(tasks.pop(), position.description)
    return position.description


def unit(record: Mapping[str, Any]) -> str:
    """What one sample of the record is, in the plural: ``images`` or ``sequences``."""
    return "images" if record_task(record) == "image-classification" else "sequences"


def read(record: Mapping[str, Any], name: str) -> Any:
    """A record field by name, None when absent: records written by earlier versions lack
    the population fields, and a TypedDict is read here by any name."""
    return record.get(name)


def choose_position(records: Iterable[Record], requested: Position | str | None = None) -> Position:
    """The one choice of statistic: ``requested`` when given, else the population position
    when every analysed record carries it, else D·χ_pos (older runs, or a run that mixes
    records of both kinds: one scale for all)."""
    if requested is not None:
        return Position(requested)
    rows = [r for group in analysed(records).values() for r in group]
    if rows and all(read(r, Position.POPULATION.value) is not None for r in rows):
        return Position.POPULATION
    return Position.NORMALIZED


def population_problem(record: Mapping[str, Any]) -> str | None:
    """Why a record's population position is not to be trusted, in words, or None: ``noisy``
    (relative error above one half) or ``nonpositive`` (‖M‖² ≤ 0), each with the sequences a
    10 % error would need when the record says."""
    status = read(record, "population_status")
    if status in (None, "ok"):
        return None
    needed = read(record, "sequences_needed")
    more = f"~{needed:,} {unit(record)} needed" if needed else f"more {unit(record)} needed"
    if status == "nonpositive":
        return f"≤ 0: {more}"
    return f"{status}: {more}"


def usable(record: Mapping[str, Any], position: Position) -> bool:
    """Whether the record's value on ``position`` can rank: not a population estimate ≤ 0."""
    if position is not Position.POPULATION:
        return True
    value = read(record, position.value)
    return read(record, "population_status") != "nonpositive" and value is not None and value > 0


def run_of(record: Mapping[str, Any]) -> str:
    """The training run a record belongs to: its ``run`` (a run can span repositories, and
    a stage that restarts its step counter is a sibling run), else its model."""
    return str(record.get("run") or record.get("model"))


def position_known(record: Mapping[str, Any]) -> bool:
    """Whether the record has a place in its run: tokens seen, a step or a data chunk.
    Records written before issue 27 (no ``position_source``) took their step from the
    revision name, so a step there counts as known too."""
    return any(record.get(k) is not None for k in ("tokens_seen", "step", "chunk"))


ORDER_AXES = ("tokens_seen", "step", "chunk")
"""The axes a run is ordered on, first preferred: tokens seen (they order stages whose step
counter restarts), the step, the data chunk (LLM360)."""


def order_axis(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The axis every record of a run has (:data:`ORDER_AXES`, first preferred), or None
    when some record has no known position: the run is then unordered."""
    return next((axis for axis in ORDER_AXES if rows and all(r.get(axis) is not None for r in rows)), None)


def ordered(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a run's records have a training order (:func:`order_axis`); an unordered
    run supports no claim that needs one (first and last, growth, final loss)."""
    return order_axis(rows) is not None


def in_training_order(rows: Sequence[Record]) -> list[Record]:
    """A run's records by training position on :func:`order_axis`; unordered runs by
    revision name (a fixed order, never the order typed). Ties by revision, then model."""
    axis = order_axis(rows)

    def key(r: Record) -> tuple[float, str, str]:
        fields: Mapping[str, Any] = r
        place = float(fields.get(axis) or 0) if axis is not None else 0.0
        return place, str(r.get("revision")), str(r.get("model"))

    return sorted(rows, key=key)


def distinct_runs(records: Iterable[Record]) -> list[Record]:
    """The records with every series named once: the one place that decides which records
    are one training run in a report and what it is called.

    A run (:func:`run_of`) whose records carry several settings hashes (run folders merged
    by hand) or several library Probe runs (``probe_run``: two trainings into one folder
    under one label) is several series: each gets its own ``run`` and a label that says
    which (``pythia-160m (settings 2)``, numbered as the report's settings blocks;
    ``model (Probe run 2)``). Then a label shared by series of different models (two
    recipes labelling different models alike) gets the model's id beside it, and one still
    shared its run's. Records already distinct come back as they are (the function is
    idempotent); changed ones are copies, the input is never modified."""
    records = list(records)
    hashes = list(dict.fromkeys(str(r.get("settings_hash")) for r in records if r.get("settings_hash")))
    parts: dict[str, dict[tuple[str, str], None]] = {}
    for r in records:
        parts.setdefault(run_of(r), {})[
            (str(r.get("settings_hash") or ""), str(r.get("probe_run") or ""))
        ] = None
    renamed: list[Record] = []
    for r in records:
        keys = list(parts[run_of(r)])
        settings, probe_run = str(r.get("settings_hash") or ""), str(r.get("probe_run") or "")
        if len(keys) == 1:
            renamed.append(r)
            continue
        tags = []
        if len({k[0] for k in keys}) > 1:
            tags.append(
                f"settings {hashes.index(settings) + 1}" if settings in hashes else "settings unknown"
            )
        if len({k[1] for k in keys}) > 1:
            runs = list(dict.fromkeys(k[1] for k in keys))
            tags.append(f"Probe run {runs.index(probe_run) + 1}")
        tag = ", ".join(tags)
        copy = cast(Record, dict(r))
        copy["run"] = f"{run_of(r)} ({tag})"
        copy["label"] = f"{r.get('label') or r.get('model')} ({tag})"
        renamed.append(copy)
    return _unique_labels(renamed)


def _unique_labels(records: list[Record]) -> list[Record]:
    """A label shared by several runs gets the model's id beside it (``base (org/a)``), and
    where that is still shared, the run's name."""
    for field in ("model", "run"):
        runs: dict[str, set[str]] = {}
        for r in records:
            runs.setdefault(str(r.get("label") or r.get("model")), set()).add(run_of(r))
        shared = {name for name, owners in runs.items() if len(owners) > 1}
        if not shared:
            return records
        out: list[Record] = []
        for r in records:
            name = str(r.get("label") or r.get("model"))
            if name in shared and str(r.get(field)) != name:
                copy = cast(Record, dict(r))
                copy["label"] = f"{name} ({run_of(r) if field == 'run' else r.get('model')})"
                out.append(copy)
            else:
                out.append(r)
        records = out
    return records


def group_by_model(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records per training run (:func:`run_of`, after :func:`distinct_runs`: records of one
    run measured with other settings or by another Probe run are another series), each in
    training order (:func:`in_training_order`). Runs keep the order of their first record
    (the plan's order of models); the order of a run's own revisions, however they were
    typed, does not matter."""
    groups: dict[str, list[Record]] = {}
    for record in distinct_runs(records):
        groups.setdefault(run_of(record), []).append(record)
    return {run: in_training_order(rows) for run, rows in groups.items()}


def analysed(records: Iterable[Record]) -> dict[str, list[Record]]:
    """The analysed records (``ok``, not duplicates) per run, in training order
    (:func:`group_by_model`)."""
    return group_by_model(r for r in records if r.get("status") == "ok" and not r.get("duplicate_of"))


def comparable(
    records: Iterable[Record], position: Position | str | None = None
) -> tuple[Position, dict[str, list[Record]]]:
    """The scale (:func:`choose_position`), and the analysed records per model
    (:func:`analysed`), checked to compare on it (:func:`check_comparable`)."""
    records = list(records)
    scale = choose_position(records, position)
    groups = analysed(records)
    check_comparable(groups, scale)
    return scale, groups


def size_key(num_params: int | None) -> tuple[bool, int]:
    """Sort key ranking models by size: ascending ``num_params``, unknown sizes last."""
    return num_params is None, num_params or 0


def position_value(record: Record, position: Position) -> tuple[float, float]:
    """The position of ``record`` and its standard error, on the chosen scale."""
    name = position.value
    fields: Mapping[str, Any] = record  # read by the scale's name: one of two float fields
    if fields.get(name) is not None:
        return float(fields[name]), float(fields.get(f"{name}_stderr") or 0.0)
    if position is Position.NORMALIZED and record.get("num_outputs"):
        d = float(record["num_outputs"])
        return d * float(record["spectral_position"]), d * float(
            record.get("spectral_position_stderr") or 0.0
        )
    raise SpecprobeError(
        f"expected {name!r} in the record of {record.get('model')}@{record.get('revision')}, found "
        f"keys {', '.join(sorted(record))}",
        "pass records as specprobe analyze writes them (results.jsonl)",
    )


def check_comparable(groups: dict[str, list[Record]], position: Position) -> None:
    """Raise SpecprobeError when raw χ_pos is compared across records of different D."""
    if position is not Position.RAW:
        return
    sizes = {r.get("num_outputs") for rows in groups.values() for r in rows}
    if len(sizes) > 1:
        raise SpecprobeError(
            "χ_pos compares only at equal D, found records measured at D = "
            + ", ".join(str(s) for s in sorted(sizes, key=lambda s: (s is None, s or 0))),
            "compare a normalised position (position=None), or measure every model on the same "
            "batch size, sequence length and vocabulary",
        )


def label(rows: Sequence[Record], model: str) -> str:
    """The model's label as its records give it (its name when none)."""
    return str(rows[0].get("label") or model)


def num_params(rows: Sequence[Record]) -> int | None:
    """The model's size from its first record (None when unknown)."""
    value = rows[0].get("num_params")
    return int(value) if value else None


def combined(a: float, b: float) -> float:
    """Two independent standard errors combined: √(a² + b²)."""
    return math.sqrt(a * a + b * b)
