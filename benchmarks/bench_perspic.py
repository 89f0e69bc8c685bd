"""specprobe's per-sample probes against the authors' implementation (perspic) and Opacus.

On random-init GPT-NeoX causal LMs of about 1M, 7M and 30M parameters and one batch of
8 sequences × 64 tokens, with 16 Rademacher probes, each of these runs in its own process
(one thread), the runs interleaved over the repeats:

* ``train``: one training step (forward + backward of the mean loss, ``.grad`` filled);
* ``specprobe``: ``measure(..., estimator="hutchinson_per_sample", probes=16,
  population=False)`` (the trace alone, the work the other tools do); with
  ``--baseline DIR`` also the same call from another checkout (e.g. main), for a
  side-by-side of two versions;
* ``opacus``: the authors' method written against Opacus directly — per probe v (shared by
  the samples, drawn over the counted outputs) one forward and one backward pass through
  ``GradSampleModuleFastGradientClipping`` (ghost clipping), Σ_s ‖J_sᵀv‖² from its
  per-sample norms; when opacus is installed (it comes with the dev extra);
* ``perspic``: ``perspic.SamplewiseCalculatorOpacus(approximate_with_n=16)`` itself, when it
  is importable (it is not on the package index: ``git clone
  https://github.com/zincware/perspic`` and put it on PYTHONPATH; its own pins ask for
  another torch, and ``import perspic`` needs pytorch_lightning). Otherwise the script
  says so and prints the other rows.

Each row: median time, the median over repeats of the time ratio to specprobe's run of the
same repeat (timed processes with the allocator's default settings), peak resident memory
above the loaded model (Linux VmHWM, reset after a warm-up, from one more process per tool
with a fixed malloc mmap threshold so freed buffers go back to the OS: a setting that
would also slow down code with many large temporaries, so it is kept out of the timed
runs) and its ratio to the training step's, and the estimate of Tr Θ (the
counted outputs' kernel trace, Σ_s ‖J_sᵀz‖² averaged over probes) with its standard error
over the probes. Estimates of different tools agree when their difference is within
about two combined standard errors.

    python benchmarks/bench_perspic.py [--sizes 1m,7m,30m] [--repeats 3] [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

MMAP_THRESHOLD = "65536"
"""glibc's mmap threshold in the processes that measure a peak (so freed buffers go back to
the OS); the timed processes keep the allocator's defaults, under which every tool runs."""

# (vocab, hidden, layers, heads) of each size: P ≈ 2·V·H + L·12·H².
SIZES = {"1m": (512, 128, 4, 4), "7m": (8192, 256, 4, 4), "30m": (16384, 512, 4, 8)}
SAMPLES, TOKENS, PROBES = 8, 64, 16


def _model_and_batch(size: str) -> tuple[torch.nn.Module, torch.Tensor]:
    from specprobe.models.tiny import tiny_causal_lm

    vocab, hidden, layers, heads = SIZES[size]
    model = tiny_causal_lm(
        "gpt_neox", vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads
    )
    ids = torch.randint(0, vocab, (SAMPLES, TOKENS), generator=torch.Generator().manual_seed(0))
    return model, ids


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _train(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, float]:
    model(input_ids=ids, labels=ids).loss.backward()
    return {}


def _specprobe(model: torch.nn.Module, ids: torch.Tensor, probes: int) -> dict[str, float]:
    import inspect

    import specprobe

    # The trace alone, as the other tools compute it: without the population position's
    # per-sequence work (a checkout older than it has no such option, and does none).
    extra = {"population": False} if "population" in inspect.signature(specprobe.measure).parameters else {}
    m = specprobe.measure(
        model, {"input_ids": ids}, estimator="hutchinson_per_sample", probes=probes, seed=0, **extra
    )
    return {"trace": m.chi_net, "stderr": m.chi_net_stderr}


def _opacus(model: torch.nn.Module, ids: torch.Tensor, probes: int) -> dict[str, float]:
    """Per probe one forward and backward through Opacus's ghost clipping (perspic's method)."""
    from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
        GradSampleModuleFastGradientClipping,
    )

    class Logits(torch.nn.Module):
        def __init__(self, lm: torch.nn.Module) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lm(input_ids=x, use_cache=False).logits[:, :-1]  # the counted outputs

    wrapped = GradSampleModuleFastGradientClipping(
        Logits(model), loss_reduction="sum", use_ghost_clipping=True
    )
    for module in model.modules():  # Opacus records modules in training mode; the model has no dropout
        module.train(any(True for _ in module.parameters(recurse=False)))
    g = torch.Generator().manual_seed(0)
    values = []
    for _ in range(probes):
        v = torch.randint(0, 2, (TOKENS - 1, model.config.vocab_size), generator=g).float() * 2 - 1
        wrapped.zero_grad()
        (wrapped(ids) * v).sum().backward()
        values.append(float(wrapped.get_norm_sample().square().sum()))
    wrapped._close()
    model.eval()
    mean = statistics.fmean(values)
    return {"trace": mean, "stderr": statistics.stdev(values) / math.sqrt(probes)}


