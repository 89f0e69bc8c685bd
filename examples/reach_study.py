"""The spectral-reach study: does a larger model reach lower spectral position, and when?

Each configuration is a :class:`specprobe.demo.config.DemoConfig` that differs from the study's
base in one thing (training length, learning-rate rule, width against depth, a fixed
dataset seen for many epochs against fresh data, measuring on training against held-out
text, corpus, architecture, seed). For each, the family is trained as ``specprobe demo``
trains it, every checkpoint is measured by ``specprobe.pipeline.sweep.run_sweep`` (the same path as
``specprobe run``), and the reach statistics of :mod:`specprobe.analysis.reach` are judged by the
family view's criterion (two combined standard errors; power-law fit against N):

* ``lowest``: the lowest D·χ_pos over the checkpoints (the family view's reach);
* ``final``: D·χ_pos at the last checkpoint;
* ``equal_loss``: D·χ_pos where each model first reaches the loss of the smallest model's best;
* ``equal_compute``: D·χ_pos at the smallest model's final compute 6·N·T;
* ``inverse_index``: 1/#{k : λ_k ≥ χ_pos·Tr Θ} at the last checkpoint (``--eigen 20 --density``;
  only for configurations marked ``eigen``);
* ``rank_per_index``: the effective rank of that spectrum over the index (depth in units of
  the spectrum's own extent).

Everything is seeded (the configuration's ``seed``: corpus, tokenizer data, initialisation,
data order, measurement subset and probes); rerunning a configuration reproduces its
numbers up to thread-count-dependent rounding. Commands (one thread each, as the study ran)::

    OMP_NUM_THREADS=1 python examples/reach_study.py run base lr-constant --out study
    python examples/reach_study.py report --out study --docs docs   # table, figures, verdicts
    python examples/reach_study.py list                               # the configurations

``run`` skips configurations whose ``summary.json`` exists (delete the folder to redo one).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specprobe.analysis.reach import STATISTICS, judge, position_at_step, reach_values
from specprobe.demo.config import DemoConfig
from specprobe.demo.plan import demo_plan
from specprobe.demo.training import train_family
from specprobe.pipeline.sweep import run_sweep
from specprobe.store.results import ResultStore

BASE = DemoConfig(
    arch="llama",
    corpus="longtail",
    vocab_size=384,
    train_documents=12000,
    eval_documents=300,
    widths=(8, 16, 32, 64, 128),
    num_layers=2,
    lr_rule="mup",
    learning_rate=4e-3,
    base_width=32,
    seq_len=64,
    batch_size=16,
    steps=1024,
    warmup_steps=32,
    checkpoints=7,
    first_checkpoint=16,
    eval_sequences=32,
    eval_seq_len=64,
    eval_batch_size=8,
    probes=16,
)
"""The study's base: five Llama models (widths 8–128, 2 layers, 7.8k–525k parameters) on the
long-tail language, μP-style learning rates, 1,024 steps of 16 × 64 tokens (about 0.6
passes over 12,000 documents), measured on 32 held-out sequences."""

CONFIGS: dict[str, tuple[str, DemoConfig, bool]] = {
    "base": ("the base (seed 0)", BASE, True),
    "seed-1": ("the base, seed 1", replace(BASE, seed=1), False),
    "seed-2": ("the base, seed 2", replace(BASE, seed=2), False),
    "lr-constant": ("one learning rate 4e-3 for every width", replace(BASE, lr_rule="constant"), False),
    "lr-low": (
        "μP rule at a third of the rate (1.3e-3·32/width)",
        replace(BASE, learning_rate=4e-3 / 3),
        False,
    ),
    "short": ("256 steps instead of 1,024", replace(BASE, steps=256, warmup_steps=16), False),
    "long": (
        "2,048 steps instead of 1,024 (fresh data: 24,000 documents)",
        replace(BASE, steps=2048, train_documents=24000),
        True,
    ),
    "no-decay": (
        "constant learning rate after warm-up (no cosine decay)",
        replace(BASE, final_lr_fraction=1.0),
        False,
    ),
    "longest": (
        "4,096 steps on fresh data (48,000 documents), widths 8–64 only (to fit the CPU time)",
        replace(BASE, steps=4096, train_documents=48000, widths=(8, 16, 32, 64), checkpoints=9),
        False,
    ),
    "longest-seed-1": (
        "the longest configuration, seed 1",
        replace(BASE, steps=4096, train_documents=48000, widths=(8, 16, 32, 64), checkpoints=9, seed=1),
        False,
    ),
    "longest-seed-2": (
        "the longest configuration, seed 2",
        replace(BASE, steps=4096, train_documents=48000, widths=(8, 16, 32, 64), checkpoints=9, seed=2),
        False,
    ),
    "epochs": ("a fixed set of 600 documents seen ~12 times", replace(BASE, train_documents=600), False),
    "train-batches": ("measured on training documents", replace(BASE, measure_on="train"), False),
    "epochs-train-batches": (
        "600 documents seen ~12 times, measured on training documents",
        replace(BASE, train_documents=600, measure_on="train"),
        True,
    ),
    "depth": (
        "depth instead of width: width 32, 1–16 layers",
        replace(BASE, widths=(32, 32, 32, 32, 32), depths=(1, 2, 4, 8, 16)),
        False,
    ),
    "simple-corpus": (
        "the demo's simple language instead of the long-tail one",
        replace(BASE, corpus="simple"),
        False,
    ),
    "neox": (
        "GPT-NeoX instead of Llama (LayerNorm, GELU, biases)",
        replace(BASE, arch="gpt_neox", widths=(16, 32, 64, 128)),
        False,
    ),
}
"""name → (what differs from the base, the configuration, whether to compute the position index)."""


def run_one(name: str, out: Path, *, threads: int = 1) -> dict[str, Any]:
    """Train, measure and summarise one configuration into ``out/name``; return the summary."""
    description, config, eigen = CONFIGS[name]
    folder = out / name
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        return dict(json.loads(summary_path.read_text()))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    if not (folder / "family").is_dir():
        train_family(folder, config)
    trained = time.perf_counter()
    plan = demo_plan(folder, config)
    records = run_sweep(plan, ResultStore(folder / "run"), resume=True).records
    if eigen:
        last = f"checkpoint-{config.checkpoint_steps()[-1]}"
        eigen_plan = replace(
            plan,
            models=tuple(replace(m, revisions=(last,)) for m in plan.models),
            probe=replace(plan.probe, eigen=20, density=True),
        )
        spectra = run_sweep(eigen_plan, ResultStore(folder / "run-eigen"), resume=True).records
        by_model = {r["model"]: r for r in spectra if r.get("status") == "ok"}
        # The index is taken from the spectrum of the last checkpoint; attach it there.
        records = [
            dict(r, spectrum=by_model[r["model"]].get("spectrum"))
            if r.get("revision") == last and r["model"] in by_model
            else r
            for r in records
        ]
    done = time.perf_counter()
    summary = summarise(name, description, config, records, folder)
    summary["seconds"] = {"train": trained - start, "measure": done - trained}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarise(
    name: str, description: str, config: DemoConfig, records: Sequence[dict[str, Any]], folder: Path
) -> dict[str, Any]:
    """The reach statistics, their judgements, and per-model loss curves of one configuration."""
    models = []
    for label in config.model_names():
        meta = json.loads((folder / "family" / label / "specprobe.json").read_text())
        curve = meta.get("train_loss") or []
        half = len(curve) // 2
        models.append(
            {
                "label": label,
                "num_params": meta.get("num_params"),
                "train_loss_final": curve[-1] if curve else None,
                # relative drop of the training loss over the second half of training:
                # near 0 means the loss had flattened.
                "train_loss_drop_second_half": 1 - curve[-1] / curve[half] if curve else None,
            }
        )
    return {
        "name": name,
        "description": description,
        "config": config.to_dict(),
        "models": models,
        "judgements": judgements(records),
        "records": [_slim(r) for r in records],
    }


def judgements(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every reach statistic that has values for two models or more, judged across sizes."""
    out = {}
    for statistic in STATISTICS:
        values = reach_values(records, statistic)
        if len(values) >= 2:
            out[statistic] = judge(values).to_dict()
    return out


