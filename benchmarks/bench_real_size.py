"""measure() at the size of the checkpoints people study: Pythia-1.4b and 6.9b configurations.

Builds a random-init GPTNeoXForCausalLM from a Pythia model's real configuration (no
download; constructed in the target dtype, so a 6.9B model in bfloat16 never exists in
float32) and runs each row in a fresh process of its own, so each peak is that row's:

* ``train``: one training step over the set (forward + backward per micro-batch, the
  gradient accumulated in ``.grad``, as gradient accumulation does);
* ``off``: ``measure(estimator="hutchinson_per_sample", population=False)`` with the same
  micro-batches;
* ``on``: the same with the population position (its gradient sum V kept across the
  micro-batches and a second pass for c_s = ⟨v_s, V⟩ when there are several; one
  micro-batch reuses its own backward pass);
* ``spectrum``: ``spectrum(k)`` on the first sequence(s) (``--spectrum-tokens``).

Each row prints its wall and CPU time, its peak resident memory (Linux VmHWM, reset after
the model is built, weights included) and, for ``off`` and ``on``, measure's own memory
plan (``measure(plan=...)``: the estimate stated before work, beside a training step's
estimate). A row that would not fit is refused before work by measure itself
(``TooLargeError``), and the refusal is printed as the row's result. The table ends with
the ratios to the training step (memory) and to ``off`` (time).

Run it alone on the machine (one thread by default; the peaks are the process's):

    python benchmarks/bench_real_size.py --size 160m --batch 8 --seq-len 64 --micro 2
    python benchmarks/bench_real_size.py --size 1.4b --batch 8 --seq-len 64 --micro 2
    python benchmarks/bench_real_size.py --size 6.9b --dtype bfloat16 --batch 2 --seq-len 32 --rows off,on
    python benchmarks/bench_real_size.py --estimate 1.4b,6.9b,12b

``--estimate`` prints estimated rows instead (nothing run, P counted on the meta device):
for each size, float32 and bfloat16, and each memory (this 24 GB box, an 80 GB and a 141 GB
GPU), the parts of measure's plan that do not depend on the batch (the weights, V in
float32) against the room the plan may use, and what is left for a micro-batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import torch
from pythia_configs import PYTHIA, pythia_config

import specprobe
from specprobe.core.memory import CPU_SHARE, CUDA_SHARE, human_bytes, peak_rss, reset_peak_rss
from specprobe.errors import SpecprobeError

ROWS = ("train", "off", "on", "spectrum")


def pythia(size: str, dtype: torch.dtype, layers: int | None = None) -> torch.nn.Module:
    """A random-init Pythia-``size`` (eager attention) built directly in ``dtype``; with
    ``layers``, that many of its layers only (for the estimates)."""
    from transformers import GPTNeoXForCausalLM

    config = pythia_config(size, layers)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters allocated in dtype: no float32 copy at 6.9b
    try:
        model = GPTNeoXForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def batch_of(vocab: int, sequences: int, length: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (sequences, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One row in this process: its times, peak and (for measure) plan and result."""
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = pythia(args.size, dtype)
    vocab = model.config.vocab_size
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    out: dict[str, Any] = {"row": args.child, "weights": weights}
    plans: list[Any] = []
    if args.child == "spectrum":
        batch = batch_of(vocab, 1, args.spectrum_tokens)
    else:
        batch = batch_of(vocab, args.batch, args.seq_len)
    reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        if args.child == "train":
            for lo in range(0, args.batch, args.micro):
                part = {k: v[lo : lo + args.micro] for k, v in batch.items()}
                model(**part, labels=part["input_ids"]).loss.backward()
        elif args.child == "spectrum":
            s = specprobe.spectrum(model, batch, k=args.k, tol=args.tol, max_products=args.max_products)
            out["eigenvalues"] = [float(x) for x in s.eigenvalues]
            out["spectrum"] = {
                k: v
                for k, v in vars(s).items()
                if isinstance(v, (int, float, str, bool)) and k != "eigenvalues"
            }
            out["residuals"] = [float(x) for x in s.residuals]
            out["converged"] = [bool(c) for c in s.converged]
        else:
            m = specprobe.measure(
                model,
                batch,
                estimator="hutchinson_per_sample",
                probes=args.probes,
                seed=0,
                micro_batch_size=args.micro,
                population=args.child == "on",
                plan=plans.append,
            )
            out["chi_net"] = m.chi_net
            out["population_position"] = m.population_position
            out["population_status"] = str(getattr(m, "population_status", ""))
    except SpecprobeError as e:
        out["refused"] = str(e)
    out["wall"] = time.perf_counter() - wall
    out["cpu"] = time.process_time() - cpu
    out["peak"] = peak_rss() or 0
    if plans:
        out["plan"] = plans[0].as_dict()
    return out


