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
  vector–Jacobian products share one forward pass (batched cotangents). Each estimator's
  accumulation of the trace is a strategy in ``specprobe.core.estimators``; what they share
  (the loss, the residual, the gradient, the sizes) is summed here, once.

Every quantity is a sum over samples; the loss normalisation (1/n, n the number of counted
outputs of the whole batch) is applied once at the end. So a batch can be processed in
micro-batches with identical results, and the probe for (sample, probe index) is drawn
from its own seeded stream, so micro-batching does not change the Hutchinson estimate
either.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

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
from specprobe.core.estimators import trace_strategy
from specprobe.core.ghost import GhostNorms
from specprobe.core.gradients import add_into, backward_each, squared_norm
from specprobe.core.measurement import GroupShare, Measurement
from specprobe.core.memory import (
    CPU_SHARE,
    CUDA_SHARE,
    MemoryPlan,
    available_bytes,
    gradient_sum_on_host,
    held_bytes,
    human_bytes,
    sample_cost,
)
from specprobe.core.params import group_parameters, measuring, select_parameters
from specprobe.core.population import (
    Reduction,
    SequenceSums,
    Terms,
    measurement_fields,
    residual_norms,
)
from specprobe.errors import BatchError, NonFiniteError, SpecprobeError, TooLargeError

DEFAULT_MAX_EXACT_OUTPUTS = 16_384
"""The exact estimator's default limit on D (it costs one backward pass per output)."""


_NON_FINITE_HINT = (
    "check the checkpoint and the dtype (float16 overflows easily; try float32), and drop sequences "
    "with no attended token (an all-zero attention_mask row gives NaN in some models)"
)


F = TypeVar("F", bound=Callable[..., Any])


