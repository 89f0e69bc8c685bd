"""Measuring inside your own PyTorch training loop with a Probe, then `specprobe report`.

A tiny GPT-NeoX causal LM is trained on random-but-repetitive token sequences; at
log-spaced steps ``probe.maybe_measure(step, model)`` measures it on a fixed batch and
appends a record to a run directory, which ``specprobe report DIR`` renders like any
analyze run. The measurement leaves the training run exactly as it would be without it.

    python examples/plain_loop.py [--steps 100] [--out specprobe-runs/plain-loop]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

import specprobe
from specprobe.models.tiny import tiny_causal_lm


def repeating(n: int, generator: torch.Generator, vocab: int = 40, seq: int = 24) -> torch.Tensor:
    """Sequences that repeat a random 6-token motif: predictable after the first period."""
    motif = torch.randint(0, vocab, (n, 6), generator=generator)
    return motif.repeat(1, seq // 6)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default="specprobe-runs/plain-loop")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    model = tiny_causal_lm("gpt_neox", vocab_size=40, hidden_size=32, num_layers=2)
    probe = specprobe.Probe(
        {"input_ids": repeating(8, g)},
        probes=16,
        schedule=specprobe.log_steps(args.steps, 6),
        out=args.out,
        label="tiny-neox",
        tokens_per_step=16 * 24,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(args.steps + 1):
        probe.maybe_measure(step, model)
        ids = repeating(16, g)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"{len(probe.measurements)} measurements written to {args.out}; show them with:")
    print(f"  specprobe report {args.out}")
    return Path(args.out)


if __name__ == "__main__":
    main()