def _params(size: str) -> int:
    """P of Pythia-``size``, counted on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = pythia(size, torch.float32)
    return sum(p.numel() for p in model.parameters())


MEMORIES = {
    "24 GB box (CPU)": (23e9, 0.6e9, CPU_SHARE),
    "80 GB GPU": (80e9, 1e9, CUDA_SHARE),
    "141 GB GPU (H200)": (141e9, 1e9, CUDA_SHARE),
}
"""(memory, what is taken besides the weights, the plan's share): the box reports about
23 GB available when idle and a process holds about 0.6 GB of libraries; a GPU's CUDA
context is taken as 1 GB. The plan may use its share of what is left after the weights
(measure reads ``available_bytes`` once the model is loaded)."""


def estimate(args: argparse.Namespace) -> None:
    """Estimated rows, no model run: per size, dtype and memory, the parts of measure's
    plan that do not depend on the batch (the weights; V = P floats in float32, kept over
    several micro-batches; a training step's gradient, P in the model's dtype) against
    the room the plan may use, and what is left for one micro-batch's activations and
    probes with V kept (negative: only one micro-batch fits there, or nothing)."""
    print(
        "| model | dtype | memory | weights | V (float32) | plan's room above the weights | left for a micro-batch with V | training step's gradient |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in args.estimate.split(","):
        params = _params(size)
        for name in ("float32", "bfloat16"):
            width = torch.finfo(getattr(torch, name)).bits // 8
            weights, kept = params * width, params * 4
            for memory, (total, base, share) in MEMORIES.items():
                room = share * (total - base - weights)
                if room <= 0:
                    print(
                        f"| Pythia-{size} | {name} | {memory} | {gb(weights)} | {gb(kept)} | the weights do not fit | — | {gb(weights)} |"
                    )
                    continue
                left = room - kept
                verdict = f"{gb(left)}" if left > 0 else f"none ({gb(-left)} short): one micro-batch only"
                print(
                    f"| Pythia-{size} | {name} | {memory} | {gb(weights)} | {gb(kept)} | {gb(room)} | {verdict} | {gb(weights)} |"
                )


def in_fresh_process(row: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, *sys.argv, "--child", row], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"row": row, "failed": f"exit {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="160m", choices=list(PYTHIA))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=8, help="sequences in the measured set")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--micro", type=int, default=2, help="sequences per micro-batch")
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--rows", default="train,off,on", help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--k", type=int, default=5, help="spectrum: eigenpairs")
    parser.add_argument("--tol", type=float, default=1e-6, help="spectrum: residual tolerance")
    parser.add_argument("--max-products", type=int, default=None, help="spectrum: product budget")
    parser.add_argument(
        "--spectrum-tokens", type=int, default=16, help="spectrum: one sequence of this length"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="", help="also write the rows to this file")
    parser.add_argument(
        "--estimate", default="", help="estimated rows only, for these sizes (e.g. 1.4b,6.9b,12b)"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.estimate:
        torch.set_num_threads(args.threads)
        estimate(args)
        return
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    print(
        f"# bench_real_size: Pythia-{args.size} (random init, real configuration), {args.dtype}, "
        f"{args.batch} x {args.seq_len} tokens in micro-batches of {args.micro}, m = {args.probes}, "
        f"{args.threads} thread(s), one process per row"
    )
    results = []
    for row in rows:
        r = in_fresh_process(row)
        results.append(r)
        print("## " + json.dumps(r), flush=True)
    by = {r["row"]: r for r in results}
    train, off = by.get("train", {}), by.get("off", {})
    print(
        "\n| row | time (wall / CPU) | peak | × training step | time × off (wall / CPU) | plan's estimate | note |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "failed" in r:
            print(f"| {r['row']} | — | — | — | — | — | {r['failed']} |")
            continue
        mem = f"{r['peak'] / train['peak']:.2f}×" if train.get("peak") and "refused" not in r else "—"
        tim = "—"
        if off.get("wall") and r["row"] in ("on", "off"):
            tim = f"{r['wall'] / off['wall']:.2f}× / {r['cpu'] / off['cpu']:.2f}×"
        plan = r.get("plan")
        est = "—"
        if plan:
            est = (
                f"{gb(plan['total'])} ({(plan['total'] / r['peak'] - 1) * 100:+.0f} %); "
                f"training step {gb(plan['training_step'])}"
            )
        note = r.get("refused", "")
        if r["row"] == "spectrum" and "eigenvalues" in r:
            note = (
                f"{sum(r['converged'])} of {len(r['converged'])} pairs converged to tol {r['spectrum']['tol']} "
                f"in {r['spectrum']['products']} products ({r['wall'] / r['spectrum']['products']:.1f} s each), "
                f"residuals {min(r['residuals']):.2g}–{max(r['residuals']):.2g}"
            )
        elif "population_position" in r:
            note = f"χ_pos^∞ {r['population_position']} ({r['population_status']})"
        print(
            f"| {r['row']} | {r['wall']:.1f} / {r['cpu']:.1f} s | {gb(r['peak'])} | {mem} | {tim} | {est} | {note} |"
        )
    print(f"weights {gb(results[0].get('weights', 0))} ({human_bytes(results[0].get('weights', 0))})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
