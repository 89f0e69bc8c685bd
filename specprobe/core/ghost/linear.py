"""Linear layers: ``nn.Linear``, and transformers' ``Conv1D`` (GPT-2), a Linear with a transposed weight.

Weight W (out × in): ‖Σ_t δ_t a_tᵀ‖² = Σ_{t,t'} (δ_t·δ_t')(a_t·a_t'), cost T²(in + out)
per group; when T(in + out) > in·out the gradient δᵀa (out × in) is formed instead, one
group at a time. Bias: ‖Σ_t δ_t‖². The transpose of Conv1D's weight (in × out) does not
change the norm.

Inner products with a direction D shaped like W: Σ_t δ_tᵀ D a_t, a product like the
layer's forward (2·T·out·in flops); D in a lower precision than the accumulation dtype
(a bfloat16 model's gradient) is cast a block of rows at a time, never whole. With the
call's own batch gradient Σ_{t'} δ_t' a_t'ᵀ as D (one micro-batch), the same inner
product is Σ_{t, t'} (δ_t·δ_t')(a_t·a_t') over the batch's T tokens, T²(in + out) flops:
far cheaper at a few thousand tokens (:meth:`LinearRule.batch_inner`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from specprobe.core.ghost.registry import Call, Context, LayerRule, Tie, group, register_rule

_CHUNK_ELEMENTS = 1 << 24
"""Largest temporary Gram block (elements) formed at once."""
_CAST_ELEMENTS = 1 << 22
"""Largest block of a lower-precision direction cast to the accumulation dtype at once
(16 MiB in float32: below glibc's largest mmap threshold, so the block's memory is reused
rather than mapped and faulted in again for every block)."""


@register_rule
class LinearRule(LayerRule):
    """``nn.Linear`` with its own forward (a subclass that overrides it is not matched)."""

    tie: Tie | None = Tie.HEAD

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward

    def param_norm(self, call: Call, name: str, d: Tensor, groups: int, ctx: Context) -> Tensor:
        if name == "bias":
            return d.sum(2).square().sum(-1)
        a = group(call.input.detach().to(ctx.acc), groups)  # (G, N, in)
        return _linear_weight_norm(a, d)

    def param_inner(
        self, call: Call, name: str, direction: Tensor, d: Tensor, groups: int, ctx: Context
    ) -> Tensor:
        """⟨Σ_t δ_t a_tᵀ, D⟩ = Σ_t δ_tᵀ D a_t: one (tokens × out × in) product, like the
        layer's forward, in ``ctx.acc`` (D cast a block at a time where it is in a lower
        precision); bias: (Σ_t δ_t)·D."""
        if name == "bias":
            return d.sum(2) @ direction.to(ctx.acc)
        a = group(call.input.detach().to(ctx.acc), groups)  # (G, N, in)
        return self._bilinear(d, direction, a, ctx.acc)

    def batch_inner(self, call: Call, name: str, d: Tensor, groups: int, ctx: Context) -> Tensor | None:
        """⟨group gradient, Σ_t' δ_t' a_t'ᵀ over the call's T tokens⟩ as Σ_{t∈g} Σ_t'
        (δ_t·δ_t')(a_t·a_t'): T²(in + out) flops and T² floats in blocks, against
        2·T·out·in for :meth:`param_inner`; chosen when T(in + out) ≤ in·out, else None
        (and for the bias, whose direct form is cheap)."""
        if name == "bias":
            return None
        x = call.input.detach()
        width_in, width_out = x.shape[-1], d.shape[-1]
        tokens = x.numel() // width_in
        if not _gram_cheaper(tokens, width_in, width_out):
            return None
        return _whole_batch_gram(group(x.to(ctx.acc), groups), d)

    @staticmethod
    def _bilinear(d: Tensor, direction: Tensor, a: Tensor, acc: torch.dtype) -> Tensor:
        """Σ_t δ_tᵀ D a_t per probe and group with D stored as (out × in)."""
        return _bilinear(d, direction, a, acc)


@register_rule
class Conv1DRule(LinearRule):
    """transformers' ``Conv1D``, matched by name and module so transformers is not imported
    here. Not a tie head: its weight is (in × out), not an embedding table's (V × d)."""

    tie = None

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers.")

    @staticmethod
    def _bilinear(d: Tensor, direction: Tensor, a: Tensor, acc: torch.dtype) -> Tensor:
        """Σ_t a_tᵀ D δ_t with D stored as Conv1D keeps its weight, (in × out)."""
        return _bilinear(a, direction, d, acc)


