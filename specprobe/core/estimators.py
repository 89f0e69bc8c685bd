"""How χ_net = Tr Θ is accumulated over micro-batches: one strategy per :class:`Estimator`.

``measure`` (``specprobe.core.measure``) owns what every estimator shares: the loss, the
residual, the gradient, the sizes. A strategy adds each micro-batch's part of the trace
per parameter tensor (so χ_net splits exactly into parameter groups) and turns the sums
into χ_net and its standard error:

* :class:`ExactTrace`: Σ_i ‖∂f_i/∂θ_p‖², one-hot cotangents, D backward passes in all;
* :class:`PerSampleTrace`: Σ_b ‖J_bᵀ z_b‖² per probe from the ghost norms of each sample;
* :class:`HutchinsonTrace`: ‖Jᵀz‖² per probe; from the ghost norms of the whole batch
  when it is one micro-batch, else from Jᵀz summed over the micro-batches (P floats per
  probe, in blocks of probes, the forward pass repeated per block).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from specprobe.choices import Estimator
from specprobe.core.ghost import GhostNorms
from specprobe.core.gradients import add_into, backward_each, squared_norm
from specprobe.core.memory import MAX_PROBE_BATCH
from specprobe.core.operator import batched_vjp
from specprobe.core.population import Reduction
from specprobe.core.probes import rademacher
from specprobe.errors import SpecprobeError, TooLargeError

EXACT_CHUNK = 16
"""One-hot cotangents per backward pass for the exact estimator (tiny models only)."""

Block = tuple[int, int]
"""A range of probe indices [lo, hi): one pass over the micro-batches."""


class TraceStrategy(ABC):
    """The trace part of one measurement, per parameter tensor.

    ``chunk`` (cotangents per backward pass) and ``several`` (more than one micro-batch)
    are the sizes ``measure`` chose; they are passed to each call.
    """

    probes = 0
    """Hutchinson probes m (0 for the exact estimator)."""
    sized_by_memory = True
    """Whether the sizes are fitted to the available memory (``specprobe.core.memory``)."""

    def __init__(self, params: Sequence[Tensor], acc: torch.dtype) -> None:
        self.params = list(params)
        self.acc = acc
        self.offset = 0  # global index of this process's first sample (set by start())
        self.sample_sums: np.ndarray | None = None  # per-sample trace sums, where kept

    def start(self, num_samples: int, offset: int, per_sample: bool) -> None:
        """Before the first micro-batch: this process holds ``num_samples`` samples, the
        first with global index ``offset``. With ``per_sample``, strategies with per-sample
        traces allocate their per-sample sums here ((num_samples, tensors) floats)."""
        self.offset = offset

    def sample_traces(self) -> np.ndarray | None:
        """τ_s = Tr Θ_ss per local sample and tensor, ``(num_samples, tensors)`` (an unbiased
        estimate for the probe estimators); None where the estimator has no per-sample trace."""
        return None

    def reduce(self, reduction: Reduction) -> None:
        """Sum this strategy's totals across processes (``measure(reduce=...)``)."""
        raise SpecprobeError(
            f"expected an estimator whose trace adds over processes, found {type(self).__name__}",
            "use estimator='hutchinson_per_sample' (or 'exact') to split one measurement across processes",
        )

    def default_sizes(self, num_samples: int) -> tuple[int, int]:
        """(micro-batch, cotangents per backward pass) when not given: the whole batch and
        up to :data:`MAX_PROBE_BATCH` probes."""
        return num_samples, min(MAX_PROBE_BATCH, self.probes)

    def keeps_probe_sums(self, several: bool) -> bool:
        """Whether each probe's Jᵀz is summed over micro-batches (P floats each)."""
        return False

    def blocks(self, several: bool, sum_block: int) -> list[Block]:
        """Probe ranges, one pass over the micro-batches each: one range unless probe sums
        are kept, ``sum_block`` probes at a time."""
        return [(0, self.probes)]

    def check_outputs(self, outputs: int) -> None:  # noqa: B027 (a hook: no limit by default)
        """Refuse a batch whose counted outputs so far (``outputs``) this estimator cannot take."""

    @abstractmethod
    def add(
        self,
        f: Tensor,
        mask: Tensor,
        first_sample: int,
        block: Block,
        chunk: int,
        several: bool,
    ) -> None:
        """Add one micro-batch (outputs ``f``, counted rows ``mask``) for the probes of ``block``."""

    def end_block(self, block: Block) -> None:  # noqa: B027 (a hook: nothing to do by default)
        """A pass over the micro-batches for ``block`` is done."""

    @abstractmethod
    def trace(self, members: np.ndarray) -> tuple[float, float]:
        """χ_net and its standard error over the tensors in ``members`` (a boolean mask)."""


