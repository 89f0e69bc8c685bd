"""Adapters: how a batch becomes the network outputs f, their targets and the output mask.

The measurement (``specprobe.core.measure``) works on any ``torch.nn.Module``; what differs between
models is how a batch is fed to the model and which raw outputs count. An adapter runs the
forward pass and returns an :class:`AdaptedBatch` in one canonical layout:

* ``outputs``: shape ``(N, K, C)``: N samples, K output rows per sample (token positions
  for a language model, 1 for a plain classifier), C entries per row (vocabulary, classes,
  regression targets). These are the raw outputs f of the decomposition, before any softmax.
* ``targets``: ``(N, K)`` class indices for cross-entropy, ``(N, K, C)`` values for MSE.
* ``mask``: ``(N, K)`` booleans, the rows that count as outputs. Rows masked out (padding,
  label ``-100``, the last position of a sequence, which has no next token) are not
  outputs: they add nothing to D, the loss, the residual or the kernel.

No module here imports transformers: Hugging Face models are recognised by the shape of
their batch (a mapping with ``input_ids``), and called the way their ``forward`` expects.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from specprobe.errors import BatchError

IGNORE_INDEX = -100
"""Target value that marks a row as not counted (the Hugging Face convention)."""


class Loss(str, Enum):
    """The training loss L whose residual g = dL/df the measurement decomposes."""

    CROSS_ENTROPY = "cross_entropy"
    """Mean cross-entropy over the n counted rows: g_t = (softmax(f_t) - onehot(y_t)) / n."""

    MSE = "mse"
    """Mean squared error over the n counted entries: g = 2 (f - y) / n."""


@dataclass(frozen=True)
class AdaptedBatch:
    """Outputs, targets and mask of one (micro-)batch in the canonical ``(N, K, C)`` layout.

    Build it with :meth:`from_parts`, which accepts the common shapes and validates them.
    """

    outputs: Tensor
    targets: Tensor
    mask: Tensor
    loss: Loss

    @property
    def num_samples(self) -> int:
        """N, the number of samples in the batch."""
        return int(self.outputs.shape[0])

    @property
    def num_rows(self) -> int:
        """Number of counted rows (tokens for a language model)."""
        return int(self.mask.sum().item())

    @property
    def num_outputs(self) -> int:
        """D for this batch: counted rows times entries per row."""
        return self.num_rows * int(self.outputs.shape[-1])

    @classmethod
    def from_parts(
        cls,
        outputs: Tensor,
        targets: Tensor,
        loss: Loss | str,
        mask: Tensor | None = None,
    ) -> AdaptedBatch:
        """Validate and reshape model outputs and targets into the canonical layout.

        Accepted shapes, N samples:

        * cross-entropy: outputs ``(N, C)`` with targets ``(N,)``, or outputs
          ``(N, ..., C)`` with targets ``(N, ...)``; targets equal to -100 are masked;
        * MSE: outputs and targets of the same shape ``(N,)``, ``(N, C)`` or
          ``(N, ..., C)``.

        ``mask`` (optional) has the shape of the rows, ``(N,)`` or ``(N, ...)``.
        """
        loss = Loss(loss)
        if not isinstance(outputs, Tensor):
            raise BatchError(
                f"expected the model output to be a tensor, found {type(outputs).__name__}",
                "wrap the model call in an adapter that picks the output tensor, e.g. "
                "specprobe.CallableAdapter(lambda model, b: (model(b[0])['logits'], b[1]), loss='cross_entropy')",
            )
        if not outputs.is_floating_point():  # before the shapes: an integer output has no gradient at all
            raise BatchError(
                f"expected floating-point model outputs (the eNTK differentiates them), found {outputs.dtype}",
                "return the logits or predictions as floats (an argmax or a rounded output has no Jacobian)",
            )
        if outputs.ndim == 0 or outputs.shape[0] == 0:
            raise BatchError(
                f"expected outputs with a non-empty sample dimension, found shape {tuple(outputs.shape)}",
                "pass a batch with at least one sample",
            )
        n = outputs.shape[0]
        parts = _cross_entropy_parts if loss is Loss.CROSS_ENTROPY else _mse_parts
        out, tgt, valid = parts(outputs, targets)
        if mask is not None:
            if mask.numel() != valid.numel() or mask.shape[0] != n:
                raise BatchError(
                    f"expected a mask with one entry per output row, {tuple(valid.shape)}, "
                    f"found {tuple(mask.shape)}",
                    "give the mask the shape of the outputs without their last dimension",
                )
            valid = valid & mask.reshape(valid.shape).to(device=valid.device, dtype=torch.bool)
        if loss is Loss.CROSS_ENTROPY:
            tgt = torch.where(valid, tgt, torch.zeros_like(tgt))
        return cls(outputs=out, targets=tgt, mask=valid, loss=loss)


def _cross_entropy_parts(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy outputs ``(N, ..., C)`` and class indices ``(N, ...)`` checked, as
    ``(N, K, C)`` outputs, ``(N, K)`` targets and the rows not equal to -100."""
    n = outputs.shape[0]
    if outputs.ndim < 2 or targets.shape != outputs.shape[:-1]:
        raise BatchError(
            "expected cross-entropy targets of shape outputs.shape[:-1] = "
            f"{tuple(outputs.shape[:-1])}, found {tuple(targets.shape)}",
            "give one class index per output row (-100 for rows that do not count)",
        )
    if targets.dtype.is_floating_point:
        raise BatchError(
            f"expected integer class indices as cross-entropy targets, found {targets.dtype}",
            "use the regression adapter (MSE) for real-valued targets",
        )
    out = outputs.reshape(n, -1, outputs.shape[-1])
    tgt = targets.reshape(n, -1).long()
    valid = tgt != IGNORE_INDEX
    if bool(((tgt < 0) & valid).any()) or bool((tgt >= out.shape[-1]).any()):
        raise BatchError(
            f"expected class indices in [0, {out.shape[-1]}) or -100, found "
            f"values from {int(tgt.min())} to {int(tgt.max())}",
            "check that the targets match the number of model outputs",
        )
    return out, tgt, valid


