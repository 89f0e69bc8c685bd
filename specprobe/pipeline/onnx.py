"""ONNX models measured into a results record: convert, check, measure, record, write.

The conversion lives in :mod:`specprobe.models.onnx`; this module adds the measurement and
the record, the same record ``specprobe analyze`` writes (revision ``onnx``), with the same
settings shape and hash as every other entry point (:class:`specprobe.config.Settings`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specprobe.config import BatchSpec, ProbeSpec, Settings
from specprobe.core.measure import Estimator
from specprobe.errors import SpecprobeError
from specprobe.models.onnx.batch import is_causal_lm, load_arrays, measured_module, onnx_batch
from specprobe.models.onnx.graph import OnnxCheck, load_onnx
from specprobe.models.onnx.parameters import compare_parameters, repeated_tensors
from specprobe.store.folder import check_run_folder
from specprobe.store.records import Record
from specprobe.store.results import ResultStore

DEFAULT_PROBE = ProbeSpec(estimator=Estimator.HUTCHINSON)
"""The probe settings of an ONNX measurement when none are given (as ``specprobe.measure``)."""


def measure_onnx_file(
    path: str | Path,
    inputs_path: str | Path,
    probe: ProbeSpec = DEFAULT_PROBE,
    *,
    tolerance: float = 1e-4,
    reference: torch.nn.Module | None = None,
) -> tuple[Record, OnnxCheck]:
    """Convert, check and measure an ONNX model; returns a results record and the check.

    The record has the format ``specprobe analyze`` writes (revision ``onnx``), with the
    conversion check under ``onnx_check`` and the graph's parameters under
    ``onnx_parameters``: compared by value with ``reference`` (the torch model the graph
    was exported from) when given (:func:`~specprobe.models.onnx.parameters.compare_parameters`),
    else with the parameter names the exporter recorded, when it recorded them
    (:func:`parameter_note` says what differs). Cost: one onnxruntime run for the check,
    then one forward and (1 + probes) backward passes of the converted graph.
    """
    from specprobe.models.data import fingerprint_ids
    from specprobe.pipeline.checkpoint import measure_with, measured_record

    arrays = load_arrays(inputs_path)
    graph, inputs, check = load_onnx(path, arrays, tolerance)
    batch, adapter = onnx_batch(graph, inputs, arrays)
    module = measured_module(graph, arrays)
    result = measure_with(module, batch, probe, adapter=adapter)
    fingerprint = fingerprint_ids(
        torch.from_numpy(
            np.ascontiguousarray(arrays["input_ids" if is_causal_lm(graph, arrays) else "targets"])
        )
    )
    settings = Settings(
        data=BatchSpec(fingerprint=fingerprint, adapter=adapter.name, source=str(inputs_path)), probe=probe
    )
    record = measured_record(
        module,
        [result],
        settings,
        name=str(path),
        label=Path(path).stem,
        revision="onnx",
        dataset_fingerprint=fingerprint,
        extra={
            "onnx_check": {
                "max_abs_error": check.max_abs_error,
                "max_rel_error": check.max_rel_error,
                "tolerance": check.tolerance,
            },
            "onnx_parameters": _parameters(graph, reference),
        },
    )
    return record, check


def _parameters(graph: torch.nn.Module, reference: torch.nn.Module | None) -> dict[str, Any]:
    """What is known of the graph's parameters against the torch model's."""
    if reference is not None:
        comparison = compare_parameters(graph, reference)
        return {**comparison.to_dict(), "note": None if comparison.same else comparison.describe()}
    tensors = list(graph.parameters())
    names = getattr(graph, "signature", None)
    repeats = repeated_tensors(graph)
    count = f"the graph has {len(tensors)} trainable tensors ({sum(t.numel() for t in tensors):,} parameters)"
    problems = []
    if repeats:
        problems.append(
            f"{repeats} of them repeat another's values (a tied weight stored twice, as itself and "
            "transposed): measured as separate parameters, unlike the torch model"
        )
    if names is not None and len(names) != len(tensors):
        problems.append(
            f"the exporter's signature names {len(names)} torch parameters: it folded or merged some "
            "(equal initialisers are stored once, constants folded)"
        )
    if problems:
        note = f"{count}; " + "; ".join(problems) + ": the graph's kernel is not the torch model's"
    elif names is None:
        note = (
            f"{count}; its exporter recorded no torch parameter names, so they are not checked against "
            "the torch model (exporters fold, merge and untie parameters: "
            "specprobe.models.onnx.parameters.compare_parameters compares them)"
        )
    else:
        note = None
    return {
        "graph_params": sum(t.numel() for t in tensors),
        "graph_tensors": len(tensors),
        "signature_tensors": None if names is None else len(names),
        "repeated": repeats,
        "note": note,
    }


def parameter_note(record: Record) -> str | None:
    """The one line to say about an ONNX record's parameters (None: they are the torch model's)."""
    known = record.get("onnx_parameters")
    note = known.get("note") if isinstance(known, dict) else None
    return note if isinstance(note, str) else None


def measure_onnx_files(
    models: Sequence[str],
    inputs: str | None,
    probe: ProbeSpec,
    out: str | Path | None,
    *,
    checked: Callable[[str, OnnxCheck], None] | None = None,
) -> tuple[ResultStore, list[Record]]:
    """Measure every ONNX file of ``models`` on ``inputs`` and write the records into the
    run folder ``out`` (default: a new one under ./specprobe-runs/); ``checked`` hears of
    each conversion check as it passes. Raises SpecprobeError before measuring when the
    models mix ONNX files and other models, ``inputs`` is missing, or the folder is not
    specprobe's; nothing is written until every file is measured."""
    from specprobe.pipeline.sweep import default_out_dir

    if not all(m.endswith(".onnx") for m in models):
        raise SpecprobeError(
            "expected either ONNX files or Hugging Face models, found both in one command",
            "run specprobe analyze once for the .onnx files and once for the others",
        )
    if inputs is None:
        raise SpecprobeError(
            "an ONNX model needs --inputs: an .npz or .pt file with its inputs and 'targets'",
            "numpy.savez('data.npz', inputs=x, targets=y), then --inputs data.npz",
        )
    directory = Path(out) if out else default_out_dir()
    check_run_folder(directory)
    probe.validate()
    records: list[Record] = []
    for model in models:
        record, check = measure_onnx_file(model, inputs, probe)
        if checked is not None:
            checked(model, check)
        records.append(record)
    store = ResultStore(directory)
    with store.open_for_writing():
        for record in records:
            store.append(record)
    return store, records
