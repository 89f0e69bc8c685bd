"""The matrix-free eNTK operator: Θ·U = J (Jᵀ U) without forming J or Θ.

For a batch with counted raw outputs f ∈ R^D and selected parameters θ ∈ R^P, the eNTK is
Θ = J Jᵀ with J = ∂f/∂θ ∈ R^{D×P} (see specprobe.core.measure). :class:`NTKOperator` applies Θ to a
block of b vectors U ∈ R^{D×b} in two halves:

1. w = Jᵀ U: one reverse-mode pass (vector–Jacobian product) per column, b columns batched
   into one backward pass; P numbers per column.
2. Θ U = J w: one Jacobian–vector product per column, either by forward mode
   (``torch.func.jvp``) or by differentiating the vector–Jacobian product with respect to its
   cotangent (the double-vjp trick), see :class:`ProductMode`.

Θ has cross-sample blocks, (ΘU)_s = J_s Σ_s' J_s'ᵀ U_s', so with micro-batches the first half
is summed over all micro-batches before the second half starts: w = Σ_mb J_mbᵀ U_mb, then
(ΘU)_mb = J_mb w for each micro-batch.

Flat order of output space (the same as ``specprobe.core.dense``): the counted rows of
``outputs[mask]`` in sample order, then row order (token positions), each row's C entries
contiguous, i.e. ``outputs[mask].reshape(-1)`` over the whole batch. Micro-batching does not
change it.

Vectors in output space (inputs and results of the products, Krylov vectors of the
solvers in ``specprobe.linalg.eigen``) are float64 on the outputs' device. The model runs in its
own dtype; the parameter-space sums w accumulate in float64 for a float64 model and in
float32 otherwise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from specprobe.core.adapters import (
    Adapter,
    AdapterKind,
    Loss,
    loss_and_residual,
    resolve_adapter,
)
from specprobe.core.params import measuring, select_parameters
from specprobe.core.probes import rademacher_columns
from specprobe.errors import BatchError, NonFiniteError, SpecprobeError, TooLargeError

if TYPE_CHECKING:  # scipy is not a runtime dependency: imported inside to_scipy() only
    from scipy.sparse.linalg import LinearOperator

KRYLOV_DTYPE = torch.float64
"""The dtype of vectors in output space: products, Krylov bases, eigenvectors."""


class ProductMode(str, Enum):
    """How the second half of a product, J·w (a Jacobian–vector product), is computed.

    The first half, Jᵀ·U, is always reverse mode on the model's autograd graph. Both modes
    give the same numbers (to rounding); they differ in cost, memory and what the model
    must support.
    """

    AUTO = "auto"
    """DOUBLE_VJP when the forward graph is cached (``cache_graph=True``), JVP otherwise; if
    the model does not support the chosen one (an op without forward-mode AD or without a
    double backward raises, or the first products fail the consistency check of
    ``verify``), the other is used. :attr:`NTKOperator.mode_used` records the choice and
    :attr:`NTKOperator.fallback_reason` why."""

    JVP = "jvp"
    """Forward mode: ``torch.func.jvp`` over ``functional_call``, vmapped over the block.
    Recomputes the primal forward inside every call (1 forward pass with tangents per block;
    on CPU eager forward mode costs ≈ 5 forward passes per column) and holds no
    graph beyond that: memory is one micro-batch's activations plus b tangents. Needs
    forward-mode AD for every op (not the fused SDPA attention kernels: use eager
    attention)."""

    DOUBLE_VJP = "double_vjp"
    """J·w = ∂/∂u ⟨Jᵀu, w⟩: the vector–Jacobian product u ↦ Jᵀu is linear in u, so
    differentiating it (built once with ``create_graph=True``) with respect to u, with
    cotangent w, gives J·w. With the graph cached, the forward pass and this first
    backward graph are built once per micro-batch and shared by every product; each column
    then costs two backward-type passes (on a tiny GPT-NeoX on CPU: the vector–Jacobian
    product ≈ 1.3 and J·w ≈ 1.8 forward passes). Memory: the forward activations plus the first
    backward's graph (≈ 2-3× the activations of a training step). Needs double backward
    for every op (some custom autograd Functions lack it)."""


@dataclass
class _Part:
    """One micro-batch: its place in the batch and in the flat output order, and its graph."""

    batch: Any
    start: int  # first sample
    offset: int  # first flat output index
    size: int  # counted outputs of this micro-batch
    mask: Tensor  # (n, K) counted rows
    shape: torch.Size  # (n, K, C) outputs
    full: bool = False  # every row counted (no scatter needed)
    outputs: Tensor | None = None  # cached forward graph
    cotangent: Tensor | None = None  # DOUBLE_VJP: the leaf u of the first backward
    first_vjp: list[Tensor | None] | None = None  # DOUBLE_VJP: Jᵀu, built with create_graph


class NTKOperator:
    """The eNTK Θ = J Jᵀ of ``model`` on ``batch`` as a matrix-free symmetric operator.

    Shape (D, D), D the number of counted raw outputs (counted rows × C); flat order as in
    the module docstring (``outputs[mask].reshape(-1)``). Products take and return float64
    tensors in output space on the outputs' device.

    Args:
        model: any ``torch.nn.Module``; it is put in measuring state (eval mode,
            ``requires_grad`` on the selected parameters only) while the operator is in use
            and restored after, see :func:`specprobe.core.params.measuring`.
        batch: what the adapter reads (a tokenizer's output, ``(inputs, targets)``, ...).
        adapter: how the batch becomes outputs, targets and mask (chosen from the batch
            when None); see ``specprobe.core.adapters``.
        params: glob patterns on parameter names selecting θ (as in
            :func:`specprobe.core.params.select_parameters`); None selects all trainable ones.
            Θ over a parameter group is that group's kernel J_g J_gᵀ.
        micro_batch_size: samples per forward pass; products do not depend on it (to
            rounding). Default: the whole batch.
        mode: how J·w is computed (:class:`ProductMode`).
        cache_graph: keep each micro-batch's forward graph (and, for DOUBLE_VJP, its first
            backward graph) while the operator is in use, so all products of one solve share
            one forward pass. Memory: the graphs of all micro-batches at once. With False,
            every product recomputes the forward pass of each micro-batch (2-3 forward passes
            per block product) and holds only one micro-batch's graph at a time: use it with
            small micro-batches when memory is tight.
        vector_batch_size: columns per batched backward pass (memory: that many copies of
            the activation gradients of one micro-batch).
        verify: before the first product, check zᵢᵀ(Θzⱼ) = ⟨Jᵀzᵢ, Jᵀzⱼ⟩ for two random
            z (2 products, counted in :attr:`products`): J·w against the vector–Jacobian
            products. A double backward that silently drops a path (an autograd Function
            whose backward is ``@once_differentiable`` does that) fails it: in AUTO mode the
            operator then switches to JVP, in an explicit mode it raises.

    Use it as a context manager to share the cached graphs across calls; outside a
    ``with`` block every call enters the measuring state and builds its graphs itself::

        with NTKOperator(model, batch) as op:
            y = op.matmat(U)  # (D, b)

    Construction costs one forward pass without gradients per micro-batch (to find D, the
    mask and the loss residual). Cost of a block product of b columns: b reverse-mode
    vector–Jacobian products (batched) and b Jacobian–vector products, over every
    micro-batch, plus one forward pass per micro-batch when the graph is not cached yet
    (and, once per operator, the 2-product check of ``verify``). Memory beyond the graphs:
    b·P floats for w (accumulation dtype), and b·D float64 for the result.

    Counters: :attr:`products` (columns of Θ·U), :attr:`quadratic_forms` (columns of
    ‖Jᵀz‖², half a product each), :attr:`forward_passes`; :meth:`reset_counters`.
    """

    def __init__(
        self,
        model: nn.Module,
        batch: Any,
        *,
        adapter: Adapter | AdapterKind | str | Callable[[nn.Module, Any], Any] | None = None,
        params: Sequence[str] | str | None = None,
        micro_batch_size: int | None = None,
        mode: ProductMode | str = ProductMode.AUTO,
        cache_graph: bool = True,
        vector_batch_size: int = 16,
        verify: bool = True,
    ) -> None:
        self.model = model
        self.batch = batch
        self.adapter = resolve_adapter(adapter, batch)
        self.mode = _parse_mode(mode)
        self.cache_graph = cache_graph
        if vector_batch_size < 1:
            raise SpecprobeError(
                f"expected vector_batch_size >= 1, found {vector_batch_size}", "use the default, 16"
            )
        self.vector_batch_size = vector_batch_size
        self.selected = select_parameters(model, params)
        self.params = [p for _, p in self.selected]
        self.names = [name for name, _ in self.selected]
        self.params_patterns: tuple[str, ...] | None = (
            (params,) if isinstance(params, str) else (tuple(params) if params is not None else None)
        )
        self.model_dtype = self.params[0].dtype
        self.acc_dtype = torch.float64 if self.model_dtype == torch.float64 else torch.float32
        self.num_params = sum(p.numel() for p in self.params)
        self.num_samples = self.adapter.num_samples(batch)
        if self.num_samples == 0:
            raise BatchError(
                "expected a batch with at least one sample, found an empty batch", "pass some data"
            )
        if micro_batch_size is not None and micro_batch_size < 1:
            raise SpecprobeError(
                f"expected micro_batch_size >= 1, found {micro_batch_size}", "use None for the whole batch"
            )
        self.micro_batch_size = min(micro_batch_size or self.num_samples, self.num_samples)
        self.products = 0
        self.quadratic_forms = 0
        self.forward_passes = 0
        self.mode_used: ProductMode | None = None if self.mode is ProductMode.AUTO else self.mode
        self.fallback_reason: str | None = None
        self.verify = verify
        self._verified = False
        self._depth = 0
        self._stack: ExitStack | None = None
        self._parts: list[_Part] = []
        self._scan()

    # ---- shape and the loss residual -------------------------------------------------------

    @property
    def num_outputs(self) -> int:
        """D, the number of counted raw outputs."""
        return self._num_outputs

    @property
    def shape(self) -> tuple[int, int]:
        """(D, D)."""
        return (self._num_outputs, self._num_outputs)

    @property
    def device(self) -> torch.device:
        """Where output-space vectors live: the device of the model's outputs."""
        return self._device

    @property
    def residual(self) -> Tensor:
        """g = ∂L/∂f, shape (D,), float64, L the mean loss over the counted outputs.

        Cross-entropy: g_t = (softmax(f_t) − onehot(y_t)) / n, n the counted rows; MSE:
        g = 2 (f − y) / n, n the counted entries. Computed at construction (no extra cost).
        """
        return self._residual

    @property
    def loss(self) -> float:
        """L, the mean training loss over the counted outputs."""
        return self._loss

    @property
    def loss_kind(self) -> Loss:
        return self._loss_kind

    def sample_offsets(self) -> list[int]:
        """Start of each sample's outputs in the flat order, plus D at the end (N + 1 entries)."""
        return list(self._sample_offsets)

    def _scan(self) -> None:
        """One forward pass per micro-batch without gradients: masks, D, residual and loss."""
        residuals: list[Tensor] = []
        loss_sum, entries, offset = 0.0, 0, 0
        sample_offsets = [0]
        loss_kind: Loss | None = None
        device: torch.device | None = None
        with measuring(self.model, self.selected), torch.no_grad():
            for start in range(0, self.num_samples, self.micro_batch_size):
                stop = min(start + self.micro_batch_size, self.num_samples)
                part_batch = self.adapter.take(self.batch, start, stop)
                adapted = self.adapter(self.model, part_batch)
                self.forward_passes += 1
                f, mask = adapted.outputs, adapted.mask
                rows = int(mask.sum())
                if rows and not bool(torch.isfinite(f[mask]).all()):
                    raise NonFiniteError(
                        f"expected finite model outputs, found NaN or inf in the counted outputs of "
                        f"samples {start}..{stop - 1}",
                        "check the checkpoint and the dtype (float16 overflows easily; try float32); with "
                        "a left-padded batch, pad on the right",
                    )
                size = rows * int(f.shape[-1])
                self._parts.append(_Part(part_batch, start, offset, size, mask, f.shape, bool(mask.all())))
                # Each sample's outputs end C·(its counted rows and those before it) after the part's start.
                ends = mask.sum(1).cumsum(0) * int(f.shape[-1])
                sample_offsets.extend(offset + int(e) for e in ends)
                offset += size
                part_loss, part_residual = loss_and_residual(adapted, torch.float64)
                part_residual = part_residual[adapted.mask].reshape(-1)
                loss_sum += part_loss
                entries += rows if adapted.loss is Loss.CROSS_ENTROPY else size
                residuals.append(part_residual)
                loss_kind = adapted.loss
                device = f.device
        if offset == 0 or loss_kind is None or device is None:
            raise BatchError(
                "expected at least one counted output, found every output masked "
                "(attention_mask 0 or label -100 everywhere)",
                "pass a batch with unmasked targets; a sequence needs two tokens to predict one",
            )
        self._num_outputs = offset
        self._device = device
        self._loss_kind = loss_kind
        self._loss = loss_sum / entries
        self._residual = torch.cat(residuals).to(device) / entries
        self._sample_offsets = sample_offsets

    # ---- measuring state and cached graphs -------------------------------------------------

    def __enter__(self) -> NTKOperator:
        if self._depth == 0:
            stack = ExitStack()
            stack.enter_context(measuring(self.model, self.selected))
            self._stack = stack
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.clear_cache()
            stack, self._stack = self._stack, None
            if stack is not None:
                stack.close()

    @contextmanager
    def _using(self) -> Iterator[None]:
        with self:
            yield

    def clear_cache(self) -> None:
        """Drop the cached graphs (they are rebuilt on the next product)."""
        for part in self._parts:
            part.outputs = part.cotangent = part.first_vjp = None

    def reset_counters(self) -> None:
        """Set :attr:`products`, :attr:`quadratic_forms` and :attr:`forward_passes` to 0."""
        self.products = self.quadratic_forms = self.forward_passes = 0

    def _outputs(self, part: _Part) -> Tensor:
        """The micro-batch's outputs with their autograd graph (cached or fresh)."""
        if part.outputs is not None:
            return part.outputs
        adapted = self.adapter(self.model, part.batch)
        self.forward_passes += 1
        f = adapted.outputs
        if f.shape != part.shape or not torch.equal(adapted.mask, part.mask):
            raise SpecprobeError(
                f"expected the same outputs on every forward pass, found shape {tuple(f.shape)} "
                f"(was {tuple(part.shape)}) or a different mask for samples {part.start}..",
                "the model or the batch changed while the operator was in use; build a new operator",
            )
        if not f.requires_grad:
            raise SpecprobeError(
                "expected outputs that depend on the selected parameters, found outputs without gradient",
                "select parameters that the outputs depend on (params=...)",
            )
        if self.cache_graph:
            part.outputs = f
        return f

    def _first_vjp(self, part: _Part) -> tuple[Tensor, list[Tensor | None]]:
        """DOUBLE_VJP: u and Jᵀu built with create_graph (cached with the forward graph)."""
        if part.cotangent is not None and part.first_vjp is not None:
            return part.cotangent, part.first_vjp
        f = self._outputs(part)
        u = torch.zeros_like(f, requires_grad=True)
        grads = torch.autograd.grad(f, self.params, u, create_graph=True, allow_unused=True)
        for name, g in zip(self.names, grads, strict=True):
            if g is not None and not g.requires_grad:
                raise RuntimeError(f"double backward is not supported: Jᵀu for {name} does not depend on u")
        first: list[Tensor | None] = list(grads)
        if self.cache_graph:
            part.cotangent, part.first_vjp = u, first
        return u, first

    # ---- products ------------------------------------------------------------------------

    def matvec(self, u: Tensor) -> Tensor:
        """Θ·u for one vector u of shape (D,); returns (D,) float64. Cost: one product."""
        return self.matmat(u.reshape(-1, 1)).reshape(-1)

    def matmat(self, U: Tensor) -> Tensor:
        """Θ·U for a block U of shape (D, b) (or (D,)); returns float64 of the same shape.

        Cost: b products (b vector–Jacobian and b Jacobian–vector products over every
        micro-batch, batched ``vector_batch_size`` at a time).
        """
        one = U.ndim == 1
        block = self._as_block(U)
        out = torch.empty_like(block)
        with self._using():
            if self.verify and not self._verified:
                self._verify_products()
            for lo in range(0, block.shape[1], self.vector_batch_size):
                hi = min(lo + self.vector_batch_size, block.shape[1])
                out[:, lo:hi] = self._product(block[:, lo:hi])
                self.products += hi - lo
        return out.reshape(-1) if one else out

    def _verify_products(self) -> None:
        """Check zᵢᵀΘzⱼ = ⟨Jᵀzᵢ, Jᵀzⱼ⟩ on two random z; switch AUTO to JVP, or raise, when it fails.

        The left side goes through J·w (the mode under test), the right side only through
        vector–Jacobian products, which are computed inside the product anyway: the check
        costs 2 products. A J·w that misses a path (an autograd Function with a
        ``@once_differentiable`` backward drops it silently under double backward) gives a
        smaller quadratic form, even when the wrong Θ stays symmetric.
        """
        self._verified = True
        tolerance = {torch.float64: 1e-8, torch.float32: 1e-4}.get(self.model_dtype, 3e-2)
        generator = torch.Generator().manual_seed(12345)
        Z = torch.randn(self._num_outputs, 2, generator=generator, dtype=KRYLOV_DTYPE).to(self._device)

        def mismatch() -> float:
            product, gram = self._product(Z, gram=True)
            self.products += 2
            through_jvp = Z.T @ product
            return float((through_jvp - gram).norm() / gram.norm().clamp_min(1e-300))

        error = mismatch()
        if error <= tolerance:
            return
        mode = self.mode_used.value if self.mode_used is not None else "auto"
        found = f"zᵀΘz from J·w differs from ‖Jᵀz‖² by {error:.2e} (> {tolerance:.0e}) in mode {mode!r}"
        if self.mode is ProductMode.AUTO and self.mode_used is ProductMode.DOUBLE_VJP:
            self.mode_used = ProductMode.JVP
            self.fallback_reason = f"double_vjp products were inconsistent: {found}"
            for part in self._parts:
                part.cotangent = part.first_vjp = None
            error = mismatch()
            if error <= tolerance:
                return
            found += f", and by {error:.2e} with 'jvp'"
        raise SpecprobeError(
            f"expected products consistent with the Jacobian, found {found}",
            "a custom autograd Function in the model may lack a correct double backward "
            "(@once_differentiable) or jvp; use mode='jvp', or fix the Function",
        )

    def __matmul__(self, U: Tensor) -> Tensor:
        return self.matmat(U)

    def quadratic_form(self, Z: Tensor) -> Tensor:
        """zᵀΘz = ‖Jᵀz‖² for each column z of Z (D, b) (or one vector (D,)); returns (b,) float64.

        Cost: b vector–Jacobian products only (half a product each): the way to evaluate
        Hutchinson probes and Tr(QᵀΘQ).
        """
        block = self._as_block(Z)
        out = torch.empty(block.shape[1], dtype=KRYLOV_DTYPE)
        with self._using():
            for lo in range(0, block.shape[1], self.vector_batch_size):
                hi = min(lo + self.vector_batch_size, block.shape[1])
                w = self._vjp_block(block[:, lo:hi])
                total = torch.zeros(hi - lo, dtype=KRYLOV_DTYPE)
                for t in w:
                    total += t.reshape(hi - lo, -1).square().sum(1).to(device="cpu", dtype=KRYLOV_DTYPE)
                out[lo:hi] = total
                self.quadratic_forms += hi - lo
        return out

    def _as_block(self, U: Tensor) -> Tensor:
        if not isinstance(U, Tensor):
            U = torch.as_tensor(U)
        block = U.reshape(-1, 1) if U.ndim == 1 else U
        if block.ndim != 2 or block.shape[0] != self._num_outputs:
            raise SpecprobeError(
                f"expected vectors of shape (D,) or (D, b) with D={self._num_outputs}, found {tuple(U.shape)}",
                "vectors live in output space: one entry per counted output, in the order of "
                "outputs[mask].reshape(-1)",
            )
        return block.to(device=self._device, dtype=KRYLOV_DTYPE)

    def _vjp_block(self, U: Tensor) -> list[Tensor]:
        """w = Jᵀ U = Σ over micro-batches of J_mbᵀ U_mb: b × (parameter shapes), acc dtype."""
        b = U.shape[1]
        w: list[Tensor | None] = [None] * len(self.params)
        for part in self._parts:
            chunk = U[part.offset : part.offset + part.size]
            if part.size == 0 or not bool(chunk.any()):
                continue  # this micro-batch adds nothing to Jᵀ U
            f = self._outputs(part)
            values = chunk.T.reshape(b, -1, part.shape[-1]).to(f.dtype)
            if part.full:  # every row counts: the cotangent is the block itself, reshaped
                cot = values.reshape(b, *part.shape)
            else:
                cot = torch.zeros((b, *part.shape), dtype=f.dtype, device=f.device)
                cot[:, part.mask] = values
            for i, g in enumerate(batched_vjp(f, self.params, cot)):
                if g is None:
                    continue
                g = g.to(self.acc_dtype)
                current = w[i]
                w[i] = g if current is None else current + g
        return [
            torch.zeros((b, *p.shape), dtype=self.acc_dtype, device=p.device) if t is None else t
            for t, p in zip(w, self.params, strict=True)
        ]

    @overload
    def _product(self, U: Tensor) -> Tensor: ...

    @overload
    def _product(self, U: Tensor, gram: Literal[True]) -> tuple[Tensor, Tensor]: ...

    def _product(self, U: Tensor, gram: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Θ U for one chunk of columns: w = Σ J_mbᵀ U_mb first, then J_mb w per micro-batch.

        With ``gram``, also (JᵀU)ᵀ(JᵀU), (b, b) float64, from the first half.
        """
        b = U.shape[1]
        w = self._vjp_block(U)
        out = torch.zeros_like(U)
        for part in self._parts:
            if part.size == 0:
                continue
            jw = self._jvp(part, w)  # (b, n, K, C)
            counted = jw.reshape(b, -1) if part.full else jw[:, part.mask].reshape(b, -1)
            out[part.offset : part.offset + part.size] = counted.T.to(KRYLOV_DTYPE)
        if not gram:
            return out
        flat = torch.cat([t.reshape(b, -1).to(KRYLOV_DTYPE) for t in w], 1)
        return out, (flat @ flat.T).to(self._device)

    def _jvp(self, part: _Part, w: list[Tensor]) -> Tensor:
        """J_mb w for a block of b parameter-space vectors: (b, n, K, C)."""
        mode = self.mode_used
        if mode is None:  # AUTO, first product: try the preferred mode, fall back once
            first = ProductMode.DOUBLE_VJP if self.cache_graph else ProductMode.JVP
            second = ProductMode.JVP if first is ProductMode.DOUBLE_VJP else ProductMode.DOUBLE_VJP
            try:
                result = self._jvp_with(first, part, w)
                self.mode_used = first
                return result
            except (RuntimeError, NotImplementedError) as err:
                try:
                    result = self._jvp_with(second, part, w)
                except (RuntimeError, NotImplementedError) as err2:
                    raise _unsupported(err, err2) from err2
                self.mode_used = second
                self.fallback_reason = f"{first.value} failed: {err}"
                return result
        try:
            return self._jvp_with(mode, part, w)
        except (RuntimeError, NotImplementedError) as err:
            if self.mode is ProductMode.AUTO:
                raise  # the mode worked before: this is not a matter of support
            raise SpecprobeError(
                f"the Jacobian–vector product in mode {mode.value!r} failed: {err}",
                "use mode='auto' (falls back to the other mode), or eager attention "
                "(attn_implementation='eager') for forward mode",
            ) from err

    def _jvp_with(self, mode: ProductMode, part: _Part, w: list[Tensor]) -> Tensor:
        b = w[0].shape[0]
        if mode is ProductMode.DOUBLE_VJP:
            u, first = self._first_vjp(part)
            pairs = [(g, t) for g, t in zip(first, w, strict=True) if g is not None]
            if not pairs:
                return torch.zeros((b, *part.shape), dtype=self.model_dtype, device=self._device)
            outs = [g for g, _ in pairs]
            tangents = [t.to(g.dtype) if b > 1 else t[0].to(g.dtype) for g, t in pairs]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*fall.*back.*")
                (jw,) = torch.autograd.grad(
                    outs, u, tangents, retain_graph=True, allow_unused=True, is_grads_batched=b > 1
                )
            if jw is None:
                return torch.zeros((b, *part.shape), dtype=self.model_dtype, device=self._device)
            return jw if b > 1 else jw.unsqueeze(0)
        # JVP: forward mode over a functional call; the primal forward is recomputed.
        primals = {name: p.detach() for name, p in zip(self.names, self.params, strict=True)}
        bound = _Functional(self.model)

        def outputs_of(values: dict[str, Tensor]) -> Tensor:
            bound.values = values
            return self.adapter(bound, part.batch).outputs

        tangents_d = {name: t.to(p.dtype) for name, p, t in zip(self.names, self.params, w, strict=True)}
        self.forward_passes += 1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fall.*back.*")
            if b == 1:
                single = {name: t[0] for name, t in tangents_d.items()}
                return jvp(outputs_of, (primals,), (single,))[1].unsqueeze(0)
            return vmap(lambda t: jvp(outputs_of, (primals,), (t,))[1], randomness="same")(tangents_d)

    # ---- checks, traces, conversions -----------------------------------------------------

    def check_symmetry(self, u: Tensor, v: Tensor) -> float:
        """|⟨u, Θv⟩ − ⟨Θu, v⟩| / max(‖u‖‖Θv‖, ‖Θu‖‖v‖): 0 up to rounding for a correct operator.

        The denominator is the Cauchy–Schwarz scale of both inner products, so the result is
        a relative error even when u and Θv are nearly orthogonal. Cost: 2 products.
        """
        uv = self._as_block(torch.stack([self._as_block(u)[:, 0], self._as_block(v)[:, 0]], 1))
        prod = self.matmat(uv)
        a = float(uv[:, 0] @ prod[:, 1])
        b = float(prod[:, 0] @ uv[:, 1])
        scale = max(
            float(uv[:, 0].norm() * prod[:, 1].norm()), float(prod[:, 0].norm() * uv[:, 1].norm()), 1e-300
        )
        return abs(a - b) / scale

    def trace_exact(self) -> float:
        """Tr Θ = Σ_i ‖∂f_i/∂θ‖² over all D outputs. Cost: D quadratic forms (D backward passes)."""
        return float(self.diagonal().sum())

    def diagonal(self) -> Tensor:
        """diag Θ, shape (D,) float64: ‖∂f_i/∂θ‖² per output. Cost: D quadratic forms."""
        d = self._num_outputs
        out = torch.empty(d, dtype=KRYLOV_DTYPE)
        with self._using():
            for lo in range(0, d, self.vector_batch_size):
                hi = min(lo + self.vector_batch_size, d)
                eye = torch.zeros(d, hi - lo, dtype=KRYLOV_DTYPE, device=self._device)
                eye[torch.arange(lo, hi), torch.arange(hi - lo)] = 1.0
                out[lo:hi] = self.quadratic_form(eye)
        return out

    def trace_hutchinson(self, probes: int = 32, seed: int = 0) -> tuple[float, float]:
        """Hutchinson's estimate of Tr Θ and its standard error: mean and sem of ‖Jᵀz‖².

        z ∈ {±1}^D Rademacher, probe j drawn from its own stream seeded by (seed, j), so the
        estimate does not depend on micro-batching. Cost: ``probes`` quadratic forms.
        """
        if probes < 2:
            raise SpecprobeError(
                f"expected at least 2 probes (for a standard error), found probes={probes}", "use probes=32"
            )
        values = self.quadratic_form(
            rademacher_columns(self._num_outputs, probes, seed, device=self._device)
        ).numpy()
        return float(values.mean()), float(values.std(ddof=1) / math.sqrt(probes))

    def to_dense(self, max_outputs: int = 4096) -> Tensor:
        """Θ as a dense (D, D) float64 tensor, built from D products (symmetrised). Tiny D only."""
        if self._num_outputs > max_outputs:
            raise TooLargeError(
                f"a dense kernel needs D products and D² numbers; D={self._num_outputs} exceeds "
                f"max_outputs={max_outputs}",
                "use a matrix-free solver (specprobe.linalg.eigen.spectrum with method='lanczos')",
            )
        eye = torch.eye(self._num_outputs, dtype=KRYLOV_DTYPE, device=self._device)
        theta = self.matmat(eye)
        return (theta + theta.T) / 2

    def to_scipy(self) -> LinearOperator:
        """A ``scipy.sparse.linalg.LinearOperator`` of shape (D, D), dtype float64, on numpy arrays.

        For scipy's solvers (``eigsh``, ``cg``, ...). scipy is not a dependency of specprobe:
        install it yourself (``pip install scipy``); it is imported here, on first use.
        Each ``matvec``/``matmat`` is one :meth:`matmat` call (products counted as usual);
        wrap the solver in ``with op:`` to share the forward graph across its calls.
        """
        try:
            from scipy.sparse.linalg import LinearOperator
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise SpecprobeError(
                "expected scipy to be installed for to_scipy(), found no scipy",
                "pip install scipy (it is not a dependency of specprobe)",
            ) from err

        def apply(x: np.ndarray) -> np.ndarray:
            result = self.matmat(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)))
            return result.cpu().numpy()

        return LinearOperator(
            shape=self.shape, dtype=np.float64, matvec=apply, rmatvec=apply, matmat=apply, rmatmat=apply
        )


class MatrixOperator:
    """An explicit symmetric matrix with the operator interface of :class:`NTKOperator`.

    For tests and for solvers on a Θ that is already dense (e.g. from
    :func:`specprobe.core.dense.dense_kernel`): ``matmat``, ``matvec``, ``quadratic_form``,
    ``shape``, ``num_outputs``, ``residual`` (optional), and the same counters.
    """

    def __init__(self, theta: Tensor, residual: Tensor | None = None) -> None:
        if theta.ndim != 2 or theta.shape[0] != theta.shape[1]:
            raise SpecprobeError(
                f"expected a square matrix, found shape {tuple(theta.shape)}", "pass Θ of shape (D, D)"
            )
        self.theta = theta.to(KRYLOV_DTYPE)
        self._residual = None if residual is None else residual.reshape(-1).to(KRYLOV_DTYPE)
        self.products = 0
        self.quadratic_forms = 0
        self.mode_used: ProductMode | None = None

    @property
    def num_outputs(self) -> int:
        return int(self.theta.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_outputs, self.num_outputs)

    @property
    def device(self) -> torch.device:
        return self.theta.device

    @property
    def residual(self) -> Tensor | None:
        return self._residual

    def __enter__(self) -> MatrixOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def matmat(self, U: Tensor) -> Tensor:
        self.products += 1 if U.ndim == 1 else U.shape[1]
        return self.theta @ U.to(device=self.theta.device, dtype=KRYLOV_DTYPE)

    def matvec(self, u: Tensor) -> Tensor:
        return self.matmat(u)

    def quadratic_form(self, Z: Tensor) -> Tensor:
        block = Z.reshape(-1, 1) if Z.ndim == 1 else Z
        block = block.to(device=self.theta.device, dtype=KRYLOV_DTYPE)
        self.quadratic_forms += block.shape[1]
        return (block * (self.theta @ block)).sum(0).cpu()


def _parse_mode(mode: ProductMode | str) -> ProductMode:
    try:
        return ProductMode(mode)
    except ValueError:
        valid = ", ".join(m.value for m in ProductMode)
        raise SpecprobeError(
            f"unknown product mode {mode!r}; expected one of: {valid}", f"pass one of: {valid}"
        ) from None


def _unsupported(err: BaseException, err2: BaseException) -> SpecprobeError:
    return SpecprobeError(
        "expected the model to support forward-mode AD or double backward for Jacobian–vector "
        f"products, found neither: forward/double-vjp failed with: {err} / {err2}",
        "load transformers models with attn_implementation='eager' (fused SDPA kernels support "
        "neither), or replace the custom autograd Function",
    )


def batched_vjp(f: Tensor, params: Sequence[Tensor], cotangents: Tensor) -> list[Tensor | None]:
    """Jᵀv for a block of cotangents (b, *f.shape): one batched backward pass, graph retained.

    ``is_grads_batched`` is autograd's vmap over the backward graph; where an operator has
    no batching rule, autograd falls back to a loop (slower, same numbers). Entries are
    ``(b, *p.shape)``, or None for a parameter that the outputs do not depend on.
    """
    b = cotangents.shape[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fall.*back.*")
        grads = torch.autograd.grad(
            f,
            params,
            cotangents if b > 1 else cotangents[0],
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=b > 1,
        )
    return [None if g is None else (g if b > 1 else g.unsqueeze(0)) for g in grads]


class _Functional(nn.Module):
    """Calls ``model`` with its parameters replaced by ``values`` (for torch.func)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = [model]  # a list, so the model is not registered as a submodule
        self.values: dict[str, Tensor] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.inner[0], self.values, args, kwargs)