def _slim(record: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "model",
        "label",
        "revision",
        "step",
        "tokens_seen",
        "num_params",
        "num_outputs",
        "status",
        "loss",
        "loss_stderr",
        "chi_net",
        "chi_net_stderr",
        "spectral_position",
        "spectral_position_stderr",
        "duplicate_of",
    )
    out = {k: record.get(k) for k in keep}
    spectrum = record.get("spectrum")
    if spectrum:
        out["spectrum"] = {
            k: spectrum.get(k)
            for k in (
                "position_index",
                "position_index_stderr",
                "position_index_is_estimate",
                "effective_rank",
            )
        }
    return out


# ---- the report ------------------------------------------------------------------------------


def _fmt(v: float, se: float) -> str:
    return f"{v:.3g} ± {se:.1g}"


def report(out: Path, docs: Path) -> str:
    """The markdown table of every summarised configuration, and the figures in ``docs``."""
    summaries = [
        json.loads((out / name / "summary.json").read_text())
        for name in CONFIGS
        if (out / name / "summary.json").is_file()
    ]
    for s in summaries:  # judged again from the records, with the statistics of this version
        s["judgements"] = judgements(s["records"])
    lines = [
        "| configuration | N range | loss smallest → largest | lowest D·χ_pos (exp. ± se) | "
        "at equal loss | at equal compute | final D·χ_pos | 1/index | eff. rank/index | "
        "smallest model's loss drop, 2nd half |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        j = s["judgements"]
        models = s["models"]
        n = [m["num_params"] for m in models]
        first, last = models[0], models[-1]
        row = [
            f"`{s['name']}`: {s['description']}",
            f"{min(n) / 1e3:.3g}k–{max(n) / 1e3:.3g}k ({max(n) / min(n):.0f}×)",
            f"{first['train_loss_final']:.3g} → {last['train_loss_final']:.3g}",
        ]
        for statistic in (
            "lowest",
            "equal_loss",
            "equal_compute",
            "final",
            "inverse_index",
            "rank_per_index",
        ):
            row.append(_cell(j.get(statistic)))
        row.append(f"{100 * first['train_loss_drop_second_half']:.1f}%")
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines) + "\n\n" + step_table(summaries) + "\n\n" + "\n".join(verdict_lines(summaries))
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "reach-study-table.md").write_text(table + "\n")
    _figures(summaries, docs)
    return table


