"""How far a bfloat16 (and float16) measurement is from the float32 one, on a trained tiny model.

Trains a 2-layer GPT-NeoX (hidden 64, vocabulary 48) for ``--steps`` steps on the
structured token stream of examples/measure_tiny_model.py, then measures the same batch
with the same probes (same seed) in float32, bfloat16 and float16 copies of the weights.
Prints each field's relative difference to float32, next to float32's own standard error
(the difference matters only against that noise).

    python benchmarks/bench_precision.py [--steps 400] [--probes 64]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

import specprobe
from specprobe.models.tiny import tiny_causal_lm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from measure_tiny_model import VOCAB, structured_tokens

FIELDS = ("loss", "chi_loss", "grad_norm_sq", "chi_net", "spectral_position")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--probes", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = tiny_causal_lm("gpt_neox", vocab_size=VOCAB, hidden_size=64, num_layers=2, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(args.steps):
        ids = structured_tokens(16, g)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    batch = {"input_ids": structured_tokens(16, g)}
    ref = specprobe.measure(model, batch, estimator="hutchinson_per_sample", probes=args.probes, seed=0)
    print(f"# trained {args.steps} steps; float32 loss {ref.loss:.4f}, D·χ_pos {ref.normalized_position:.4f}")
    print(f"{'dtype':>9} " + " ".join(f"{f:>18}" for f in FIELDS))
    se = {
        "chi_net": ref.chi_net_stderr / ref.chi_net,
        "spectral_position": ref.spectral_position_stderr / ref.spectral_position,
    }
    print(f"{'f32 s.e.':>9} " + " ".join(f"{se.get(f, 0.0):>18.2e}" for f in FIELDS))
    for dtype in (torch.bfloat16, torch.float16):
        low = copy.deepcopy(model).to(dtype)
        m = specprobe.measure(low, batch, estimator="hutchinson_per_sample", probes=args.probes, seed=0)
        diffs = [abs(getattr(m, f) - getattr(ref, f)) / abs(getattr(ref, f)) for f in FIELDS]
        print(f"{str(dtype).removeprefix('torch.'):>9} " + " ".join(f"{d:>18.2e}" for d in diffs))


if __name__ == "__main__":
    main()
