"""Linear layers: ``nn.Linear``, and transformers' ``Conv1D`` (GPT-2), a Linear with a transposed weight.

Weight W (out × in): ‖Σ_t δ_t a_tᵀ‖² = Σ_{t,t'} (δ_t·δ_t')(a_t·a_t'), cost T²(in + out)
per group; when T(in + out) > in·out the gradient δᵀa (out × in) is formed instead, one
group at a time. Bias: ‖Σ_t δ_t‖². The transpose of Conv1D's weight (in × out) does not
change the norm.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from specprobe.core.ghost.registry import Call, Context, LayerRule, Tie, group, register_rule

_CHUNK_ELEMENTS = 1 << 24
"""Largest temporary Gram block (elements) formed at once."""


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
        """⟨Σ_t δ_t a_tᵀ, D⟩ = Σ_t (δ_t D)·a_t: one (tokens × out × in) product, like the
        layer's forward; bias: (Σ_t δ_t)·D."""
        direction = direction.to(ctx.acc)
        if name == "bias":
            return d.sum(2) @ direction
        a = group(call.input.detach().to(ctx.acc), groups)  # (G, N, in)
        return ((d @ self._out_by_in(direction)) * a).sum((-1, -2))

    @staticmethod
    def _out_by_in(weight: Tensor) -> Tensor:
        """The weight (or a direction shaped like it) as (out × in)."""
        return weight


@register_rule
class Conv1DRule(LinearRule):
    """transformers' ``Conv1D``, matched by name and module so transformers is not imported
    here. Not a tie head: its weight is (in × out), not an embedding table's (V × d)."""

    tie = None

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers.")

    @staticmethod
    def _out_by_in(weight: Tensor) -> Tensor:
        return weight.T  # Conv1D keeps (in × out)


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
