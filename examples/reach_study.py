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

The second round (:data:`CONFIGS` entries with a ``crossover``; ``examples/reach_population.py``)
trains with μP done fully (``lr_rule="mup-full"``), measures every checkpoint as one set of
sequences and judges the same statistics on the population position (S−1)·V·χ_pos^∞, with
the gradient noise scale B_noise beside it, χ_pos(n) against n at chosen checkpoints (the
crossover), and the family view of several seeds (mean and seed spread per model).

Everything is seeded (the configuration's ``seed``: corpus, tokenizer data, initialisation,
data order, measurement subset and probes); rerunning a configuration reproduces its
numbers up to thread-count-dependent rounding. Commands (one thread each, as the study ran)::

    OMP_NUM_THREADS=1 python examples/reach_study.py run base lr-constant --out study
    python examples/reach_study.py report --out study --docs docs   # table, figures, verdicts
    python examples/reach_study.py list                               # the configurations
    python examples/reach_study.py train mup-full --out study         # train now, measure later

``run`` skips configurations whose ``summary.json`` exists (delete the folder to redo one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import reach_first_round as first_round  # beside this script: the first round's report
import reach_population as population  # and the second round
import torch
from reach_population import Crossover

from specprobe.analysis.position import Position
from specprobe.analysis.reach import STATISTICS, judge, reach_values
from specprobe.demo.config import DemoConfig
from specprobe.demo.plan import demo_plan
from specprobe.demo.presets import PRESETS
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

FIRST_ROUND: dict[str, tuple[str, DemoConfig, bool]] = {
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
"""The first round, run at commit 32108fe: name → (what differs from the base, the
configuration, whether to compute the position index)."""

SECOND = replace(BASE, lr_rule="mup-full", eval_documents=1200, eval_sequences=256)
"""The second round's base: the first round's with μP done fully (``lr_rule="mup-full"``:
initialisation and output multiplier as well as learning rates), measured as one set of
256 held-out sequences at every checkpoint (1,200 held-out documents, so that the
crossover's 512 sequences are drawn from a pool four times larger)."""

SMOKE = replace(
    PRESETS["llama-cpu"].reduced,
    widths=(8, 16, 24),
    steps=8,
    checkpoints=3,
    lr_rule="mup-full",
    eval_sequences=16,
    eval_batch_size=4,
)
"""Seconds: the second round's pipeline end to end (train, whole-set sweep, crossover, report)."""


@dataclass(frozen=True)
class Study:
    """One configuration of the study."""

    description: str
    """What differs from its round's base."""
    config: DemoConfig
    eigen: bool = False
    """Also compute the position index at the last checkpoint (``--eigen 20 --density``)."""
    crossover: Crossover | None = None
    """Second round: measure the checkpoints as one set, and χ_pos(n) against n (None: the
    first round's measurement, batches of ``eval_batch_size`` averaged)."""

    @property
    def second_round(self) -> bool:
        return self.crossover is not None


CONFIGS: dict[str, Study] = {
    **{name: Study(d, c, eigen) for name, (d, c, eigen) in FIRST_ROUND.items()},
    "mup-full": Study("the base, μP done fully (seed 0): the headline", SECOND, crossover=Crossover()),
    "mup-full-seed-1": Study("the headline, seed 1", replace(SECOND, seed=1), crossover=Crossover()),
    "mup-full-seed-2": Study("the headline, seed 2", replace(SECOND, seed=2), crossover=Crossover()),
    "mup-lr": Study(
        "the headline with the first round's μP (learning rates only, Hugging Face's initialisation)",
        replace(SECOND, lr_rule="mup"),
        crossover=Crossover(),
    ),
    "width-depth": Study(
        "width and depth grown together: widths 16/32/64/128 with 1/2/3/4 layers, μP done fully",
        replace(SECOND, widths=(16, 32, 64, 128), depths=(1, 2, 3, 4)),
        crossover=Crossover(),
    ),
    "smoke": Study(
        "a reduced family that proves the second round's pipeline (not a result)",
        SMOKE,
        crossover=Crossover(sequences=32, sizes=(4, 8, 16), checkpoints=("first", "last")),
    ),
}
"""Every configuration by name: the first round's, then the second round's."""

SEED_GROUPS = {
    "base": ("base", "seed-1", "seed-2"),
    "longest": ("longest", "longest-seed-1", "longest-seed-2"),
    "mup-full": ("mup-full", "mup-full-seed-1", "mup-full-seed-2"),
}
"""Seeds of one configuration, judged together (the family view of several seeds)."""


def run_one(name: str, out: Path, *, threads: int = 1, crossover: bool = True) -> dict[str, Any]:
    """Train, measure and summarise one configuration into ``out/name``; return the summary.
    ``crossover=False``: leave the crossover out (the summary says so, ``crossover_skipped``;
    delete ``summary.json`` and run again to add it: the sweeps resume)."""
    study = CONFIGS[name]
    config = study.config
    crossover_wanted = crossover
    commit = _commit()  # the code that measures, taken before it runs
    folder = out / name
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        return dict(json.loads(summary_path.read_text()))
    torch.set_num_threads(threads)
    train_seconds = train(folder, config)
    trained = time.perf_counter()
    plan = demo_plan(folder, config)
    if study.second_round:
        plan = population.whole(plan)
    records = run_sweep(plan, ResultStore(folder / "run"), resume=True).records
    if study.eigen:
        records = _with_spectra(plan, folder, config, records)
    measured = time.perf_counter()
    crossover = []
    if study.crossover is not None and crossover_wanted:
        steps = study.crossover.steps(config.checkpoint_steps())
        crossover = population.measure_crossover(plan, folder, study.crossover, steps)
    done = time.perf_counter()
    summary = summarise(name, study.description, config, records, folder)
    if study.second_round:
        summary["population"] = population.judgements(summary["records"])
        summary["crossover"] = [_slim(r) for r in crossover]
        summary["crossover_skipped"] = not crossover_wanted
    summary["seconds"] = {
        "train": train_seconds,
        "measure": measured - trained,
        "crossover": done - measured,
    }
    summary["commit"] = commit
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def train(folder: Path, config: DemoConfig) -> float:
    """Train the family into ``folder/family`` unless it is there; the training's wall time
    (kept in ``folder/train.json``, so that a family trained ahead reports its own)."""
    timing = folder / "train.json"
    if not (folder / "family").is_dir():
        start = time.perf_counter()
        train_family(folder, config)
        timing.write_text(json.dumps({"seconds": time.perf_counter() - start}) + "\n")
    return float(json.loads(timing.read_text())["seconds"]) if timing.is_file() else float("nan")


def _with_spectra(
    plan: Any, folder: Path, config: DemoConfig, records: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``records`` with the spectrum (``--eigen 20 --density``) of each model's last checkpoint."""
    last = f"checkpoint-{config.checkpoint_steps()[-1]}"
    eigen_plan = replace(
        plan,
        models=tuple(replace(m, revisions=(last,)) for m in plan.models),
        probe=replace(plan.probe, eigen=20, density=True),
    )
    spectra = run_sweep(eigen_plan, ResultStore(folder / "run-eigen"), resume=True).records
    by_model = {r["model"]: r for r in spectra if r.get("status") == "ok"}
    return [
        dict(r, spectrum=by_model[r["model"]].get("spectrum"))
        if r.get("revision") == last and r["model"] in by_model
        else dict(r)
        for r in records
    ]


def _commit() -> str | None:
    """The commit the study runs at (with ``+dirty`` for uncommitted changes), None outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True)
    except OSError:
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


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
    slim = [_slim(r) for r in records]
    return {
        "name": name,
        "description": description,
        "config": config.to_dict(),
        "models": models,
        "judgements": judgements(slim),
        "records": slim,
    }


def judgements(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every reach statistic that has values for two models or more, judged across sizes, on
    the first round's D·χ_pos (records of this version also carry a population position,
    which ``choose_position`` would pick by default)."""
    out = {}
    for statistic in STATISTICS:
        values = reach_values(records, statistic, Position.NORMALIZED)
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
    # the second round's fields only where the record has them (first-round records do not)
    out.update({k: record[k] for k in (*population.POPULATION_FIELDS, "crossover_n") if k in record})
    data = (record.get("settings") or {}).get("data") or {}
    if "num_sequences" in data:  # how many sequences, and how many together (None: one set)
        out["num_sequences"], out["batch_size"] = data["num_sequences"], data.get("batch_size")
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


def report(out: Path, docs: Path, only: Sequence[str] | None = None) -> str:
    """The markdown tables of every summarised configuration (``only``: of those named), and the
    figures, in ``docs``: the first round's in ``reach-study-table.md``, the second round's
    in ``reach-study-population.md``. Returns both, the first round's first."""
    summaries = [
        json.loads((out / name / "summary.json").read_text())
        for name in CONFIGS
        if (out / name / "summary.json").is_file() and (only is None or name in only)
    ]
    for s in summaries:  # judged again from the records, with the statistics of this version
        s["judgements"] = judgements(s["records"])
        if CONFIGS[s["name"]].second_round:
            s["population"] = population.judgements(s["records"])
    first = [s for s in summaries if not CONFIGS[s["name"]].second_round]
    second = [s for s in summaries if CONFIGS[s["name"]].second_round]
    docs.mkdir(parents=True, exist_ok=True)
    parts = []
    if first:
        table = (
            first_round.first_round_table(first)
            + "\n\n"
            + first_round.step_table(first)
            + "\n\n"
            + "\n".join(first_round.verdict_lines(first, SEED_GROUPS))
        )
        (docs / "reach-study-table.md").write_text(table + "\n")
        first_round.figures(first, docs)
        parts.append(table)
    if second:
        text = second_round_text(second)
        (docs / "reach-study-population.md").write_text(text + "\n")
        population.figures(second, docs)
        parts.append(text)
    return "\n\n".join(parts)


def second_round_text(summaries: Sequence[dict[str, Any]]) -> str:
    """The second round: the population statistics per configuration, the population position
    through training, the crossover, and the family view of the seeds."""
    runs = [
        "| configuration | N range | loss smallest → largest | measured at | seeds | wall time (train / measure / crossover) |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        t = s["seconds"]
        runs.append(
            "| "
            + " | ".join(
                [
                    *first_round.size_cells(s),
                    f"`{s.get('commit')}`",
                    str(s["config"]["seed"]),
                    f"{t['train']:.0f} s / {t['measure']:.0f} s / {t.get('crossover', 0):.0f} s",
                ]
            )
            + " |"
        )
    blocks = [
        "\n".join(runs),
        population.population_table(summaries),
        "(S−1)·V·χ_pos^∞ ± se [B_noise in sequences] through training:",
        *(population.training_table(s) for s in summaries),
        "D_n·χ_pos(n) measured ± se / predicted from the whole set (χ_pos^∞ + (χ_pos(1) − χ_pos^∞)/n):",
        *(t for t in (population.crossover_table(s) for s in summaries) if t),
    ]
    seeds = population.seed_lines(summaries, SEED_GROUPS)
    if seeds:
        blocks.append("\n".join(seeds))
    return "\n\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ahead = sub.add_parser("train", help="only train configurations (run measures them later)")
    ahead.add_argument("names", nargs="+", choices=sorted(CONFIGS))
    ahead.add_argument("--out", type=Path, default=Path("reach-study"))
    run = sub.add_parser("run", help="train, measure and summarise configurations")
    run.add_argument("names", nargs="+", choices=sorted(CONFIGS))
    run.add_argument("--out", type=Path, default=Path("reach-study"))
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--no-crossover", action="store_true", help="second round: skip the crossover")
    rep = sub.add_parser("report", help="the table and the figures of the summarised configurations")
    rep.add_argument("--out", type=Path, default=Path("reach-study"))
    rep.add_argument("--docs", type=Path, default=Path("reach-study/report"))
    rep.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="report these configurations only")
    sub.add_parser("list", help="the configurations")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, study in CONFIGS.items():
            extra = " (+ position index)" if study.eigen else " (second round)" if study.second_round else ""
            print(f"{name:22s} {study.description}{extra}")
    elif args.command == "train":
        torch.set_num_threads(1)
        for name in args.names:
            print(name, "trained in", f"{train(args.out / name, CONFIGS[name].config):.0f} s", flush=True)
    elif args.command == "run":
        for name in args.names:
            s = run_one(name, args.out, threads=args.threads, crossover=not args.no_crossover)
            verdicts = {k: v["claim"]["outcome"] for k, v in s["judgements"].items()}
            print(name, json.dumps(s["seconds"]), verdicts, flush=True)
    else:
        print(report(args.out, args.docs, args.only))


if __name__ == "__main__":
    main()
