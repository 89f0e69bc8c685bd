"""ONNX models measured into a results record: convert, check, measure, record, write.

The conversion lives in :mod:`specprobe.models.onnx`; this module adds the measurement and
the record, the same record ``specprobe analyze`` writes (revision ``onnx``), with the same
settings shape and hash as every other entry point (:class:`specprobe.config.Settings`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from specprobe.config import BatchSpec, ProbeSpec, Settings
from specprobe.core.measure import Estimator
from specprobe.errors import SpecprobeError
from specprobe.models.onnx.batch import is_causal_lm, load_arrays, measured_module, onnx_batch
from specprobe.models.onnx.graph import OnnxCheck, load_onnx
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
) -> tuple[Record, OnnxCheck]:
    """Convert, check and measure an ONNX model; returns a results record and the check.

    The record has the format ``specprobe analyze`` writes (revision ``onnx``), with the
    conversion check under ``onnx_check``. Cost: one onnxruntime run for the check, then
    one forward and (1 + probes) backward passes of the converted graph.
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
            }
        },
    )
    return record, check


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
