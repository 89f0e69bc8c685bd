"""Masks for a masked LM and spans for T5's objective, drawn from the probes' counter-based stream.

A mask must not differ between the checkpoints of a family, micro-batch sizes or numbers of
processes (DESIGN section 7). So every random number here is a pure function of
``(seed, sample, stream, position)``: the 32-bit hash of the position under the key pair of
``(seed, sample, stream)`` (:func:`specprobe.core.probes.rademacher_words`, the generator the
probes use), with ``sample`` the sequence's index in the measured set. The masks of a set
are drawn once, for the whole set, before it is split into micro-batches or across
processes; drawing a sequence alone (``first_sample`` = its index) gives the same mask.

Cost: one hash per token and stream (three streams for a masked LM), on the tensors' device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from specprobe.config import check_mask
from specprobe.core.probes import probe_key, rademacher_words
from specprobe.errors import SpecprobeError

IGNORE_INDEX = -100

# Stream numbers, above any probe index, so that masks and probes never share a key.
_SELECT, _KIND, _TOKEN, _SPANS = (1 << 40) + 1, (1 << 40) + 2, (1 << 40) + 3, (1 << 40) + 4
_SCALE = float(1 << 32)


def uniform(
    seed: int, samples: Sequence[int], stream: int, length: int, device: torch.device | str = "cpu"
) -> Tensor:
    """``(len(samples), length)`` float64 numbers in [0, 1): entry (i, t) is the hash of
    position t under ``(seed, samples[i], stream)``, divided by 2^32."""
    keys = torch.tensor([probe_key(seed, s, stream) for s in samples], dtype=torch.int64, device=device)
    return rademacher_words(keys.reshape(-1, 2), length).to(torch.float64) / _SCALE


@dataclass(frozen=True)
class MaskRecipe:
    """How the positions of a masked LM are chosen and what is put there.

    Each maskable position is chosen with probability ``rate``; of the chosen, a fraction
    ``split[0]`` becomes the mask token, ``split[1]`` a random token, ``split[2]`` stays
    (BERT: 15 %, 80/10/10, Devlin et al. 2019). A sequence none of whose positions was
    chosen gets its one position of smallest draw, so every sequence has an output.
    """

    rate: float = 0.15
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def validate(self) -> None:
        """Raise SpecprobeError unless 0 < rate ≤ 1 and the split is three fractions summing to 1."""
        check_mask(self.rate, self.split)


def mask_tokens(
    input_ids: Tensor,
    maskable: Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    seed: int,
    recipe: MaskRecipe | None = None,
    first_sample: int = 0,
) -> tuple[Tensor, Tensor]:
    """The masked inputs and their labels, for ``input_ids`` ``(N, S)``.

    ``maskable`` ``(N, S)`` bool marks the positions that may be masked (not padding, not
    special tokens such as [CLS] and [SEP]); ``first_sample`` is the index of row 0 in the
    measured set. Returns ``(inputs, labels)``, both ``(N, S)`` int64: labels hold the
    original token at the chosen positions and -100 elsewhere (the rows that count).
    Raises SpecprobeError for a sequence with no maskable position.
    """
    recipe = recipe or MaskRecipe()
    recipe.validate()
    n, s = input_ids.shape
    if n and not bool(maskable.any(dim=1).all()):
        row = int((~maskable.any(dim=1)).nonzero()[0, 0]) + first_sample
        raise SpecprobeError(
            f"sequence {row} has no position that may be masked (all padding or special tokens)",
            "use longer sequences (--seq-len)",
        )
    samples = range(first_sample, first_sample + n)
    device = input_ids.device
    select = uniform(seed, samples, _SELECT, s, device)
    kind = uniform(seed, samples, _KIND, s, device)
    token = uniform(seed, samples, _TOKEN, s, device)
    masked = maskable & (select < recipe.rate)
    # A sequence with no chosen position gets its maskable position of smallest draw.
    fallback = torch.where(maskable, select, torch.full_like(select, 2.0)).argmin(dim=1)
    none = ~masked.any(dim=1)
    masked[none, fallback[none]] = True
    labels = torch.where(masked, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    random_ids = (token * vocab_size).long().clamp(max=vocab_size - 1)
    to_mask = masked & (kind < recipe.split[0])
    to_random = masked & (kind >= recipe.split[0]) & (kind < recipe.split[0] + recipe.split[1])
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


@dataclass(frozen=True)
class SpanRecipe:
    """T5's span corruption (Raffel et al. 2020): ``round(S·rate)`` noise tokens in
    ``round(noise / span_length)`` spans, the spans and the kept stretches between them of
    random lengths (at least 1), the text starting with a kept stretch."""

    rate: float = 0.15
    span_length: float = 3.0


def span_mask(length: int, seed: int, sample: int, recipe: SpanRecipe | None = None) -> np.ndarray:
    """The noise positions of one sequence of ``length`` tokens: a bool array, T5's
    ``random_spans_noise_mask`` with its random segmentations drawn from the stream of
    ``(seed, sample)``. The count of noise tokens and spans depends on ``length`` only."""
    recipe = recipe or SpanRecipe()
    noise = min(max(round(length * recipe.rate), 1), length - 1)
    spans = max(min(round(noise / recipe.span_length), noise, length - noise), 1)
    draws = uniform(seed, [sample], _SPANS, 2 * length)[0].numpy()

    def segments(total: int, count: int, offset: int) -> np.ndarray:
        # A random composition of ``total`` into ``count`` positive parts: cut at the
        # count − 1 of the positions 1..total−1 with the smallest draws.
        cuts = np.sort(np.argsort(draws[offset + 1 : offset + total], kind="stable")[: count - 1] + 1)
        return np.diff(np.concatenate([[0], cuts, [total]]))

    noise_lengths = segments(noise, spans, 0)
    kept_lengths = segments(length - noise, spans, length)
    mask = np.zeros(length, dtype=bool)
    at = 0
    for kept, span in zip(kept_lengths, noise_lengths, strict=True):
        at += int(kept)
        mask[at : at + int(span)] = True
        at += int(span)
    return mask


def span_corrupt(
    input_ids: Tensor,
    *,
    sentinels: Sequence[int],
    eos_token_id: int,
    seed: int,
    recipe: SpanRecipe | None = None,
    first_sample: int = 0,
) -> tuple[Tensor, Tensor]:
    """T5's inputs and targets from ``input_ids`` ``(N, S)`` (no padding): each noise span
    of the input replaced by the next sentinel, the target the sentinels each followed by
    their span, both ending in EOS. Every sequence of one length gives inputs and targets of
    one length (``S − noise + spans + 1`` and ``noise + spans + 1``), so no padding is
    needed. ``sentinels`` are the ids of ``<extra_id_0>``, ``<extra_id_1>``, …"""
    rows_in, rows_out = [], []
    for i, ids in enumerate(input_ids.tolist()):
        mask = span_mask(len(ids), seed, first_sample + i, recipe)
        source: list[int] = []
        target: list[int] = []
        span = -1
        for t, token in enumerate(ids):
            if mask[t]:
                if t == 0 or not mask[t - 1]:
                    span += 1
                    if span >= len(sentinels):
                        raise SpecprobeError(
                            f"span corruption needs {span + 1} sentinel tokens, the tokenizer has {len(sentinels)}",
                            "use shorter sequences (--seq-len), or a dataset with source and target columns",
                        )
                    source.append(sentinels[span])
                    target.append(sentinels[span])
                target.append(token)
            else:
                source.append(token)
        rows_in.append([*source, eos_token_id])
        rows_out.append([*target, eos_token_id])
    return torch.tensor(rows_in, dtype=torch.long), torch.tensor(rows_out, dtype=torch.long)
