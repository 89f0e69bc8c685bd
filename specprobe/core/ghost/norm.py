"""Elementwise scales: LayerNorm, RMSNorm, any ``*Norm`` whose parameters act per feature.

The group's gradient Σ_t δ_t ⊙ ∂y_t/∂w is a d-vector; it is formed. ∂y/∂w comes from a
forward-mode product, and the module is first checked to be elementwise in w (a module
named like a norm whose weight mixes features goes to the fallback).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from specprobe.core.ghost.registry import Call, Context, LayerRule, group, module_jvp, register_rule


@register_rule
class NormRule(LayerRule):
    """A module whose class name ends in ``Norm`` and whose own parameters are all 1-d."""

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        params = list(module.parameters(recurse=False))
        return type(module).__name__.endswith("Norm") and bool(params) and all(p.dim() == 1 for p in params)

    def usable(self, call: Call, samples: int, ctx: Context) -> bool:
        """Sample-major, and a checked elementwise dependence (checked once per module)."""
        if not super().usable(call, samples, ctx):
            return False
        if call.module not in ctx.checked:
            ctx.checked[call.module] = _check_elementwise(call, ctx)
        return ctx.checked[call.module]

    def param_norm(self, call: Call, name: str, d: Tensor, groups: int, ctx: Context) -> Tensor:
        return (d * self._scale(call, name, groups, ctx)).sum(2).square().sum(-1)

    def param_inner(
        self, call: Call, name: str, direction: Tensor, d: Tensor, groups: int, ctx: Context
    ) -> Tensor:
        """⟨Σ_t δ_t ⊙ ∂y_t/∂w, D⟩: the group's gradient (a d-vector) against D, no second
        forward-mode product."""
        return (d * self._scale(call, name, groups, ctx)).sum(2) @ direction.to(ctx.acc)

    @staticmethod
    def _scale(call: Call, name: str, groups: int, ctx: Context) -> Tensor:
        """∂y_t/∂w as ``(G, N, d)`` in ``ctx.acc``: one forward-mode product per call and
        parameter, kept on the call for the pass's other probe blocks (memory: one tensor
        the size of the call's output per parameter, while the pass's graph lives)."""
        if name not in call.kept:
            scale = module_jvp(call.module, name, call.input.detach(), None, ctx)
            if scale is None:  # it ran in the elementwise check; a failure now is a bug
                raise RuntimeError(f"forward-mode product through {type(call.module).__name__} failed")
            call.kept[name] = scale.to(ctx.acc)
        return group(call.kept[name], groups)


def _check_elementwise(call: Call, ctx: Context) -> bool:
    """Whether each parameter of a norm module acts per feature of the last dimension."""
    width = call.output.shape[-1]
    names = dict(call.module.named_parameters(recurse=False))
    if any(p.numel() != width for p in names.values()):
        return False
    x = call.input.detach()[:1]
    for name in names:
        ones = module_jvp(call.module, name, x, None, ctx)
        direction = torch.randn(width, dtype=x.dtype, device=x.device)
        along = module_jvp(call.module, name, x, direction, ctx)
        if ones is None or along is None or not torch.allclose(along, ones * direction, rtol=1e-3, atol=1e-5):
            return False
    return True
