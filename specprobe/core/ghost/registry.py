"""The layer rules of the ghost norms, and the registry that finds a module's rule.

A rule says, for one layer type, how the squared norm of a group's gradient of each of
the module's parameters follows from what one backward pass gives: the activations a_t
entering the module (``Call.input``) and the gradients δ_t of its output
(``Call.output``) at the group's tokens t. A new layer type joins in one file: a
:class:`LayerRule` subclass decorated with :func:`register_rule`, imported by the
package's ``__init__`` (as Opacus registers one grad-sampler per layer type).

A module no rule matches is not hooked: its parameters go to the fallback
(``specprobe.core.ghost.fallback``), one backward pass per group, always correct.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import torch
from torch import Tensor, nn


class Tie(Enum):
    """The part a rule's module may play in a weight tied between two module calls."""

    TABLE = "table"
    """An embedding table (V × d), looked up by token id."""
    HEAD = "head"
    """A linear output head (out × in = V × d) using the table's weight as is."""


@dataclass
class Call:
    """One call of a hooked module in the current forward pass: its rule (None for a call
    that cannot be used, e.g. a non-tensor input), its first input and its output; ``kept``
    holds what a rule derives from the call alone (e.g. a norm's ∂y/∂w), for every probe
    block of the pass."""

    module: nn.Module
    rule: LayerRule | None
    input: Tensor
    output: Tensor
    kept: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Context:
    """What the rules share with their :class:`~specprobe.core.ghost.norms.GhostNorms`.

    ``quiet`` turns its hooks off (a rule that calls its module, e.g. for a forward-mode
    product, must not record that call); ``scratch`` keeps per-call intermediates for one
    :meth:`~specprobe.core.ghost.norms.GhostNorms.norms` call (cleared at its start).
    """

    acc: torch.dtype
    quiet: Callable[[], AbstractContextManager[None]]
    scratch: dict[int, Any] = field(default_factory=dict)


def group(t: Tensor, groups: int, lead: int = 0) -> Tensor:
    """Reshape (…lead dims, samples, …, d) to (…lead, groups, tokens, d)."""
    shape = t.shape
    return t.reshape(*shape[:lead], groups, -1, shape[-1])


class LayerRule:
    """Per-group squared norms of one layer type's parameters from (a, δ).

    Subclasses set :meth:`matches` and :meth:`param_norm`; the rest has defaults.
    """

    tie: Tie | None = None
    """The part this layer type may play in a tied weight (None: a tied use goes to the fallback)."""

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        """Whether ``module`` is of this layer type (checked once per module, when hooked)."""
        raise NotImplementedError

    def capture(self, x: Tensor, output: Tensor, samples: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """What the forward hook records of a call: (input, output, a replacement output
        for the forward pass or None). ``samples`` is the batch size of the pass (0: unknown)."""
        return x, output, None

    def usable(self, call: Call, samples: int, ctx: Context) -> bool:
        """Whether the formula applies to this call: sample-major input and output."""
        x, y = call.input, call.output
        return not (x.dim() == 0 or y.dim() == 0 or x.shape[0] != samples or y.shape[0] != samples)

    def param_norm(self, call: Call, name: str, d: Tensor, groups: int, ctx: Context) -> Tensor:
        """‖group gradient‖² of the parameter ``name`` of ``call.module``: ``(k, groups)``,
        from ``d``, the output gradients of k probes as ``(k, G, N, out)`` in ``ctx.acc``."""
        raise NotImplementedError

    def param_inner(
        self, call: Call, name: str, direction: Tensor, d: Tensor, groups: int, ctx: Context
    ) -> Tensor:
        """⟨group gradient, direction⟩ of the parameter ``name``: ``(k, groups)``, ``d`` as in
        :meth:`param_norm`. The group gradient is Σ_t (∂y_t/∂w)ᵀ δ_t, so its inner product
        with ``direction`` is Σ_t δ_t · (∂y_t/∂w · direction): one forward-mode product
        through this call of the module (the cost of its forward), no gradient formed."""
        tangent = module_jvp(call.module, name, call.input.detach(), direction, ctx)
        if tangent is None:
            raise RuntimeError(f"forward-mode product through {type(call.module).__name__} failed")
        e = group(tangent.expand(call.output.shape).to(ctx.acc), groups)  # (G, N, out)
        return (d * e).sum((-1, -2))

    def batch_inner(self, call: Call, name: str, d: Tensor, groups: int, ctx: Context) -> Tensor | None:
        """⟨group gradient, the call's own whole-batch gradient⟩ of the parameter ``name``,
        ``(k, groups)``, by a form cheaper than :meth:`param_inner` with that gradient as the
        direction; None (the default) where there is none. For a parameter used by this one
        call only, that gradient is the parameter's whole gradient over the pass."""
        return None


def module_jvp(
    module: nn.Module, name: str, x: Tensor, direction: Tensor | None, ctx: Context
) -> Tensor | None:
    """∂y/∂w · direction for the module's parameter ``name`` at input ``x`` (all ones when
    ``direction`` is None): a forward-mode product through one call of the module, its hooks
    quiet; None where forward mode is unsupported."""
    params = dict(module.named_parameters(recurse=False))
    w = params[name].detach()
    tangent = torch.ones_like(w) if direction is None else direction.to(w.dtype)

    def run(value: Tensor) -> Tensor:
        out: Tensor = torch.func.functional_call(
            module, {**{k: v.detach() for k, v in params.items()}, name: value}, (x,)
        )
        return out

    try:
        with ctx.quiet(), torch.no_grad():
            derivative: Tensor = torch.func.jvp(run, (w,), (tangent,))[1]
    except (RuntimeError, NotImplementedError):
        return None
    return derivative


_RULES: list[LayerRule] = []

R = TypeVar("R", bound=type[LayerRule])


def register_rule(rule: R) -> R:
    """Class decorator: add a rule to the registry (the first registered match wins)."""
    _RULES.append(rule())
    return rule


def rule_for(module: nn.Module) -> LayerRule | None:
    """The registered rule of ``module``'s layer type, or None (the fallback)."""
    return next((rule for rule in _RULES if rule.matches(module)), None)
