"""Frozen features against feature learning, on a two-layer network, measured by specprobe.

The network is f(x) = aᵀ tanh(W x) / √M (M hidden units, inputs x ∈ R^d Gaussian), fitted
by full-batch gradient descent on the mean squared error to a target with a power-law
spectrum, y(x) = Σ_k k^(−β) tanh(v_k · x) (orthonormal directions v_k). Each width is
trained twice from the same initialisation:

* frozen: only a is trained. Then J = ∂f/∂a = tanh(W x)/√M never changes, so the eNTK
  Θ = J Jᵀ and its trace χ_net are constant, and the loss stalls at the best fit the
  random features allow;
* feature learning: W and a are trained. The features move, χ_net changes (the "gradient
  amplification" of the spectral-reach account), and the loss keeps falling past the frozen plateau.

specprobe.measure (regression adapter, exact estimator: D = n outputs) is taken on the
training set at log-spaced steps. It prints a table per width and writes a figure (loss,
χ_net/χ_net(0) and D·χ_pos against step; matplotlib needed: pip install "specprobe[plots]").

The output weights start small (a ~ N(0, s²), s = 0.1, so the initial function is near
zero), as in analyses of feature learning; with s = 1 (``--a-scale 1``) and this 1/√M
scaling the wider networks stay close to their initial kernel (the lazy regime) and χ_net
moves by only a few per cent. With the defaults (about 20 s of CPU, one thread), after
1,000 steps: frozen χ_net is constant to the last bit; feature learning multiplies it by
6.4, 2.7 and 1.7 at M = 16, 64, 256; the frozen losses stall at 0.081, 0.047, 0.031 (each
down by a quarter or less over the last decade of steps) against 0.0032, 0.0031, 0.0075;
D·χ_pos falls from 20–30 to below 0.3 in every run.

The family view (``--family-seeds K``, K ≥ 2 for error bars): every width is trained from K
seeds (seed, seed+1, …) in both modes, the runs are turned into results records (one model
per width and mode, N = M·(d + 1) parameters of the network in both modes, the mean over
seeds at each step with its standard error across seeds) and :mod:`specprobe.analysis.family` gives
per mode the spectral reach (lowest D·χ_pos), the final loss, the amplification
χ_net(t)/χ_net(0) at the last step, their power laws in N and the verdict. Measured on the
training set, so a run that converges drives its position towards 0 (at a minimum of the
training loss Jᵀg = 0): the reach here includes how well each run fits.

    python examples/random_features.py [--widths 16 64 256] [--steps 1000] [--n 256]
    python examples/random_features.py --widths 16 32 64 128 256 --family-seeds 3
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import specprobe
from specprobe.analysis import family
from specprobe.text import significant as fmt

MODES = ("frozen", "feature learning")


class TwoLayer(nn.Module):
    """f(x) = aᵀ tanh(W x) / √M, W ~ N(0, 1/d) (pre-activations of unit variance), a ~ N(0, s²)."""

    def __init__(self, d: int, width: int, generator: torch.Generator, a_scale: float = 1.0) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(width, d, generator=generator, dtype=torch.float64) / math.sqrt(d))
        self.a = nn.Parameter(a_scale * torch.randn(width, generator=generator, dtype=torch.float64))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.W.T) @ self.a / math.sqrt(self.width)


def make_task(n: int, d: int, beta: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n Gaussian inputs in R^d and targets Σ_k k^(−β) tanh(v_k·x), scaled to unit variance."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    directions, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    weights = torch.arange(1, d + 1, dtype=torch.float64) ** -beta
    y = torch.tanh(x @ directions) @ weights
    return x, y / y.std()


@dataclass(frozen=True)
class Row:
    """One measurement of one run."""

    width: int
    mode: str
    step: int
    loss: float
    chi_net: float
    spectral_position: float
    normalized_position: float
    amplification: float
    """χ_net / χ_net at step 0."""
    seed: int = 0


def measure_steps(steps: int, points: int) -> list[int]:
    """Step 0 and ``points`` log-spaced steps up to ``steps``."""
    return sorted({0, *(round(s) for s in np.geomspace(1, steps, points))})


def train(
    width: int,
    mode: str,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    points: int,
    seed: int,
    a_scale: float,
) -> list[Row]:
    """Full-batch gradient descent on the MSE, measured at ``measure_steps``."""
    model = TwoLayer(x.shape[1], width, torch.Generator().manual_seed(seed + width), a_scale)
    if mode == "frozen":
        model.W.requires_grad_(False)  # measure() takes the trainable parameters: here a only
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    wanted = set(measure_steps(steps, points))
    rows: list[Row] = []
    for step in range(steps + 1):
        if step in wanted:
            m = specprobe.measure(model, (x, y), estimator="exact", adapter="regression")
            first = rows[0].chi_net if rows else m.chi_net
            rows.append(
                Row(
                    width,
                    mode,
                    step,
                    m.loss,
                    m.chi_net,
                    m.spectral_position,
                    m.normalized_position,
                    m.chi_net / first,
                    seed,
                )
            )
        if step == steps:
            break
        loss = ((model(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return rows


def tables(rows: Sequence[Row]) -> list[Table]:
    """A table per width: loss, amplification and D·χ_pos, frozen against feature learning."""
    out = []
    for width in sorted({r.width for r in rows}):
        runs = {mode: [r for r in rows if r.width == width and r.mode == mode] for mode in MODES}
        table = Table(title=f"width M = {width}", title_justify="left")
        table.add_column("step", justify="right")
        for name in ("loss", "χ_net/χ_net(0)", "D·χ_pos"):
            for mode in MODES:
                table.add_column(f"{name}\n{mode}", justify="right")
        for frozen, learning in zip(runs["frozen"], runs["feature learning"], strict=True):
            table.add_row(
                str(frozen.step),
                fmt(frozen.loss),
                fmt(learning.loss),
                f"{frozen.amplification:.6g}",
                f"{learning.amplification:.3g}",
                fmt(frozen.normalized_position),
                fmt(learning.normalized_position),
            )
        out.append(table)
    return out


def write_figure(rows: Sequence[Row], path: Path) -> Path | None:
    """Loss, amplification and D·χ_pos against step; None when matplotlib is missing."""
    try:
        from matplotlib import colormaps
        from matplotlib.figure import Figure
    except ImportError:
        return None
    widths = sorted({r.width for r in rows})
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (
        ("loss", "training loss (MSE)"),
        ("amplification", "χ_net(t) / χ_net(0)"),
        ("normalized_position", "spectral position D·χ_pos"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, width in enumerate(widths):
            colour = colormaps["viridis"](0.85 * i / max(1, len(widths) - 1))
            for mode, style in zip(MODES, ("--", "-"), strict=True):
                run = [r for r in rows if r.width == width and r.mode == mode and r.step > 0]
                ax.plot(
                    [r.step for r in run],
                    [getattr(r, key) for r in run],
                    style,
                    marker="o",
                    markersize=3,
                    color=colour,
                    label=f"M = {width}, {mode}",
                )
        ax.set_xscale("log")
        if key != "amplification":  # loss and position span decades; the trace ratio does not
            ax.set_yscale("log")
        ax.set_xlabel("gradient-descent step", fontsize=10)
        ax.set_ylabel(label, fontsize=10)
        ax.grid(True, alpha=0.3, linewidth=0.6)
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("dashed: frozen features (train a); solid: feature learning (train W and a)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=200)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the sweep, print the tables, write the figure; return the rows and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=1000, help="gradient-descent steps per run")
    parser.add_argument("--n", type=int, default=256, help="training points (= D, outputs measured)")
    parser.add_argument("--d", type=int, default=8, help="input dimension")
    parser.add_argument("--beta", type=float, default=1.0, help="power-law exponent of the target")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--a-scale", type=float, default=0.1, help="initial scale s of the output weights a")
    parser.add_argument("--points", type=int, default=7, help="log-spaced measurements per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=Path("random_features.png"))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (the tensors are tiny: one thread avoids synchronisation overhead)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    parser.add_argument(
        "--family-seeds",
        type=int,
        default=0,
        help="the family view across widths, frozen and learnt, from this many seeds (0: off)",
    )
    parser.add_argument("--family-figure", type=Path, default=Path("random_features_family.png"))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    x, y = make_task(args.n, args.d, args.beta, args.seed)
    rows: list[Row] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    seeds = [args.seed + i for i in range(max(1, args.family_seeds))]
    try:
        for seed in seeds:
            for width in args.widths:
                for mode in MODES:
                    rows.extend(
                        train(
                            width,
                            mode,
                            x,
                            y,
                            steps=args.steps,
                            lr=args.lr,
                            points=args.points,
                            seed=seed,
                            a_scale=args.a_scale,
                        )
                    )
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program (the tests)
    all_rows, rows = rows, [r for r in rows if r.seed == args.seed]
    summary = summarize(rows)
    figure = write_figure(rows, args.figure)
    views: dict[str, family.FamilySummary] = {}
    amplification: dict[str, tuple[float, float]] = {}
    family_figure = None
    if args.family_seeds:
        records = family_records(all_rows, d=args.d, n=args.n)
        views = {mode: family.summarize([r for r in records if r["mode"] == mode]) for mode in MODES}
        amplification = final_amplification(all_rows)
        family_figure = write_family_figure(views, amplification, args.family_figure)
    if not args.quiet:
        console = Console()
        for table in tables(rows):
            console.print(table)
        for line in summary_lines(summary):
            console.print(line)
        console.print(
            f"figure: {figure}"
            if figure
            else 'figure skipped: matplotlib is missing (pip install "specprobe[plots]")'
        )
        if views:
            console.print(family_table(views, amplification, len(seeds)))
            for mode, view in views.items():
                for fit in (view.reach_fit, view.loss_fit):
                    if fit is not None:
                        console.print(
                            f"{mode}: {fit.quantity} ∝ N^({fit.exponent:.2f} ± {fit.exponent_stderr:.2f}), "
                            f"R² {fit.r_squared:.2f}"
                        )
                console.print(f"[bold]{mode}[/bold]: {view.verdict.text}")
            console.print(f"family figure: {family_figure}")
        console.print(f"{time.perf_counter() - start:.1f} s")
    return {
        "rows": [asdict(r) for r in rows],
        "summary": summary,
        "figure": figure,
        "family": {mode: view.to_dict() for mode, view in views.items()},
        "family_amplification": amplification,
        "family_figure": family_figure,
    }


# ---- the family view: frozen against learnt features across widths ---------------------------


def family_records(rows: Sequence[Row], *, d: int, n: int) -> list[dict[str, object]]:
    """Results records (as ``specprobe analyze`` writes them) of the runs: one model per width
    and mode, one record per measured step with the mean over seeds and its standard error
    across seeds (0 with one seed: the exact estimator has no sampling error).

    N = M·(d + 1), the network's parameters, in both modes (frozen runs train only the M
    output weights, but the network is the same size); tokens_seen = step·n (full batch).
    """
    out: list[dict[str, object]] = []
    keys = sorted({(r.mode, r.width, r.step) for r in rows}, key=lambda k: (MODES.index(k[0]), k[1], k[2]))
    for mode, width, step in keys:
        group = [r for r in rows if (r.mode, r.width, r.step) == (mode, width, step)]

        def mean_se(values: list[float]) -> tuple[float, float]:
            a = np.asarray(values, dtype=float)
            return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0

        loss, loss_se = mean_se([r.loss for r in group])
        chi, chi_se = mean_se([r.chi_net for r in group])
        pos, pos_se = mean_se([r.spectral_position for r in group])
        out.append(
            {
                "model": f"{mode} M={width}",
                "label": f"{'frozen' if mode == 'frozen' else 'learnt'} M={width}",
                "mode": mode,
                "status": "ok",
                "revision": f"step{step}",
                "step": step,
                "tokens_seen": step * n,
                "num_params": width * (d + 1),
                "num_outputs": n,
                "loss": loss,
                "loss_stderr": loss_se,
                "chi_net": chi,
                "chi_net_stderr": chi_se,
                "spectral_position": pos,
                "spectral_position_stderr": pos_se,
                "seeds": len(group),
            }
        )
    return out


def final_amplification(rows: Sequence[Row]) -> dict[str, tuple[float, float]]:
    """χ_net(T)/χ_net(0) at the last step per model of :func:`family_records`: the mean over
    seeds of each seed's own ratio, ± its standard error across seeds. (The family view's
    amplification is the ratio of the mean χ_net values with their errors propagated as if
    independent; numerator and denominator come from the same runs, so that overstates the
    error: a frozen run's ratio is exactly 1 in every seed.)"""
    out = {}
    for mode, width in sorted({(r.mode, r.width) for r in rows}):
        runs = [r for r in rows if (r.mode, r.width) == (mode, width)]
        last = max(r.step for r in runs)
        ratios = np.asarray([r.amplification for r in runs if r.step == last], dtype=float)
        se = float(ratios.std(ddof=1) / math.sqrt(len(ratios))) if len(ratios) > 1 else 0.0
        out[f"{mode} M={width}"] = (float(ratios.mean()), se)
    return out


