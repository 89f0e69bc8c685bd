"""The measured set of each task: what every checkpoint of a family is measured on.

* causal-lm: the packed token subset of :func:`specprobe.models.data.build_subset`;
* masked-lm: that subset (with the tokenizer's [CLS] … [SEP] around each chunk), masked by
  :func:`specprobe.core.masking.mask_tokens` per (seed, sequence, position);
* seq2seq-lm: (source, target) pairs of two text columns, or the packed subset corrupted
  into T5's spans by :func:`specprobe.core.masking.span_corrupt`;
* image-classification: images and labels, through the model's image processor.

Masks and spans are drawn once for the whole set by its ``seed``: the same for every
checkpoint that shares the tokenizer, any micro-batch and any number of processes. The set's
fingerprint hashes every model input (masked ids and labels included).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from specprobe.choices import Task
from specprobe.config import DataSpec
from specprobe.core.masking import IGNORE_INDEX, MaskRecipe, SpanRecipe, mask_tokens, span_corrupt
from specprobe.errors import SpecprobeError
from specprobe.models.data import POOL_FACTOR, TokenSubset, build_subset, iter_rows


def build_task_subset(spec: DataSpec, task: Task, processor: Any, processor_fingerprint: str) -> TokenSubset:
    """The measured set of ``task`` (resolved, not ``auto``): ``processor`` is the
    tokenizer, or for image classification the image processor. Raises SpecprobeError for
    data the task cannot use (no mask token, too few rows, a missing column)."""
    if task is Task.MASKED_LM:
        return _masked(spec, processor, processor_fingerprint)
    if task is Task.SEQ2SEQ_LM:
        if spec.target_column is not None:
            return _pairs(spec, processor, processor_fingerprint)
        return _spans(spec, processor, processor_fingerprint)
    if task is Task.IMAGE_CLASSIFICATION:
        return _images(spec, processor, processor_fingerprint)
    return build_subset(spec, processor, processor_fingerprint)


def fingerprint_fields(fields: dict[str, Tensor]) -> str:
    """Hash of every model input: names, shapes, dtypes and values."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(fields):
        value = fields[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _with_fields(base: TokenSubset, fields: dict[str, Tensor], note: str | None = None) -> TokenSubset:
    return replace(
        base,
        input_ids=fields.get("input_ids", base.input_ids),
        fingerprint=fingerprint_fields(fields),
        fields=fields,
        note=note if note is not None else base.note,
    )


def _masked(spec: DataSpec, tokenizer: Any, fingerprint: str) -> TokenSubset:
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise SpecprobeError(
            "expected a tokenizer with a mask token for a masked LM, found none",
            "use the tokenizer the model was trained with (it defines [MASK] or <mask>)",
        )
    cls, sep = getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)
    wrap = cls is not None and sep is not None
    if wrap and spec.seq_len < 3:
        raise SpecprobeError(
            f"expected --seq-len of 3 or more for a masked LM ([CLS], a token, [SEP]), found {spec.seq_len}",
            "use a longer --seq-len",
        )
    base = build_subset(replace(spec, seq_len=spec.seq_len - 2) if wrap else spec, tokenizer, fingerprint)
    ids = base.input_ids
    if cls is not None and sep is not None:
        n = ids.shape[0]
        ids = torch.cat([torch.full((n, 1), int(cls)), ids, torch.full((n, 1), int(sep))], dim=1)
    special = torch.zeros_like(ids, dtype=torch.bool)
    for token in getattr(tokenizer, "all_special_ids", []):
        special |= ids == token
    inputs, labels = mask_tokens(
        ids,
        ~special,
        mask_token_id=int(mask_id),
        vocab_size=len(tokenizer),
        seed=spec.seed,
        recipe=MaskRecipe(spec.mask_rate, tuple(spec.mask_split)),  # type: ignore[arg-type]
    )
    fields = {"input_ids": inputs, "attention_mask": torch.ones_like(inputs), "labels": labels}
    return _with_fields(base, fields)


def sentinel_ids(tokenizer: Any) -> list[int]:
    """The ids of T5's sentinels ``<extra_id_0>``, ``<extra_id_1>``, … the tokenizer has."""
    vocab = tokenizer.get_vocab()
    found: list[int] = []
    while f"<extra_id_{len(found)}>" in vocab:
        found.append(int(vocab[f"<extra_id_{len(found)}>"]))
    return found


