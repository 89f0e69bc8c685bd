"""The reach study's second round: the population position χ_pos^∞ across sizes and seeds.

Used by ``examples/reach_study.py`` (its ``run`` and ``report``); nothing here trains. What
it adds to a configuration's first-round numbers (DESIGN.md section 6):

* the **population position** (S−1)·V·χ_pos^∞ of every checkpoint, with the gradient noise
  scale B_noise beside it, from the sweep measuring its subset as one set (``measurement``
  "whole": the records' ``normalized_population_position`` and ``noise_scale``);
* the **crossover**: at chosen checkpoints, D_n·χ_pos(n) for n = 8, 32, 128 sequences
  measured the old way (``measurement`` "batches", the mean over batches of n of one subset
  of 512) and for n = 512 as one set, beside the prediction from that one measurement,
  χ_pos(n) = χ_pos^∞ + (χ_pos(1) − χ_pos^∞)/n (``Measurement.position_at``). Below B_noise a
  batch's D_n·χ_pos measures mostly the noise, so the order of the sizes can turn over with n;
* the reach statistics of :mod:`specprobe.analysis.reach` (lowest, final, equal loss, equal
  compute, at step S) on the population position: the records are handed to
  :func:`~specprobe.analysis.reach.reach_values` with the population position in the place
  of D·χ_pos (:func:`population_view`), nothing of the statistics is copied;
* the **family view of several seeds**: per model the mean of a statistic over the seeds
  and the standard error from their spread, judged by the family view's criterion
  (:func:`seed_family`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from specprobe.analysis.position import Position
from specprobe.analysis.reach import ReachValue, judge, position_at_step, reach_values
from specprobe.core.measurement import Measurement
from specprobe.pipeline.plan import SweepPlan
from specprobe.pipeline.sweep import run_sweep
from specprobe.store.results import ResultStore

POPULATION = "normalized_population_position"
"""The record field of (S−1)·V·χ_pos^∞ (``…_stderr``: its standard error)."""

STATISTICS = ("lowest", "final", "equal_loss", "equal_compute")
"""The reach statistics judged on the population position."""

POPULATION_FIELDS = (
    "measurement",
    "population_position",
    "population_position_stderr",
    POPULATION,
    f"{POPULATION}_stderr",
    "noise_scale",
    "noise_scale_stderr",
    "noise_scale_tokens",
    "single_position",
    "single_position_stderr",
    "mean_grad_sq",
    "mean_grad_sq_stderr",
    "population_status",
    "sequences_needed",
    "train_batch_sequences",
    "train_batch_position",
    "train_batch_position_stderr",
)
"""Record fields the summaries keep for the second round (absent in first-round records)."""


@dataclass(frozen=True)
class Crossover:
    """Where and how finely χ_pos(n) is measured against n."""

    sequences: int = 512
    """The subset: measured as one set (the largest n) and cut into batches of each of ``sizes``."""
    sizes: tuple[int, ...] = (8, 32, 128)
    """Batch sizes measured the old way (each divides ``sequences``)."""
    checkpoints: tuple[str, ...] = ("last",)
    """``first``, ``last`` or a step number, as text."""

    def steps(self, checkpoint_steps: Sequence[int]) -> tuple[int, ...]:
        named = {"first": checkpoint_steps[0], "last": checkpoint_steps[-1]}
        return tuple(sorted({named.get(c) or int(c) for c in self.checkpoints}))

    def all_sizes(self) -> tuple[int, ...]:
        return (*self.sizes, self.sequences)


def whole(plan: SweepPlan) -> SweepPlan:
    """``plan`` measuring its subset as one set (``batch_size`` None: ``measurement`` "whole")."""
    return replace(plan, data=replace(plan.data, batch_size=None))


def measure_crossover(
    plan: SweepPlan, folder: Path, crossover: Crossover, steps: Sequence[int]
) -> list[dict[str, Any]]:
    """Measure χ_pos(n) at the checkpoints ``steps`` of every model of ``plan``: the subset of
    ``crossover.sequences`` as one set (``folder/run-n<sequences>``) and in batches of each
    of ``crossover.sizes`` (``folder/run-n<size>``); every record gains ``crossover_n``.

    Cost: (1 + len(sizes)) measurements of ``sequences`` sequences per checkpoint (the
    whole-set one also computes the per-sequence norms). Resumes what a folder holds."""
    revisions = tuple(f"checkpoint-{s}" for s in steps)
    base = replace(plan, models=tuple(replace(m, revisions=revisions) for m in plan.models))
    base = replace(base, data=replace(base.data, num_sequences=crossover.sequences))
    out: list[dict[str, Any]] = []
    for n in crossover.all_sizes():
        measured = replace(base, data=replace(base.data, batch_size=None if n == crossover.sequences else n))
        records = run_sweep(measured, ResultStore(folder / f"run-n{n}"), resume=True).records
        out.extend(dict(r, crossover_n=n) for r in records)
    return out


def population_view(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The analysed records with (S−1)·V·χ_pos^∞ in the place of D·χ_pos, for the statistics of
    :mod:`specprobe.analysis.reach` (which read ``normalized_position``). Records without a
    positive population position (first-round records, ``population_status``
    "nonpositive": ‖M‖²^ ≤ 0, more sequences needed) are left out: a reach statistic of
    a position ≤ 0 has no meaning; :func:`left_out` counts them."""
    out = []
    for r in records:
        value = r.get(POPULATION)
        if r.get("status") != "ok" or value is None or not value > 0:
            continue
        out.append(
            dict(
                r, normalized_position=value, normalized_position_stderr=r.get(f"{POPULATION}_stderr") or 0.0
            )
        )
    return out


