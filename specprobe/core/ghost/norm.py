"""Elementwise scales: LayerNorm, RMSNorm, any ``*Norm`` whose parameters act per feature.

The group's gradient Σ_t δ_t ⊙ ∂y_t/∂w is a d-vector; it is formed. ∂y/∂w (along all
ones) is had analytically where the module is known (:class:`ScaleForm`): ``nn.LayerNorm``
(y = x̂ ⊙ w + b, so ∂y/∂w = x̂ and ∂y/∂b = 1), the RMSNorm of Llama, Mistral, Gemma and
their kin in transformers (y = w ⊙ u or (1 + w) ⊙ u with u = x·rsqrt(mean x² + ε), cast
to the input's dtype), and ``nn.RMSNorm``. For any other ``*Norm`` module it comes from a
forward-mode product through the module, once per probe block.

Each module is checked once (per input and weight dtype, for the module's lifetime, not
per measurement): that it is elementwise in w (a module named like a norm whose weight
mixes features goes to the fallback), and which analytic form, if any, gives bit for bit
the forward-mode product's ∂y/∂w on its first sample. A form that does not match exactly
is not used, so the analytic path never changes a number the forward-mode product gives.
"""

from __future__ import annotations

import weakref
from enum import Enum

import torch
from torch import Tensor, nn

from specprobe.core.ghost.registry import Call, Context, LayerRule, group, module_jvp, register_rule


class ScaleForm(Enum):
    """How a norm module's ∂y/∂w along all ones is computed, per call."""

    LAYER_NORM = "layer_norm"
    """``nn.LayerNorm``: x̂ = (x − mean)·rstd with the statistics of ``native_layer_norm``
    (the expression its forward-mode formula evaluates); the bias's is 1."""
    RMS = "rms"
    """u = x·rsqrt(mean x² + ε) in float32, cast to the input's dtype: transformers'
    ``LlamaRMSNorm`` (y = w ⊙ u) and ``GemmaRMSNorm`` (y = (1 + w) ⊙ u) and their copies,
    ε read from ``variance_epsilon`` or ``eps``."""
    TORCH_RMS = "torch_rms"
    """``nn.RMSNorm``: ``F.rms_norm`` without a weight."""
    JVP = "jvp"
    """Any other elementwise norm: a forward-mode product through the module per probe block."""


_FORMS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[torch.dtype, torch.dtype, str], ScaleForm | None]]
_FORMS = weakref.WeakKeyDictionary()
"""The one-off check's answer per module and (input dtype, weight dtype, device type);
None: not elementwise (the fallback)."""


@register_rule
class NormRule(LayerRule):
    """A module whose class name ends in ``Norm`` and whose own parameters are all 1-d."""

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        params = list(module.parameters(recurse=False))
        return type(module).__name__.endswith("Norm") and bool(params) and all(p.dim() == 1 for p in params)

    def usable(self, call: Call, samples: int, ctx: Context) -> bool:
        """Sample-major, and a checked elementwise dependence (checked once per module)."""
        return super().usable(call, samples, ctx) and _form(call, ctx) is not None

    def param_norm(self, call: Call, name: str, d: Tensor, groups: int, ctx: Context) -> Tensor:
        return self._group_gradient(call, name, d, groups, ctx).square().sum(-1)

    def param_inner(
        self, call: Call, name: str, direction: Tensor, d: Tensor, groups: int, ctx: Context
    ) -> Tensor:
        """⟨Σ_t δ_t ⊙ ∂y_t/∂w, D⟩: the group's gradient (a d-vector) against D, no second
        forward-mode product."""
        return self._group_gradient(call, name, d, groups, ctx) @ direction.to(ctx.acc)

    @staticmethod
    def _group_gradient(call: Call, name: str, d: Tensor, groups: int, ctx: Context) -> Tensor:
        """Σ_t δ_t ⊙ ∂y_t/∂w per probe and group, ``(k, G, d)``; a LayerNorm's bias (∂y/∂b = 1)
        as Σ_t δ_t, with no tensor of ones."""
        if name == "bias" and _form(call, ctx) is ScaleForm.LAYER_NORM:
            return d.sum(2)
        return (d * NormRule._scale(call, name, groups, ctx)).sum(2)

    @staticmethod
    def _scale(call: Call, name: str, groups: int, ctx: Context) -> Tensor:
        """∂y_t/∂w along all ones as ``(G, N, d)`` in ``ctx.acc``: analytic for the known
        forms (a few elementwise passes over the call's input, redone for each probe block
        rather than kept), else one forward-mode product, once per call and parameter, kept
        on the call for the pass's other probe blocks (memory: one tensor the size of the
        call's output per parameter, while the pass's graph lives)."""
        scale = call.kept.get(name)
        if scale is None:
            form = _form(call, ctx)
            x = call.input.detach()
            found = (
                module_jvp(call.module, name, x, None, ctx)
                if form is ScaleForm.JVP
                else _analytic(form, call.module, name, x)
            )
            if found is None:  # it ran in the elementwise check; a failure now is a bug
                raise RuntimeError(f"∂y/∂{name} through {type(call.module).__name__} failed")
            scale = found.to(ctx.acc)
            if form is ScaleForm.JVP:
                call.kept[name] = scale
        return group(scale, groups)


