"""One adapter per task beyond the causal LM: masked LM, seq2seq LM, image classification.

Each maps a Hugging Face model's batch to the outputs that count for its task (DESIGN
section 7), in the canonical ``(N, K, C)`` layout of :class:`~specprobe.core.adapters.AdaptedBatch`:

* masked LM: K = S positions, counted where ``labels`` ≠ -100 (the masked positions);
* seq2seq LM: K = T target positions, the teacher-forced decoder logits, counted where
  ``labels`` ≠ -100;
* image classification: K = 1 row of class logits per image.

The batches carry their labels: the masks and spans are drawn when the batch is made
(:mod:`specprobe.core.masking`), once for the whole measured set, so that they are the same
for every checkpoint, micro-batch and process. No module here imports transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from specprobe.choices import Task
from specprobe.core.adapters import IGNORE_INDEX, AdaptedBatch, Adapter, CausalLMAdapter, Loss
from specprobe.errors import BatchError


def _logits(out: Any, what: str) -> Tensor:
    logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
    if logits is None:
        raise BatchError(
            f"expected the model to return logits, found {type(out).__name__} without 'logits'",
            f"load the model with its {what} head",
        )
    return logits


def _require(batch: Any, keys: tuple[str, ...], task: str, hint: str) -> Mapping[str, Any]:
    if not isinstance(batch, Mapping) or any(k not in batch for k in keys):
        found = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise BatchError(f"expected a {task} batch with {', '.join(keys)}, found {found}", hint)
    return batch


class MaskedLMAdapter(Adapter):
    """A masked language model (BERT, RoBERTa, DistilBERT): the logits at the masked positions.

    ``batch`` is a mapping with ``input_ids`` ``(N, S)`` (the masked inputs), ``labels``
    ``(N, S)`` (the original token at each masked position, -100 elsewhere) and optionally
    ``attention_mask`` and ``token_type_ids``; :func:`specprobe.core.masking.mask_tokens`
    makes the first two. The model is called as ``model(input_ids=..., attention_mask=...)``
    and returns logits ``(N, S, V)``. Row t counts when ``labels[t]`` ≠ -100 and position t
    is attended: D = masked positions × V. Loss: mean cross-entropy over them.
    """

    name = "masked_lm"

    def __call__(self, model: nn.Module, batch: Any) -> AdaptedBatch:
        batch = _require(
            batch,
            ("input_ids", "labels"),
            "masked-LM",
            "mask the tokens first: inputs, labels = specprobe.mask_tokens(ids, maskable, ...)",
        )
        input_ids, labels = batch["input_ids"], batch["labels"]
        if input_ids.ndim != 2 or labels.shape != input_ids.shape:
            raise BatchError(
                f"expected input_ids and labels of one shape (N, S), found {tuple(input_ids.shape)} and "
                f"{tuple(labels.shape)}",
                "give one label per input position (-100 where not masked)",
            )
        kwargs = {k: batch[k] for k in ("attention_mask", "token_type_ids") if batch.get(k) is not None}
        logits = _logits(model(input_ids=input_ids, **kwargs), "masked-LM (AutoModelForMaskedLM)")
        attended = batch.get("attention_mask")
        mask = None if attended is None else attended.to(device=logits.device).bool()
        return AdaptedBatch.from_parts(logits, labels.to(logits.device), Loss.CROSS_ENTROPY, mask)


class Seq2SeqLMAdapter(Adapter):
    """An encoder–decoder (T5, BART): the teacher-forced decoder logits of the target.

    ``batch`` is a mapping with ``input_ids`` ``(N, S)`` (the source), optionally its
    ``attention_mask``, and ``labels`` ``(N, T)`` (the target, -100 at padding). The model
    is called as ``model(input_ids=..., attention_mask=..., labels=...)``, so it builds its
    own decoder inputs (the labels shifted right after its decoder start token), and returns
    logits ``(N, T, V)``. Row t counts when ``labels[t]`` ≠ -100: D = target tokens × V.
    (The model also computes its own loss from the labels: one cross-entropy over the
    logits, a small part of the forward pass.)
    """

    name = "seq2seq_lm"

    def __call__(self, model: nn.Module, batch: Any) -> AdaptedBatch:
        batch = _require(
            batch,
            ("input_ids", "labels"),
            "seq2seq",
            "pass the source as input_ids (with attention_mask) and the target token ids as labels",
        )
        input_ids, labels = batch["input_ids"], batch["labels"]
        if input_ids.ndim != 2 or labels.ndim != 2 or labels.shape[0] != input_ids.shape[0]:
            raise BatchError(
                f"expected input_ids (N, S) and labels (N, T), found {tuple(input_ids.shape)} and "
                f"{tuple(labels.shape)}",
                "give one target sequence per source sequence",
            )
        kwargs = (
            {"attention_mask": batch["attention_mask"]} if batch.get("attention_mask") is not None else {}
        )
        out = model(input_ids=input_ids, labels=labels, use_cache=False, **kwargs)
        logits = _logits(out, "seq2seq (AutoModelForSeq2SeqLM)")
        return AdaptedBatch.from_parts(logits, labels.to(logits.device), Loss.CROSS_ENTROPY)


class ImageClassificationAdapter(Adapter):
    """An image classifier (ViT, DeiT, ConvNeXt, ResNet): one row of class logits per image.

    ``batch`` is a mapping with ``pixel_values`` ``(N, channels, H, W)`` (the image
    processor's output) and ``labels`` ``(N,)`` class indices (-100: not counted). The model
    is called as ``model(pixel_values=...)`` and returns logits ``(N, classes)``. K = 1:
    D = images × classes. Loss: mean cross-entropy.
    """

    name = "image_classification"

    def __call__(self, model: nn.Module, batch: Any) -> AdaptedBatch:
        batch = _require(
            batch,
            ("pixel_values", "labels"),
            "image-classification",
            "pass the image processor's pixel_values and one class index per image as labels",
        )
        labels = batch["labels"]
        if labels.ndim != 1:
            raise BatchError(
                f"expected one label per image, shape (N,), found {tuple(labels.shape)}",
                "give one class index per image",
            )
        logits = _logits(model(pixel_values=batch["pixel_values"]), "image-classification")
        return AdaptedBatch.from_parts(logits, labels.to(logits.device), Loss.CROSS_ENTROPY)


TASK_ADAPTERS: dict[Task, type[Adapter]] = {
    Task.CAUSAL_LM: CausalLMAdapter,
    Task.MASKED_LM: MaskedLMAdapter,
    Task.SEQ2SEQ_LM: Seq2SeqLMAdapter,
    Task.IMAGE_CLASSIFICATION: ImageClassificationAdapter,
}
"""The adapter of each task (the one table)."""


def task_of(adapter_name: str) -> Task | None:
    """The task whose adapter is named ``adapter_name`` (a measurement's ``adapter``), or
    None for the generic ones (classification, regression, custom)."""
    return next((task for task, cls in TASK_ADAPTERS.items() if cls.name == adapter_name), None)


def adapter_for(task: Task | str) -> Adapter:
    """The adapter that reads a batch of ``task`` (not ``auto``: a task is resolved first)."""
    task = Task(task)
    if task is Task.AUTO:
        raise BatchError(
            "expected a resolved task, found 'auto'",
            "resolve it from the checkpoint's config first (specprobe.models.tasks.resolve_task)",
        )
    return TASK_ADAPTERS[task]()


__all__ = [
    "IGNORE_INDEX",
    "TASK_ADAPTERS",
    "ImageClassificationAdapter",
    "MaskedLMAdapter",
    "Seq2SeqLMAdapter",
    "adapter_for",
    "task_of",
]