def _gram_cheaper(tokens: int, width_in: int, width_out: int) -> bool:
    """Whether the whole batch's Gram form, T²(in + out) flops, is no dearer than a
    forward-sized product, T·in·out."""
    return tokens * (width_in + width_out) <= width_in * width_out


def _bilinear(x: Tensor, w: Tensor, y: Tensor, acc: torch.dtype) -> Tensor:
    """Σ_t x_tᵀ w y_t summed over a group's tokens: ``x`` (…, G, N, rows) and ``y``
    (…, G, N, cols) in ``acc`` (their leading dims broadcast), ``w`` (rows × cols) → (…, G).

    ``w`` in ``acc`` is used as it is; in a lower precision (a bfloat16 gradient) it is cast
    :data:`_CAST_ELEMENTS` at a time, a block of its rows, and the partial products x w added
    in ``acc``: the products are as exact as with the whole tensor cast, with no P-sized
    copy made per use.
    """
    if w.dtype == acc:
        return ((x @ w) * y).sum((-1, -2))
    step = max(1, _CAST_ELEMENTS // max(1, w.shape[1]))
    xw: Tensor | None = None
    for lo in range(0, w.shape[0], step):
        part = x[..., lo : lo + step] @ w[lo : lo + step].to(acc)
        xw = part if xw is None else xw.add_(part)
    assert xw is not None
    return (xw * y).sum((-1, -2))


def _whole_batch_gram(a: Tensor, d: Tensor) -> Tensor:
    """Σ_{t∈g} Σ_{t'} (δ_t·δ_t')(a_t·a_t') per probe and group, t' over every group's tokens:
    ``a`` (G, N, in), ``d`` (k, G, N, out) → (k, G). Rows of the two (T × T) Gram matrices
    are formed a block at a time (at most :data:`_CHUNK_ELEMENTS` per probe block)."""
    k, groups, n = d.shape[0], a.shape[0], a.shape[1]
    flat_a = a.reshape(-1, a.shape[-1])  # (T, in)
    flat_d = d.reshape(k, -1, d.shape[-1])  # (k, T, out)
    tokens = flat_a.shape[0]
    per_token = torch.empty((k, tokens), dtype=d.dtype, device=d.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, k * tokens))
    for lo in range(0, tokens, step):
        gram_a = flat_a[lo : lo + step] @ flat_a.T  # (rows, T)
        gram_d = flat_d[:, lo : lo + step] @ flat_d.transpose(-1, -2)  # (k, rows, T)
        per_token[:, lo : lo + step] = (gram_d * gram_a).sum(-1)
    return per_token.reshape(k, groups, n).sum(-1)


def _linear_weight_norm(a: Tensor, d: Tensor) -> Tensor:
    """‖Σ_t δ_t a_tᵀ‖² per probe and group: ``a`` (G, N, in), ``d`` (k, G, N, out) → (k, G).

    Ghost form Σ_{t,t'} (δ_t·δ_t')(a_t·a_t') when N(in + out) ≤ in·out (short groups, wide
    layers: always for a language model head); otherwise the gradient δᵀa is formed one
    group at a time (out × in floats per probe).
    """
    k, groups = d.shape[:2]
    n, width_in, width_out = a.shape[1], a.shape[-1], d.shape[-1]
    out = torch.empty((k, groups), dtype=d.dtype, device=d.device)
    if n * (width_in + width_out) <= width_in * width_out:
        gram_a = a @ a.transpose(-1, -2)  # (G, N, N)
        step = max(1, _CHUNK_ELEMENTS // max(1, groups * n * n))  # probes per (k, G, N, N) block
        for lo in range(0, k, step):
            gram_d = d[lo : lo + step] @ d[lo : lo + step].transpose(-1, -2)
            out[lo : lo + step] = (gram_d * gram_a).sum((-1, -2))
        return out
    for g in range(groups):
        for j in range(k):
            grad = d[j, g].transpose(-1, -2) @ a[g]  # (out, in): one parameter-sized tensor at a time
            out[j, g] = grad.square().sum()
    return out
