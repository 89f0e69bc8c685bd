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
    # dense reference
    "dense_kernel": "specprobe.dense",
    "DenseKernel": "specprobe.dense",
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
    # dense reference
    "dense_kernel",
    "DenseKernel",
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
    from specprobe.lnp import GroupShare, Measurement, measure
    from specprobe.params import select_parameters
    from specprobe.probe import Probe, log_steps
