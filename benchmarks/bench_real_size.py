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
    python benchmarks/bench_real_size.py --estimate 1.4b,6.9b,12b --batch 256 --seq-len 256

``--estimate`` prints estimated rows instead (nothing measured): for each size, float32 and
bfloat16, and each memory (this 24 GB box, an 80 GB and a 141 GB GPU), the micro-batch
measure's plan would choose for the population position of the whole set, whether V is
kept, the plan's total, and whether it fits or is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Any

import torch

import specprobe
from specprobe.core.memory import CPU_SHARE, CUDA_SHARE, human_bytes, peak_rss, reset_peak_rss
from specprobe.errors import SpecprobeError

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
ROWS = ("train", "off", "on", "spectrum")


def pythia(size: str, dtype: torch.dtype, layers: int | None = None) -> torch.nn.Module:
    """A random-init Pythia-``size`` (eager attention) built directly in ``dtype``; with
    ``layers``, that many of its layers only (for the estimates)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    hidden, depth, heads, inter, vocab = PYTHIA[size]
    layers = depth if layers is None else layers
    config = GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        rotary_pct=0.25,
        max_position_embeddings=2048,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
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
            out["residuals"] = [float(x) for x in getattr(s, "residuals", [])]
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


class _Stop(Exception):
    """Raised from ``measure(plan=...)`` to stop before any full pass."""


def per_sequence(size: str, dtype: torch.dtype, tokens: int) -> dict[str, float]:
    """measure's plan per sequence of ``tokens`` at Pythia-``size``'s full depth: its graph
    (activations and outputs) and one probe's output gradients, each from the plans of the
    same configuration with 1 and 2 layers (both linear in the depth), and the parts that
    do not grow with the batch (the weights, V in float32, the transients)."""
    parts = []
    for layers in (1, 2):
        model = pythia(size, dtype, layers)
        got: list[Any] = []

        def stop(plan: Any, got: list[Any] = got) -> None:
            got.append(plan)
            raise _Stop

        with contextlib.suppress(_Stop):
            specprobe.measure(
                model,
                batch_of(model.config.vocab_size, 1, tokens),
                estimator="hutchinson_per_sample",
                probes=2,
                micro_batch_size=1,
                probe_batch_size=1,
                plan=stop,
            )
        parts.append(got[0])
        del model
    depth = PYTHIA[size][1]
    params = _params(size)
    width = torch.finfo(dtype).bits // 8
    return {
        "graph": parts[0].graph + (depth - 1) * (parts[1].graph - parts[0].graph),
        "probe": parts[0].probes + (depth - 1) * (parts[1].probes - parts[0].probes),
        "transients": parts[1].transients,
        "weights": params * width,
        "gradient_sum": params * 4,
        "gradient": params * width,
    }


def _params(size: str) -> int:
    """P of Pythia-``size``, counted on the meta device."""
    with torch.device("meta"):
        model = pythia(size, torch.float32)
    return sum(p.numel() for p in model.parameters())


MEMORIES = {
    "24 GB box (CPU)": (23e9, 0.6e9, CPU_SHARE),
    "80 GB GPU": (80e9, 1e9, CUDA_SHARE),
    "141 GB GPU (H200)": (141e9, 1e9, CUDA_SHARE),
}
"""(memory, what is taken before the weights, the plan's share): the box reports about 23 GB
available when idle and a process holds about 0.6 GB of libraries; a GPU's CUDA context is
taken as 1 GB. The plan may use its share of what is left after the weights (as measure
reads it: ``available_bytes`` once the model is loaded)."""


def estimate(args: argparse.Namespace) -> None:
    """Estimated rows: the population position of ``--batch`` × ``--seq-len`` tokens (the
    Pythia recipe's 256 × 256 by default) at each size and dtype, as measure's plan would
    size it in each memory: micro-batches halved from the whole set until the plan fits
    (one probe per backward pass), V (float32) kept when there are several."""
    print(
        f"# estimated: the population position of {args.batch} x {args.seq_len} tokens, "
        "measure's plan (per-sequence parts from 1- and 2-layer plans of each configuration)"
    )
    print("\n| model | dtype | memory | micro-batch | V kept | plan's total | fits |")
    print("|---|---|---|---|---|---|---|")
    for size in args.estimate.split(","):
        for name in ("float32", "bfloat16"):
            part = per_sequence(size, getattr(torch, name), args.seq_len)
            for memory, (size_bytes, base, share) in MEMORIES.items():
                usable = share * (size_bytes - base - part["weights"])
                micro = args.batch
                while True:
                    kept = part["gradient_sum"] if micro < args.batch else 0
                    above = kept + micro * (part["graph"] + part["probe"]) + part["transients"]
                    if above <= usable or micro == 1:
                        break
                    micro = -(-micro // 2)
                total = base + part["weights"] + above
                fits = (
                    "yes"
                    if above <= usable
                    else f"no: refused ({gb(above)} above the weights, {gb(usable)} usable)"
                )
                print(
                    f"| Pythia-{size} | {name} | {memory} | {micro} | {gb(kept) if kept else '—'} | "
                    f"{gb(total)} | {fits} |",
                    flush=True,
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
            note = f"products {r['spectrum'].get('products', '?')}, " + json.dumps(r["spectrum"])
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
