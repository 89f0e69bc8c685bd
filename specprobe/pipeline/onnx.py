"""An ONNX model measured into a results record: convert, check, measure, record.

The conversion lives in :mod:`specprobe.models.onnx`; this module adds the measurement and
the record, the same record ``specprobe analyze`` writes (revision ``onnx``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from specprobe.models.onnx.batch import is_causal_lm, load_arrays, measured_module, onnx_batch
from specprobe.models.onnx.graph import OnnxCheck, load_onnx


def measure_onnx_file(
    path: str | Path,
    inputs_path: str | Path,
    *,
    estimator: str = "hutchinson",
    probes: int = 32,
    seed: int = 0,
    params: tuple[str, ...] | None = None,
    groups: Any = None,
    tolerance: float = 1e-4,
) -> tuple[dict[str, Any], OnnxCheck]:
    """Convert, check and measure an ONNX model; returns a results record and the check.

    The record has the format ``specprobe analyze`` writes (revision ``onnx``), with the
    conversion check under ``onnx_check``.
    """
    from specprobe.core.measure import measure
    from specprobe.models.data import fingerprint_ids
    from specprobe.pipeline.sweep import measured_record

    arrays = load_arrays(inputs_path)
    graph, inputs, check = load_onnx(path, arrays, tolerance)
    batch, adapter = onnx_batch(graph, inputs, arrays)
    module = measured_module(graph, arrays)
    result = measure(
        module,
        batch,
        estimator=estimator,
        probes=probes,
        seed=seed,
        adapter=adapter,
        params=params,
        groups=groups,
    )
    settings = {
        "probe": {"estimator": estimator, "probes": probes, "seed": seed, "params": params, "groups": groups},
        "data": {"inputs": str(inputs_path)},
    }
    record = measured_record(
        module,
        [result],
        settings,
        name=str(path),
        label=Path(path).stem,
        revision="onnx",
        dataset_fingerprint=fingerprint_ids(
            torch.from_numpy(
                np.ascontiguousarray(arrays["input_ids" if is_causal_lm(graph, arrays) else "targets"])
            )
        ),
        onnx_check={
            "max_abs_error": check.max_abs_error,
            "max_rel_error": check.max_rel_error,
            "tolerance": check.tolerance,
        },
    )
    return record, check
