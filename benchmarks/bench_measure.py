"""Cost of specprobe.measure relative to a training step, side by side in one process.

On a tiny GPT-NeoX causal LM (about 0.9M parameters, vocabulary 512) and one batch of
16 sequences × 64 tokens, times:

* one training step (forward + backward of the mean loss), and a forward pass alone;
* ``measure(..., estimator="hutchinson", probes=m)`` for m in (8, 32, 128);
* the exact trace (one backward pass per output) on a 1 × 16 sub-batch, extrapolated
  to the full batch's D outputs, since the full batch has half a million outputs.

Prints each as a ratio to the training step, the per-probe cost relative to one backward
pass, peak memory above the baseline, and Hutchinson's relative standard error. The
target: a Hutchinson measurement costs no more than 1 forward + (m + 1) backward passes.

    python benchmarks/bench_measure.py [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch
from common import run_timed
from rich.console import Console
from rich.table import Table

import specprobe
from specprobe.models.tiny import tiny_causal_lm


def timed(fn: Callable[[], Any], device: str, repeats: int) -> tuple[float, int, Any]:
    """Median wall time over ``repeats`` runs (after one warm-up), peak memory, last result."""
    fn()
    times, peak, result = run_timed(fn, device, repeats)
    return statistics.median(times), peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    model = tiny_causal_lm("gpt_neox", vocab_size=512, hidden_size=128, num_layers=4, num_heads=4)
    model = model.to(device)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, 512, (16, 64), generator=g).to(device)}
    params = [p for p in model.parameters() if p.requires_grad]
    num_params = sum(p.numel() for p in params)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(**batch, use_cache=False).logits

    def train_step() -> None:
        logits = model(**batch, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch["input_ids"][:, 1:].reshape(-1)
        )
        torch.autograd.grad(loss, params)

    t_fwd, _, _ = timed(forward, device, args.repeats)
    t_step, mem_step, _ = timed(train_step, device, args.repeats)
    t_bwd = max(t_step - t_fwd, 1e-9)

    console = Console(width=120)
    table = Table(
        title=f"specprobe.measure on tiny GPT-NeoX: P={num_params:,} parameters, 16×64 tokens, "
        f"V=512, {device}, {torch.get_num_threads()} threads",
        title_justify="left",
    )
    for col in ("approach", "time / train step", "budget 1 fwd + (m+1) bwd", "peak memory", "rel. stderr"):
        table.add_column(col, justify="right" if col != "approach" else "left")
    table.add_row("train step (fwd + bwd)", "1.00", "", f"{mem_step / 2**20:.0f} MiB", "")
    table.add_row("forward only", f"{t_fwd / t_step:.2f}", "", "", "")

    results: dict[int, float] = {}
    for m in (8, 32, 128):
        t, mem, meas = timed(
            lambda m=m: specprobe.measure(model, batch, estimator="hutchinson", probes=m, seed=0),
            device,
            args.repeats,
        )
        results[m] = t
        budget = (t_fwd + (m + 1) * t_bwd) / t_step
        table.add_row(
            f"hutchinson, m={m}",
            f"{t / t_step:.2f}",
            f"{budget:.2f}",
            f"{mem / 2**20:.0f} MiB",
            f"{meas.chi_net_stderr / meas.chi_net:.3f}",
        )

    sub = {"input_ids": batch["input_ids"][:1, :16]}
    t_exact, mem_exact, exact = timed(
        lambda: specprobe.measure(model, sub, estimator="exact", max_exact_outputs=10**6), device, 1
    )
    full_outputs = 16 * 63 * 512
    per_output = t_exact / exact.num_outputs
    table.add_row(
        f"exact, 1×16 sub-batch (D={exact.num_outputs:,})",
        f"{t_exact / t_step:.2f}",
        "",
        f"{mem_exact / 2**20:.0f} MiB",
        "0",
    )
    table.add_row(
        f"exact, full batch (D={full_outputs:,}), extrapolated",
        f"{per_output * full_outputs / t_step:,.0f}",
        "",
        "",
        "0",
    )
    console.print(table)
    per_probe = (results[128] - results[32]) / 96
    console.print(
        f"per-probe cost: {per_probe / t_bwd:.2f} backward passes "
        f"(one backward pass = {t_bwd / t_step:.2f} train steps); "
        f"hutchinson m=32 vs its 1 fwd + 33 bwd budget: "
        f"{results[32] / (t_fwd + 33 * t_bwd):.2f}×"
    )


if __name__ == "__main__":
    main()
