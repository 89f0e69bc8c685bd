"""The record schema: one line of ``results.jsonl``, as the pipeline writes it and the
store, the analysis and the reports read it.

Records stay plain JSON objects (old run folders load as they are, and a field a newer
version adds is carried through untouched); these TypedDicts name the fields and their
types for the code that builds and reads them. Every key is optional to the type checker
(``total=False``); :data:`RECORD_FIELDS` and :data:`OK_RECORD_FIELDS` are the ones the store
requires when it reads a line.
"""

from __future__ import annotations

from typing import Any, TypedDict


class GroupRow(TypedDict, total=False):
    """One parameter group of ``Record.groups`` (means over the batches)."""

    name: str
    num_params: int
    chi_net: float
    chi_net_stderr: float
    grad_norm_sq: float
    spectral_position: float
    chi_net_share: float
    grad_norm_sq_share: float


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
    step: int | None
    tokens_seen: int | None
    fingerprint: str | None
    duplicate_of: str | None
    num_params: int
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
    """Each batch's :meth:`specprobe.Measurement.to_dict`."""
    groups: list[GroupRow]
    spectrum: dict[str, Any]
    """The spectral summaries of ``--eigen`` (:func:`specprobe.summarize_spectrum`'s fields)."""
    eigen_top: list[float | None]
    timings: Timings
    peak_memory_bytes: int
    onnx_check: dict[str, float]
    # stamped on every record
    settings: dict[str, Any]
    settings_hash: str
    specprobe_version: str
    finished_at: str


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
