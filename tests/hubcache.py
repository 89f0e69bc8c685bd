"""Build a local Hugging Face hub cache, a tokenizer and a corpus for offline tests.

A cache repository is HF_HOME/hub/models--ORG--NAME/ with snapshots/<40-hex commit>/
holding the files and refs/<revision> holding the commit (no trailing newline); with
HF_HUB_OFFLINE=1, from_pretrained(id, revision=...) resolves through it like the hub.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from torch import nn

WORDS = [
    "the",
    "a",
    "one",
    "some",
    "every",
    "old",
    "new",
    "red",
    "blue",
    "small",
    "large",
    "quick",
    "slow",
    "fox",
    "dog",
    "cat",
    "bird",
    "tree",
    "river",
    "stone",
    "runs",
    "jumps",
    "sleeps",
    "sings",
    "falls",
    "grows",
    "over",
    "under",
    "near",
    "beside",
    "through",
    "and",
    "but",
    "so",
    "then",
]


def corpus_lines(n: int, seed: int = 0) -> list[str]:
    """n deterministic sentences with some structure (a word is often followed by the same next word)."""
    lines = []
    state = seed
    for i in range(n):
        words = []
        for j in range(8 + (i % 5)):
            state = (state * 1103515245 + 12345) % 2**31
            k = (state >> 8) % len(WORDS) if j % 3 == 0 else (len(words[-1]) * 7 + j) % len(WORDS)
            words.append(WORDS[k])
        lines.append(" ".join(words) + ".")
    return lines


def make_tokenizer(vocab_size: int = 300) -> object:
    """A byte-level BPE trained on the corpus, wrapped so that AutoTokenizer loads it back."""
    from specprobe.models.tiny import train_tokenizer

    return train_tokenizer(corpus_lines(500), vocab_size)


def hub_repo(repo_id: str) -> Path:
    return Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo_id.replace('/', '--')}"


def add_revision(
    repo_id: str,
    revision: str,
    model: nn.Module | None,
    tokenizer: object | None,
    config_only: object | None = None,
) -> str:
    """Save a model (and tokenizer) as ``revision`` of ``repo_id`` in the cache; returns the commit."""
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = hub_repo(repo_id) / "snapshots" / commit
    if model is not None:
        model.save_pretrained(snapshot)  # type: ignore[operator]
    if config_only is not None:
        config_only.save_pretrained(snapshot)  # type: ignore[attr-defined]
    if tokenizer is not None:
        tokenizer.save_pretrained(snapshot)  # type: ignore[attr-defined]
    refs = hub_repo(repo_id) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / revision).write_text(commit)
    return commit
