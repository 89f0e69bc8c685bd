"""The loss–network–position decomposition of the gradient norm.

For a batch with raw outputs f ∈ R^D, loss L, residual g = ∂L/∂f and Jacobian
J = ∂f/∂θ ∈ R^{D×P}, the eNTK is Θ = J Jᵀ and

    ‖∇θL‖² = gᵀ Θ g = χ_loss · χ_net · χ_pos
    χ_loss = ‖g‖²,   χ_net = Tr Θ,   χ_pos = ‖∇θL‖² / (χ_loss · χ_net)

χ_pos, the *spectral position*, is the normalised eigenvalue Σ_k (λ_k / Tr Θ) q_k averaged
under the distribution q_k = (v_k·g)² / ‖g‖² of the residual over the eigenmodes.
``measure`` computes all of it without forming J or Θ:

* ‖∇θL‖² and χ_loss exactly, from one forward and one backward pass;
* χ_net = Tr Θ by the chosen :class:`Estimator`: exactly (one backward pass per output) or
  by Hutchinson's estimator E_z ‖Jᵀz‖² = Tr Θ with Rademacher probes z, whose
  vector–Jacobian products share one forward pass (batched cotangents).

Every quantity is a sum over samples; the loss normalisation (1/n, n the number of counted
outputs of the whole batch) is applied once at the end. So a batch can be processed in
micro-batches with identical results, and the probe for (sample, probe index) is drawn
from its own seeded stream, so micro-batching does not change the Hutchinson estimate
either.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from specprobe.choices import Estimator, parse_enum
from specprobe.core.adapters import (
    AdaptedBatch,
    Adapter,
    AdapterKind,
    Loss,
    loss_and_residual,
    resolve_adapter,
)
from specprobe.core.ghost import GhostNorms
from specprobe.core.memory import MAX_PROBE_BATCH, available_bytes, human_bytes, sample_cost
from specprobe.core.operator import batched_vjp
from specprobe.core.params import group_parameters, measuring, select_parameters
from specprobe.core.probes import rademacher
from specprobe.errors import BatchError, NonFiniteError, SpecprobeError, TooLargeError

DEFAULT_MAX_EXACT_OUTPUTS = 16_384
"""The exact estimator's default limit on D (it costs one backward pass per output)."""
EXACT_CHUNK = 16
"""One-hot cotangents per backward pass for the exact estimator (tiny models only)."""


_NON_FINITE_HINT = (
    "check the checkpoint and the dtype (float16 overflows easily; try float32); with a left-padded "
    "batch, pad on the right (tokenizer.padding_side = 'right'): fully masked attention rows "
    "give NaN in some models"
)


@dataclass(frozen=True)
class GroupShare:
    """One parameter group's part of the decomposition.

    Θ = Σ_g J_g J_gᵀ, so χ_net and ‖∇θL‖² are exact sums of the groups' values. The group's
    ``spectral_position`` is the decomposition with θ restricted to the group,
    ‖∇_g L‖² / (χ_loss · χ_net,g): for the output head, the frozen-feature counterfactual.
    """

    name: str
    num_params: int
    chi_net: float
    chi_net_stderr: float
    grad_norm_sq: float
    spectral_position: float
    chi_net_share: float
    """χ_net,g / χ_net."""
    grad_norm_sq_share: float
    """‖∇_g L‖² / ‖∇θL‖²."""