def _perspic(model: torch.nn.Module, ids: torch.Tensor, probes: int) -> dict[str, float]:
    from perspic import SamplewiseCalculatorOpacus

    class Logits(torch.nn.Module):
        def __init__(self, lm: torch.nn.Module) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lm(input_ids=x, use_cache=False).logits[:, :-1]

    calc = SamplewiseCalculatorOpacus(approximate_with_n=probes)
    trace = calc._compute_per_sample_gradient_norm_network(
        Logits(model), ids, reduce=True, approximate_with_n=probes
    )
    return {"trace": float(trace), "stderr": float("nan")}  # it returns the mean only


def worker(tool: str, size: str, probes: int) -> None:
    """One measurement in this process: a warm-up, then the timed run; JSON on stdout."""
    from specprobe.core.memory import peak_rss, reset_peak_rss

    torch.set_num_threads(1)
    model, ids = _model_and_batch(size)
    run = {"train": lambda: _train(model, ids), "specprobe": lambda: _specprobe(model, ids, probes)}
    run.update(opacus=lambda: _opacus(model, ids, probes), perspic=lambda: _perspic(model, ids, probes))
    if tool == "train":
        run["train"]()
    else:  # warm-up with 2 probes: the kernels and the allocator, without the full cost
        {"specprobe": _specprobe, "opacus": _opacus, "perspic": _perspic}[tool](model, ids, 2)
    model.zero_grad(set_to_none=True)
    gc.collect()
    base = _rss()
    reset_peak_rss()
    start = time.perf_counter()
    out = run[tool]()
    elapsed = time.perf_counter() - start
    peak = (peak_rss() or 0) - base
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"time": elapsed, "peak": peak, "params": params, **out}))


def _available(tool: str) -> str | None:
    """None when ``tool`` can run here, else why not."""
    module = {"opacus": "opacus", "perspic": "perspic"}.get(tool)
    if module is None:
        return None
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"{tool} is not importable here ({last})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1m,7m,30m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probes", type=int, default=PROBES)
    parser.add_argument("--tools", default="train,specprobe,opacus,perspic")
    parser.add_argument(
        "--baseline", default=None, help="another checkout whose specprobe runs beside this one"
    )
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.probes)
        return
    tools = []
    for tool in args.tools.split(","):
        why = _available(tool)
        if why:
            print(f"# {why}: its rows are left out")
        else:
            tools.append(tool)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {t: here for t in tools}
    if args.baseline and "specprobe" in tools:
        tools.insert(tools.index("specprobe") + 1, "specprobe@baseline")
        trees["specprobe@baseline"] = os.path.abspath(args.baseline)
    print(
        f"# bench_perspic: GPT-NeoX, {SAMPLES} x {TOKENS} tokens, {args.probes} probes, one thread per process, "
        f"{args.repeats} interleaved repeats, torch {torch.__version__}"
    )
    for size in args.sizes.split(","):
        results: dict[str, list[dict[str, float]]] = {t: [] for t in tools}
        for _ in range(args.repeats):
            for tool in tools:
                results[tool].append(_run(tool.split("@")[0], size, args.probes, trees[tool], peak=False))
        for tool in tools:
            peak = _run(tool.split("@")[0], size, args.probes, trees[tool], peak=True)["peak"]
            for row in results[tool]:
                row["peak"] = peak
        _report(size, results)


def _run(tool: str, size: str, probes: int, tree: str, *, peak: bool) -> dict[str, float]:
    """One worker process: timed with the allocator's defaults, or (``peak``) for its peak
    memory with the fixed mmap threshold."""
    env = {
        **os.environ,
        "PYTHONPATH": tree + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if peak:
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", tool, size, "--probes", str(probes)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _report(size: str, results: dict[str, list[dict[str, float]]]) -> None:
    ref = results.get("specprobe")
    train = results.get("train")
    train_peak = statistics.median(r["peak"] for r in train) if train else float("nan")
    print(
        f"\n{'size':>4} {'P':>11} {'run':>19} {'time s':>8} {'x specprobe':>11} {'peak MB':>8} "
        f"{'/train':>6} {'Tr Θ ± stderr':>24}"
    )
    for tool, rows in results.items():
        t = statistics.median(r["time"] for r in rows)
        ratio = (
            statistics.median(r["time"] / s["time"] for r, s in zip(rows, ref, strict=True))
            if ref
            else math.nan
        )
        peak = statistics.median(r["peak"] for r in rows)
        value = f"{rows[-1]['trace']:.5g} ± {rows[-1]['stderr']:.2g}" if "trace" in rows[-1] else ""
        print(
            f"{size:>4} {int(rows[0]['params']):>11,} {tool:>19} {t:>8.2f} {ratio:>11.2f} {peak / 1e6:>8.1f} "
            f"{peak / train_peak:>6.2f} {value:>24}",
            flush=True,
        )


if __name__ == "__main__":
    main()