class ExactTrace(TraceStrategy):
    """Σ_i ‖∂f_i/∂θ_p‖² over the counted outputs i: one backward pass per output, no error."""

    sized_by_memory = False

    def __init__(self, params: Sequence[Tensor], acc: torch.dtype, max_exact_outputs: int) -> None:
        super().__init__(params, acc)
        self.max_exact_outputs = max_exact_outputs
        self.trace_sums = np.zeros(len(self.params))  # Σ_i ‖∂f_i/∂θ_p‖²

    def default_sizes(self, num_samples: int) -> tuple[int, int]:
        """One sample per micro-batch, :data:`EXACT_CHUNK` one-hot cotangents per pass."""
        return 1, EXACT_CHUNK

    def check_outputs(self, outputs: int) -> None:
        if outputs > self.max_exact_outputs:
            raise TooLargeError(
                f"the exact estimator needs one backward pass per output, and this batch has more than "
                f"max_exact_outputs={self.max_exact_outputs} outputs (D >= {outputs})",
                "use estimator='hutchinson' (or 'hutchinson_per_sample') with probes=32, "
                "or raise max_exact_outputs",
            )

    def add(
        self,
        f: Tensor,
        mask: Tensor,
        first_sample: int,
        block: Block,
        chunk: int,
        several: bool,
    ) -> None:
        """One-hot cotangents of the counted outputs, ``chunk`` per batched backward pass."""
        counted = mask.unsqueeze(-1).expand(f.shape).reshape(-1).nonzero().squeeze(1)
        total = np.zeros(len(self.params))
        per_sample = f.numel() // f.shape[0]
        local = first_sample - self.offset
        for lo in range(0, counted.numel(), chunk):
            idx = counted[lo : lo + chunk]
            onehot = torch.zeros(idx.numel(), f.numel(), dtype=f.dtype, device=f.device)
            onehot[torch.arange(idx.numel(), device=f.device), idx] = 1
            vjps = _vjp(f, self.params, onehot.reshape(idx.numel(), *f.shape))
            values = _squared_norms(vjps, self.acc)
            total += values.sum(0)
            if self.sample_sums is not None:  # each one-hot output belongs to one sample
                np.add.at(self.sample_sums, local + (idx // per_sample).cpu().numpy(), values)
        self.trace_sums += total

    def start(self, num_samples: int, offset: int, per_sample: bool) -> None:
        super().start(num_samples, offset, per_sample)
        self.sample_sums = np.zeros((num_samples, len(self.params))) if per_sample else None

    def sample_traces(self) -> np.ndarray | None:
        return self.sample_sums

    def reduce(self, reduction: Reduction) -> None:
        self.trace_sums = reduction.sum_scalars(self.trace_sums)

    def trace(self, members: np.ndarray) -> tuple[float, float]:
        return float(self.trace_sums[members].sum()), 0.0


class _ProbeTrace(TraceStrategy):
    """Rademacher probes z_j drawn per (seed, sample, probe), their values ‖J_gᵀz_g‖² per
    tensor summed over the groups g of the ghost norms and over micro-batches."""

    per_sample = True
    """Groups of the ghost norms: the samples (else the whole micro-batch)."""

    def __init__(
        self, params: Sequence[Tensor], acc: torch.dtype, probes: int, seed: int, ghost: GhostNorms
    ) -> None:
        super().__init__(params, acc)
        self.probes = probes
        self.seed = seed
        self.ghost = ghost
        # ‖J_pᵀz_j‖² for probe j and tensor p, summed over micro-batches when separable
        self.probe_values = np.zeros((probes, len(self.params)))

    def add(
        self,
        f: Tensor,
        mask: Tensor,
        first_sample: int,
        block: Block,
        chunk: int,
        several: bool,
    ) -> None:
        """‖J_gᵀz_g‖² summed over groups g (the samples, or the whole micro-batch), per probe."""
        local = first_sample - self.offset
        for lo in range(0, self.probes, chunk):
            js = range(lo, min(lo + chunk, self.probes))
            z = self._probes(f, mask, first_sample, js)
            values = self.ghost.group_norms(f, z, self.per_sample).values
            self.probe_values[lo : lo + len(js)] += values.sum(1).numpy()
            if self.sample_sums is not None:  # the groups are the samples
                self.sample_sums[local : local + f.shape[0]] += values.sum(0).numpy()

    def _probes(self, f: Tensor, mask: Tensor, first_sample: int, probes: range) -> Tensor:
        """The Rademacher probes ``(len(probes), *f.shape)`` of this micro-batch, masked rows zero."""
        z = rademacher(
            self.seed,
            range(first_sample, first_sample + f.shape[0]),
            probes,
            f.shape[1:],
            device=f.device,
            dtype=f.dtype,
        )
        return z.mul_(mask.unsqueeze(-1).to(f.dtype))

    def trace(self, members: np.ndarray) -> tuple[float, float]:
        values = self.probe_values[:, members].sum(1)
        return float(values.mean()), float(values.std(ddof=1) / math.sqrt(self.probes))


class PerSampleTrace(_ProbeTrace):
    """Σ_b ‖J_bᵀ z_b‖² per probe: the per-sample ghost norms, which add over samples,
    micro-batches and processes (no probe sums, whatever the micro-batch). Also kept per
    sample (summed over the probes): τ_s^ = (1/m) Σ_j ‖J_sᵀ z_{s,j}‖², independent across
    samples, for the population position (``specprobe.core.population``)."""

    def start(self, num_samples: int, offset: int, per_sample: bool) -> None:
        super().start(num_samples, offset, per_sample)
        self.sample_sums = np.zeros((num_samples, len(self.params))) if per_sample else None

    def sample_traces(self) -> np.ndarray | None:
        return None if self.sample_sums is None else self.sample_sums / self.probes

    def reduce(self, reduction: Reduction) -> None:
        self.probe_values = reduction.sum_scalars(self.probe_values)


class HutchinsonTrace(_ProbeTrace):
    """‖Jᵀz‖² per Rademacher probe over the whole batch.

    One micro-batch: the ghost norms with the micro-batch as the group. Several: each
    probe's Jᵀz must be summed over the micro-batches before its norm, so the probes go in
    blocks of ``sum_block`` (P floats each), one pass over the micro-batches per block.
    """

    per_sample = False

    def __init__(
        self, params: Sequence[Tensor], acc: torch.dtype, probes: int, seed: int, ghost: GhostNorms
    ) -> None:
        super().__init__(params, acc, probes, seed, ghost)
        self.probe_sums: list[list[Tensor | None]] = []  # the current block's Σ_mb J_mbᵀz_j

    def keeps_probe_sums(self, several: bool) -> bool:
        return several

    def blocks(self, several: bool, sum_block: int) -> list[Block]:
        if several:
            return [(lo, min(lo + sum_block, self.probes)) for lo in range(0, self.probes, sum_block)]
        return [(0, self.probes)]

    def add(
        self,
        f: Tensor,
        mask: Tensor,
        first_sample: int,
        block: Block,
        chunk: int,
        several: bool,
    ) -> None:
        """One micro-batch: the ghost norms. Several: add this micro-batch's Jᵀz_j to the block's sums."""
        if not several:
            super().add(f, mask, first_sample, block, chunk, several)
            return
        if not self.probe_sums:
            self.probe_sums = [[None] * len(self.params) for _ in range(*block)]
        for j in range(*block):
            z = self._probes(f, mask, first_sample, range(j, j + 1))[0]
            backward_each(f, z, self.params, add_into(self.probe_sums[j - block[0]], self.acc))

    def end_block(self, block: Block) -> None:
        """Turn a finished block's probe sums into probe values (squared norms per tensor)."""
        for j, sums in zip(range(*block), self.probe_sums, strict=False):
            self.probe_values[j] = [0.0 if t is None else squared_norm(t) for t in sums]
        self.probe_sums = []


def trace_strategy(
    estimator: Estimator,
    params: Sequence[Tensor],
    acc: torch.dtype,
    *,
    probes: int,
    seed: int | None,
    ghost: GhostNorms,
    max_exact_outputs: int,
) -> TraceStrategy:
    """The strategy of ``estimator`` (``seed`` is set for the Hutchinson estimators)."""
    if estimator is Estimator.EXACT:
        return ExactTrace(params, acc, max_exact_outputs)
    if seed is None:
        raise ValueError("the Hutchinson estimators need a seed (measure() draws one)")
    kind = HutchinsonTrace if estimator is Estimator.HUTCHINSON else PerSampleTrace
    return kind(params, acc, probes, seed, ghost)


def _vjp(f: Tensor, params: list[Tensor], cotangents: Tensor) -> list[Tensor]:
    """Jᵀv for a block of cotangents ``(k, *f.shape)``: ``(k, *p.shape)`` per parameter (zeros
    for a parameter the outputs do not depend on); one batched backward pass, graph retained."""
    k = cotangents.shape[0]
    return [
        torch.zeros((k, *p.shape), dtype=p.dtype, device=p.device) if g is None else g
        for g, p in zip(batched_vjp(f, params, cotangents), params, strict=True)
    ]


def _squared_norms(vjps: list[Tensor], acc: torch.dtype) -> np.ndarray:
    """‖J_pᵀv_i‖² for each row i of a block of vector–Jacobian products and each tensor p:
    shape (k, number of tensors), float64."""
    return torch.stack(
        [v.reshape(v.shape[0], -1).to(acc).square().sum(1).double().cpu() for v in vjps], dim=1
    ).numpy()
