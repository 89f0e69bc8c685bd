"""The fallback: one backward pass per group w.r.t. the parameters no rule accounts for.

For other modules, a parameter used outside its module's call, a module called twice:
always correct, at the cost of one backward pass (of the k cotangents) per group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from specprobe.core.operator import batched_vjp


def fallback_norms(
    f: Tensor, cotangents: Tensor, params: Sequence[Tensor], groups: int, acc: torch.dtype
) -> Tensor:
    """Squared norms of the group gradients of ``params``, summed over the groups:
    ``(k, len(params))`` in float64 on the CPU, one backward pass per group."""
    k = cotangents.shape[0]
    out = torch.zeros((k, len(params)), dtype=torch.float64)
    for g in range(groups):
        if groups == 1:
            z = cotangents
        else:
            z = torch.zeros_like(cotangents)
            z[:, g] = cotangents[:, g]
        grads = batched_vjp(f, params, z)
        for j, grad in enumerate(grads):
            if grad is not None:
                out[:, j] += grad.reshape(k, -1).to(acc).square().sum(1).double().cpu()
    return out
