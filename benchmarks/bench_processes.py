"""One sweep in 1 process against the same sweep in N processes (torchrun), on the CPU.

Builds a small local family offline (tiny GPT-NeoX models of 3 widths, 4 checkpoints
each, as Trainer-style ``checkpoint-<step>`` folders) and a recipe over it, then runs
``python -m specprobe run RECIPE`` and ``python -m specprobe run RECIPE --processes N``
alternately (each process with one torch thread), and prints the best wall times and
their ratio. A rerun with ``--resume`` of a finished run measures nothing: its time is the
fixed cost (start-up, launcher, checks, tokenising), and the wall time less that cost is
the sweep itself, whose ratio is what more processes can speed up. The records of the two
runs are compared: the same numbers to rounding.

    python benchmarks/bench_processes.py [--processes 2] [--repeats 2] [--widths 64,96,128]
    python benchmarks/bench_processes.py --device cuda --processes 8 [--gpus-per-model 2]

On GPUs (``--device cuda``) each process takes its local rank's GPU (with more processes
than GPUs they share them); ``--gpus-per-model K`` spreads each model of the N-process run
over K GPUs. The script exits 1 when the runs' records differ by more than ``--tolerance``
(relative) or a checkpoint failed, so benchmarks/gpu_check.sh can use it as a check.

The machine's load average is printed with each run: on a machine shared with other
work the ratio says more about the other work than about specprobe.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def build_family(root: Path, widths: list[int], steps: list[int], device: str = "cpu") -> Path:
    """The models, a corpus and the recipe; returns the recipe's path."""
    from specprobe.models.tiny import tiny_causal_lm, train_tokenizer

    words = [
        "the",
        "a",
        "fox",
        "dog",
        "cat",
        "bird",
        "runs",
        "jumps",
        "over",
        "under",
        "near",
        "and",
        "but",
        "so",
        "then",
        "old",
        "new",
        "red",
        "blue",
    ]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)) for i in range(400)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    tokenizer = train_tokenizer(lines, 256)
    models = []
    for width in widths:
        folder = root / f"w{width}"
        for seed, step in enumerate(steps):
            model = tiny_causal_lm(
                "gpt_neox", vocab_size=len(tokenizer), hidden_size=width, num_layers=2, seed=seed
            )
            model.save_pretrained(folder / f"checkpoint-{step}")
        tokenizer.save_pretrained(folder)
        models.append(f'  - {{id: "{folder}", label: w{width}}}')
    recipe = root / "recipe.yaml"
    recipe.write_text(
        "version: 1\nfamily: {name: bench-processes, description: tiny widths}\nmodels:\n"
        + "\n".join(models)
        + f'\ndata: {{dataset: "{corpus}", num_sequences: 32, seq_len: 64, batch_size: 4, seed: 0}}\n'
        + f"probe: {{probes: 16, device: {device}}}\n"
    )
    return recipe


def run(
    recipe: Path, out: Path, processes: int, resume: bool = False, extra: tuple[str, ...] = ()
) -> tuple[float, float]:
    """Wall time of the command, and the load average (1 min) at its end."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "specprobe", "run", str(recipe), "--out", str(out), "--json"]
    if processes > 1:
        command += ["--processes", str(processes)]
    if resume:
        command.append("--resume")
    command += extra
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start, os.getloadavg()[0]


def records(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {(r["model"], r["revision"]): r for r in map(json.loads, lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--widths", default="64,96,128")
    parser.add_argument("--steps", default="1,2,3,4")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--gpus-per-model", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="relative, between the runs' records")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    console = Console()
    with tempfile.TemporaryDirectory(prefix="specprobe-bench-") as tmp:
        root = Path(tmp)
        recipe = build_family(root, widths, steps, args.device)
        grouped: tuple[str, ...] = ()
        if args.gpus_per_model > 1:
            grouped = ("--gpus-per-model", str(args.gpus_per_model), "--device", "auto")
        counts = (1, args.processes)
        times: dict[int, list[float]] = {n: [] for n in counts}
        fixed: dict[int, list[float]] = {n: [] for n in counts}
        loads: list[float] = []
        outs = {}
        for repeat in range(args.repeats):
            for n in counts:
                outs[n] = root / f"run-{n}-{repeat}"
                extra = grouped if n > 1 else ()
                wall, load = run(recipe, outs[n], n, extra=extra)
                again, _ = run(recipe, outs[n], n, resume=True, extra=extra)
                times[n].append(wall)
                fixed[n].append(again)
                loads.append(load)
                console.print(
                    f"{n} process(es): {wall:.1f} s, rerun with --resume {again:.1f} s "
                    f"(load average {load:.1f})",
                    highlight=False,
                )
        one, many = records(outs[1]), records(outs[args.processes])
        assert one.keys() == many.keys()
        both_ok = [k for k in one if one[k]["status"] == many[k]["status"] == "ok"]
        worst = max(
            (
                abs(one[k][f] - many[k][f]) / abs(one[k][f])
                for k in both_ok
                for f in ("loss", "chi_net", "spectral_position")
            ),
            default=0.0,
        )
        # Each run's sweep is its wall time less its own rerun's; the best of the repeats of each.
        best = {n: min(times[n]) for n in counts}
        cost = {n: min(fixed[n]) for n in counts}
        sweep = {n: min(t - f for t, f in zip(times[n], fixed[n], strict=True)) for n in counts}
        where = f"{os.cpu_count()} CPU cores" if args.device == "cpu" else f"{_gpus()} GPU(s)"
        table = Table(title=f"{len(one)} checkpoints, {where}, one thread per process")
        for col in ("processes", "wall time", "fixed cost", "sweep", "wall ratio", "sweep ratio"):
            table.add_column(col, justify="right")
        for n in counts:
            table.add_row(
                str(n),
                f"{best[n]:.1f} s",
                f"{cost[n]:.1f} s",
                f"{sweep[n]:.1f} s",
                f"{best[1] / best[n]:.2f}×",
                f"{sweep[1] / sweep[n]:.2f}×",
            )
        console.print(table)
        console.print(
            f"best of {args.repeats}; load average {min(loads):.1f}–{max(loads):.1f} during the runs; "
            f"largest relative difference between the runs' records {worst:.1e}",
            highlight=False,
        )
        failed = [k for k, r in [*one.items(), *many.items()] if r["status"] != "ok"]
        if failed or worst > args.tolerance:
            console.print(
                f"[red]check failed[/]: {len(failed)} failed record(s), difference {worst:.1e} "
                f"(tolerance {args.tolerance:g})"
            )
            sys.exit(1)


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


if __name__ == "__main__":
    main()
