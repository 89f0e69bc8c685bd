"""The population position's cost: ``measure(population=True)`` against ``population=False``.

On a random-init Pythia configuration (``bench_scale.pythia``, no download) and one batch,
with ``estimator="hutchinson_per_sample"``:

* time: the two settings run alternately in one process (``--repeats`` pairs after a
  warm-up, the order swapped every pair so a shared machine's load falls on both), and the
  median of the per-pair ratios on/off is reported with the medians of the times, both for
  wall time and for the process's CPU time (with one thread, the steadier of the two on a
  machine shared with other work);
* peak memory: each setting, and one training step (forward + backward, ``.grad`` filled),
  in a fresh process of its own (peak resident memory reset before the run, as
  ``bench_scale`` measures it; the allocator's peak on CUDA), weights included.

The issue-18 target: the ratio on/off at most 1.10, and the peak with the population no
larger than without it and at most 1.5× a training step's.

    python benchmarks/bench_population.py                          # 70m, 4 x 16 tokens, m = 32
    python benchmarks/bench_population.py --size 160m --batch 4 --seq-len 64 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from bench_scale import Peak, pythia

import specprobe


def setup(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The model and the batch (seeded: the same in every process)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model = pythia(args.size, getattr(torch, args.dtype), args.device)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len), generator=g).to(args.device)
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def run(model: torch.nn.Module, batch: dict[str, torch.Tensor], args: argparse.Namespace, what: str) -> Any:
    """One training step (``what == "train"``) or one measurement with the population on/off."""
    if what == "train":
        model(**batch, labels=batch["input_ids"]).loss.backward()
        return None
    return specprobe.measure(
        model, batch, estimator="hutchinson_per_sample", probes=args.probes, seed=0, population=what == "on"
    )


def child(args: argparse.Namespace) -> None:
    """In a fresh process: the peak memory of one run of ``args.child`` (after a warm-up of
    a one-sequence run, so lazy initialisation is not counted), printed as JSON."""
    model, batch = setup(args)
    warm = {k: v[:1] for k, v in batch.items()}
    run(model, warm, args, args.child)
    model.zero_grad(set_to_none=True)
    with Peak(args.device) as peak:
        run(model, batch, args, args.child)
        if args.device == "cuda":
            torch.cuda.synchronize()
    print(json.dumps({"peak": peak.bytes}))


def peak_in_fresh_process(what: str) -> int:
    """The peak memory (bytes) of ``what`` measured by :func:`child` in a new process."""
    out = subprocess.run(
        [sys.executable, *sys.argv, "--child", what], check=True, capture_output=True, text=True
    ).stdout
    return int(json.loads(out.strip().splitlines()[-1])["peak"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="70m")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=4, help="sequences per batch")
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="pairs (on, off) timed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    model, batch = setup(args)
    print(
        f"# bench_population: Pythia-{args.size} (random init), {args.device}, {args.dtype}, "
        f"{args.batch} x {args.seq_len} tokens, m = {args.probes}, {torch.get_num_threads()} threads"
    )
    run(model, batch, args, "on")  # warm-up
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    times: dict[tuple[str, str], list[float]] = {(c, w): [] for c in clocks for w in ("on", "off")}
    for i in range(args.repeats):
        for what in ("off", "on") if i % 2 == 0 else ("on", "off"):
            start = {c: clock() for c, clock in clocks.items()}
            run(model, batch, args, what)
            if args.device == "cuda":
                torch.cuda.synchronize()
            for c, clock in clocks.items():
                times[c, what].append(clock() - start[c])
    del model
    peaks = {what: peak_in_fresh_process(what) for what in ("train", "off", "on")}
    for c in clocks:
        on, off = times[c, "on"], times[c, "off"]
        ratios = [a / b for a, b in zip(on, off, strict=True)]
        print(
            f"{c:<5}  off {statistics.median(off):.2f} s, on {statistics.median(on):.2f} s (medians of "
            f"{args.repeats}); on/off {statistics.median(ratios):.3f} (median of pairs: "
            + ", ".join(f"{r:.3f}" for r in ratios)
            + ")"
        )
    mib = {k: v / 2**20 for k, v in peaks.items()}
    print(
        f"peak   training step {mib['train']:.0f} MiB, off {mib['off']:.0f} MiB ({peaks['off'] / peaks['train']:.2f}x), "
        f"on {mib['on']:.0f} MiB ({peaks['on'] / peaks['train']:.2f}x); on/off {peaks['on'] / peaks['off']:.3f}"
    )


if __name__ == "__main__":
    main()
