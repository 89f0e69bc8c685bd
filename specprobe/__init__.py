"""specprobe: the empirical NTK's loss–network–position decomposition, for any model.

    import specprobe
    m = specprobe.measure(model, batch, estimator="hutchinson", probes=32, seed=0)
    m.spectral_position, m.spectral_position_stderr, m.chi_net, m.chi_net_stderr

The names below load their modules on first use, so ``import specprobe`` (and the command
line's ``--help``) does not import torch until something needs it.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from specprobe.choices import Estimator
from specprobe.errors import (
    BatchError,
    NonFiniteError,
    ParameterSelectionError,
    SpecprobeError,
    TooLargeError,
)

try:
    __version__ = version("specprobe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    # measurement
    "measure": "specprobe.lnp",
    "Measurement": "specprobe.lnp",
    "GroupShare": "specprobe.lnp",
    "select_parameters": "specprobe.params",
    # repeated measurement (checkpoints, training)
    "Probe": "specprobe.probe",
    "log_steps": "specprobe.probe",
    # adapters
    "Adapter": "specprobe.adapters",
    "AdapterKind": "specprobe.adapters",
    "AdaptedBatch": "specprobe.adapters",
    "CausalLMAdapter": "specprobe.adapters",
    "ClassificationAdapter": "specprobe.adapters",
    "RegressionAdapter": "specprobe.adapters",
    "CallableAdapter": "specprobe.adapters",
    "Loss": "specprobe.adapters",
    # loading and results
    "load_checkpoint": "specprobe.models",
    "find_checkpoints": "specprobe.models",
    "ResultStore": "specprobe.results",
    "load_results": "specprobe.frames",
    "load_batches": "specprobe.frames",
    # dense reference
    "dense_kernel": "specprobe.dense",
    "DenseKernel": "specprobe.dense",
    # matrix-free operator and spectra
    "NTKOperator": "specprobe.operators",
    "ProductMode": "specprobe.operators",
    "spectrum": "specprobe.eigen",
    "spectrum_of": "specprobe.eigen",
    "Spectrum": "specprobe.eigen",
    "EigenMethod": "specprobe.eigen",
    "spectral_density": "specprobe.eigen",
    "spectral_density_of": "specprobe.eigen",
    "SpectralDensity": "specprobe.eigen",
    "eigenvalue_count": "specprobe.eigen",
    "deflated_trace": "specprobe.eigen",
    "TraceEstimate": "specprobe.eigen",
    "summarize_spectrum": "specprobe.eigen",
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
    # adapters
    "Adapter",
    "AdapterKind",
    "AdaptedBatch",
    "CausalLMAdapter",
    "ClassificationAdapter",
    "RegressionAdapter",
    "CallableAdapter",
    "Loss",
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
    from specprobe.adapters import (
        AdaptedBatch,
        Adapter,
        AdapterKind,
        CallableAdapter,
        CausalLMAdapter,
        ClassificationAdapter,
        Loss,
        RegressionAdapter,
    )
    from specprobe.dense import DenseKernel, dense_kernel
    from specprobe.eigen import (
        EigenMethod,
        SpectralDensity,
        Spectrum,
        TraceEstimate,
        deflated_trace,
        eigenvalue_count,
        spectral_density,
        spectral_density_of,
        spectrum,
        spectrum_of,
        summarize_spectrum,
    )
    from specprobe.frames import load_batches, load_results
    from specprobe.lnp import GroupShare, Measurement, measure
    from specprobe.models import find_checkpoints, load_checkpoint
    from specprobe.operators import NTKOperator, ProductMode
    from specprobe.params import select_parameters
    from specprobe.probe import Probe, log_steps
    from specprobe.results import ResultStore