def left_out(records: Sequence[Mapping[str, Any]]) -> int:
    """Analysed records that :func:`population_view` leaves out."""
    return sum(1 for r in records if r.get("status") == "ok") - len(population_view(records))


def judgements(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every population statistic, and the position at every step all models share, judged
    across sizes (empty when the records have no population position)."""
    view = population_view(records)
    out: dict[str, Any] = {}
    if not view:
        return out
    for statistic in STATISTICS:
        values = reach_values(view, statistic)
        if len(values) >= 2:
            out[statistic] = judge(values).to_dict()
    for step in sorted({r["step"] for r in view if r.get("step") is not None}):
        values = position_at_step(view, step)
        if len({v.num_params for v in values}) >= 2:
            out[f"step {step}"] = judge(values).to_dict()
    return out


def predicted_position(record: Mapping[str, Any], n: float) -> float | None:
    """χ_pos(n) predicted from a whole-set record by ``Measurement.position_at`` (χ_pos^∞ +
    (χ_pos(1) − χ_pos^∞)/n; None without both estimates). A record is not a Measurement:
    the method reads only these two fields, so it is handed just them."""
    estimates = SimpleNamespace(
        population_position=record.get("population_position"), single_position=record.get("single_position")
    )
    return Measurement.position_at(cast(Measurement, estimates), n)


def crossover_values(records: Sequence[Mapping[str, Any]], step: int, n: int) -> list[ReachValue]:
    """D_n·χ_pos(n) measured at ``step`` with n sequences together, per model, smallest first."""
    rows = [r for r in records if r.get("crossover_n") == n and r.get("step") == step]
    # D_n·χ_pos(n) itself: the records also carry a population position, which
    # choose_position would pick by default
    return position_at_step(rows, step, Position.NORMALIZED)


def crossover_predicted(
    records: Sequence[Mapping[str, Any]], step: int, n: int, whole_n: int
) -> list[float | None]:
    """D_n·χ_pos(n) predicted from the whole-set records (``crossover_n == whole_n``) at ``step``,
    in the order of :func:`crossover_values` (D_n = n·(S−1)·V = num_outputs·n/whole_n)."""
    rows = [r for r in records if r.get("crossover_n") == whole_n and r.get("step") == step]
    out = []
    for value in position_at_step(rows, step):
        row = next(r for r in rows if r.get("model") == value.model)
        predicted = predicted_position(row, n)
        out.append(None if predicted is None else predicted * float(row["num_outputs"]) * n / whole_n)
    return out


def seed_family(
    summaries: Sequence[Mapping[str, Any]], statistic: str, key: str = "population"
) -> dict[str, Any] | None:
    """The family view of several seeds: per model (by label) the mean of ``statistic`` over
    the seeds' runs and its standard error from their spread (std/√k, k ≥ 2 seeds),
    judged by :func:`~specprobe.analysis.reach.judge`; also the exponents of the
    single-seed fits (mean, spread). None when fewer than two seeds have the statistic."""
    runs = [s[key][statistic] for s in summaries if statistic in (s.get(key) or {})]
    if len(runs) < 2:
        return None
    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for v in run["values"]:
            by_label.setdefault(v["label"], []).append(v)
    values = []
    for label, vs in by_label.items():
        if len(vs) < 2:
            continue
        x = np.array([v["value"] for v in vs])
        spread = float(x.std(ddof=1))
        values.append(
            ReachValue(
                statistic,
                label,
                label,
                vs[0]["num_params"],
                float(x.mean()),
                spread / math.sqrt(len(x)),
                f"{len(x)} seeds",
            )
        )
    values.sort(key=lambda v: v.num_params or 0)
    exponents = np.array([r["fit"]["exponent"] for r in runs if r.get("fit")])
    return {
        "seeds": len(runs),
        "judgement": judge(values).to_dict(),
        "seed_spread": {v.label: v.stderr * math.sqrt(len(by_label[v.label])) for v in values},
        "exponent_mean": float(exponents.mean()) if len(exponents) else None,
        "exponent_spread": float(exponents.std(ddof=1)) if len(exponents) >= 2 else None,
    }


# ---- the report ------------------------------------------------------------------------------


def cell(judgement: Mapping[str, Any] | None) -> str:
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


def _value(value: float | None, stderr: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3g} ± {stderr:.2g}" if stderr else f"{value:.3g}"


def population_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Per configuration with a population measurement: the exponent of every population
    statistic and of the population position at the first and last step."""
    rows = [s for s in summaries if s.get("population")]
    header = (
        "| configuration | sequences (whole) | left out (χ_pos^∞ ≤ 0) | lowest (S−1)·V·χ_pos^∞ | final | "
        "at equal loss | at equal compute | first step | B_noise at the last step, smallest → largest |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for s in rows:
        j = s["population"]
        steps = sorted(int(k.split()[1]) for k in j if k.startswith("step "))
        last = max(r["step"] for r in s["records"] if r.get("status") == "ok")
        noise = [
            _value(r.get("noise_scale"), r.get("noise_scale_stderr"))
            for r in sorted(s["records"], key=lambda r: r.get("num_params") or 0)
            if r.get("step") == last and r.get("status") == "ok"
        ]
        sequences = {r.get("num_sequences") for r in s["records"] if r.get("status") == "ok"}
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{s['name']}`",
                    "/".join(str(n) for n in sorted(sequences, key=lambda n: n or 0)),
                    str(left_out(s["records"])),
                    *(cell(j.get(k)) for k in STATISTICS),
                    cell(j.get(f"step {steps[0]}")) if steps else "–",
                    " / ".join(noise),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def training_table(summary: Mapping[str, Any]) -> str:
    """(S−1)·V·χ_pos^∞ ± se and, in brackets, B_noise (sequences) of every model at every step."""
    ok = [r for r in summary["records"] if r.get("status") == "ok"]
    steps = sorted({r["step"] for r in ok})
    models = sorted({(r.get("num_params") or 0, r["label"]) for r in ok})
    lines = [
        f"| `{summary['name']}` | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for _, label in models:
        cells = []
        for step in steps:
            r = next((r for r in ok if r["label"] == label and r["step"] == step), None)
            if r is None or r.get(POPULATION) is None:
                cells.append("–")
                continue
            status = r.get("population_status")
            flag = "" if status in (None, "ok") else f" ({status})"
            noise = f" [B {r['noise_scale']:.3g}]" if r.get("noise_scale") is not None else ""
            cells.append(_value(r[POPULATION], r.get(f"{POPULATION}_stderr")) + noise + flag)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def crossover_table(summary: Mapping[str, Any]) -> str:
    """At each crossover step: D_n·χ_pos(n) measured (± se) / predicted from the whole set, per
    model and n, and the exponent of the measured values against N per n."""
    records = summary.get("crossover") or []
    if not records:
        return ""
    sizes = sorted({r["crossover_n"] for r in records})
    whole_n = max(sizes)
    blocks = []
    for step in sorted({r["step"] for r in records if r.get("status") == "ok"}):
        lines = [
            f"| `{summary['name']}`, step {step} | "
            + " | ".join(f"n = {n}" for n in sizes)
            + " | (S−1)·V·χ_pos^∞ | B_noise |",
            "|---|" + "---|" * (len(sizes) + 2),
        ]
        measured = {n: crossover_values(records, step, n) for n in sizes}
        predicted = {n: crossover_predicted(records, step, n, whole_n) for n in sizes}
        whole_rows = {
            r["label"]: r for r in records if r.get("crossover_n") == whole_n and r.get("step") == step
        }
        for i, value in enumerate(measured[whole_n]):
            cells = []
            for n in sizes:
                m = next((v for v in measured[n] if v.label == value.label), None)
                p = predicted[n][i] if i < len(predicted[n]) else None
                cells.append(
                    ("–" if m is None else _value(m.value, m.stderr))
                    + (f" / {p:.3g}" if p is not None else "")
                )
            w = whole_rows.get(value.label, {})
            cells.append(_value(w.get(POPULATION), w.get(f"{POPULATION}_stderr")))
            cells.append(_value(w.get("noise_scale"), w.get("noise_scale_stderr")))
            lines.append(f"| {value.label} | " + " | ".join(cells) + " |")
        exponents = [cell(judge(measured[n]).to_dict()) if len(measured[n]) >= 2 else "–" for n in sizes]
        lines.append("| exponent (measured) | " + " | ".join(exponents) + " | | |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def seed_lines(summaries: Sequence[Mapping[str, Any]], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """The verdict lines of the family view of several seeds, per group and statistic."""
    lines = []
    for group, names in groups.items():
        seeds = [s for s in summaries if s["name"] in names]
        for statistic in STATISTICS:
            family = seed_family(seeds, statistic)
            if family is None:
                continue
            j = family["judgement"]
            means = ", ".join(f"{v['label']} {v['value']:.3g} ± {v['stderr']:.2g}" for v in j["values"])
            spread = family["exponent_spread"]
            lines.append(
                f"- seeds ({family['seeds']} of `{group}`), `{statistic}` (S−1)·V·χ_pos^∞, mean ± seed "
                f"standard error per model: {means}; fit of the means {cell(j)}; the single-seed "
                f"exponents {family['exponent_mean']:.2f} (spread {spread:.2f})."
                if spread is not None and family["exponent_mean"] is not None
                else f"- seeds ({family['seeds']} of `{group}`), `{statistic}`: {means}; {cell(j)}."
            )
    return lines


def figures(summaries: Sequence[Mapping[str, Any]], docs: Path) -> list[Path]:
    """``reach-study-population.png``: per configuration, (S−1)·V·χ_pos^∞ against the step
    (± 1 se) and B_noise against the step; ``reach-study-crossover.png``: D_n·χ_pos(n)
    measured (± 1 se) and predicted against n at the last crossover step. Returns the
    files written (none without matplotlib or data)."""
    try:
        from matplotlib import colormaps
        from matplotlib.figure import Figure
    except ImportError:
        return []
    written = []
    with_population = [s for s in summaries if population_view(s["records"])]
    if with_population:
        fig = Figure(figsize=(10, 3.0 * len(with_population)), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(with_population), 2))
        for row, s in zip(axes, with_population, strict=True):
            view = population_view(s["records"])
            labels = sorted({(r.get("num_params") or 0, r["label"]) for r in view})
            for i, (_, label) in enumerate(labels):
                rows = sorted((r for r in view if r["label"] == label), key=lambda r: r["step"])
                colour = colormaps["viridis"](0.85 * i / max(1, len(labels) - 1))
                steps = [r["step"] for r in rows]
                row[0].errorbar(
                    steps,
                    [r[POPULATION] for r in rows],
                    yerr=[r.get(f"{POPULATION}_stderr") or 0 for r in rows],
                    marker="o",
                    markersize=3,
                    color=colour,
                    label=label,
                )
                row[1].plot(
                    steps,
                    [r.get("noise_scale") or np.nan for r in rows],
                    marker="o",
                    markersize=3,
                    color=colour,
                )
            for ax, ylabel in zip(row, ("(S−1)·V·χ_pos^∞", "B_noise (sequences)"), strict=True):
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel("training step", fontsize=9)
                ax.set_ylabel(ylabel, fontsize=9)
                ax.set_title(s["name"], fontsize=9, loc="left")
                ax.grid(True, alpha=0.3, linewidth=0.6)
            row[0].legend(fontsize=7, frameon=False)
        fig.savefig(docs / "reach-study-population.png", dpi=150)
        written.append(docs / "reach-study-population.png")
    with_crossover = [s for s in summaries if s.get("crossover")]
    if with_crossover:
        fig = Figure(figsize=(5.5, 3.2 * len(with_crossover)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(len(with_crossover), 1))
        for ax, s in zip(axes, with_crossover, strict=True):
            records = s["crossover"]
            sizes = sorted({r["crossover_n"] for r in records})
            step = max(r["step"] for r in records if r.get("status") == "ok")
            labels = [v.label for v in crossover_values(records, step, sizes[-1])]
            grid = np.geomspace(sizes[0], sizes[-1], 32)
            for i, label in enumerate(labels):
                colour = colormaps["viridis"](0.85 * i / max(1, len(labels) - 1))
                points = [
                    (n, v) for n in sizes for v in crossover_values(records, step, n) if v.label == label
                ]
                ax.errorbar(
                    [n for n, _ in points],
                    [v.value for _, v in points],
                    yerr=[v.stderr for _, v in points],
                    fmt="o",
                    markersize=3,
                    color=colour,
                    label=label,
                )
                whole_row = next(
                    (
                        r
                        for r in records
                        if r["crossover_n"] == sizes[-1] and r["step"] == step and r["label"] == label
                    ),
                    None,
                )
                if whole_row is not None and predicted_position(whole_row, 1.0) is not None:
                    scale = float(whole_row["num_outputs"]) / sizes[-1]
                    ax.plot(
                        grid,
                        [predicted_position(whole_row, n) * scale * n for n in grid],
                        color=colour,
                        linewidth=0.8,
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("sequences measured together, n", fontsize=9)
            ax.set_ylabel("D_n·χ_pos(n)", fontsize=9)
            ax.set_title(
                f"{s['name']}, step {step} (lines: predicted from n = {sizes[-1]})", fontsize=9, loc="left"
            )
            ax.grid(True, alpha=0.3, linewidth=0.6)
            ax.legend(fontsize=7, frameon=False)
        fig.savefig(docs / "reach-study-crossover.png", dpi=150)
        written.append(docs / "reach-study-crossover.png")
    return written
