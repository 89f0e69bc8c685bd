"""measure() at the size of real checkpoints, against a training step of the same batch.

Builds random-init GPT-NeoX models from the real configurations of the Pythia suite (no
download), and for each size measures side by side in one process:

* one training step (forward + backward of the loss, ``.grad`` filled): time and peak memory;
* ``specprobe.measure`` with each estimator asked for: time and peak memory;
* their ratios, and the ratio of measure's time to its floor of 1 forward + (m + 1)
  backward passes (the training step's forward and backward, timed separately);
* probes per second.

Peak memory is the process's peak resident memory on CPU (Linux VmHWM, reset before each
run; the script re-executes itself with a fixed malloc mmap threshold so freed buffers go
back to the OS) and the allocator's peak on CUDA. Each peak includes the weights, as a
user's ``top`` would show them.

    python benchmarks/bench_scale.py                       # 70m, 160m on CPU, m = 32
    python benchmarks/bench_scale.py --sizes 160m --probes 32 --threads 2
    python benchmarks/bench_scale.py --device cuda --dtype bfloat16 --sizes 1b,1.4b,2.8b,6.9b,12b
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Any

MMAP_THRESHOLD = "65536"
if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD and sys.platform == "linux":
    os.environ["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402
from pythia_configs import PYTHIA, pythia_config  # noqa: E402

import specprobe  # noqa: E402
from specprobe.core.memory import peak_rss, reset_peak_rss  # noqa: E402


def pythia(size: str, dtype: torch.dtype, device: str) -> torch.nn.Module:
    """A random-init GPTNeoXForCausalLM with Pythia-``size``'s configuration, eager attention."""
    from transformers import GPTNeoXForCausalLM

    config = pythia_config(size)
    torch.manual_seed(0)
    with torch.device(device):
        model = GPTNeoXForCausalLM(config).to(dtype)
    return model.eval()


class Peak:
    """Peak memory (bytes, weights included) of the code inside the block."""

    def __init__(self, device: str) -> None:
        self.device, self.bytes = device, 0

    def __enter__(self) -> Peak:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated()
        else:
            self.bytes = peak_rss() or 0


def timed(fn: Any, device: str) -> tuple[float, int, Any]:
    with Peak(device) as peak:
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return elapsed, peak.bytes, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="70m,160m", help="comma list of " + ", ".join(PYTHIA))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=2, help="sequences per batch")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--estimators", default="hutchinson_per_sample,hutchinson")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    m = args.probes
    print(
        f"# bench_scale: {args.device}, {args.dtype}, batch {args.batch} x {args.seq_len} tokens, "
        f"m = {m}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    header = (
        f"{'model':>6} {'params':>8} {'run':>22} {'time s':>8} {'peak GB':>8} "
        f"{'mem/train':>9} {'time/floor':>10} {'probes/s':>8}"
    )
    print(header)
    for size in args.sizes.split(","):
        bench_size(size, args, dtype)
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()


def bench_size(size: str, args: argparse.Namespace, dtype: torch.dtype) -> None:
    """The training step and each estimator on one model size: one row each."""
    m = args.probes
    model = pythia(size, dtype, args.device)
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len), generator=g).to(args.device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def train_step() -> None:
        loss = model(**batch, labels=ids).loss
        loss.backward()

    timed(train_step, args.device)  # warm-up (allocator, kernels)
    model.zero_grad(set_to_none=True)
    t_fwd, _, _ = timed(lambda: model(**batch, labels=ids).loss, args.device)
    t_train, mem_train, _ = timed(train_step, args.device)
    model.zero_grad(set_to_none=True)
    t_bwd = max(t_train - t_fwd, 1e-9)
    floor = t_fwd + (m + 1) * t_bwd
    print(
        f"{size:>6} {params / 1e6:>7.0f}M {'training step':>22} {t_train:>8.2f} {mem_train / 1e9:>8.2f} "
        f"{1.0:>9.2f} {'':>10} {'':>8}"
    )
    for est in args.estimators.split(","):
        t, mem, result = timed(
            lambda est=est: specprobe.measure(model, batch, estimator=est, probes=m, seed=0), args.device
        )
        print(
            f"{size:>6} {params / 1e6:>7.0f}M {'measure ' + est:>22} {t:>8.2f} {mem / 1e9:>8.2f} "
            f"{mem / mem_train:>9.2f} {t / floor:>10.2f} {m / t:>8.2f}"
        )
        print(
            f"{'':>6} {'':>8} {'':>22} D·χ_pos {result.normalized_position:.4g} ± "
            f"{result.normalized_position * result.spectral_position_stderr / result.spectral_position:.2g}, "
            f"χ_net {result.chi_net:.4g} ± {result.chi_net_stderr:.2g}",
            flush=True,
        )


if __name__ == "__main__":
    main()