def _mse_parts(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """MSE outputs and targets of one shape checked, as ``(N, K, C)`` each and all rows counted."""
    n = outputs.shape[0]
    if targets.shape != outputs.shape:
        raise BatchError(
            f"expected MSE targets of the output shape {tuple(outputs.shape)}, found {tuple(targets.shape)}",
            "reshape the targets to the model's output shape",
        )
    if outputs.ndim == 1:
        out, tgt = outputs.reshape(n, 1, 1), targets.reshape(n, 1, 1)
    else:
        out = outputs.reshape(n, -1, outputs.shape[-1])
        tgt = targets.reshape(out.shape).to(out.dtype)
    valid = torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
    return out, tgt, valid


class Adapter(ABC):
    """Turns ``(model, batch)`` into an :class:`AdaptedBatch` by one forward pass.

    Subclasses implement :meth:`__call__`. Micro-batching slices the batch along its first
    dimension with :meth:`num_samples` and :meth:`take`, which handle tensors, sequences
    and mappings of tensors; override them for other batch types.
    """

    name: str = "custom"

    @abstractmethod
    def __call__(self, model: nn.Module, batch: Any) -> AdaptedBatch:
        """Run the forward pass on ``batch`` and return outputs, targets and mask."""

    def num_samples(self, batch: Any) -> int:
        """N, the size of the first dimension of the batch's tensors."""
        return batch_size(batch)

    def take(self, batch: Any, start: int, stop: int) -> Any:
        """The samples ``start:stop`` of ``batch``."""
        return slice_batch(batch, start, stop, self.num_samples(batch))


class CausalLMAdapter(Adapter):
    """A causal language model: the logits at position t predict token t + 1.

    ``batch`` is a mapping (a tokenizer's output) with ``input_ids`` ``(N, S)`` and,
    optionally, ``attention_mask`` and ``labels`` (default: the input ids; -100 marks
    positions that are not predicted). The model is called as
    ``model(input_ids=..., attention_mask=..., use_cache=False)`` and must return an object
    with ``logits`` ``(N, S, V)`` or the logits tensor itself. Row t counts when position t
    is attended and the target ``labels[t + 1]`` is not -100; the last position never
    counts. So ``K = S`` and ``C = V``.
    """

    name = "causal_lm"

    def __call__(self, model: nn.Module, batch: Any) -> AdaptedBatch:
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            raise BatchError(
                f"expected a mapping with 'input_ids' for a causal LM, found {type(batch).__name__}",
                "pass the tokenizer's output, e.g. tokenizer(texts, return_tensors='pt', padding=True)",
            )
        input_ids = batch["input_ids"]
        if input_ids.ndim != 2 or input_ids.shape[1] < 2:
            raise BatchError(
                f"expected input_ids of shape (N, S) with S >= 2, found {tuple(input_ids.shape)}",
                "give at least two tokens per sequence: the last one only serves as a target",
            )
        attention_mask = batch.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        labels = batch.get("labels")
        if labels is None:
            labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        if labels.shape != input_ids.shape or attention_mask.shape != input_ids.shape:
            raise BatchError(
                f"expected labels and attention_mask of the shape of input_ids {tuple(input_ids.shape)}, "
                f"found {tuple(labels.shape)} and {tuple(attention_mask.shape)}",
                "pass them as the tokenizer returns them",
            )
        _check_vocabulary(model, input_ids)
        extra: dict[str, Tensor] = {}
        if "position_ids" in batch:
            extra["position_ids"] = batch["position_ids"]
        # A left-padded batch runs right-padded: a pad query before every token of its row
        # attends to nothing, and models that mask with -inf (GPT-NeoX, Llama) give NaN
        # there, which the backward pass spreads into every gradient. Causal attention
        # with the pads masked as keys makes the tokens' outputs independent of where the
        # pads sit, so the logits are moved back to the batch's own layout after the
        # forward pass and nothing else sees the move.
        # A row with no attended token (all padding) attends to nothing at every query: NaN
        # in models that mask with -inf, and whether it appears depends on the dtype and on
        # which rows share its micro-batch. Its outputs count nowhere (the mask below is the
        # batch's own), so it runs as if attended: the other rows do not see it.
        empty = ~attention_mask.to(torch.bool).any(-1, keepdim=True)
        fed_mask = attention_mask.masked_fill(empty, 1) if bool(empty.any()) else attention_mask
        rolled = left_padding_roll(fed_mask)
        fed_ids = input_ids
        if rolled is not None:
            to_right, _ = rolled
            fed_ids, fed_mask = input_ids.gather(1, to_right), fed_mask.gather(1, to_right)
            extra = {k: v.gather(1, to_right) for k, v in extra.items()}
        if "position_ids" not in extra and not bool(fed_mask.all()) and _accepts(model, "position_ids"):
            # Positions count the attended tokens, as a right-padded row's do (models with
            # absolute position embeddings, GPT-2, otherwise see shifted positions).
            extra["position_ids"] = (fed_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=fed_ids, attention_mask=fed_mask, use_cache=False, **extra)
        logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
        if logits is None:
            raise BatchError(
                f"expected the model to return logits, found {type(out).__name__} without 'logits'",
                "load the model with a causal-LM head (AutoModelForCausalLM)",
            )
        if rolled is not None:
            back = rolled[1].to(logits.device)
            logits = logits.gather(1, back.unsqueeze(-1).expand(*back.shape, logits.shape[-1]))
        # Shift: row t predicts labels[t + 1]; the last row has no target.
        shifted = torch.full_like(labels, IGNORE_INDEX)
        shifted[:, :-1] = labels[:, 1:]
        mask = attention_mask.to(torch.bool)
        return AdaptedBatch.from_parts(
            logits, shifted.to(logits.device), Loss.CROSS_ENTROPY, mask.to(logits.device)
        )


def left_padding_roll(attention_mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """For a left-padded batch (some row has pads, and every row is its pads, then its
    tokens), the gather indices ``(to_right, back)`` of shape (N, S): ``x.gather(1,
    to_right)`` moves each row's tokens to its start (right padding) and ``y.gather(1,
    back)`` moves them back. None for any other layout (no pads, right padding, holes)."""
    mask = attention_mask.to(torch.bool)
    if bool(mask.all()) or mask.ndim != 2:
        return None
    s = mask.shape[1]
    pads = s - mask.sum(-1, keepdim=True)
    columns = torch.arange(s, device=mask.device).unsqueeze(0)
    if not torch.equal(mask, columns >= pads) or not bool((pads > 0).any()):
        return None
    return (columns + pads) % s, (columns - pads) % s


def _accepts(model: nn.Module, name: str) -> bool:
    """Whether ``model``'s forward takes the keyword ``name`` (or any keyword)."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _check_vocabulary(model: nn.Module, input_ids: Tensor) -> None:
    """BatchError when a token id is outside the model's input embedding (a raw IndexError
    deep in the forward pass otherwise)."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    size = getattr(embedding, "num_embeddings", None)
    if not isinstance(size, int) or input_ids.numel() == 0:
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise BatchError(
            f"expected token ids in 0..{size - 1} (the model's vocabulary), found {bad}",
            "tokenize with the model's own tokenizer (its vocabulary matches the embedding)",
        )


class ClassificationAdapter(Adapter):
    """A classifier: ``batch = (inputs, targets)``; ``model(inputs)`` returns logits.

    Logits ``(N, C)`` with targets ``(N,)``, or ``(N, ..., C)`` with ``(N, ...)`` (e.g.
    per-pixel classes); targets of -100 are not counted. Loss: mean cross-entropy.
    """

    name = "classification"
    loss = Loss.CROSS_ENTROPY

    def __call__(self, model: nn.Module, batch: Any) -> AdaptedBatch:
        inputs, targets = _inputs_targets(batch, self.name)
        outputs = model(inputs)
        if isinstance(outputs, Tensor):
            targets = targets.to(outputs.device)
        return AdaptedBatch.from_parts(outputs, targets, self.loss)


class RegressionAdapter(ClassificationAdapter):
    """A regressor: ``batch = (inputs, targets)``; ``model(inputs)`` has the targets' shape.

    Loss: mean squared error over all output entries.
    """

    name = "regression"
    loss = Loss.MSE


class CallableAdapter(Adapter):
    """Wraps a user function ``fn(model, batch)`` for any other model or batch type.

    ``fn`` returns an :class:`AdaptedBatch`, or a tuple ``(outputs, targets)`` or
    ``(outputs, targets, mask)`` that :meth:`AdaptedBatch.from_parts` validates with ``loss``.
    """

    def __init__(
        self,
        fn: Callable[[nn.Module, Any], Any],
        loss: Loss | str = Loss.CROSS_ENTROPY,
        name: str = "custom",
    ) -> None:
        self.fn = fn
        self.loss = Loss(loss)
        self.name = name

    def __call__(self, model: nn.Module, batch: Any) -> AdaptedBatch:
        result = self.fn(model, batch)
        if isinstance(result, AdaptedBatch):
            return AdaptedBatch.from_parts(result.outputs, result.targets, result.loss, result.mask)
        if isinstance(result, tuple) and len(result) in (2, 3):
            return AdaptedBatch.from_parts(result[0], result[1], self.loss, *result[2:])
        raise BatchError(
            f"expected the adapter function to return an AdaptedBatch or (outputs, targets[, mask]), "
            f"found {type(result).__name__}",
            "return AdaptedBatch.from_parts(outputs, targets, loss)",
        )


class AdapterKind(str, Enum):
    """Built-in adapters, selectable by name."""

    CAUSAL_LM = "causal_lm"
    """Hugging Face causal LM on a tokenizer's output; next-token cross-entropy."""

    CLASSIFICATION = "classification"
    """``(inputs, targets)`` with integer targets; cross-entropy on the logits."""

    REGRESSION = "regression"
    """``(inputs, targets)`` with real targets; mean squared error."""

    MASKED_LM = "masked_lm"
    """Hugging Face masked LM on masked ``input_ids`` and ``labels``; cross-entropy at the
    masked positions (``specprobe.core.task_adapters.MaskedLMAdapter``)."""

    SEQ2SEQ_LM = "seq2seq_lm"
    """Hugging Face encoder–decoder on ``input_ids`` and target ``labels``; teacher-forced
    cross-entropy on the target (``specprobe.core.task_adapters.Seq2SeqLMAdapter``)."""

    IMAGE_CLASSIFICATION = "image_classification"
    """Hugging Face image classifier on ``pixel_values`` and ``labels``; cross-entropy per
    image (``specprobe.core.task_adapters.ImageClassificationAdapter``)."""


_BUILTIN: dict[AdapterKind, type[Adapter]] = {
    AdapterKind.CAUSAL_LM: CausalLMAdapter,
    AdapterKind.CLASSIFICATION: ClassificationAdapter,
    AdapterKind.REGRESSION: RegressionAdapter,
}


def resolve_adapter(
    adapter: Adapter | AdapterKind | str | Callable[[nn.Module, Any], Any] | None,
    batch: Any,
) -> Adapter:
    """The adapter to use: the one given, a built-in by name, or one chosen from the batch.

    Automatic choice (``adapter=None``): a mapping with ``pixel_values`` is an image
    classifier; a mapping with ``input_ids`` is a causal LM (a masked LM or a seq2seq
    model must be named: their batches look alike); a pair
    ``(inputs, targets)`` is classification when the targets are integers and regression
    when they are real.
    """
    if isinstance(adapter, Adapter):
        return adapter
    if isinstance(adapter, str):
        try:
            kind = AdapterKind(adapter)
        except ValueError:
            valid = ", ".join(k.value for k in AdapterKind)
            raise BatchError(
                f"unknown adapter {adapter!r}; expected one of: {valid}",
                "or pass an Adapter instance or a function fn(model, batch)",
            ) from None
        if kind in _BUILTIN:
            return _BUILTIN[kind]()
        from specprobe.core import task_adapters  # the task adapters build on this module

        return {a.name: a for a in task_adapters.TASK_ADAPTERS.values()}[kind.value]()
    if callable(adapter):
        return CallableAdapter(adapter)
    if isinstance(batch, Mapping) and "pixel_values" in batch and "labels" in batch:
        return resolve_adapter(AdapterKind.IMAGE_CLASSIFICATION, batch)
    if isinstance(batch, Mapping) and "input_ids" in batch:
        return CausalLMAdapter()
    if isinstance(batch, Sequence) and len(batch) == 2 and isinstance(batch[1], Tensor):
        return RegressionAdapter() if batch[1].dtype.is_floating_point else ClassificationAdapter()
    raise BatchError(
        f"cannot tell how to read a batch of type {type(batch).__name__}",
        "pass adapter='causal_lm', 'classification' or 'regression', or a function fn(model, batch)",
    )


def _inputs_targets(batch: Any, name: str) -> tuple[Any, Tensor]:
    if isinstance(batch, Mapping) and "inputs" in batch and "targets" in batch:
        return batch["inputs"], batch["targets"]
    if isinstance(batch, Sequence) and len(batch) == 2 and isinstance(batch[1], Tensor):
        return batch[0], batch[1]
    raise BatchError(
        f"expected the {name} batch as (inputs, targets) or {{'inputs': ..., 'targets': ...}}, "
        f"found {type(batch).__name__}",
        "pass a pair of tensors, or a function adapter for other batch types",
    )


def batch_size(batch: Any) -> int:
    """Size of the first dimension of the first tensor found in ``batch``."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 0
    if isinstance(batch, Mapping):
        values: list[Any] = list(batch.values())
    else:
        values = list(batch) if isinstance(batch, list | tuple) else []
    for value in values:
        if isinstance(value, Tensor | Mapping | list | tuple):
            return batch_size(value)
    raise BatchError(
        f"expected a batch holding tensors, found {type(batch).__name__}",
        "pass tensors, or a sequence or mapping of tensors",
    )


def slice_batch(batch: Any, start: int, stop: int, n: int) -> Any:
    """Samples ``start:stop`` of every tensor in ``batch`` whose first dimension is ``n``."""
    if isinstance(batch, Tensor):
        return batch[start:stop] if batch.ndim and batch.shape[0] == n else batch
    if isinstance(batch, Mapping):
        return {k: slice_batch(v, start, stop, n) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(slice_batch(v, start, stop, n) for v in batch)
    return batch


def loss_and_residual(adapted: AdaptedBatch, acc: torch.dtype) -> tuple[float, Tensor]:
    """Σ of the per-output losses, and the unnormalised residual g̃ = n·g in ``acc``, shaped as
    the outputs (zero where masked; ``g̃[adapted.mask]`` is the counted rows in flat order).

    Cross-entropy: ℓ_t = −log softmax(f_t)[y_t], g̃_t = softmax(f_t) − onehot(y_t).
    MSE: ℓ = (f − y)², g̃ = 2 (f − y).
    """
    f = adapted.outputs.detach().to(acc)
    rows = adapted.mask.unsqueeze(-1).to(acc)
    if adapted.loss is Loss.CROSS_ENTROPY:
        logp = torch.log_softmax(f, dim=-1)
        picked = logp.gather(-1, adapted.targets.unsqueeze(-1))
        loss_sum = float(-(picked * rows).sum())
        residual = logp.exp()
        residual.scatter_add_(-1, adapted.targets.unsqueeze(-1), -torch.ones_like(picked))
    else:
        diff = f - adapted.targets.detach().to(acc)
        loss_sum = float((diff.square() * rows).sum())
        residual = 2 * diff
    return loss_sum, residual * rows
