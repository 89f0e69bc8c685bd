"""The ghost norms' registry: a new layer type joins with one rule, and is checked like the others."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from specprobe.core.adapters import resolve_adapter
from specprobe.core.ghost import GhostNorms
from specprobe.core.ghost.registry import Call, Context, LayerRule, group, register_rule, rule_for
from specprobe.core.params import measuring, select_parameters
from specprobe.core.probes import rademacher
from tests.core.test_ghost import _brute

F64 = torch.float64


class _Scale(nn.Module):
    """y = x ⊙ w, per feature: no built-in rule (its name does not end in "Norm")."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, width, dtype=F64))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(3, 4).to(F64)
        self.scale = _Scale(4)
        self.out = nn.Linear(4, 2).to(F64)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.tanh(self.scale(self.inp(x))))  # type: ignore[no-any-return]


def _norms(model: nn.Module) -> tuple[np.ndarray, np.ndarray, list[int]]:
    g = torch.Generator().manual_seed(4)
    batch = (torch.randn(5, 6, 3, generator=g, dtype=F64), torch.randn(5, 6, 2, generator=g, dtype=F64))
    selected = select_parameters(model)
    params = [p for _, p in selected]
    with measuring(model, selected), GhostNorms(model, params, F64) as ghost:
        ghost.reset(5)
        adapted = resolve_adapter(None, batch)(model, batch)
        z = rademacher(2, range(5), range(3), adapted.outputs.shape[1:], dtype=F64)
        got = ghost.norms(adapted.outputs, z, True).numpy()
        fallback = ghost._plan(adapted.outputs).fallback
        want = _brute(adapted.outputs, params, z, True)
    return got, want, fallback


def test_a_registered_rule_takes_a_new_layer_type_off_the_fallback() -> None:
    model = _Model()
    got, want, fallback = _norms(model)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert fallback == [2]  # scale.weight: no rule yet, one backward pass per sample

    @register_rule
    class ScaleRule(LayerRule):
        """‖Σ_t δ_t ⊙ a_t‖² per group."""

        @classmethod
        def matches(cls, module: nn.Module) -> bool:
            return type(module) is _Scale

        def param_norm(self, call: Call, name: str, d: Tensor, groups: int, ctx: Context) -> Tensor:
            a = group(call.input.detach().to(ctx.acc), groups)  # (G, N, d)
            return (d * a).sum(2).square().sum(-1)

    assert isinstance(rule_for(model.scale), ScaleRule)
    got, want, fallback = _norms(model)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert fallback == []
