"""Fingerprints: hashes that tell whether two checkpoints hold the same weights, or two
tokenizers give the same token ids."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn


def fingerprint_weights(model: nn.Module) -> str:
    """A hash over the names, shapes, dtypes and bytes of all parameters (each tensor once).

    Two revisions with equal fingerprints hold the same weights: published Pythia revisions
    contain such duplicates. Cost: one pass over the weights (a copy to CPU per tensor).
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, param in model.named_parameters():
        tensor = param.detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


CONFIG_KEYS_IGNORED = frozenset({"transformers_version", "name_or_path", "torch_dtype", "dtype"})
"""Config entries that do not change what the model computes (its dtype is in the weights'
hash; ``_``-prefixed entries are the loader's bookkeeping)."""


def fingerprint_checkpoint(model: nn.Module) -> str:
    """A hash of the weights (:func:`fingerprint_weights`) and of the model's config (a
    Hugging Face model's ``config``, its bookkeeping entries left out): equal fingerprints,
    the same function. The same weights under another ``rms_norm_eps`` compute other
    numbers, so they are not a duplicate. Cost: :func:`fingerprint_weights`'s."""
    weights = fingerprint_weights(model)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return weights
    entries = {
        key: value
        for key, value in config.to_dict().items()
        if not key.startswith("_") and key not in CONFIG_KEYS_IGNORED
    }
    digest = hashlib.blake2b(weights.encode(), digest_size=16)
    digest.update(json.dumps(entries, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def fingerprint_tokenizer(tokenizer: Any) -> str:
    """A hash of the tokenizer's vocabulary and special tokens: equal hash, equal token ids.
    An image processor (no vocabulary) is hashed by its settings: equal hash, equal pixels."""
    digest = hashlib.blake2b(digest_size=16)
    if not hasattr(tokenizer, "get_vocab") and hasattr(tokenizer, "to_json_string"):
        digest.update(tokenizer.to_json_string().encode())
        return digest.hexdigest()
    vocab = tokenizer.get_vocab()
    digest.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    digest.update(repr(getattr(tokenizer, "eos_token_id", None)).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    return digest.hexdigest()
