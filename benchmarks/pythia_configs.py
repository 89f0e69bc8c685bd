"""Pythia's configurations, for the benchmarks that build random-init Pythia models
(bench_scale.py, bench_real_size.py): one table and one builder of the config, in a module
with no side effects on import (bench_scale re-executes itself under a fixed mmap threshold,
which bench_real_size must not inherit).

Run as ``python benchmarks/<script>.py``, the scripts' folder is first on ``sys.path``, so
``from pythia_configs import ...`` finds this file.
"""

from __future__ import annotations

from typing import Any

# (hidden, layers, heads, intermediate, vocab) of each Pythia model (their config.json files).
PYTHIA = {
    "70m": (512, 6, 8, 2048, 50304),
    "160m": (768, 12, 12, 3072, 50304),
    "410m": (1024, 24, 16, 4096, 50304),
    "1b": (2048, 16, 8, 8192, 50304),
    "1.4b": (2048, 24, 16, 8192, 50304),
    "2.8b": (2560, 32, 32, 10240, 50304),
    "6.9b": (4096, 32, 32, 16384, 50432),
    "12b": (5120, 36, 40, 20480, 50688),
}


def pythia_config(size: str, layers: int | None = None) -> Any:
    """Pythia-``size``'s GPTNeoXConfig with eager attention; with ``layers``, that many of
    its layers only."""
    from transformers import GPTNeoXConfig

    hidden, depth, heads, inter, vocab = PYTHIA[size]
    return GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=depth if layers is None else layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        rotary_pct=0.25,
        max_position_embeddings=2048,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
