"""The record schema: one line of ``results.jsonl``, as the pipeline writes it and the
store, the analysis and the reports read it.

Records stay plain JSON objects (old run folders load as they are, and a field a newer
version adds is carried through untouched); these TypedDicts name the fields and their
types for the code that builds and reads them. Every key is optional to the type checker
(``total=False``); :data:`RECORD_FIELDS` and :data:`OK_RECORD_FIELDS` are the ones the store
requires when it reads a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict


class GroupRow(TypedDict, total=False):
    """One parameter group of ``Record.groups`` (the measurement's, or means over the batches)."""

    name: str
    num_params: int
    chi_net: float
    chi_net_stderr: float
    grad_norm_sq: float
    spectral_position: float
    chi_net_share: float
    grad_norm_sq_share: float
    population_position: float | None
    """The group's χ_pos^∞ (for the head, the frozen-feature counterfactual of the
    population); None where the estimator gives none. Absent in records before issue 18."""
    population_position_stderr: float | None


class Timings(TypedDict, total=False):
    """Seconds spent per stage of one checkpoint."""

    load_s: float
    fingerprint_s: float
    measure_s: float


class Record(TypedDict, total=False):
    """One checkpoint's result: identity, status, the decomposition and what it ran with."""

    # identity
    model: str
    label: str
    revision: str
    commit: str | None
    model_path: str | None
    """A local model's folder, absolute with links resolved (absent for hub ids and in
    records before it was added): ``--resume`` matches a local model by it, whatever the
    working directory ``model`` was written relative to."""
    step: int | None
    """Optimizer steps from the start of the run, where known (:mod:`specprobe.models.positions`)."""
    tokens_seen: int | None
    run: str | None
    """The training run the checkpoint belongs to (absent before issue 27: the model)."""
    chunk: int | None
    """The data chunk of a family that checkpoints per chunk (LLM360 ``ckpt_NNN``), not a step."""
    position_source: str | None
    """Where ``step`` (or ``chunk``) came from: ``stated``, ``registry``, ``revision name``,
    ``trainer_state.json``; None where no position is known (absent before issue 27)."""
    tokens_source: str | None
    """Where ``tokens_seen`` came from (the same names, or ``specprobe.json``)."""
    run_seed: int | None
    """The run's seed, where stated or known to the registry (seeds of one size)."""
    family: str | None
    """The registry's family of the model (``pythia``, ``olmo-2``, …), where known."""
    fingerprint: str | None
    """Hash of the weights and the config (:func:`~specprobe.models.fingerprint.fingerprint_checkpoint`):
    equal fingerprints, the same function; ``duplicate_of`` compares it."""
    duplicate_of: str | None
    probe_run: str | None
    """The library Probe run that wrote the record (absent in sweeps' records): two
    training runs into one folder keep both runs' records."""
    num_params: int
    task: str
    """What the checkpoint was measured as (:class:`specprobe.choices.Task`): ``causal-lm``,
    ``masked-lm``, ``seq2seq-lm`` or ``image-classification``. Absent in records before
    issue 28 (all causal LMs): read with ``record_task``."""
    dataset_fingerprint: str | None
    tokenizer_fingerprint: str
    status: str
    """``ok`` or ``failed`` (with ``error``)."""
    error: str | None
    # the decomposition: means over the batches, each with ``<name>_stderr``
    loss: float
    loss_stderr: float
    grad_norm_sq: float
    grad_norm_sq_stderr: float
    chi_loss: float
    chi_loss_stderr: float
    chi_net: float
    chi_net_stderr: float
    spectral_position: float
    spectral_position_stderr: float
    normalized_position: float
    normalized_position_stderr: float
    # the population position (issue 18; absent in earlier records: read with .get()).
    # ``measurement`` "whole": the one measurement's values; "batches": the mean over the
    # batches with the standard error of ``aggregate`` (see specprobe.pipeline.checkpoint).
    # Each is None where the estimator gives no per-sequence trace or n < 2.
    measurement: str
    """``whole`` (the subset measured as one set) or ``batches`` (the mean over batches of
    ``settings.data.batch_size``): :class:`specprobe.config.Measuring`."""
    population_position: float | None
    """χ_pos^∞ = ‖M‖²^ / (R^ τ^), the position of the data's own gradient."""
    population_position_stderr: float | None
    normalized_population_position: float | None
    """(D/N)·χ_pos^∞, comparable across models with the same tokenizer and seq_len."""
    normalized_population_position_stderr: float | None
    noise_scale: float | None
    """B_noise, the gradient noise scale in sequences (None for ``batches``)."""
    noise_scale_stderr: float | None
    noise_scale_tokens: float | None
    """B_noise × counted tokens per sequence (None for ``batches``)."""
    single_position: float | None
    """χ_pos(1) = A^ / (R^ τ^), the single-sequence position."""
    single_position_stderr: float | None
    mean_grad_sq: float | None
    """‖M‖²^, the U-statistic of ‖E v_s‖² (per-sequence-loss units)."""
    mean_grad_sq_stderr: float | None
    population_status: str | None
    """``ok``, ``noisy`` (relative error of χ_pos^∞ above 0.5) or ``nonpositive``
    (‖M‖²^ ≤ 0: more sequences needed)."""
    sequences_needed: int | None
    """Sequences for a 10 % relative standard error of χ_pos^∞ (None for ``batches``)."""
    train_batch_sequences: int | None
    """Sequences per optimizer step the model was trained with, when known."""
    train_batch_position: float | None
    """χ_pos predicted at ``train_batch_sequences``: χ_pos^∞ + (χ_pos(1) − χ_pos^∞)/n."""
    train_batch_position_stderr: float | None
    # how it was measured
    num_batches: int
    num_outputs: int
    num_params_selected: int
    num_tokens: int
    estimator: str
    probes: int
    micro_batch_size: int
    dtype: str
    batches: list[dict[str, Any]]
    """Each batch's :meth:`specprobe.Measurement.to_dict` (one, the whole subset, for
    ``measurement`` "whole")."""
    groups: list[GroupRow]
    spectrum: dict[str, Any]
    """The spectral summaries of ``--eigen`` (:func:`specprobe.summarize_spectrum`'s fields)."""
    eigen_top: list[float | None]
    timings: Timings
    peak_memory_bytes: int
    onnx_check: dict[str, float]
    onnx_parameters: dict[str, Any]
    """An ONNX graph's trainable parameters against the torch model's (issue 28): counts,
    and a ``note`` saying what differs or could not be checked (None: the same)."""
    # stamped on every record
    settings: dict[str, Any]
    settings_hash: str
    specprobe_version: str
    finished_at: str


def record_task(record: Mapping[str, Any]) -> str:
    """The record's task; ``causal-lm`` for records before tasks were recorded."""
    task = record.get("task")
    return task if isinstance(task, str) else "causal-lm"


RECORD_FIELDS = ("model", "revision", "status")
"""Fields every record has."""
OK_RECORD_FIELDS = (
    "loss",
    "grad_norm_sq",
    "chi_loss",
    "chi_net",
    "spectral_position",
    "normalized_position",
    "num_outputs",
)
"""Numeric fields every ``ok`` record has (the report and the family view read them)."""
