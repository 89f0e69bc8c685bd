"""Tiny random models of the tasks beyond the causal LM: for tests, examples and the docs.

Each is a Hugging Face model of the architecture's own class (the head it is published
with), with eager attention, a few hundred to a few thousand parameters, deterministic for
a seed, in eval mode.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, cast

import torch
from torch import nn

from specprobe.choices import Task


class TinyTaskArch(str, Enum):
    """Architectures of the tiny task models, each with its task's head."""

    BERT = "bert"
    """``BertForMaskedLM``: the MultiBERTs architecture, decoder tied to the word embeddings."""
    ROBERTA = "roberta"
    """``RobertaForMaskedLM``: BERT with learnt positions offset past the padding id."""
    DISTILBERT = "distilbert"
    """``DistilBertForMaskedLM``: no token types, a projector before the tied decoder."""
    T5 = "t5"
    """``T5ForConditionalGeneration``: RMS layer norms, relative position buckets, shared
    embeddings, the head tied (scaled) to them."""
    BART = "bart"
    """``BartForConditionalGeneration``: learnt positions, the head tied to the shared
    embeddings, a final-logits bias buffer."""
    VIT = "vit"
    """``ViTForImageClassification``: a convolutional patch embedding, a class token."""
    CONVNEXT = "convnext"
    """``ConvNextForImageClassification``: depthwise convolutions, layer scales."""
    RESNET = "resnet"
    """``ResNetForImageClassification``: convolutions with batch norm (in eval mode)."""

    @property
    def task(self) -> Task:
        """The task of the architecture's head."""
        if self in (TinyTaskArch.BERT, TinyTaskArch.ROBERTA, TinyTaskArch.DISTILBERT):
            return Task.MASKED_LM
        if self in (TinyTaskArch.T5, TinyTaskArch.BART):
            return Task.SEQ2SEQ_LM
        return Task.IMAGE_CLASSIFICATION


def tiny_task_config(
    arch: TinyTaskArch | str,
    *,
    vocab_size: int = 32,
    hidden_size: int = 8,
    num_labels: int = 3,
    image_size: int = 8,
    max_positions: int = 32,
) -> Any:
    """The config of a tiny ``arch`` model: one layer (two stages for the convolutional
    ones), two heads, ``num_labels`` classes for the image classifiers; its
    ``architectures`` names the head, as a published config.json does."""
    from transformers import (
        BartConfig,
        BertConfig,
        ConvNextConfig,
        DistilBertConfig,
        ResNetConfig,
        RobertaConfig,
        T5Config,
        ViTConfig,
    )

    arch = TinyTaskArch(arch)
    h = hidden_size
    heads: dict[str, Any] = {"num_attention_heads": 2, "intermediate_size": 2 * h}
    labels: dict[str, Any] = {"num_labels": num_labels}
    config: Any
    if arch is TinyTaskArch.BERT:
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=h,
            num_hidden_layers=1,
            max_position_embeddings=max_positions,
            **heads,
        )
    elif arch is TinyTaskArch.ROBERTA:
        config = RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=h,
            num_hidden_layers=1,
            max_position_embeddings=max_positions + 2,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **heads,
        )
    elif arch is TinyTaskArch.DISTILBERT:
        config = DistilBertConfig(
            vocab_size=vocab_size,
            dim=h,
            n_layers=1,
            n_heads=2,
            hidden_dim=2 * h,
            max_position_embeddings=max_positions,
        )
    elif arch is TinyTaskArch.T5:
        config = T5Config(  # type: ignore[call-arg]  # decoder_start_token_id goes to the base config
            vocab_size=vocab_size,
            d_model=h,
            d_kv=h // 2,
            d_ff=2 * h,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    elif arch is TinyTaskArch.BART:
        config = BartConfig(
            vocab_size=vocab_size,
            d_model=h,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=2 * h,
            decoder_ffn_dim=2 * h,
            max_position_embeddings=max_positions,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=None,
        )
    elif arch is TinyTaskArch.VIT:
        config = ViTConfig(
            image_size=image_size,
            patch_size=image_size // 2,
            hidden_size=h,
            num_hidden_layers=1,
            **heads,
            **labels,
        )
    elif arch is TinyTaskArch.CONVNEXT:
        config = ConvNextConfig(
            num_stages=2, patch_size=2, hidden_sizes=[4, h], depths=[1, 1], image_size=image_size, **labels
        )
    else:
        config = ResNetConfig(
            embedding_size=4, hidden_sizes=[4, h], depths=[1, 1], layer_type="basic", **labels
        )
    config.architectures = [_CLASSES[arch]]
    return config


_CLASSES = {
    TinyTaskArch.BERT: "BertForMaskedLM",
    TinyTaskArch.ROBERTA: "RobertaForMaskedLM",
    TinyTaskArch.DISTILBERT: "DistilBertForMaskedLM",
    TinyTaskArch.T5: "T5ForConditionalGeneration",
    TinyTaskArch.BART: "BartForConditionalGeneration",
    TinyTaskArch.VIT: "ViTForImageClassification",
    TinyTaskArch.CONVNEXT: "ConvNextForImageClassification",
    TinyTaskArch.RESNET: "ResNetForImageClassification",
}


def tiny_task_model(
    arch: TinyTaskArch | str,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **sizes: Any,
) -> nn.Module:
    """A randomly initialised tiny ``arch`` model with its task's head, in eval mode, eager
    attention; ``sizes`` go to :func:`tiny_task_config`. Deterministic for a ``seed``."""
    import transformers

    config = tiny_task_config(arch, **sizes)
    config._attn_implementation = "eager"
    model_class = getattr(transformers, config.architectures[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return cast(nn.Module, model).to(dtype).eval()
