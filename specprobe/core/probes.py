"""Rademacher probes drawn where the outputs live, from a counter-based hash.

The probe entry for ``(seed, sample, probe, position)`` is a pure function of those four
integers: a 32-bit key pair is derived on the host from ``(seed, sample, probe)``
(``numpy.random.SeedSequence``), and the device hashes the flat position of each entry
within its sample (row · C + column, C entries per row) with that key. Every step is exact
integer arithmetic (int64 tensors holding 32-bit values, products kept below 2^63), so a
CPU and a GPU draw the same ±1, a micro-batch draws the same values as the whole batch,
and nothing is drawn on the host but two integers per (sample, probe).

Cost: one hash per 32 entries (each hash yields 32 signs), every (probe, sample) of a
block at once, then one table lookup per byte writes eight signs: one pass over the probe,
a small fraction of the backward pass that consumes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x · c) mod 2^32 for 32-bit values in int64, without a product reaching 2^63."""
    low = (x & 0xFFFF) * c
    high = (((x >> 16) * c) & 0xFFFF) << 16
    return (low + high) & _MASK32


def hash32(x: Tensor) -> Tensor:
    """A bijective 32-bit mixer ("lowbias32", C. Wellons) on int64 tensors of 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def probe_key(seed: int, sample: int, probe: int) -> tuple[int, int]:
    """The two 32-bit keys of ``(seed, sample, probe)``, independent across all three."""
    state = np.random.SeedSequence([seed, sample, probe]).generate_state(2, dtype=np.uint32)
    return int(state[0]), int(state[1])


def rademacher_words(keys: Tensor, words: int) -> Tensor:
    """``words`` 32-bit hashes of the counters 0..words-1 under each key pair of ``keys``
    (``(n, 2)`` int64, on the device): an ``(n, words)`` int64 tensor."""
    counter = torch.arange(words, dtype=torch.int64, device=keys.device)
    high = counter >> 32  # zero below 2^32 words (2^37 entries); kept for completeness
    return hash32(hash32((counter & _MASK32) ^ keys[:, :1]) ^ high ^ keys[:, 1:])


_BYTE_BITS = torch.arange(8, dtype=torch.int64)


def _sign_table(dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """(256, 8): row v holds 1 − 2·(bit j of v) for j = 0..7, the signs one byte encodes."""
    bits = (torch.arange(256, dtype=torch.int64).unsqueeze(1) >> _BYTE_BITS) & 1
    return (1 - 2 * bits).to(dtype=dtype, device=device)


def rademacher(
    seed: int,
    samples: Sequence[int],
    probes: Sequence[int],
    shape: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The ±1 probes for ``probes × samples``: a tensor ``(len(probes), len(samples), *shape)``.

    ``shape`` is one sample's output shape; entries are numbered in its flat order
    (row-major), and entry i of (seed, sample, probe) is bit ``i mod 32`` of the hash of
    counter ``i // 32``: the same value on every device and for every batching. Every
    (probe, sample) is hashed at once; each hash is split into its four bytes (byte k holds
    the bits 8k..8k+7), and one lookup in a table of the 256 bytes' signs writes the probe.
    """
    numel = int(np.prod(shape)) if len(shape) else 1
    words = -(-numel // 32)
    keys = [probe_key(seed, sample, probe) for probe in probes for sample in samples]
    hashed = rademacher_words(torch.tensor(keys, dtype=torch.int64, device=device).reshape(-1, 2), words)
    shifts = torch.arange(0, 32, 8, dtype=torch.int64, device=device)
    octets = (hashed.unsqueeze(-1) >> shifts) & 0xFF  # (n, words, 4): byte k of each word
    signs = torch.nn.functional.embedding(octets, _sign_table(dtype, device))  # (n, words, 4, 8)
    flat = signs.reshape(len(probes), len(samples), words * 32)
    if words * 32 != numel:
        flat = flat[..., :numel].contiguous()
    return flat.reshape(len(probes), len(samples), *shape)


def rademacher_columns(dim: int, count: int, seed: int, device: torch.device | str | None = None) -> Tensor:
    """``count`` probe vectors z ∈ {±1}^dim as the columns of a (dim, count) float64 tensor.

    The generator of :func:`rademacher` for one flat "sample" 0: column j is probe j of
    ``seed``, so the first columns do not depend on ``count``, and the trace estimators
    (:mod:`specprobe.linalg`) draw from the same stream as :func:`specprobe.measure`.
    """
    z = rademacher(seed, [0], range(count), (dim,), device=device or "cpu", dtype=torch.float64)
    return z[:, 0, :].T
