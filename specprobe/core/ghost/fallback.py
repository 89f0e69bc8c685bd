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
    f: Tensor,
    cotangents: Tensor,
    params: Sequence[Tensor],
    groups: int,
    acc: torch.dtype,
    directions: Sequence[Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Squared norms of the group gradients of ``params`` per group: ``(k, groups, len(params))``
    in float64 on the CPU, one backward pass per group; with ``directions`` (one per
    parameter) also the group gradients' inner products with them, ``(k, groups, len(params))``."""
    k = cotangents.shape[0]
    out = torch.zeros((k, groups, len(params)), dtype=torch.float64)
    inner = None if directions is None else torch.zeros((k, groups, len(params)), dtype=torch.float64)
    for g in range(groups):
        if groups == 1:
            z = cotangents
        else:
            z = torch.zeros_like(cotangents)
            z[:, g] = cotangents[:, g]
        grads = batched_vjp(f, params, z)
        for j, grad in enumerate(grads):
            if grad is None:
                continue
            flat = grad.reshape(k, -1).to(acc)
            out[:, g, j] = flat.square().sum(1).double().cpu()
            if inner is not None and directions is not None:
                inner[:, g, j] = (flat @ directions[j].reshape(-1).to(acc)).double().cpu()
    return out, inner