def family_table(
    views: dict[str, family.FamilySummary], amplification: dict[str, tuple[float, float]], seeds: int
) -> Table:
    """Per width and mode: reach, final loss and amplification at the last step (± se)."""
    table = Table(
        title=f"family view ({seeds} seed{'s' if seeds > 1 else ''}; ± standard error across seeds)"
    )
    for name in ("mode", "N", "reach D·χ_pos", "at step", "final loss", "χ_net(T)/χ_net(0)"):
        table.add_column(name, justify="right")
    for view in views.values():
        for r in view.reach:
            amp, amp_se = amplification[r.model]
            table.add_row(
                r.label,
                str(r.num_params),
                f"{r.reach:.3g} ± {r.reach_stderr:.2g}",
                str(r.step),
                f"{r.final_loss:.3g} ± {r.final_loss_stderr:.2g}",
                f"{amp:.3g} ± {amp_se:.2g}",
            )
    return table


def write_family_figure(
    views: dict[str, family.FamilySummary], amplification: dict[str, tuple[float, float]], path: Path
) -> Path | None:
    """Reach, final loss and final amplification against N, frozen (dashed) and learnt (solid)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    for mode, style in zip(MODES, ("--", "-"), strict=True):
        view = views[mode]
        sizes = [r.num_params for r in view.reach]
        finals = [amplification[r.model] for r in view.reach]
        panels = (
            (
                [r.reach for r in view.reach],
                [r.reach_stderr for r in view.reach],
                "spectral reach (lowest D·χ_pos)",
            ),
            (
                [r.final_loss for r in view.reach],
                [r.final_loss_stderr for r in view.reach],
                "final training loss",
            ),
            (
                [a for a, _ in finals],
                [se for _, se in finals],
                "χ_net(T) / χ_net(0)",
            ),
        )
        for ax, (values, errors, label) in zip(axes, panels, strict=True):
            ax.errorbar(sizes, values, yerr=errors, fmt="o" + style, capsize=2, markersize=4, label=mode)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes], fontsize=8)
            ax.minorticks_off()
            ax.set_xlabel("parameters N = M·(d + 1)", fontsize=10)
            ax.set_ylabel(label, fontsize=10)
            ax.grid(True, alpha=0.3, linewidth=0.6)
    axes[0].legend(fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def summarize(rows: Sequence[Row]) -> dict[int, dict[str, float]]:
    """Per width: frozen χ_net drift (max relative change), feature-learning amplification at
    the end, final losses, the frozen run's loss decrease over its last decade of steps, and
    D·χ_pos first and last of both runs."""
    out: dict[int, dict[str, float]] = {}
    for width in sorted({r.width for r in rows}):
        frozen = [r for r in rows if r.width == width and r.mode == "frozen"]
        learning = [r for r in rows if r.width == width and r.mode == "feature learning"]
        last_decade = [r for r in frozen if r.step >= frozen[-1].step / 10]
        out[width] = {
            "frozen_chi_net_drift": max(abs(r.chi_net / frozen[0].chi_net - 1) for r in frozen),
            "learning_amplification": learning[-1].amplification,
            "frozen_final_loss": frozen[-1].loss,
            "learning_final_loss": learning[-1].loss,
            "frozen_last_decade_drop": 1 - frozen[-1].loss / last_decade[0].loss,
            "frozen_position_first": frozen[0].normalized_position,
            "frozen_position_last": frozen[-1].normalized_position,
            "learning_position_first": learning[0].normalized_position,
            "learning_position_last": learning[-1].normalized_position,
        }
    return out


def summary_lines(summary: dict[int, dict[str, float]]) -> list[str]:
    lines = []
    for width, s in summary.items():
        lines.append(
            f"M = {width}: frozen χ_net drift {s['frozen_chi_net_drift']:.1e} (constant), feature learning "
            f"χ_net ×{s['learning_amplification']:.3g}; final loss frozen {s['frozen_final_loss']:.3g} "
            f"(−{100 * s['frozen_last_decade_drop']:.1f}% over the last decade of steps) against "
            f"{s['learning_final_loss']:.3g}; D·χ_pos frozen {s['frozen_position_first']:.3g} → "
            f"{s['frozen_position_last']:.3g}, feature learning {s['learning_position_first']:.3g} → "
            f"{s['learning_position_last']:.3g}"
        )
    return lines


if __name__ == "__main__":
    main()
