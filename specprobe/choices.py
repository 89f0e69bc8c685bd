"""The choices that change what is measured or how: Enums with a docstring per member.

This module imports nothing heavy, so the command line can offer these as options without
importing torch (``specprobe --help`` stays fast). The library re-exports them where they
belong: ``specprobe.Estimator``, ``specprobe.models.loading.DType`` and ``Device``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

from specprobe.errors import SpecprobeError

E = TypeVar("E", bound=Enum)


def parse_enum(enum: type[E], value: E | str, what: str) -> E:
    """``enum(value)``, or a SpecprobeError that lists the valid choices."""
    try:
        return enum(value)
    except ValueError:
        valid = ", ".join(str(m.value) for m in enum)
        raise SpecprobeError(
            f"unknown {what} {value!r}; expected one of: {valid}", f"pass one of: {valid}"
        ) from None


class Estimator(str, Enum):
    """How χ_net = Tr Θ is computed. ‖∇θL‖² and χ_loss are always exact."""

    EXACT = "exact"
    """Σ_i ‖∂f_i/∂θ‖² over all D outputs: D backward passes, no error. Tiny D only."""

    HUTCHINSON = "hutchinson"
    """Mean of ‖Jᵀz‖² over Rademacher probes z ∈ {±1}^D: one forward pass and one backward
    pass per probe. Unbiased; its variance includes cross-sample terms zᵢzⱼΘᵢⱼ."""

    HUTCHINSON_PER_SAMPLE = "hutchinson_per_sample"
    """Σ_b ‖J_bᵀ z_b‖² with probes drawn per sample b: the cross-sample blocks of Θ drop out
    of the variance, and the values add over samples, micro-batches and processes. The
    per-sample norms of all samples of a micro-batch come from one backward pass per
    probe ("ghost norms", no per-sample gradients): the cost of HUTCHINSON. The sweep's
    default."""


class DType(str, Enum):
    """Precision the model is loaded and run in; sums accumulate in float32 or better."""

    float32 = "float32"
    """Full precision (default)."""
    bfloat16 = "bfloat16"
    """Half the memory; the model runs in bfloat16, norms and sums accumulate in float32."""
    float16 = "float16"
    """Half the memory; overflows more easily than bfloat16 (NaN outputs fail the checkpoint)."""
    float64 = "float64"
    """Double precision, for checks against the dense reference on tiny models."""

    @property
    def torch(self) -> Any:
        """The ``torch.dtype``."""
        import torch

        return getattr(torch, self.value)


class Device(str, Enum):
    """Where the model runs."""

    cpu = "cpu"
    """The CPU."""
    cuda = "cuda"
    """The first GPU; the whole model must fit on it."""
    auto = "auto"
    """Accelerate's device_map="auto" over all GPUs (the model may be split across them);
    the CPU when there is no GPU. Offloading to CPU or disk is refused."""


class Split(str, Enum):
    """How the processes of a launched sweep (accelerate launch, torchrun) share it."""

    checkpoints = "checkpoints"
    """Each process measures whole checkpoints, claimed one at a time (largest first)."""
    batches = "batches"
    """Every process measures a share of the batches of every checkpoint."""


class TinyArch(str, Enum):
    """Architectures of the tiny random models used by tests, examples and benchmarks."""

    GPT_NEOX = "gpt_neox"
    """Pythia's architecture: untied input and output embeddings (embed_in, lm_head)."""

    GPT2 = "gpt2"
    """GPT-2: the output head is tied to the input embedding (one tensor used twice)."""

    LLAMA = "llama"
    """Llama: RMSNorm, rotary positions, grouped-query attention, SwiGLU."""
