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


class Task(str, Enum):
    """What a checkpoint was trained to do, and so which raw outputs f count and which loss
    gives the residual (DESIGN section 7). A sample (the unit of the per-sample probes, of
    B_noise and of the jackknife) is one sequence, or one image."""

    AUTO = "auto"
    """Read from the checkpoint's config (``architectures``, ``is_decoder``,
    ``is_encoder_decoder``, the model type); a checkpoint whose task cannot be told apart is
    refused before any work, with the choices named. The default."""

    CAUSAL_LM = "causal-lm"
    """Next-token prediction: the logits of every real position whose next token is real,
    mean cross-entropy on the next token. D = counted positions × V, (S − 1)·V a sequence."""

    MASKED_LM = "masked-lm"
    """Masked language modelling (BERT, RoBERTa, DistilBERT): the logits at the masked
    positions only, mean cross-entropy on the original tokens there. Masks are drawn per
    (seed, sequence, position), BERT's recipe by default (15 %; of those 80 % [MASK], 10 %
    a random token, 10 % unchanged). D = masked positions × V."""

    SEQ2SEQ_LM = "seq2seq-lm"
    """An encoder–decoder (T5, BART): the teacher-forced decoder logits of the real target
    positions, mean cross-entropy on the target. Pairs come from two text columns, or from
    plain text by T5's span corruption (seeded like the masks). D = target tokens × V."""

    IMAGE_CLASSIFICATION = "image-classification"
    """An image classifier (ViT, DeiT, ConvNeXt, ResNet): one row of class logits per image,
    mean cross-entropy on the label. D = images × classes; B_noise is in images."""

    @property
    def text(self) -> bool:
        """Whether the task reads token sequences (every task but image classification)."""
        return self is not Task.IMAGE_CLASSIFICATION

    @property
    def unit(self) -> str:
        """What one sample is, in the plural: ``sequences`` or ``images``."""
        return "images" if self is Task.IMAGE_CLASSIFICATION else "sequences"