def step_exponents(summary: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per checkpoint step shared by every model: the judgement of D·χ_pos at that step."""
    steps = sorted({r["step"] for r in summary["records"] if r["status"] == "ok"})
    out = {}
    for step in steps:
        values = position_at_step(summary["records"], step)
        if len({v.num_params for v in values}) >= 3:
            out[step] = judge(values).to_dict()
    return out


def step_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Exponent of D·χ_pos ∝ N^b at each checkpoint step (equal tokens): does a larger model
    sit lower *throughout training*?"""
    per = {s["name"]: step_exponents(s) for s in summaries}
    counts: dict[int, int] = {}
    for p in per.values():
        for step in p:
            counts[step] = counts.get(step, 0) + 1
    steps = sorted(step for step, count in counts.items() if count >= 2)  # steps shared by 2+ configurations
    lines = [
        "| configuration | " + " | ".join(f"step {step}" for step in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for name, p in per.items():
        cells = [_cell(p.get(step)) for step in steps]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_lines(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """Per statistic: in how many configurations reach grew with size beyond two standard
    errors (every step, the family view's criterion), went the other way, or neither; the
    exponent's spread across seeds of the base against its within-run standard error."""
    lines = []
    for statistic in STATISTICS:
        judged = [(s["name"], s["judgements"][statistic]) for s in summaries if statistic in s["judgements"]]
        if not judged:
            continue
        by_outcome: dict[str, list[str]] = {}
        for name, j in judged:
            by_outcome.setdefault(j["claim"]["outcome"], []).append(name)
        significant = [
            name for name, j in judged if j["fit"] and j["fit"]["exponent"] < -2 * j["fit"]["exponent_stderr"]
        ]
        parts = [
            f"{outcome} in {len(names)} ({', '.join(names)})" for outcome, names in sorted(by_outcome.items())
        ]
        lines.append(
            f"- `{statistic}`: {len(judged)} configuration(s); every step below the next smaller model by "
            f"2 se: {'; '.join(parts)}. Fitted exponent below 0 by more than 2 se in "
            f"{len(significant)}{' (' + ', '.join(significant) + ')' if significant else ''}."
        )
    groups = {
        "base": ("base", "seed-1", "seed-2"),
        "longest": ("longest", "longest-seed-1", "longest-seed-2"),
    }
    for group, names in groups.items():
        seeds = [s for s in summaries if s["name"] in names]
        if len(seeds) < 2:
            continue
        for statistic in ("lowest", "equal_loss", "equal_compute"):
            fits = [
                s["judgements"][statistic]["fit"]
                for s in seeds
                if s["judgements"].get(statistic, {}).get("fit")
            ]
            if len(fits) < 2:
                continue
            b = np.array([f["exponent"] for f in fits])
            within = float(np.mean([f["exponent_stderr"] for f in fits]))
            lines.append(
                f"- seeds ({len(fits)} of `{group}`): `{statistic}` exponent {b.mean():.2f} ± "
                f"{b.std(ddof=1) / math.sqrt(len(b)):.2f} (mean ± standard error across seeds; spread "
                f"{b.std(ddof=1):.2f} against a mean within-run fit error of {within:.2f})."
            )
    return lines


def _cell(judgement: dict[str, Any] | None) -> str:
    """``N^b ± se (outcome)``: the outcome is the family view's step-by-step criterion (**yes**:
    every larger model below the next smaller one by 2 se; reverse; no: neither); ▼/▲ mark a
    fitted exponent below/above 0 by more than 2 se."""
    if not judgement:
        return "–"
    fit = judgement.get("fit")
    outcome = judgement["claim"]["outcome"]
    mark = {"supported": "**yes**", "contradicted": "reverse", "unclear": "no"}.get(outcome, outcome)
    if fit is None:
        return mark
    b, se = fit["exponent"], fit["exponent_stderr"]
    arrow = " ▼" if b < -2 * se else " ▲" if b > 2 * se else ""
    return f"N^{b:.2f} ± {se:.2f}{arrow} ({mark})"


def _figures(summaries: Sequence[dict[str, Any]], docs: Path) -> None:
    from matplotlib.figure import Figure

    # 1. The fitted exponent of every statistic in every configuration, with ± 2 se.
    fig = Figure(figsize=(8, 0.42 * len(summaries) + 1.6), layout="constrained")
    ax = fig.subplots()
    statistics = ("lowest", "equal_loss", "equal_compute", "final", "inverse_index", "rank_per_index")
    colours = ["C0", "C1", "C2", "C3", "C4", "C5"]
    for i, s in enumerate(summaries):
        for k, (statistic, colour) in enumerate(zip(statistics, colours, strict=True)):
            fit = (s["judgements"].get(statistic) or {}).get("fit")
            if not fit or not math.isfinite(fit["exponent_stderr"]):
                continue
            y = i + (k - 2.5) * 0.13
            ax.errorbar(
                fit["exponent"],
                y,
                xerr=2 * fit["exponent_stderr"],
                fmt="o",
                color=colour,
                markersize=4,
                capsize=2,
                label=statistic if i == 0 else None,
            )
    ax.axvline(0, color="0.4", linewidth=0.8)
    ax.set_yticks(range(len(summaries)), [s["name"] for s in summaries], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("exponent b of statistic ∝ N^b (± 2 se); b < 0: larger models reach lower", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    fig.savefig(docs / "reach-study-exponents.png", dpi=150)

    # 2. Position against compute and loss for a few configurations.
    chosen = [s for s in summaries if s["name"] in ("short", "base", "long", "longest")]
    if not chosen:
        return
    fig = Figure(figsize=(11, 3.0 * len(chosen)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(chosen), 2))
    for row, s in zip(axes, chosen, strict=True):
        by_model: dict[str, list[dict[str, Any]]] = {}
        for r in s["records"]:
            if r["status"] == "ok":
                by_model.setdefault(r["label"], []).append(r)
        from matplotlib import colormaps

        for i, (label, rows) in enumerate(by_model.items()):
            rows.sort(key=lambda r: r["step"])
            colour = colormaps["viridis"](0.85 * i / max(1, len(by_model) - 1))
            compute = [6 * r["num_params"] * r["tokens_seen"] for r in rows]
            pos = [r["num_outputs"] * r["spectral_position"] for r in rows]
            err = [r["num_outputs"] * (r["spectral_position_stderr"] or 0) for r in rows]
            loss = [r["loss"] for r in rows]
            row[0].errorbar(compute, pos, yerr=err, marker="o", markersize=3, color=colour, label=label)
            row[1].errorbar(loss, pos, yerr=err, marker="o", markersize=3, color=colour, label=label)
        for ax, xlabel in zip(
            row, ("training compute 6·N·T (FLOPs)", "loss on the measured batches"), strict=True
        ):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel, fontsize=9)
            ax.set_ylabel("D·χ_pos", fontsize=9)
            ax.grid(True, alpha=0.3, linewidth=0.6)
            ax.set_title(s["name"], fontsize=9, loc="left")
        row[1].invert_xaxis()
        row[0].legend(fontsize=7, frameon=False)
    fig.savefig(docs / "reach-study-positions.png", dpi=150)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train, measure and summarise configurations")
    run.add_argument("names", nargs="+", choices=sorted(CONFIGS))
    run.add_argument("--out", type=Path, default=Path("reach-study"))
    run.add_argument("--threads", type=int, default=1)
    rep = sub.add_parser("report", help="the table and the figures of the summarised configurations")
    rep.add_argument("--out", type=Path, default=Path("reach-study"))
    rep.add_argument("--docs", type=Path, default=Path("reach-study/report"))
    sub.add_parser("list", help="the configurations")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, (description, _, eigen) in CONFIGS.items():
            print(f"{name:22s} {description}{' (+ position index)' if eigen else ''}")
    elif args.command == "run":
        for name in args.names:
            s = run_one(name, args.out, threads=args.threads)
            verdicts = {k: v["claim"]["outcome"] for k, v in s["judgements"].items()}
            print(name, json.dumps(s["seconds"]), verdicts, flush=True)
    else:
        print(report(args.out, args.docs))


if __name__ == "__main__":
    main()