def keeps_rng(function: F) -> F:
    """Run ``function(model, ...)`` with the global RNG streams (CPU, and CUDA on the
    model's devices) restored afterwards: a measurement never advances the stream a
    training run draws from (the one place this is held; tested with generated models)."""

    @functools.wraps(function)
    def wrapper(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
        with torch.random.fork_rng(devices=devices):
            return function(model, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@keeps_rng
def measure(
    model: nn.Module,
    batch: Any,
    *,
    estimator: Estimator | str = Estimator.HUTCHINSON_PER_SAMPLE,
    probes: int = 32,
    seed: int | None = 0,
    adapter: Adapter | AdapterKind | str | Callable[[nn.Module, Any], Any] | None = None,
    params: Sequence[str] | str | None = None,
    micro_batch_size: int | None = None,
    probe_batch_size: int | None = None,
    max_exact_outputs: int = DEFAULT_MAX_EXACT_OUTPUTS,
    groups: str | Mapping[str, Sequence[str]] | None = None,
    population: bool = True,
    reduce: Reduction | None = None,
    plan: Callable[[MemoryPlan], None] | None = None,
    gradient_sum_device: str | None = None,
) -> Measurement:
    """Measure the loss–network–position decomposition of ``model`` on ``batch``.

    Args:
        model: any ``torch.nn.Module``; measured in eval mode, its state restored after.
        batch: what the adapter reads: a tokenizer's output for a causal LM, a pair
            ``(inputs, targets)`` for classification or regression.
        estimator: how χ_net is computed (:class:`Estimator` or its string value). The
            default, per-sample Hutchinson, is the command line's: it gives the population
            position and the noise scale (``population``); plain HUTCHINSON does not.
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
            or in ``SMALL_PROBE_BLOCK`` (4 MiB, for the smallest models), at least one (so the
            peak stays within 1.5× a training step's, 2× on models below about 1M
            parameters), fewer where the available memory asks; given explicitly, it is honoured.
        max_exact_outputs: the EXACT estimator refuses a batch with more outputs than this.
        groups: split χ_net and ‖∇θL‖² by parameter group (``Measurement.groups``):
            ``"auto"`` (embeddings, each block, final norm, head) or a mapping from group
            name to name globs. Costs nothing extra: the sums are kept per tensor anyway.
        population: also estimate the population position χ_pos^∞, the gradient noise
            scale and χ_pos(1) with jackknife errors (``specprobe.core.population``; the
            ``Measurement`` fields from ``population_position`` on). Needs per-sequence
            traces: ignored (fields None) for plain HUTCHINSON. False skips the
            per-sequence work (for comparison of cost).
        reduce: the batch is this process's share of one set of sequences split across
            processes (:class:`~specprobe.core.population.Reduction`); the result is that of
            the whole set, identical on every process. None: one process.
        plan: called once, before the first full pass, with the memory plan
            (:class:`~specprobe.core.memory.MemoryPlan`: the estimated peak part by part,
            the gradient sum V where it is kept, beside a training step's estimate), for a
            caller to state it (``MemoryPlan.describe``). The Hutchinson estimators only
            (EXACT is sized by its outputs, not by memory).
        gradient_sum_device: where the gradient sum V (P floats in float32, kept over
            several micro-batches or processes) lives for a model on a GPU: ``"device"``
            (the model's GPU), ``"cpu"`` (the host's memory: each micro-batch's gradient
            crosses to it tensor by tensor, and each V_p comes back for the population's
            second pass), or None: the GPU when the plan fits there with V, else the host
            when it has room (Pythia-12b in bfloat16 on an 80 GB GPU: its 47 GB of V do not
            fit beside the weights). The plan says which. Ignored for a model on the CPU.

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
        SpecprobeError: (BatchError, NonFiniteError, TooLargeError,
            ParameterSelectionError) on bad input, never a silent NaN; TooLargeError before
            any full pass when the estimated memory does not fit even one sample at a time.
    """
    start_time = time.perf_counter()
    est, seed = _checked_options(estimator, probes, seed, micro_batch_size, probe_batch_size, reduce)
    resolved = resolve_adapter(adapter, batch)
    num_samples = resolved.num_samples(batch)
    if num_samples == 0:
        raise BatchError("expected a batch with at least one sample, found an empty batch", "pass some data")
    selected = select_parameters(model, params)
    tensors = [p for _, p in selected]
    acc = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    group_names = group_parameters([n for n, _ in selected], groups) if groups is not None else None
    with measuring(model, selected), GhostNorms(model, tensors, acc) as ghost:
        run = _Run(est, probes, seed, tensors, acc, max_exact_outputs, ghost, group_names)
        run.sum_place = _checked_place(gradient_sum_device)
        run.start(num_samples, population, reduce)
        offset = 0 if reduce is None else reduce.offset
        micro = run.plan(
            lambda: resolved(model, resolved.take(batch, 0, 1)),
            num_samples,
            micro_batch_size,
            probe_batch_size,
            plan,
        )
        for block in run.blocks():
            for begin in range(0, num_samples, micro):
                stop = min(begin + micro, num_samples)
                ghost.reset(stop - begin)
                run.add(resolved(model, resolved.take(batch, begin, stop)), offset + begin, block)
            run.trace.end_block(block)
        run.reduce()
        if run.second_pass:  # c_s = ⟨v_s, V⟩ needs V, known only now: forward again
            for begin in range(0, run.second_pass_stop(num_samples, micro), micro):
                stop = min(begin + micro, num_samples)
                ghost.reset(stop - begin)
                run.add_population(resolved(model, resolved.take(batch, begin, stop)), begin)
    return run.finish(
        num_samples=num_samples,
        micro_batch_size=micro,
        adapter=resolved.name,
        params=(params,) if isinstance(params, str) else (tuple(params) if params is not None else None),
        start_time=start_time,
    )


def _checked_options(
    estimator: Estimator | str,
    probes: int,
    seed: int | None,
    micro_batch_size: int | None,
    probe_batch_size: int | None,
    reduce: Reduction | None,
) -> tuple[Estimator, int | None]:
    """``measure``'s estimator parsed and its options checked; for the Hutchinson
    estimators a seed drawn from the OS when None (it is recorded in the result)."""
    est = parse_enum(Estimator, estimator, "estimator")
    if reduce is not None and est is Estimator.HUTCHINSON:
        raise SpecprobeError(
            "expected an estimator whose trace adds over processes with reduce=..., found 'hutchinson' "
            "(its probe values are norms of sums over the whole batch)",
            "use estimator='hutchinson_per_sample' (or 'exact') to split one measurement across processes",
        )
    if reduce is not None and seed is None and est is not Estimator.EXACT:
        raise SpecprobeError(
            "expected a seed with reduce=..., found seed=None (each process would draw its own probes)",
            "pass the same seed=... to every process",
        )
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
    return est, seed


def _checked_place(place: str | None) -> str | None:
    """``gradient_sum_device`` checked: None, ``"device"`` or ``"cpu"``."""
    if place not in (None, "device", "cpu"):
        raise SpecprobeError(
            f"expected gradient_sum_device None, 'device' or 'cpu', found {place!r}",
            "leave it None to keep V on the GPU where it fits and on the host otherwise",
        )
    return place


def _too_large_hint(chosen: MemoryPlan) -> str:
    """The way out of a plan that does not fit: what to change, and the memory that would
    hold it as it is (the plan's total over the share a process plans to use)."""
    ways = []
    if chosen.gradient_sum:
        ways.append(
            "measure in one micro-batch where its activations fit (micro_batch_size=None or the "
            "set's size: V is then never held whole)"
        )
    ways.append("measure fewer or shorter sequences, or select part of the model (params=...)")
    ways.append(
        f"or run where about {human_bytes(chosen.total / CPU_SHARE)} of memory is free (a GPU: "
        f"{human_bytes(chosen.total / CUDA_SHARE)})"
    )
    return "; ".join(ways)


class OnDevice(Sequence[Tensor]):
    """V kept on the host, read on the model's devices: item i is tensor i moved to
    ``devices[i]`` when it is asked for (one tensor's copy at a time, freed after use)."""

    def __init__(self, tensors: Sequence[Tensor], devices: Sequence[torch.device]) -> None:
        self.tensors, self.devices = tensors, devices

    def __len__(self) -> int:
        return len(self.tensors)

    @overload
    def __getitem__(self, index: int) -> Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Tensor]: ...

    def __getitem__(self, index: int | slice) -> Tensor | Sequence[Tensor]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        return self.tensors[index].to(self.devices[index], non_blocking=False)


class _Run:
    """Sums over micro-batches: the loss, the residual and the gradient (shared by every
    estimator), the sizes; the trace by the estimator's strategy (``specprobe.core.estimators``)."""

    def __init__(
        self,
        estimator: Estimator,
        probes: int,
        seed: int | None,
        params: Sequence[Tensor],
        acc: torch.dtype,
        max_exact_outputs: int,
        ghost: GhostNorms,
        group_names: list[str] | None = None,
    ) -> None:
        self.estimator = estimator
        self.group_names = group_names
        self.seed = seed
        self.params = list(params)
        self.acc = acc
        self.ghost = ghost
        self.trace = trace_strategy(
            estimator, params, acc, probes=probes, seed=seed, ghost=ghost, max_exact_outputs=max_exact_outputs
        )
        self.chunk = 1  # cotangents per backward pass (set by plan())
        self.several = False  # more than one micro-batch (set by plan())
        self.sum_block = self.trace.probes  # HUTCHINSON over several micro-batches: probe sums kept at once
        # Per parameter tensor, so χ_net and ‖∇L‖² split exactly into parameter groups:
        self.grad_sq = np.zeros(len(self.params))  # ‖∇_p L‖² (unnormalised), one micro-batch
        self.grad: list[Tensor | None] | None = None  # Σ over micro-batches of ∇_p L, when several
        self.sum_place: str | None = None  # where V is asked to be: None (chosen), "device", "cpu"
        self.on_host = False  # V kept in the host's memory, the model being on a GPU (set by plan())
        self.loss_sum = 0.0
        self.residual_sq_sum = 0.0  # Σ ‖g̃‖² with g̃ = n·g, the unnormalised residual
        self.rows = 0
        self.outputs = 0
        self.entries = 0  # n: counted rows (cross-entropy) or counted entries (MSE)
        self.dtype = str(params[0].dtype).removeprefix("torch.")
        self.num_params = sum(p.numel() for p in params)
        self.loss_kind: Loss | None = None
        self.num_samples = 0  # of the whole set (all processes), set by start() and reduce()
        self.reduction: Reduction | None = None
        self.sums: SequenceSums | None = None  # per-sequence terms, when the population is estimated
        self.terms: Terms | None = None  # those of the whole set, gathered by finish()
        self.offset = 0  # the global index of this process's first sample
        self.sample_loss = np.zeros(0)  # ℓ_s: each sample's summed loss, for the loss's error
        self.sample_entries = np.zeros(0)  # n_s: each sample's counted entries

    def start(self, num_samples: int, population: bool, reduce: Reduction | None) -> None:
        """This process holds ``num_samples`` samples; whether the population is estimated
        (it needs a per-sample trace: not plain HUTCHINSON)."""
        self.num_samples = num_samples
        self.reduction = reduce
        self.offset = 0 if reduce is None else reduce.offset
        self.sample_loss, self.sample_entries = np.zeros(num_samples), np.zeros(num_samples)
        # n < 2 in one process has no population estimate: skip its work (with reduce, the
        # whole set's n is known only later, so every process does it)
        enough = reduce is not None or num_samples >= 2
        wanted = population and enough and self.estimator is not Estimator.HUTCHINSON
        self.trace.start(num_samples, 0 if reduce is None else reduce.offset, per_sample=wanted)
        self.sums = SequenceSums(num_samples, len(self.params)) if wanted else None

    @property
    def keeps_gradient(self) -> bool:
        """Whether ∇L is kept as one P-float sum (like a training step's ``.grad``): over
        several micro-batches or processes. One micro-batch reduces each tensor's gradient
        to its norm (and the population's a_s and c_s = ⟨v_s, V⟩) as it is computed."""
        return self.several or self.reduction is not None

    @property
    def second_pass(self) -> bool:
        """Whether c_s needs a second pass over the micro-batches (V known only after the
        first): with several micro-batches or processes; one micro-batch reuses its graph."""
        return self.sums is not None and (self.several or self.reduction is not None)

    # -- sizes ----------------------------------------------------------------------------

    def plan(
        self,
        one_sample: Callable[[], AdaptedBatch],
        num_samples: int,
        micro_batch_size: int | None,
        probe_batch_size: int | None,
        report: Callable[[MemoryPlan], None] | None = None,
    ) -> int:
        """Choose the micro-batch and the probe batch; returns the micro-batch size.

        Sizes not given are chosen so that the estimated need (``specprobe.core.memory``) fits
        the available memory: probes per backward pass are halved first, then the
        micro-batch. On a CPU a need that does not fit even then is refused here, before
        the process would be killed by the OS. ``report`` receives the chosen plan.
        """
        default_micro, default_chunk = self.trace.default_sizes(num_samples)
        micro = min(micro_batch_size or default_micro, num_samples)
        chunk = probe_batch_size or default_chunk
        if self.trace.sized_by_memory:
            available = available_bytes(self.params[0].device)
            if available is not None or report is not None:
                micro, chunk, chosen = self._fit(
                    one_sample, available, num_samples, (micro, chunk), (micro_batch_size, probe_batch_size)
                )
                if report is not None:
                    report(chosen)
        self.chunk = chunk
        self.several = micro < num_samples
        if not self.trace.keeps_probe_sums(self.several):
            self.sum_block = self.trace.probes
        return micro

    def _fit(
        self,
        one_sample: Callable[[], AdaptedBatch],
        available: int | None,
        num_samples: int,
        sizes: tuple[int, int],
        given: tuple[int | None, int | None],
    ) -> tuple[int, int, MemoryPlan]:
        """(micro-batch, probe batch, their plan) from ``sizes`` shrunk until the need fits
        ``available`` bytes (None: as given; the sizes ``given`` explicitly are kept); sets
        the probe sums' block."""
        (micro, chunk), (micro_batch_size, probe_batch_size) = sizes, given
        param_bytes = self.num_params * torch.finfo(self.acc).bits // 8
        model_bytes = sum(p.numel() * p.element_size() for p in self.params)
        largest = max(p.numel() * p.element_size() for p in self.params)
        self.ghost.reset()
        cost = sample_cost(one_sample, self.params, self.ghost.hooked_bytes)
        self.ghost.reset()

        held = held_bytes(self.params[0].device)
        process = 0 if held is None else max(0, held - model_bytes)

        device = self.params[0].device
        host_room = available_bytes(torch.device("cpu")) if device.type != "cpu" else None

        def estimate(micro: int, chunk: int) -> MemoryPlan:
            keep = micro < num_samples or self.reduction is not None  # V, as keeps_gradient
            graph = cost.need(micro, 0)
            return MemoryPlan(
                weights=model_bytes,
                process=process,
                gradient_sum=param_bytes if keep else 0,
                gradient_sum_dtype=str(self.acc).removeprefix("torch."),
                graph=graph,
                probes=cost.need(micro, chunk) - graph,
                transients=2 * largest,
                micro_batch_size=micro,
                probe_batch_size=chunk,
                available=available,
                training_step=process + 2 * model_bytes + graph,
                gradient_sum_on_host=self.on_host,
                host_available=host_room if self.on_host else None,
            )

        def need(micro: int, chunk: int) -> int:
            chosen = estimate(micro, chunk)
            return chosen.total - chosen.weights - chosen.process

        def shrunk(micro: int, chunk: int) -> tuple[int, int]:
            if available is None:
                return micro, chunk
            if probe_batch_size is None:
                chunk = min(chunk, cost.probe_cap(micro, model_bytes))
            while need(micro, chunk) > available:
                if probe_batch_size is None and chunk > 1:
                    chunk = max(1, chunk // 2)
                elif micro_batch_size is None and micro > 1:
                    micro = -(-micro // 2)
                else:
                    break
            return micro, chunk

        self.on_host = gradient_sum_on_host(device, self.sum_place, True, 0, None)  # as requested
        fitted = shrunk(micro, chunk)
        chosen = estimate(*fitted)
        fits = available is None or need(*fitted) <= available
        if chosen.gradient_sum and gradient_sum_on_host(
            device, self.sum_place, fits, chosen.gradient_sum, host_room
        ):
            self.on_host = True  # the model's GPU has no room for V beside the micro-batch
            fitted = shrunk(micro, chunk)
            chosen = estimate(*fitted)
        micro, chunk = fitted
        if available is None:  # nothing to fit to: the sizes as they are, only stated
            return micro, chunk, chosen
        if chosen.refused(cpu=device.type == "cpu"):
            if chosen.host_available is not None and chosen.host > chosen.host_available:
                raise TooLargeError(
                    f"expected the gradient sum V ({human_bytes(chosen.host)}, {chosen.gradient_sum_dtype}) to fit "
                    f"in the host's memory, as it does not fit on the GPU beside the model, found "
                    f"{human_bytes(chosen.host_available)} available there (the plan: {chosen.describe()})",
                    _too_large_hint(chosen),
                )
            raise TooLargeError(
                f"expected the measurement to fit in memory, found it needs about {human_bytes(need(micro, chunk))} "
                f"beyond the weights and {human_bytes(available)} is available to it (the plan: "
                f"{chosen.describe()})",
                _too_large_hint(chosen),
            )
        if self.trace.keeps_probe_sums(micro < num_samples):
            # Probe sums of P floats each: as many as a training step's own addition
            # (gradient and activations) and the free memory allow, at least one.
            training = param_bytes + micro * cost.saved
            spare = available - need(micro, chunk) + param_bytes
            self.sum_block = int(min(self.trace.probes, max(1, min(spare, training) // param_bytes)))
        return micro, chunk, chosen

    def blocks(self) -> list[tuple[int, int]]:
        """Probe ranges, one pass over the micro-batches each: one range, except for
        HUTCHINSON over several micro-batches when m probe sums do not fit at once."""
        return self.trace.blocks(self.several, self.sum_block)

    # -- one micro-batch ------------------------------------------------------------------

    def add(self, adapted: AdaptedBatch, first_sample: int, block: tuple[int, int]) -> None:
        """Add one micro-batch whose first sample has global index ``first_sample``."""
        f, mask = adapted.outputs, adapted.mask
        if not f.requires_grad:  # the backward passes below would fail with a raw RuntimeError
            raise BatchError(
                "expected model outputs that depend on the parameters through autograd, found outputs "
                "without a gradient (a forward under torch.no_grad or torch.inference_mode, or .detach())",
                "let the model's forward run with autograd on (specprobe turns it on around the call)",
            )
        if block[0] > 0:  # a later block of probe sums: the rest was done in the first pass
            self.trace.add(f, mask, first_sample, block, self.chunk, self.several)
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
        self.trace.check_outputs(self.outputs)
        loss_sum, residual = loss_and_residual(adapted, self.acc)
        self.entries += rows if adapted.loss is Loss.CROSS_ENTROPY else rows * f.shape[-1]
        self.loss_sum += loss_sum
        losses, entries = sample_losses(adapted, self.acc)
        local = slice(first_sample - self.offset, first_sample - self.offset + losses.shape[0])
        self.sample_loss[local] += losses
        self.sample_entries[local] += entries
        rho = residual_norms(residual)  # ρ_s, once: Σ‖g̃‖² and the population's
        self.residual_sq_sum += float(rho.sum())
        # One micro-batch: the population's a_s and c_s come from the gradient's own backward
        # pass, each tensor's as its part of V arrives (V is never held whole). The last of
        # several in one process too: V is complete once its part is added (no second pass).
        sums = (
            self.sums
            if self.sums is not None and (not self.second_pass or self._last(first_sample, f))
            else None
        )
        self._gradient(f, residual.to(f.dtype), first_sample, sums, rho)
        self.trace.add(f, mask, first_sample, block, self.chunk, self.several)

    def _last(self, first_sample: int, f: Tensor) -> bool:
        """Whether the micro-batch from ``first_sample`` with outputs ``f`` is the last of this
        one process (with processes, V is known only after their sum)."""
        return self.reduction is None and first_sample + f.shape[0] >= self.num_samples

    def second_pass_stop(self, num_samples: int, micro: int) -> int:
        """The second pass covers samples [0, stop): in one process the last micro-batch's
        c_s came from its first pass (:meth:`add`), so it stops before that micro-batch."""
        if self.reduction is not None:
            return num_samples
        return (num_samples - 1) // micro * micro

    def add_population(self, adapted: AdaptedBatch, local: int) -> None:
        """The second pass: the per-sequence terms of one micro-batch (this process's
        samples from ``local``), V being known."""
        assert self.sums is not None
        if int(adapted.mask.sum()) == 0:
            return
        _, residual = loss_and_residual(adapted, self.acc)
        gradient: Sequence[Tensor] = self._gradient_tensors()
        if self.on_host:  # each V_p comes to the model's device when its tensor's turn comes
            gradient = OnDevice(gradient, [p.device for p in self.params])
        self.sums.add(self.ghost, adapted.outputs, residual, local, gradient)

    def _gradient_tensors(self) -> list[Tensor]:
        """V per tensor (zeros for a tensor the outputs do not reach), in place in ``grad``."""
        assert self.grad is not None
        for i, (g, p) in enumerate(zip(self.grad, self.params, strict=True)):
            if g is None:
                self.grad[i] = torch.zeros(p.shape, dtype=self.acc, device=self.sum_device or p.device)
        return [g for g in self.grad if g is not None]

    @property
    def sum_device(self) -> torch.device | None:
        """Where V is kept: the host when :attr:`on_host`, else None (beside each tensor)."""
        return torch.device("cpu") if self.on_host else None

    def reduce(self) -> None:
        """After the pass over this process's micro-batches: sum the gradient, the trace and
        the scalars across processes (``measure(reduce=...)``); nothing in one process."""
        if self.reduction is None:
            return
        if self.grad is None:
            self.grad = [None] * len(self.params)
        self.reduction.sum_(self._gradient_tensors())
        self.trace.reduce(self.reduction)
        totals = self.reduction.sum_scalars(
            np.array(
                [
                    self.loss_sum,
                    self.residual_sq_sum,
                    self.rows,
                    self.outputs,
                    self.entries,
                    self.num_samples,
                ],
                dtype=np.float64,
            )
        )
        self.loss_sum, self.residual_sq_sum = float(totals[0]), float(totals[1])
        self.rows, self.outputs, self.entries, self.num_samples = (round(float(v)) for v in totals[2:])

    def _gradient(
        self,
        f: Tensor,
        cotangent: Tensor,
        first_sample: int,
        sums: SequenceSums | None = None,
        rho: np.ndarray | None = None,
    ) -> None:
        """∇L of this micro-batch (unnormalised), reduced per tensor as each is computed;
        with ``sums`` (one micro-batch, one process) also the per-sequence a_s and c_s of the
        same backward pass, added with the micro-batch's ``rho``."""
        finite = True

        def norm(index: int, grad: Tensor) -> None:
            nonlocal finite
            value = squared_norm(grad)  # a non-finite entry makes it non-finite
            finite = finite and math.isfinite(value)
            self.grad_sq[index] += value

        if self.keeps_gradient:
            if self.grad is None:
                self.grad = [None] * len(self.params)
            grad = self.grad
            add = add_into(grad, self.acc, self.sum_device)
            if sums is not None:  # the last micro-batch: c_s against V, complete once added
                assert rho is not None

                def total(index: int) -> Tensor:
                    summed = grad[index]
                    assert summed is not None  # consume has just added into it
                    return summed.to(self.params[index].device)  # from the host, one tensor at a time

                terms = self.ghost.gradient_terms(f, cotangent, add, total)
                assert terms.inner is not None
                sums.take(terms.values[0], terms.inner[0], rho, first_sample)
            else:
                backward_each(f, cotangent, self.params, add)
        elif sums is not None:
            assert rho is not None
            terms = self.ghost.gradient_terms(f, cotangent, norm)
            assert terms.inner is not None
            sums.take(terms.values[0], terms.inner[0], rho, 0)
        else:
            backward_each(f, cotangent, self.params, norm)
        if not finite:
            raise NonFiniteError(
                f"expected a finite gradient, found NaN or inf (samples {first_sample}..)",
                _NON_FINITE_HINT,
            )

    def finish(
        self,
        *,
        num_samples: int,
        micro_batch_size: int,
        adapter: str,
        params: tuple[str, ...] | None,
        start_time: float,
    ) -> Measurement:
        """The :class:`Measurement` of the sums: normalised by n once, here."""
        if self.rows == 0:
            raise BatchError(
                "expected at least one counted output, found every output masked "
                "(attention_mask 0 or label -100 everywhere)",
                "pass a batch with unmasked targets; a sequence needs two tokens to predict one",
            )
        n = float(self.entries)
        if self.grad is not None:
            self.grad_sq = np.array([0.0 if g is None else squared_norm(g) for g in self.grad])
            if not np.isfinite(self.grad_sq).all():
                raise NonFiniteError("expected a finite gradient, found NaN or inf", _NON_FINITE_HINT)
        grad_sq = self.grad_sq / n**2
        grad_norm_sq = float(grad_sq.sum())
        chi_loss = self.residual_sq_sum / n**2
        chi_net, chi_net_stderr = self.trace.trace(np.ones(len(self.params), dtype=bool))
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
        entries = self._sample_entries()  # n_s of the whole set (one gather across processes)
        loss_stderr = self._loss_stderr(entries)
        counted = entries > 0  # the sequences with a counted output
        self.terms = Terms.gather(self.sums, self.trace.sample_traces(), self.reduction, counted)
        whole = (
            None if self.terms is None else self.terms.estimate(self.grad_sq, np.ones(len(self.params), bool))
        )
        fields = (
            {} if whole is None else measurement_fields(whole, self.outputs, self.rows, int(counted.sum()))
        )
        return Measurement(
            loss=self.loss_sum / n,
            loss_stderr=loss_stderr,
            grad_norm_sq=grad_norm_sq,
            chi_loss=chi_loss,
            chi_net=chi_net,
            chi_net_stderr=chi_net_stderr,
            spectral_position=position,
            spectral_position_stderr=position * chi_net_stderr / chi_net,
            num_outputs=self.outputs,
            num_params=self.num_params,
            num_samples=self.num_samples,
            num_tokens=self.rows,
            estimator=self.estimator.value,
            probes=self.trace.probes,
            seed=self.seed,
            micro_batch_size=micro_batch_size,
            adapter=adapter,
            loss_kind=self.loss_kind.value,
            dtype=self.dtype,
            params=params,
            time_s=time.perf_counter() - start_time,
            groups=self._shares(chi_loss, grad_sq, chi_net, grad_norm_sq),
            **fields,
        )

    def _sample_entries(self) -> np.ndarray:
        """n_s, each sequence's counted entries, of the whole set (gathered across processes)."""
        return self.sample_entries if self.reduction is None else self.reduction.gather(self.sample_entries)

    def _loss_stderr(self, entries: np.ndarray) -> float | None:
        """The delete-one-sequence jackknife standard error of the loss L = Σ_s ℓ_s / Σ_s n_s
        (ℓ_s a sequence's summed loss, n_s its counted entries, ``entries`` of the whole set:
        :meth:`_sample_entries`), over the sequences with a
        counted entry; None with fewer than two. As the population position's errors, it
        is the spread over sequences: how far another draw of as many sequences would move L."""
        losses = self.sample_loss if self.reduction is None else self.reduction.gather(self.sample_loss)
        counted = entries > 0
        losses, entries = losses[counted], entries[counted]
        k = losses.shape[0]
        if k < 2:
            return None
        left_out = (losses.sum() - losses) / (entries.sum() - entries)
        return float(np.sqrt((k - 1) / k * np.sum((left_out - left_out.mean()) ** 2)))

    def _shares(
        self, chi_loss: float, grad_sq: np.ndarray, chi_net: float, grad_norm_sq: float
    ) -> tuple[GroupShare, ...] | None:
        """The split by parameter group, in the groups' first-seen order (None without groups)."""
        if self.group_names is None:
            return None
        return tuple(
            self._group(name, chi_loss, grad_sq, chi_net, grad_norm_sq)
            for name in dict.fromkeys(self.group_names)
        )

    def _group(
        self, name: str, chi_loss: float, grad_sq: np.ndarray, chi_net: float, grad_norm_sq: float
    ) -> GroupShare:
        assert self.group_names is not None
        members = np.array([g == name for g in self.group_names])
        trace, stderr = self.trace.trace(members)
        grad = float(grad_sq[members].sum())
        population = None if self.terms is None else self.terms.estimate(self.grad_sq, members)
        return GroupShare(
            name=name,
            num_params=sum(p.numel() for p, m in zip(self.params, members, strict=True) if m),
            chi_net=trace,
            chi_net_stderr=stderr,
            grad_norm_sq=grad,
            spectral_position=grad / (chi_loss * trace) if trace > 0 else float("nan"),
            chi_net_share=trace / chi_net,
            grad_norm_sq_share=grad / grad_norm_sq if grad_norm_sq > 0 else 0.0,
            population_position=None if population is None else population.population_position,
            population_position_stderr=None if population is None else population.population_position_stderr,
        )


def sample_losses(adapted: AdaptedBatch, acc: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's summed loss ℓ_s and its counted entries n_s (``(N,)`` each) of outputs
    ``(N, K, C)`` with mask ``(N, K)``, summed as :func:`~specprobe.core.adapters.loss_and_residual`
    sums them: cross-entropy over the counted rows, squared error over their entries. Cost:
    one more log-softmax over the outputs; no graph."""
    f = adapted.outputs.detach().to(acc)
    rows = adapted.mask.to(acc)
    if adapted.loss is Loss.CROSS_ENTROPY:
        picked = torch.log_softmax(f, dim=-1).gather(-1, adapted.targets.unsqueeze(-1)).squeeze(-1)
        losses, entries = -(picked * rows).sum(-1), rows.sum(-1)
    else:
        diff = f - adapted.targets.detach().to(acc)
        losses, entries = (diff.square() * rows.unsqueeze(-1)).sum((-2, -1)), rows.sum(-1) * f.shape[-1]
    return losses.cpu().numpy().astype(np.float64), entries.cpu().numpy().astype(np.float64)