def _spans(spec: DataSpec, tokenizer: Any, fingerprint: str) -> TokenSubset:
    sentinels = sentinel_ids(tokenizer)
    eos = getattr(tokenizer, "eos_token_id", None)
    if not sentinels or eos is None:
        raise SpecprobeError(
            "expected a tokenizer with T5's sentinel tokens (<extra_id_0>, …) and an EOS token for span "
            "corruption of plain text, found " + ("no sentinels" if not sentinels else "no EOS token"),
            "give a dataset with source and target columns (--text-column and --target-column)",
        )
    base = build_subset(spec, tokenizer, fingerprint)
    inputs, targets = span_corrupt(
        base.input_ids,
        sentinels=sentinels,
        eos_token_id=int(eos),
        seed=spec.seed,
        recipe=SpanRecipe(rate=spec.mask_rate),
    )
    fields = {"input_ids": inputs, "attention_mask": torch.ones_like(inputs), "labels": targets}
    return _with_fields(base, fields)


def _pool(spec: DataSpec, rows: list[Any], what: str) -> list[int]:
    """The indices of the ``num_sequences`` rows drawn by seed from ``rows``."""
    if len(rows) < spec.num_sequences:
        raise SpecprobeError(
            f"too few {what} in {spec.dataset}: found {len(rows)}, need --num-sequences {spec.num_sequences}",
            "lower --num-sequences, or give more data",
        )
    chosen = np.random.default_rng(spec.seed).choice(len(rows), size=spec.num_sequences, replace=False)
    return [int(i) for i in chosen]


def _pairs(spec: DataSpec, tokenizer: Any, fingerprint: str) -> TokenSubset:
    target_column = spec.target_column or ""
    pairs: list[tuple[str, str]] = []
    for row in iter_rows(spec, (spec.text_column, target_column)):
        source, target = row[spec.text_column], row[target_column]
        if isinstance(source, str) and isinstance(target, str) and source.strip() and target.strip():
            pairs.append((source, target))
        if len(pairs) >= POOL_FACTOR * spec.num_sequences:
            break
    chosen = [pairs[i] for i in _pool(spec, pairs, "source–target pairs")]

    def encode(texts: list[str]) -> tuple[Tensor, Tensor]:
        out = tokenizer(
            texts, max_length=spec.seq_len, truncation=True, padding="max_length", return_tensors="pt"
        )
        return out["input_ids"].long(), out["attention_mask"].long()

    source_ids, source_mask = encode([s for s, _ in chosen])
    target_ids, target_mask = encode([t for _, t in chosen])
    labels = target_ids.masked_fill(target_mask == 0, IGNORE_INDEX)
    fields = {"input_ids": source_ids, "attention_mask": source_mask, "labels": labels}
    return TokenSubset(
        input_ids=source_ids,
        fingerprint=fingerprint_fields(fields),
        tokenizer_fingerprint=fingerprint,
        num_documents=len(pairs),
        fields=fields,
    )


def _images(spec: DataSpec, processor: Any, fingerprint: str) -> TokenSubset:
    try:
        import PIL  # noqa: F401  # datasets decodes images with Pillow
    except ImportError:
        raise SpecprobeError(
            "image classification reads images with Pillow, which is not installed",
            'install the vision extra: pip install "specprobe[vision]"',
        ) from None
    rows: list[tuple[Any, int]] = []
    for row in iter_rows(spec, (spec.image_column, spec.label_column)):
        label = row[spec.label_column]
        if isinstance(label, bool) or not isinstance(label, int):
            raise SpecprobeError(
                f"expected class indices in column {spec.label_column!r} of {spec.dataset}, found "
                f"{type(label).__name__} {str(label)[:40]!r}",
                "pass --label-column with the column of integer labels",
            )
        rows.append((row[spec.image_column], label))
        if len(rows) >= POOL_FACTOR * spec.num_sequences:
            break
    chosen = [rows[i] for i in _pool(spec, rows, "images")]
    images = [image.convert("RGB") if hasattr(image, "convert") else image for image, _ in chosen]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    labels = torch.tensor([label for _, label in chosen], dtype=torch.long)
    fields = {"pixel_values": pixels, "labels": labels}
    return TokenSubset(
        input_ids=torch.zeros((len(chosen), 0), dtype=torch.long),
        fingerprint=fingerprint_fields(fields),
        tokenizer_fingerprint=fingerprint,
        num_documents=len(rows),
        fields=fields,
    )
