"""The operator's one-pass preparation: micro-batches, their masks, D, the loss and its residual."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge

from specprobe.core.adapters import Adapter, Loss, loss_and_residual
from specprobe.core.params import measuring
from specprobe.errors import BatchError, NonFiniteError


@dataclass
class Part:
    """One micro-batch: its place in the batch and in the flat output order, and its graph."""

    batch: Any
    start: int  # first sample
    offset: int  # first flat output index
    size: int  # counted outputs of this micro-batch
    mask: Tensor  # (n, K) counted rows
    shape: torch.Size  # (n, K, C) outputs
    full: bool = False  # every row counted (no scatter needed)
    outputs: Tensor | None = None  # cached forward graph
    cotangent: Tensor | None = None  # DOUBLE_VJP: the leaf u of the first backward
    first_vjp: list[GradientEdge | None] | None = None  # DOUBLE_VJP: Jᵀu's graph edges (values dropped)


@dataclass
class Scan:
    """What one pass over the batch without gradients finds (see :func:`scan`)."""

    parts: list[Part]
    num_outputs: int
    """D, the counted raw outputs over all micro-batches."""
    device: torch.device
    """The outputs' device (where output-space vectors live)."""
    loss_kind: Loss
    loss: float
    """The mean loss over the counted outputs."""
    residual: Tensor
    """g = ∂L/∂f, (D,) float64."""
    sample_offsets: list[int] = field(default_factory=list)
    """Start of each sample's outputs in the flat order, plus D at the end."""
    forward_passes: int = 0


def scan(
    model: nn.Module,
    selected: list[tuple[str, nn.Parameter]],
    adapter: Adapter,
    batch: Any,
    num_samples: int,
    micro_batch_size: int,
) -> Scan:
    """One forward pass per micro-batch without gradients: masks, D, residual and loss.

    Raises NonFiniteError for NaN or inf in the counted outputs, BatchError when nothing is
    counted. Memory: one micro-batch's activations at a time (no graph).
    """
    parts: list[Part] = []
    residuals: list[Tensor] = []
    loss_sum, entries, offset, passes = 0.0, 0, 0, 0
    sample_offsets = [0]
    loss_kind: Loss | None = None
    device: torch.device | None = None
    with measuring(model, selected), torch.no_grad():
        for start in range(0, num_samples, micro_batch_size):
            stop = min(start + micro_batch_size, num_samples)
            part_batch = adapter.take(batch, start, stop)
            adapted = adapter(model, part_batch)
            passes += 1
            f, mask = adapted.outputs, adapted.mask
            rows = int(mask.sum())
            if rows and not bool(torch.isfinite(f[mask]).all()):
                raise NonFiniteError(
                    f"expected finite model outputs, found NaN or inf in the counted outputs of "
                    f"samples {start}..{stop - 1}",
                    "check the checkpoint and the dtype (float16 overflows easily; try float32), and "
                    "drop sequences with no attended token",
                )
            size = rows * int(f.shape[-1])
            parts.append(Part(part_batch, start, offset, size, mask, f.shape, bool(mask.all())))
            # Each sample's outputs end C·(its counted rows and those before it) after the part's start.
            ends = mask.sum(1).cumsum(0) * int(f.shape[-1])
            sample_offsets.extend(offset + int(e) for e in ends)
            offset += size
            part_loss, part_residual = loss_and_residual(adapted, torch.float64)
            part_residual = part_residual[adapted.mask].reshape(-1)
            loss_sum += part_loss
            entries += rows if adapted.loss is Loss.CROSS_ENTROPY else size
            residuals.append(part_residual)
            loss_kind = adapted.loss
            device = f.device
    if offset == 0 or loss_kind is None or device is None:
        raise BatchError(
            "expected at least one counted output, found every output masked "
            "(attention_mask 0 or label -100 everywhere)",
            "pass a batch with unmasked targets; a sequence needs two tokens to predict one",
        )
    return Scan(
        parts=parts,
        num_outputs=offset,
        device=device,
        loss_kind=loss_kind,
        loss=loss_sum / entries,
        residual=torch.cat(residuals).to(device) / entries,
        sample_offsets=sample_offsets,
        forward_passes=passes,
    )