@dataclass(frozen=True)
class Measurement:
    """The loss–network–position decomposition of one batch (names as in the README's "What the numbers mean").

    ``*_stderr`` fields are standard errors of the estimate (0 for exact quantities).
    ``spectral_position_stderr`` propagates the error of χ_net (the only estimated factor):
    se(χ_pos) = χ_pos · se(χ_net) / χ_net.
    """

    loss: float
    """L, the mean training loss over the counted outputs."""
    grad_norm_sq: float
    """‖∇θL‖² over the selected parameters (exact)."""
    chi_loss: float
    """χ_loss = ‖g‖², the size of the loss residual (exact)."""
    chi_net: float
    """χ_net = Tr Θ, the network's response (exact or estimated)."""
    chi_net_stderr: float
    spectral_position: float
    """χ_pos = ‖∇θL‖² / (χ_loss χ_net) ∈ [λ_min/TrΘ, λ_max/TrΘ]; 1/D for an unaligned residual."""
    spectral_position_stderr: float
    num_outputs: int
    """D, the number of counted raw outputs (counted rows × entries per row)."""
    num_params: int
    """P, the number of selected parameters."""
    num_samples: int
    """N, the number of samples (sequences) in the batch."""
    num_tokens: int
    """Counted output rows: predicted tokens for a language model, samples for a classifier."""
    estimator: str
    probes: int
    """Hutchinson probes (0 for the exact estimator)."""
    seed: int | None
    """Seed of the probes (None for the exact estimator)."""
    micro_batch_size: int
    adapter: str
    loss_kind: str
    dtype: str
    """The model's dtype; accumulation is in float64 for float64 models, float32 otherwise."""
    params: tuple[str, ...] | None
    """The parameter name patterns, or None for all trainable parameters."""
    time_s: float
    groups: tuple[GroupShare, ...] | None = None
    """The split of χ_net and ‖∇θL‖² by parameter group, when ``groups`` was given."""

    @property
    def normalized_position(self) -> float:
        """D · χ_pos: 1 for a residual with no alignment to the spectrum."""
        return self.num_outputs * self.spectral_position

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all fields."""
        record = asdict(self)
        record["params"] = list(self.params) if self.params is not None else None
        return record


def measure(
    model: nn.Module,
    batch: Any,
    *,
    estimator: Estimator | str = Estimator.HUTCHINSON,
    probes: int = 32,
    seed: int | None = 0,
    adapter: Adapter | AdapterKind | str | Callable[[nn.Module, Any], Any] | None = None,
    params: Sequence[str] | str | None = None,
    micro_batch_size: int | None = None,
    probe_batch_size: int | None = None,
    max_exact_outputs: int = DEFAULT_MAX_EXACT_OUTPUTS,
    groups: str | Mapping[str, Sequence[str]] | None = None,
) -> Measurement:
    """Measure the loss–network–position decomposition of ``model`` on ``batch``.

    Args:
        model: any ``torch.nn.Module``; measured in eval mode, its state restored after.
        batch: what the adapter reads: a tokenizer's output for a causal LM, a pair
            ``(inputs, targets)`` for classification or regression.
        estimator: how χ_net is computed (:class:`Estimator` or its string value).
        probes: Hutchinson probes m (at least 2, for the standard error).
        seed: seed of the probes; None draws one from the OS (recorded in the result).
        adapter: how the batch becomes outputs (see ``specprobe.core.adapters``); chosen from
            the batch when None.
        params: glob patterns on parameter names (e.g. ``"lm_head.*"``); None selects all
            trainable parameters.
        micro_batch_size: samples per forward pass; results do not depend on it. Default:
            1 for EXACT; for the Hutchinson estimators the whole batch, halved until the
            estimated memory fits (``specprobe.core.memory``).
        probe_batch_size: cotangents per backward pass. Default: up to 16, as many as fit in
            ``specprobe.core.memory.PROBE_SHARE`` of what a training step adds above the weights
            or in 256 MiB (so the peak stays within 1.5× a training step's, or that plus
            256 MiB), fewer where the available memory asks; given explicitly, it is honoured.
        max_exact_outputs: the EXACT estimator refuses a batch with more outputs than this.
        groups: split χ_net and ‖∇θL‖² by parameter group (``Measurement.groups``):
            ``"auto"`` (embeddings, each block, final norm, head) or a mapping from group
            name to name globs. Costs nothing extra: the sums are kept per tensor anyway.

    Cost (passes over the batch): 1 forward + (1 + m) backward for the Hutchinson
    estimators (plus one forward of one sample for the memory estimate), 1 forward +
    (1 + D) backward for EXACT. Memory, beyond the weights: the autograd graph of one
    micro-batch; the gradient of the loss as it is computed, reduced to per-tensor norms
    at once (kept as one P-float sum only across several micro-batches); per probe in a
    backward pass, its cotangent and the gradients of the layer outputs (the probe
    values come from per-group "ghost" norms, ``specprobe.core.ghost``: no parameter-sized
    gradient per probe). HUTCHINSON across several micro-batches is the exception: each
    probe's Jᵀz must be summed over micro-batches before its norm, so probes go in
    blocks that fit the memory (P floats each), the forward pass repeated per block;
    HUTCHINSON_PER_SAMPLE never needs this.

    Returns:
        A frozen :class:`Measurement`.

    Raises:
        SpecprobeError (BatchError, NonFiniteError, TooLargeError,
        ParameterSelectionError) on bad input, never a silent NaN; TooLargeError before
        any full pass when the estimated memory does not fit even one sample at a time.
    """
    start_time = time.perf_counter()
    est = parse_enum(Estimator, estimator, "estimator")
    if est is not Estimator.EXACT and probes < 2:
        raise SpecprobeError(
            f"expected at least 2 Hutchinson probes (for a standard error), found probes={probes}",
            "use probes=32 or more, or estimator='exact' for tiny models",
        )
    if probe_batch_size is not None and probe_batch_size < 1:
        raise SpecprobeError(
            f"expected probe_batch_size >= 1, found {probe_batch_size}",
            "leave it unset to size it from memory",
        )
    if micro_batch_size is not None and micro_batch_size < 1:
        raise SpecprobeError(
            f"expected micro_batch_size >= 1, found {micro_batch_size}",
            "leave it unset to size it from memory",
        )
    if seed is None and est is not Estimator.EXACT:
        seed = int.from_bytes(os.urandom(4), "little")
    resolved = resolve_adapter(adapter, batch)
    num_samples = resolved.num_samples(batch)
    if num_samples == 0:
        raise BatchError("expected a batch with at least one sample, found an empty batch", "pass some data")
    selected = select_parameters(model, params)
    tensors = [p for _, p in selected]
    dtype = tensors[0].dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    group_names = group_parameters([n for n, _ in selected], groups) if groups is not None else None
    run = _Run(
        est,
        probes if est is not Estimator.EXACT else 0,
        seed,
        tensors,
        acc,
        max_exact_outputs,
        group_names=group_names,
    )
    with measuring(model, selected), GhostNorms(model, tensors, acc) as ghost:
        run.ghost = ghost
        micro = run.plan(
            lambda: resolved(model, resolved.take(batch, 0, 1)),
            num_samples,
            micro_batch_size,
            probe_batch_size,
        )
        for block in run.blocks():
            for begin in range(0, num_samples, micro):
                stop = min(begin + micro, num_samples)
                ghost.reset(stop - begin)
                run.add(resolved(model, resolved.take(batch, begin, stop)), begin, block)
            run.end_block(block)
    return run.finish(
        num_samples=num_samples,
        micro_batch_size=micro,
        adapter=resolved.name,
        params=(params,) if isinstance(params, str) else (tuple(params) if params is not None else None),
        start_time=start_time,
    )


class _Run:
    """Sums over micro-batches: the gradient, the scalars, and the trace estimate."""

    def __init__(
        self,
        estimator: Estimator,
        probes: int,
        seed: int | None,
        params: Sequence[Tensor],
        acc: torch.dtype,
        max_exact_outputs: int,
        group_names: list[str] | None = None,
    ) -> None:
        self.estimator = estimator
        self.group_names = group_names
        self.probes = probes
        self.seed = seed
        self.params = list(params)
        self.acc = acc
        self.max_exact_outputs = max_exact_outputs
        self.ghost: GhostNorms | None = None
        self.chunk = EXACT_CHUNK  # cotangents per backward pass (set by plan())
        self.several = False  # more than one micro-batch (set by plan())
        self.sum_block = probes  # HUTCHINSON over several micro-batches: probe sums kept at once
        # Per parameter tensor, so χ_net and ‖∇L‖² split exactly into parameter groups:
        self.grad_sq = np.zeros(len(self.params))  # ‖∇_p L‖² (unnormalised), one micro-batch
        self.grad: list[Tensor | None] | None = None  # Σ over micro-batches of ∇_p L, when several
        self.loss_sum = 0.0
        self.residual_sq_sum = 0.0  # Σ ‖g̃‖² with g̃ = n·g, the unnormalised residual
        self.rows = 0
        self.outputs = 0
        self.entries = 0  # n: counted rows (cross-entropy) or counted entries (MSE)
        self.trace_sums = np.zeros(len(self.params))  # EXACT: Σ_i ‖∂f_i/∂θ_p‖²
        # ‖J_pᵀz_j‖² for probe j and tensor p, summed over micro-batches when separable
        self.probe_values = np.zeros((probes, len(self.params)))
        self.probe_sums: list[list[Tensor | None]] = []  # the current block's Σ_mb J_mbᵀz_j
        self.dtype = str(params[0].dtype).removeprefix("torch.")
        self.num_params = sum(p.numel() for p in params)
        self.loss_kind: Loss | None = None

    # -- sizes ----------------------------------------------------------------------------

    def plan(
        self,
        one_sample: Callable[[], AdaptedBatch],
        num_samples: int,
        micro_batch_size: int | None,
        probe_batch_size: int | None,
    ) -> int:
        """Choose the micro-batch and the probe batch; returns the micro-batch size.

        Sizes not given are chosen so that the estimated need (``specprobe.core.memory``) fits
        the available memory: probes per backward pass are halved first, then the
        micro-batch. On a CPU a need that does not fit even then is refused here, before
        the process would be killed by the OS.
        """
        if self.estimator is Estimator.EXACT:
            self.chunk = probe_batch_size or EXACT_CHUNK
            micro = min(micro_batch_size or 1, num_samples)
            self.several = micro < num_samples
            return micro
        micro = min(micro_batch_size or num_samples, num_samples)
        chunk = probe_batch_size or min(MAX_PROBE_BATCH, self.probes)
        device = self.params[0].device
        available = available_bytes(device)
        param_bytes = self.num_params * torch.finfo(self.acc).bits // 8
        largest = max(p.numel() * p.element_size() for p in self.params)
        if available is not None:
            assert self.ghost is not None
            ghost = self.ghost
            ghost.reset()
            cost = sample_cost(one_sample, self.params, ghost.hooked_bytes)
            ghost.reset()

            def need(micro: int, chunk: int) -> int:
                accumulator = param_bytes if micro < num_samples else 0
                return accumulator + 2 * largest + cost.need(micro, chunk)

            if probe_batch_size is None:
                model_bytes = sum(p.numel() * p.element_size() for p in self.params)
                chunk = min(chunk, cost.probe_cap(micro, model_bytes))
            while need(micro, chunk) > available:
                if probe_batch_size is None and chunk > 1:
                    chunk = max(1, chunk // 2)
                elif micro_batch_size is None and micro > 1:
                    micro = -(-micro // 2)
                else:
                    break
            if need(micro, chunk) > available and device.type == "cpu":
                raise TooLargeError(
                    f"expected the measurement to fit in memory, found it needs about {human_bytes(need(micro, chunk))} "
                    f"beyond the weights (micro-batch {micro}, {chunk} probes per backward pass) and "
                    f"{human_bytes(available)} is available to it",
                    "measure fewer or shorter sequences, select part of the model (params=...), "
                    "use bfloat16, or run on a machine with more memory",
                )
            if self.estimator is Estimator.HUTCHINSON and micro < num_samples:
                # Probe sums of P floats each: as many as a training step's own addition
                # (gradient and activations) and the free memory allow, at least one.
                training = param_bytes + micro * cost.saved
                spare = available - need(micro, chunk) + param_bytes
                self.sum_block = int(min(self.probes, max(1, min(spare, training) // param_bytes)))
        self.chunk = chunk
        self.several = micro < num_samples
        if self.estimator is not Estimator.HUTCHINSON or not self.several:
            self.sum_block = self.probes
        return micro

    def blocks(self) -> list[tuple[int, int]]:
        """Probe ranges, one pass over the micro-batches each: one range, except for
        HUTCHINSON over several micro-batches when m probe sums do not fit at once."""
        if self.estimator is Estimator.HUTCHINSON and self.several:
            return [
                (lo, min(lo + self.sum_block, self.probes)) for lo in range(0, self.probes, self.sum_block)
            ]
        return [(0, self.probes)]

    # -- one micro-batch ------------------------------------------------------------------

    def add(self, adapted: AdaptedBatch, first_sample: int, block: tuple[int, int]) -> None:
        """Add one micro-batch whose first sample has global index ``first_sample``."""
        f, mask = adapted.outputs, adapted.mask
        if block[0] > 0:  # a later block of probe sums: the rest was done in the first pass
            self._probe_sums(f, mask, first_sample, block)
            return
        self.loss_kind = adapted.loss
        rows = int(mask.sum())
        if rows == 0:
            return
        if not bool(torch.isfinite(f.detach()).all(-1)[mask].all()):
            raise NonFiniteError(
                f"expected finite model outputs, found NaN or inf in the counted outputs of samples "
                f"{first_sample}..{first_sample + f.shape[0] - 1}",
                _NON_FINITE_HINT,
            )
        self.rows += rows
        self.outputs += rows * f.shape[-1]
        if self.estimator is Estimator.EXACT and self.outputs > self.max_exact_outputs:
            raise TooLargeError(
                f"the exact estimator needs one backward pass per output, and this batch has more than "
                f"max_exact_outputs={self.max_exact_outputs} outputs (D >= {self.outputs})",
                "use estimator='hutchinson' (or 'hutchinson_per_sample') with probes=32, "
                "or raise max_exact_outputs",
            )
        loss_sum, residual = loss_and_residual(adapted, self.acc)
        self.entries += rows if adapted.loss is Loss.CROSS_ENTROPY else rows * f.shape[-1]
        self.loss_sum += loss_sum
        self.residual_sq_sum += float(residual.double().square().sum())
        self._gradient(f, residual.to(f.dtype), first_sample)
        if self.estimator is Estimator.EXACT:
            self.trace_sums += self._exact_trace(f, mask)
        elif self.estimator is Estimator.HUTCHINSON and self.several:
            self._probe_sums(f, mask, first_sample, block)
        else:
            self._probe(f, mask, first_sample)

    def _gradient(self, f: Tensor, cotangent: Tensor, first_sample: int) -> None:
        """∇L of this micro-batch (unnormalised), reduced per tensor as each is computed."""
        finite = True

        def consume(index: int, grad: Tensor) -> None:
            nonlocal finite
            if self.several:
                if self.grad is None:
                    self.grad = [None] * len(self.params)
                total = self.grad[index]
                self.grad[index] = grad.to(self.acc) if total is None else total.add_(grad)
            else:
                value = _sq(grad)  # a non-finite entry makes it non-finite
                finite = finite and math.isfinite(value)
                self.grad_sq[index] += value

        backward_each(f, cotangent, self.params, consume)
        if not finite:
            raise NonFiniteError(
                f"expected a finite gradient, found NaN or inf (samples {first_sample}..)",
                _NON_FINITE_HINT,
            )

    def _exact_trace(self, f: Tensor, mask: Tensor) -> np.ndarray:
        """Σ_i ‖∂f_i/∂θ_p‖² over the counted outputs i, per tensor p: one-hot cotangents, batched."""
        counted = mask.unsqueeze(-1).expand(f.shape).reshape(-1).nonzero().squeeze(1)
        total = np.zeros(len(self.params))
        for lo in range(0, counted.numel(), self.chunk):
            idx = counted[lo : lo + self.chunk]
            onehot = torch.zeros(idx.numel(), f.numel(), dtype=f.dtype, device=f.device)
            onehot[torch.arange(idx.numel(), device=f.device), idx] = 1
            vjps = _vjp(f, self.params, onehot.reshape(idx.numel(), *f.shape))
            total += _squared_norms(vjps, self.acc).sum(0)
        return total

    def _probes(self, f: Tensor, mask: Tensor, first_sample: int, probes: range) -> Tensor:
        """The Rademacher probes ``(len(probes), *f.shape)`` of this micro-batch, masked rows zero."""
        assert self.seed is not None  # set in measure() for the Hutchinson estimators
        z = rademacher(
            self.seed,
            range(first_sample, first_sample + f.shape[0]),
            probes,
            f.shape[1:],
            device=f.device,
            dtype=f.dtype,
        )
        return z.mul_(mask.unsqueeze(-1).to(f.dtype))

    def _probe(self, f: Tensor, mask: Tensor, first_sample: int) -> None:
        """‖J_gᵀz_g‖² summed over groups g (the samples, or the whole micro-batch), per probe."""
        assert self.ghost is not None
        per_sample = self.estimator is Estimator.HUTCHINSON_PER_SAMPLE
        for lo in range(0, self.probes, self.chunk):
            js = range(lo, min(lo + self.chunk, self.probes))
            values = self.ghost.norms(f, self._probes(f, mask, first_sample, js), per_sample)
            self.probe_values[lo : lo + len(js)] += values.numpy()

    def _probe_sums(self, f: Tensor, mask: Tensor, first_sample: int, block: tuple[int, int]) -> None:
        """HUTCHINSON over several micro-batches: add this micro-batch's Jᵀz_j to the block's sums."""
        if not self.probe_sums:
            self.probe_sums = [[None] * len(self.params) for _ in range(*block)]
        for j in range(*block):
            sums = self.probe_sums[j - block[0]]

            def consume(index: int, grad: Tensor, sums: list[Tensor | None] = sums) -> None:
                total = sums[index]
                sums[index] = grad.to(self.acc) if total is None else total.add_(grad)

            z = self._probes(f, mask, first_sample, range(j, j + 1))[0]
            backward_each(f, z, self.params, consume)

    def end_block(self, block: tuple[int, int]) -> None:
        """Turn a finished block's probe sums into probe values (squared norms per tensor)."""
        for j, sums in zip(range(*block), self.probe_sums, strict=False):
            self.probe_values[j] = [0.0 if t is None else _sq(t) for t in sums]
        self.probe_sums = []

    def finish(
        self,
        *,
        num_samples: int,
        micro_batch_size: int,
        adapter: str,
        params: tuple[str, ...] | None,
        start_time: float,
    ) -> Measurement:
        if self.rows == 0:
            raise BatchError(
                "expected at least one counted output, found every output masked "
                "(attention_mask 0 or label -100 everywhere)",
                "pass a batch with unmasked targets; a sequence needs two tokens to predict one",
            )
        n = float(self.entries)
        if self.grad is not None:
            self.grad_sq = np.array([0.0 if g is None else _sq(g) for g in self.grad])
            if not np.isfinite(self.grad_sq).all():
                raise NonFiniteError("expected a finite gradient, found NaN or inf", _NON_FINITE_HINT)
        grad_sq = self.grad_sq / n**2
        grad_norm_sq = float(grad_sq.sum())
        chi_loss = self.residual_sq_sum / n**2
        chi_net, chi_net_stderr = self._trace(np.ones(len(self.params), dtype=bool))
        if chi_loss == 0.0:
            raise BatchError(
                "expected a non-zero loss residual, found g = 0 (the model fits this batch exactly)",
                "the spectral position is undefined without a residual; measure on other data",
            )
        if not chi_net > 0.0:
            raise BatchError(
                f"expected a positive kernel trace, found chi_net={chi_net}: the selected parameters "
                "do not influence the counted outputs",
                "select parameters that the outputs depend on",
            )
        position = grad_norm_sq / (chi_loss * chi_net)
        assert self.loss_kind is not None
        shares = None
        if self.group_names is not None:
            shares = tuple(
                self._group(name, chi_loss, grad_sq, chi_net, grad_norm_sq)
                for name in dict.fromkeys(self.group_names)
            )
        return Measurement(
            loss=self.loss_sum / n,
            grad_norm_sq=grad_norm_sq,
            chi_loss=chi_loss,
            chi_net=chi_net,
            chi_net_stderr=chi_net_stderr,
            spectral_position=position,
            spectral_position_stderr=position * chi_net_stderr / chi_net,
            num_outputs=self.outputs,
            num_params=self.num_params,
            num_samples=num_samples,
            num_tokens=self.rows,
            estimator=self.estimator.value,
            probes=self.probes,
            seed=self.seed,
            micro_batch_size=micro_batch_size,
            adapter=adapter,
            loss_kind=self.loss_kind.value,
            dtype=self.dtype,
            params=params,
            time_s=time.perf_counter() - start_time,
            groups=shares,
        )

    def _trace(self, members: np.ndarray) -> tuple[float, float]:
        """χ_net and its standard error over the tensors in ``members`` (a boolean mask)."""
        if self.estimator is Estimator.EXACT:
            return float(self.trace_sums[members].sum()), 0.0
        values = self.probe_values[:, members].sum(1)
        return float(values.mean()), float(values.std(ddof=1) / math.sqrt(self.probes))

    def _group(
        self, name: str, chi_loss: float, grad_sq: np.ndarray, chi_net: float, grad_norm_sq: float
    ) -> GroupShare:
        assert self.group_names is not None
        members = np.array([g == name for g in self.group_names])
        trace, stderr = self._trace(members)
        grad = float(grad_sq[members].sum())
        return GroupShare(
            name=name,
            num_params=sum(p.numel() for p, m in zip(self.params, members, strict=True) if m),
            chi_net=trace,
            chi_net_stderr=stderr,
            grad_norm_sq=grad,
            spectral_position=grad / (chi_loss * trace) if trace > 0 else float("nan"),
            chi_net_share=trace / chi_net,
            grad_norm_sq_share=grad / grad_norm_sq if grad_norm_sq > 0 else 0.0,
        )