def _form(call: Call, ctx: Context) -> ScaleForm | None:
    """The module's form, from the cache or the one-off check of this call's first sample."""
    module = call.module
    w = next(module.parameters(recurse=False))
    key = (call.input.dtype, w.dtype, call.input.device.type)
    forms = _FORMS.setdefault(module, {})
    if key not in forms:
        forms[key] = _check(call, ctx)
    return forms[key]


def _check(call: Call, ctx: Context) -> ScaleForm | None:
    """Whether each parameter of a norm module acts per feature of the last dimension, and
    the first analytic form equal bit for bit to the forward-mode ∂y/∂w (else JVP)."""
    width = call.output.shape[-1]
    names = dict(call.module.named_parameters(recurse=False))
    if any(p.numel() != width for p in names.values()):
        return None
    x = call.input.detach()[:1]
    ones: dict[str, Tensor] = {}
    for name in names:
        along_ones = module_jvp(call.module, name, x, None, ctx)
        direction = torch.randn(width, dtype=x.dtype, device=x.device)
        along = module_jvp(call.module, name, x, direction, ctx)
        if along_ones is None or along is None:
            return None
        if not torch.allclose(along, along_ones * direction, rtol=1e-3, atol=1e-5):
            return None
        ones[name] = along_ones
    for form in _candidates(call.module):
        found = {name: _analytic(form, call.module, name, x) for name in names}
        if all(v is not None and torch.equal(v, ones[n]) for n, v in found.items()):
            return form
    return ScaleForm.JVP


def _candidates(module: nn.Module) -> list[ScaleForm]:
    """The analytic forms that may apply to ``module``, known by its class and attributes."""
    names = {n for n, _ in module.named_parameters(recurse=False)}
    if type(module).forward is nn.LayerNorm.forward and isinstance(module, nn.LayerNorm):
        return [ScaleForm.LAYER_NORM]
    if isinstance(module, nn.RMSNorm) and type(module).forward is nn.RMSNorm.forward:
        return [ScaleForm.TORCH_RMS]
    if names == {"weight"} and isinstance(_rms_eps(module), float):
        return [ScaleForm.RMS]
    return []


def _rms_eps(module: nn.Module) -> object:
    return getattr(module, "variance_epsilon", getattr(module, "eps", None))


def _analytic(form: ScaleForm | None, module: nn.Module, name: str, x: Tensor) -> Tensor | None:
    """∂y/∂``name`` along all ones by ``form``: a tensor shaped like ``x``; None where the
    form has no expression for that parameter."""
    with torch.no_grad():
        if form is ScaleForm.LAYER_NORM:
            assert isinstance(module, nn.LayerNorm)
            if name == "bias":
                return torch.ones_like(x)
            shape = tuple(module.normalized_shape)
            _, mean, rstd = torch.native_layer_norm(x, shape, None, None, module.eps)
            return (x - mean) * rstd
        if form is ScaleForm.TORCH_RMS:
            assert isinstance(module, nn.RMSNorm)
            return torch.nn.functional.rms_norm(x, tuple(module.normalized_shape), None, module.eps)
        if form is ScaleForm.RMS and name == "weight":
            eps = _rms_eps(module)
            assert isinstance(eps, float)
            h = x.to(torch.float32)
            return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return None
