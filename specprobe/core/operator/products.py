"""The product itself, Θ U = J (Jᵀ U), over an operator's micro-batches (the engine of NTKOperator).

:class:`JacobianProducts` holds the two halves of a product and the graphs they share: the
first half w = Σ_mb J_mbᵀ U_mb (batched vector–Jacobian products, summed over micro-batches
in the accumulation dtype), the second (ΘU)_mb = J_mb w per micro-batch in the
:class:`~specprobe.core.operator.modes.ProductMode` in use, with the AUTO fallback between
modes. :class:`~specprobe.core.operator.ntk.NTKOperator` builds on it; nothing here counts
products (the callers do).
"""

from __future__ import annotations

import warnings
from typing import Literal, overload

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.func import jvp, vmap

from specprobe.core.adapters import Adapter
from specprobe.core.operator.modes import KRYLOV_DTYPE, ProductMode, unsupported
from specprobe.core.operator.parts import Part
from specprobe.core.operator.vjp import Functional, batched_vjp
from specprobe.errors import SpecprobeError

GRAM_SLICE = 2**20
"""Entries per slice of a tensor converted to float64 by :func:`gram_matrix` and :func:`squared_norms`."""


def gram_matrix(w: list[Tensor]) -> Tensor:
    """WᵀW for a block of b parameter-space vectors given tensor by tensor: (b, b) float64.

    Each tensor is read in slices of :data:`GRAM_SLICE` entries, converted to float64 and
    multiplied there (float32 sums over an embedding's tens of millions of entries would
    lose ~1e-4), and the (b, b) blocks are summed: no parameter-sized float64 copy and no
    concatenation; the largest transient is b × GRAM_SLICE float64 numbers.
    """
    b = w[0].shape[0] if w else 0
    total = torch.zeros(b, b, dtype=KRYLOV_DTYPE, device=w[0].device if w else None)
    for t in w:
        for piece in t.reshape(b, -1).split(GRAM_SLICE, dim=1):
            wide = piece.to(KRYLOV_DTYPE)
            total += wide @ wide.T
    return total


def squared_norms(w: list[Tensor]) -> Tensor:
    """‖w_j‖² for each of the b vectors of a block given tensor by tensor: (b,) float64 on the CPU.

    As :func:`gram_matrix`, slice by slice in float64, but only the diagonal (a batched dot
    product per slice).
    """
    b = w[0].shape[0] if w else 0
    total = torch.zeros(b, dtype=KRYLOV_DTYPE, device=w[0].device if w else None)
    for t in w:
        for piece in t.reshape(b, -1).split(GRAM_SLICE, dim=1):
            wide = piece.to(KRYLOV_DTYPE).unsqueeze(1)
            total += torch.bmm(wide, wide.transpose(1, 2)).reshape(b)
    return total.cpu()


class JacobianProducts:
    """The product machinery; the attributes are set by :class:`NTKOperator`'s constructor."""

    model: nn.Module
    adapter: Adapter
    params: list[nn.Parameter]
    names: list[str]
    model_dtype: torch.dtype
    acc_dtype: torch.dtype
    cache_graph: bool
    mode: ProductMode
    mode_used: ProductMode | None
    fallback_reason: str | None
    forward_passes: int
    _parts: list[Part]
    _device: torch.device

    def _outputs(self, part: Part) -> Tensor:
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

    def _first_vjp(self, part: Part) -> tuple[Tensor, list[GradientEdge | None]]:
        """DOUBLE_VJP: u and the graph of Jᵀu built with create_graph (cached with the forward graph).

        Built at u = 0, Jᵀu is zero: only its graph matters for J·w = ∂/∂u ⟨Jᵀu, w⟩. So each
        parameter's Jᵀu is kept as its autograd edge (:func:`~torch.autograd.graph.get_gradient_edge`)
        and the tensor is dropped: the cache holds no parameter-sized values (P numbers, 4
        bytes per parameter in float32, saved), only what the graph itself saves.
        """
        if part.cotangent is not None and part.first_vjp is not None:
            return part.cotangent, part.first_vjp
        f = self._outputs(part)
        u = torch.zeros_like(f, requires_grad=True)
        grads = torch.autograd.grad(f, self.params, u, create_graph=True, allow_unused=True)
        for name, g in zip(self.names, grads, strict=True):
            if g is not None and not g.requires_grad:
                raise RuntimeError(f"double backward is not supported: Jᵀu for {name} does not depend on u")
        first: list[GradientEdge | None] = [None if g is None else get_gradient_edge(g) for g in grads]
        del grads
        if self.cache_graph:
            part.cotangent, part.first_vjp = u, first
        return u, first

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
                current = w[i]
                if current is None:
                    w[i] = g.to(self.acc_dtype)
                else:  # in place: no third parameter-sized tensor while summing micro-batches
                    current.add_(g)
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

        With ``gram``, also (JᵀU)ᵀ(JᵀU), (b, b) float64, from the first half, summed tensor
        by tensor (:func:`gram`). Memory: the b·P numbers of w in the accumulation dtype.
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
        return out, gram_matrix(w).to(self._device)

    def _jvp(self, part: Part, w: list[Tensor]) -> Tensor:
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
                    raise unsupported(err, err2) from err2
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

    def _jvp_with(self, mode: ProductMode, part: Part, w: list[Tensor]) -> Tensor:
        """J_mb w in ``mode``: (b, n, K, C) in the model's dtype."""
        if mode is ProductMode.DOUBLE_VJP:
            return self._double_vjp(part, w)
        return self._forward_jvp(part, w)

    def _double_vjp(self, part: Part, w: list[Tensor]) -> Tensor:
        """J·w = ∂/∂u ⟨Jᵀu, w⟩ through the cached first backward graph."""
        b = w[0].shape[0]
        u, first = self._first_vjp(part)
        pairs = [(g, t, p) for g, t, p in zip(first, w, self.params, strict=True) if g is not None]
        if not pairs:
            return torch.zeros((b, *part.shape), dtype=self.model_dtype, device=self._device)
        outs = [g for g, _, _ in pairs]
        tangents = [t.to(p.dtype) if b > 1 else t[0].to(p.dtype) for _, t, p in pairs]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fall.*back.*")
            (jw,) = torch.autograd.grad(
                outs, u, tangents, retain_graph=True, allow_unused=True, is_grads_batched=b > 1
            )
        if jw is None:
            return torch.zeros((b, *part.shape), dtype=self.model_dtype, device=self._device)
        return jw if b > 1 else jw.unsqueeze(0)

    def _forward_jvp(self, part: Part, w: list[Tensor]) -> Tensor:
        """JVP: forward mode over a functional call; the primal forward is recomputed."""
        b = w[0].shape[0]
        primals = {name: p.detach() for name, p in zip(self.names, self.params, strict=True)}
        bound = Functional(self.model)

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