_SQ_CHUNK = 1 << 20
"""Entries per float64 chunk in :func:`_sq` (8 MiB of temporary)."""


def _sq(t: Tensor) -> float:
    """‖t‖², summed in float64 chunk by chunk: no parameter-sized temporary, and the same
    value whatever the number of threads (a float32 BLAS dot splits its sum by thread)."""
    flat = t.reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=t.device)
    for chunk in flat.split(_SQ_CHUNK):
        total += chunk.double().square().sum()
    return float(total)


def backward_each(
    f: Tensor, cotangent: Tensor, params: Sequence[Tensor], consume: Callable[[int, Tensor], None]
) -> None:
    """One backward pass of ``cotangent`` (shaped like ``f``), handing each parameter's
    gradient to ``consume(index, grad)`` as soon as it is computed and freeing it after.

    At most one parameter-sized gradient exists at a time (the caller decides whether to
    keep a sum or only a norm), unlike ``torch.autograd.grad``, which returns them all at
    the end. The callers' ``.grad`` buffers are set aside and put back untouched.
    """
    saved = [p.grad for p in params]
    handles = []

    def hook(index: int, param: Tensor) -> None:
        if param.grad is not None:
            consume(index, param.grad)
        param.grad = None

    try:
        for index, p in enumerate(params):
            p.grad = None
            handles.append(p.register_post_accumulate_grad_hook(partial(hook, index)))
        torch.autograd.backward(f, cotangent, inputs=list(params), retain_graph=True)
    finally:
        for handle in handles:
            handle.remove()
        for p, grad in zip(params, saved, strict=True):
            p.grad = grad


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
