"""Gradients one tensor at a time, and their squared norms: what the measurement sums.

Shared by the gradient of the loss (``specprobe.core.measure``) and the probe sums of plain
Hutchinson across micro-batches (``specprobe.core.estimators``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

_SQ_CHUNK = 1 << 20
"""Entries per float64 chunk in :func:`squared_norm` (8 MiB of temporary)."""


def squared_norm(t: Tensor) -> float:
    """‖t‖², summed in float64 chunk by chunk: no parameter-sized temporary, and the same
    value whatever the number of threads (a float32 BLAS dot splits its sum by thread)."""
    flat = t.reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=t.device)
    for chunk in flat.split(_SQ_CHUNK):
        total += chunk.double().square().sum()
    return float(total)


def backward_each(
    f: Tensor, cotangent: Tensor, params: Sequence[Tensor], consume: Callable[[int, Tensor], None]
) -> None:
    """One backward pass of ``cotangent`` (shaped like ``f``), handing each parameter's
    gradient to ``consume(index, grad)`` as soon as it is computed and freeing it after.

    At most one parameter-sized gradient exists at a time (the caller decides whether to
    keep a sum or only a norm), unlike ``torch.autograd.grad``, which returns them all at
    the end. The callers' ``.grad`` buffers are set aside and put back untouched.
    """
    saved = [p.grad for p in params]
    handles = []

    def hook(index: int, param: Tensor) -> None:
        if param.grad is not None:
            consume(index, param.grad)
        param.grad = None

    try:
        for index, p in enumerate(params):
            p.grad = None
            handles.append(p.register_post_accumulate_grad_hook(partial(hook, index)))
        torch.autograd.backward(f, cotangent, inputs=list(params), retain_graph=True)
    finally:
        for handle in handles:
            handle.remove()
        for p, grad in zip(params, saved, strict=True):
            p.grad = grad


def add_into(
    sums: list[Tensor | None], acc: torch.dtype, device: torch.device | None = None
) -> Callable[[int, Tensor], None]:
    """A ``consume`` for :func:`backward_each` that adds each gradient into ``sums[index]``
    (a copy in ``acc`` at first, then in place): one running sum of P floats, on ``device``
    (None: beside each gradient; the host's memory for a sum too large for the GPU)."""

    def consume(index: int, grad: Tensor) -> None:
        total = sums[index]
        if total is None:
            sums[index] = grad.to(device=device or grad.device, dtype=acc)
        else:
            total.add_(grad if total.device == grad.device else grad.to(total.device))

    return consume
