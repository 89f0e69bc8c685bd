"""How the operator's products are computed: the output-space dtype and :class:`ProductMode`."""

from __future__ import annotations

from enum import Enum

import torch

from specprobe.errors import SpecprobeError

KRYLOV_DTYPE = torch.float64
"""The dtype of vectors in output space: products, Krylov bases, eigenvectors."""


class ProductMode(str, Enum):
    """How the second half of a product, J·w (a Jacobian–vector product), is computed.

    The first half, Jᵀ·U, is always reverse mode on the model's autograd graph. Both modes
    give the same numbers (to rounding); they differ in cost, memory and what the model
    must support.
    """

    AUTO = "auto"
    """DOUBLE_VJP when the forward graph is cached (``cache_graph=True``), JVP otherwise; if
    the model does not support the chosen one (an op without forward-mode AD or without a
    double backward raises, or the first products fail the consistency check of
    ``verify``), the other is used. :attr:`NTKOperator.mode_used` records the choice and
    :attr:`NTKOperator.fallback_reason` why."""

    JVP = "jvp"
    """Forward mode: ``torch.func.jvp`` over ``functional_call``, vmapped over the block.
    Recomputes the primal forward inside every call (1 forward pass with tangents per block;
    on CPU eager forward mode costs ≈ 5 forward passes per column) and holds no
    graph beyond that: memory is one micro-batch's activations plus b tangents. Needs
    forward-mode AD for every op (not the fused SDPA attention kernels: use eager
    attention)."""

    DOUBLE_VJP = "double_vjp"
    """J·w = ∂/∂u ⟨Jᵀu, w⟩: the vector–Jacobian product u ↦ Jᵀu is linear in u, so
    differentiating it (built once with ``create_graph=True``) with respect to u, with
    cotangent w, gives J·w. With the graph cached, the forward pass and this first
    backward graph are built once per micro-batch and shared by every product; each column
    then costs two backward-type passes (on a tiny GPT-NeoX on CPU: the vector–Jacobian
    product ≈ 1.3 and J·w ≈ 1.8 forward passes). Memory: the forward activations plus the first
    backward's graph (≈ 2-3× the activations of a training step). Needs double backward
    for every op (some custom autograd Functions lack it)."""


def unsupported(err: BaseException, err2: BaseException) -> SpecprobeError:
    """The error when neither product mode works on the model (both failures quoted)."""
    return SpecprobeError(
        "expected the model to support forward-mode AD or double backward for Jacobian–vector "
        f"products, found neither: forward/double-vjp failed with: {err} / {err2}",
        "load transformers models with attn_implementation='eager' (fused SDPA kernels support "
        "neither), or replace the custom autograd Function",
    )
