"""Shared fixtures: tiny models and batches, built in memory, never downloaded."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from specprobe.models.tiny import tiny_causal_lm

# No test may reach the network: the hub is unreachable here and in CI. The tests get a
# hub cache of their own, set before huggingface_hub is imported (it reads HF_HOME once).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["COLUMNS"] = "220"  # wide enough that report tables are not wrapped
os.environ["HF_DATASETS_OFFLINE"] = "1"
_HF_HOME = tempfile.mkdtemp(prefix="specprobe-tests-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HF_DATASETS_CACHE", None)
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)


@dataclass(frozen=True)
class Case:
    """A model and a batch, as a test case."""

    name: str
    build: Callable[[torch.dtype], tuple[nn.Module, Any]]
    params: tuple[str, ...] | None = None


def mlp(d_in: int, d_out: int, width: int = 12, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, d_out))


def _mlp_regression(dtype: torch.dtype) -> tuple[nn.Module, Any]:
    model = mlp(4, 2).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 4, generator=g, dtype=dtype)
    return model, (x, torch.randn(7, 2, generator=g, dtype=dtype))


def _mlp_classification(dtype: torch.dtype) -> tuple[nn.Module, Any]:
    model = mlp(4, 3).to(dtype)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 4, generator=g, dtype=dtype)
    return model, (x, torch.randint(0, 3, (9,), generator=g))


def lm_batch(vocab: int = 32, n: int = 3, seq: int = 7, pad: bool = True, seed: int = 3) -> dict[str, Any]:
    """Token ids with right padding: sample 1 ends two tokens early, sample 2 four."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, seq), generator=g)
    mask = torch.ones_like(ids)
    if pad:
        mask[1, seq - 2 :] = 0
        mask[2 % n, seq - 4 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _lm(arch: str) -> Callable[[torch.dtype], tuple[nn.Module, Any]]:
    def build(dtype: torch.dtype) -> tuple[nn.Module, Any]:
        return tiny_causal_lm(arch, vocab_size=32, hidden_size=8, dtype=dtype), lm_batch()

    return build


CASES = [
    Case("mlp_regression", _mlp_regression),
    Case("mlp_classification", _mlp_classification),
    Case("gpt_neox_padded", _lm("gpt_neox")),
    Case("gpt2_tied", _lm("gpt2")),
    Case("llama", _lm("llama")),
]
HEAD_CASES = [
    Case("gpt_neox_head", _lm("gpt_neox"), ("lm_head.*",)),
    Case("gpt2_tied_head", _lm("gpt2"), ("lm_head.*",)),
    Case("llama_last_block", _lm("llama"), ("model.layers.1.*", "lm_head.*")),
]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param
