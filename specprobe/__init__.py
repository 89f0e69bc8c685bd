"""specprobe: the empirical NTK's loss–network–position decomposition, for any model.

import specprobe
m = specprobe.measure(model, batch, estimator="hutchinson", probes=32, seed=0)
m.spectral_position, m.spectral_position_stderr, m.chi_net, m.chi_net_stderr
"""

from importlib.metadata import PackageNotFoundError, version

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
from specprobe.errors import (
    BatchError,
    NonFiniteError,
    ParameterSelectionError,
    SpecprobeError,
    TooLargeError,
)
from specprobe.lnp import Estimator, GroupShare, Measurement, measure
from specprobe.params import select_parameters
from specprobe.probe import Probe, log_steps

try:
    __version__ = version("specprobe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    # measurement
    "measure",
    "Measurement",
    "Estimator",
    "GroupShare",
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
