"""Autograd building blocks shared by the operator and the measurement: batched Jᵀv, functional calls."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call


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


class Functional(nn.Module):
    """Calls ``model`` with its parameters replaced by ``values`` (for torch.func)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = [model]  # a list, so the model is not registered as a submodule
        self.values: dict[str, Tensor] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.inner[0], self.values, args, kwargs)
