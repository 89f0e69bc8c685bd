"""Peak memory of ``spectrum`` (``--eigen``) at the size of real checkpoints, beside a training step.

Builds random-init GPT-NeoX models from the Pythia configurations of ``bench_scale.py`` (no
download) and measures, each in a fresh process (so no run inherits another's allocator
state), on one batch of 1 × 16 tokens:

* one training step (forward + backward of the loss, ``.grad`` filled);
* ``spectrum(k=5)`` with the operator's one-time product check on (the default);
* the same solve with the check off (``NTKOperator(..., verify=False)``).

Each figure is the process's peak resident memory (Linux VmHWM, reset right before the
run, with glibc's mmap threshold fixed so freed buffers go back to the OS) minus the
resident memory with the model loaded, in GB and in bytes per parameter. The solve's
budget is capped (``--products``, default 24 columns of Θ·U): the peak is reached on the
first block of products (and the check), so a longer solve does not raise it.

    python benchmarks/bench_spectrum_memory.py                 # 70m and 160m, float32, CPU
    python benchmarks/bench_spectrum_memory.py --sizes 70m --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MMAP_THRESHOLD = "65536"
if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD and sys.platform == "linux":
    os.environ["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
    os.execv(sys.executable, [sys.executable, *sys.argv])

RUNS = ("training step", "spectrum k=5, check on", "spectrum k=5, check off")


def one(size: str, run: str, args: argparse.Namespace) -> dict[str, float]:
    """Measure ``run`` on Pythia-``size`` in this process: peak above the loaded model."""
    import gc

    import torch
    from bench_scale import pythia

    from specprobe.core.memory import peak_rss, reset_peak_rss
    from specprobe.core.operator import NTKOperator
    from specprobe.linalg.spectrum import spectrum_of

    if args.threads:
        torch.set_num_threads(args.threads)
    model = pythia(size, getattr(torch, args.dtype), "cpu")
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, args.seq_len), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    gc.collect()
    loaded = peak_rss_now()
    reset_peak_rss()
    if run == RUNS[0]:
        model(**batch, labels=ids).loss.backward()
        products = 0
    else:
        op = NTKOperator(model, batch, verify=run == RUNS[1])
        result = spectrum_of(op, 5, tol=args.tol, max_products=args.products)
        products = result.products
    peak = (peak_rss() or 0) - loaded
    return {"params": params, "peak": peak, "products": products}


def peak_rss_now() -> int:
    """The resident memory now (VmRSS), bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="70m,160m")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--products", type=int, default=24, help="the solve's budget of products")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], RUNS[int(args.one[1])], args)))
        return
    print(
        f"# bench_spectrum_memory: cpu, {args.dtype}, 1 x {args.seq_len} tokens, k = 5, tol {args.tol:g}, "
        f"at most {args.products} products, {args.threads} thread(s), one process per row"
    )
    print(
        f"{'model':>6} {'params':>8} {'run':>26} {'peak GB':>8} {'B/param':>8} {'/ train':>8} {'products':>8}"
    )
    passed = list(sys.argv[1:])
    for size in args.sizes.split(","):
        train = 0.0
        for index, run in enumerate(RUNS):
            out = subprocess.run(
                [sys.executable, __file__, *passed, "--one", size, str(index)],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            peak, params = row["peak"], row["params"]
            train = train or peak
            print(
                f"{size:>6} {params / 1e6:>7.0f}M {run:>26} {peak / 1e9:>8.2f} {peak / params:>8.1f} "
                f"{peak / train:>8.1f} {int(row['products']):>8}",
                flush=True,
            )


if __name__ == "__main__":
    main()
