"""specprobe: the empirical NTK's loss–network–position decomposition, for any model.

    import specprobe
    m = specprobe.measure(model, batch, probes=32, seed=0)
    m.spectral_position, m.spectral_position_stderr, m.chi_net, m.chi_net_stderr

The names below load their modules on first use, so ``import specprobe`` (and the command
line's ``--help``) does not import torch until something needs it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from specprobe.choices import Estimator, Task
from specprobe.errors import (
    BatchError,
    NonFiniteError,
    ParameterSelectionError,
    SpecprobeError,
    TooLargeError,
)
from specprobe.version import __version__

_LAZY = {
    # measurement
    "measure": "specprobe.core.measure",
    "Measurement": "specprobe.core.measurement",
    "GroupShare": "specprobe.core.measurement",
    "select_parameters": "specprobe.core.params",
    # repeated measurement (checkpoints, training)
    "Probe": "specprobe.pipeline.probe",
    "log_steps": "specprobe.pipeline.probe",
    "SpecprobeCallback": "specprobe.pipeline.trainer",
    # adapters
    "Adapter": "specprobe.core.adapters",
    "AdapterKind": "specprobe.core.adapters",
    "AdaptedBatch": "specprobe.core.adapters",
    "CausalLMAdapter": "specprobe.core.adapters",
    "ClassificationAdapter": "specprobe.core.adapters",
    "RegressionAdapter": "specprobe.core.adapters",
    "CallableAdapter": "specprobe.core.adapters",
    "Loss": "specprobe.core.adapters",
    "MaskedLMAdapter": "specprobe.core.task_adapters",
    "Seq2SeqLMAdapter": "specprobe.core.task_adapters",
    "ImageClassificationAdapter": "specprobe.core.task_adapters",
    "adapter_for": "specprobe.core.task_adapters",
    "mask_tokens": "specprobe.core.masking",
    "MaskRecipe": "specprobe.core.masking",
    "span_corrupt": "specprobe.core.masking",
    # loading and results
    "load_checkpoint": "specprobe.models.loading",
    "find_checkpoints": "specprobe.models.hub",
    "ResultStore": "specprobe.store.results",
    "load_results": "specprobe.store.frames",
    "load_batches": "specprobe.store.frames",
    # dense reference
    "dense_kernel": "specprobe.core.dense",
    "DenseKernel": "specprobe.core.dense",
    # matrix-free operator and spectra
    "NTKOperator": "specprobe.core.operator",
    "ProductMode": "specprobe.core.operator",
    "spectrum": "specprobe.linalg.spectrum",
    "spectrum_of": "specprobe.linalg.spectrum",
    "Spectrum": "specprobe.linalg.spectrum",
    "EigenMethod": "specprobe.linalg.spectrum",
    "spectral_density": "specprobe.linalg.density",
    "spectral_density_of": "specprobe.linalg.density",
    "SpectralDensity": "specprobe.linalg.density",
    "eigenvalue_count": "specprobe.linalg.density",
    "deflated_trace": "specprobe.linalg.trace",
    "TraceEstimate": "specprobe.linalg.trace",
    "summarize_spectrum": "specprobe.linalg.summary",
}

__all__ = [
    # measurement
    "measure",
    "Measurement",
    "GroupShare",
    "Estimator",
    "select_parameters",
    # repeated measurement (checkpoints, training)
    "Probe",
    "log_steps",
    "SpecprobeCallback",
    # adapters
    "Adapter",
    "AdapterKind",
    "AdaptedBatch",
    "CausalLMAdapter",
    "ClassificationAdapter",
    "RegressionAdapter",
    "CallableAdapter",
    "Loss",
    # tasks: what counts as an output, and the seeded masks and spans
    "Task",
    "MaskedLMAdapter",
    "Seq2SeqLMAdapter",
    "ImageClassificationAdapter",
    "adapter_for",
    "mask_tokens",
    "MaskRecipe",
    "span_corrupt",
    # loading and results
    "load_checkpoint",
    "find_checkpoints",
    "ResultStore",
    "load_results",
    "load_batches",
    # dense reference
    "dense_kernel",
    "DenseKernel",
    # matrix-free operator and spectra
    "NTKOperator",
    "ProductMode",
    "spectrum",
    "spectrum_of",
    "Spectrum",
    "EigenMethod",
    "spectral_density",
    "spectral_density_of",
    "SpectralDensity",
    "eigenvalue_count",
    "deflated_trace",
    "TraceEstimate",
    "summarize_spectrum",
    # errors
    "SpecprobeError",
    "BatchError",
    "NonFiniteError",
    "TooLargeError",
    "ParameterSelectionError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'specprobe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from specprobe.core.adapters import (
        AdaptedBatch,
        Adapter,
        AdapterKind,
        CallableAdapter,
        CausalLMAdapter,
        ClassificationAdapter,
        Loss,
        RegressionAdapter,
    )
    from specprobe.core.dense import DenseKernel, dense_kernel
    from specprobe.core.masking import MaskRecipe, mask_tokens, span_corrupt
    from specprobe.core.measure import measure
    from specprobe.core.measurement import GroupShare, Measurement
    from specprobe.core.operator import NTKOperator, ProductMode
    from specprobe.core.params import select_parameters
    from specprobe.core.task_adapters import (
        ImageClassificationAdapter,
        MaskedLMAdapter,
        Seq2SeqLMAdapter,
        adapter_for,
    )
    from specprobe.linalg.density import (
        SpectralDensity,
        eigenvalue_count,
        spectral_density,
        spectral_density_of,
    )
    from specprobe.linalg.spectrum import EigenMethod, Spectrum, spectrum, spectrum_of
    from specprobe.linalg.summary import summarize_spectrum
    from specprobe.linalg.trace import TraceEstimate, deflated_trace
    from specprobe.models.hub import find_checkpoints
    from specprobe.models.loading import load_checkpoint
    from specprobe.pipeline.probe import Probe, log_steps
    from specprobe.pipeline.trainer import SpecprobeCallback
    from specprobe.store.frames import load_batches, load_results
    from specprobe.store.results import ResultStore
