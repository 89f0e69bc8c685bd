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
solvers in ``specprobe.linalg``) are float64 on the outputs' device. The model runs in its
own dtype; the parameter-space sums w accumulate in float64 for a float64 model and in
float32 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from specprobe.choices import parse_enum
from specprobe.core.adapters import Adapter, AdapterKind, Loss, resolve_adapter
from specprobe.core.memory import available_bytes
from specprobe.core.operator.hutchinson import hutchinson
from specprobe.core.operator.modes import KRYLOV_DTYPE, ProductMode
from specprobe.core.operator.parts import scan
from specprobe.core.operator.products import squared_norms
from specprobe.core.operator.verify import VerifiedProducts
from specprobe.core.params import measuring, select_parameters
from specprobe.errors import BatchError, SpecprobeError, TooLargeError

if TYPE_CHECKING:  # scipy is not a runtime dependency: imported inside to_scipy() only
    from scipy.sparse.linalg import LinearOperator


class NTKOperator(VerifiedProducts):
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
        vector_batch_size: columns per batched backward pass (memory: that many
            parameter-sized vectors w = Jᵀu in the accumulation dtype, and that many copies
            of the activation gradients of one micro-batch). Default (None): as many as fit
            in :data:`COLUMN_BUDGET` bytes on the CPU (a quarter of the free memory on an
            accelerator), from 1 to 16: tiny models batch 16 columns, models of tens of
            millions of parameters and more take one column per pass, so a product holds
            one P-sized w at a time (on the CPU a batched pass is hardly faster per column).
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
        vector_batch_size: int | None = None,
        verify: bool = True,
    ) -> None:
        self.model = model
        self.batch = batch
        self.adapter = resolve_adapter(adapter, batch)
        self.mode = parse_enum(ProductMode, mode, "product mode")
        self.cache_graph = cache_graph
        _check_sizes(vector_batch_size, micro_batch_size)
        self._vector_batch_size = vector_batch_size
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
        found = scan(model, self.selected, self.adapter, batch, self.num_samples, self.micro_batch_size)
        self._parts = found.parts
        self.forward_passes += found.forward_passes
        self._num_outputs = found.num_outputs
        self._device = found.device
        self._loss_kind = found.loss_kind
        self._loss = found.loss
        self._residual = found.residual
        self._sample_offsets = found.sample_offsets
        self.vector_batch_size = vector_batch_size or _columns_per_pass(
            self._device, self.num_params * torch.finfo(self.acc_dtype).bits // 8
        )

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
                out[lo:hi] = squared_norms(self._vjp_block(block[:, lo:hi]))
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
        return hutchinson(self, probes, seed)

    def to_dense(self, max_outputs: int = 4096) -> Tensor:
        """Θ as a dense (D, D) float64 tensor, built from D products (symmetrised). Tiny D only."""
        if self._num_outputs > max_outputs:
            raise TooLargeError(
                f"a dense kernel needs D products and D² numbers; D={self._num_outputs} exceeds "
                f"max_outputs={max_outputs}",
                "use a matrix-free solver (specprobe.spectrum with method='lanczos')",
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


COLUMN_BUDGET = 64 * 2**20
"""Bytes of parameter-space vectors w a product may hold at once on the CPU (default vector_batch_size)."""


def _columns_per_pass(device: torch.device, column_bytes: int) -> int:
    """The default vector_batch_size: columns whose w fit the budget, from 1 to 16."""
    budget = COLUMN_BUDGET
    if device.type != "cpu":
        free = available_bytes(device)
        budget = free // 4 if free is not None else budget
    return max(1, min(16, budget // max(column_bytes, 1)))


def _check_sizes(vector_batch_size: int | None, micro_batch_size: int | None) -> None:
    """Raise on a block or micro-batch size below 1."""
    if vector_batch_size is not None and vector_batch_size < 1:
        raise SpecprobeError(
            f"expected vector_batch_size >= 1, found {vector_batch_size}",
            "leave it unset (None: chosen from the memory)",
        )
    if micro_batch_size is not None and micro_batch_size < 1:
        raise SpecprobeError(
            f"expected micro_batch_size >= 1, found {micro_batch_size}", "use None for the whole batch"
        )
