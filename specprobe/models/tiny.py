"""Tiny models and tokenizers built from nothing: for tests, examples, benchmarks and the demo.

Models are built with eager attention: forward-mode AD and vmap do not run through the
fused scaled-dot-product attention kernels (the CPU flash kernel included), and the eNTK
operators need both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from specprobe.choices import TinyArch
from specprobe.errors import SpecprobeError


def tiny_causal_lm(
    arch: TinyArch | str = TinyArch.GPT_NEOX,
    *,
    vocab_size: int = 64,
    hidden_size: int = 16,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int | None = None,
    max_positions: int = 128,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A randomly initialised Hugging Face causal LM of the given size, in eval mode.

    Deterministic for a given ``seed``; eager attention. Parameter count for GPT-NeoX is
    about 2·V·H + L·(12·H² + 13·H) (embeddings in and out, L blocks with a 4·H MLP).
    """
    arch = TinyArch(arch)
    model_class, config = _tiny_config(
        arch,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_positions=max_positions,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return cast(nn.Module, model).to(dtype).eval()


def _tiny_config(
    arch: TinyArch,
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_positions: int,
) -> tuple[Any, Any]:
    """The causal-LM class of ``arch`` and its config of the given size (eager attention,
    token 0 as BOS and EOS)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "attn_implementation": "eager",
    }
    if arch is TinyArch.GPT_NEOX:
        return GPTNeoXForCausalLM, GPTNeoXConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_positions,
            **common,
        )
    if arch is TinyArch.GPT2:
        return GPT2LMHeadModel, GPT2Config(
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_inner=intermediate_size,
            n_positions=max_positions,
            tie_word_embeddings=True,
            **common,
        )
    if arch is TinyArch.LLAMA:
        return LlamaForCausalLM, LlamaConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=max(1, num_heads // 2),
            intermediate_size=intermediate_size,
            max_position_embeddings=max_positions,
            **common,
        )
    raise SpecprobeError(  # pragma: no cover - the Enum above is exhaustive
        f"unknown architecture {arch!r}", "use one of TinyArch"
    )


EOS_TOKEN = "<|endoftext|>"
"""End-of-text token of the tokenizers specprobe trains (demo, tests)."""


def train_tokenizer(documents: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE with ``vocab_size`` entries trained on ``documents``, wrapped in
    ``PreTrainedTokenizerFast`` (end-of-text is EOS and BOS) so ``AutoTokenizer`` loads it.
    ``vocab_size`` must exceed 257 (the byte alphabet and end-of-text) for merges to be learnt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN)
