"""The reach study's first round, reported: the exponent of every D·χ_pos statistic per
configuration, at every step, the verdict lines and the figures (used by
``examples/reach_study.py report``; the statistics are :mod:`specprobe.analysis.reach`'s)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from reach_population import cell

from specprobe.analysis.position import Position
from specprobe.analysis.reach import STATISTICS, judge, position_at_step


def first_round_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per configuration: the exponent of every D·χ_pos statistic against N."""
    lines = [
        "| configuration | N range | loss smallest → largest | lowest D·χ_pos (exp. ± se) | "
        "at equal loss | at equal compute | final D·χ_pos | 1/index | eff. rank/index | "
        "smallest model's loss drop, 2nd half |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        j = s["judgements"]
        row = size_cells(s)
        for statistic in (
            "lowest",
            "equal_loss",
            "equal_compute",
            "final",
            "inverse_index",
            "rank_per_index",
        ):
            row.append(cell(j.get(statistic)))
        row.append(f"{100 * s['models'][0]['train_loss_drop_second_half']:.1f}%")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def size_cells(s: dict[str, Any]) -> list[str]:
    """Configuration, N range, training loss of the smallest and the largest model."""
    models = s["models"]
    n = [m["num_params"] for m in models]
    return [
        f"`{s['name']}`: {s['description']}",
        f"{min(n) / 1e3:.3g}k–{max(n) / 1e3:.3g}k ({max(n) / min(n):.0f}×)",
        f"{models[0]['train_loss_final']:.3g} → {models[-1]['train_loss_final']:.3g}",
    ]


def step_exponents(summary: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per checkpoint step shared by every model: the judgement of D·χ_pos at that step."""
    steps = sorted({r["step"] for r in summary["records"] if r["status"] == "ok"})
    out = {}
    for step in steps:
        values = position_at_step(summary["records"], step, Position.NORMALIZED)  # D·χ_pos, not χ_pos^∞
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
        cells = [cell(p.get(step)) for step in steps]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_lines(summaries: Sequence[dict[str, Any]], groups: Mapping[str, Sequence[str]]) -> list[str]:
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


def figures(summaries: Sequence[dict[str, Any]], docs: Path) -> None:
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
