"""Figures of the family view (matplotlib, optional) and a plain-text chart for terminals.

``write_figures(records, out_dir)`` writes, each as PNG and SVG:

* ``loss_vs_size``: final loss and spectral reach against parameters N, with power-law
  fits (from three sizes on);
* ``position_vs_compute``: D·χ_pos against training compute C = 6·N·T, one line per model;
* ``amplification``: χ_net(t)/χ_net(t₀) against training step, one line per model;
* ``spectra``: normalised eNTK eigenvalues λ_k/Tr Θ against k with the spectral position
  marked, only when records carry eigenvalues (``eigen_top``: λ₁ ≥ λ₂ ≥ …).

matplotlib is imported only when a figure is drawn (``pip install "specprobe[plots]"``);
figures are drawn on ``matplotlib.figure.Figure`` objects directly (the Agg renderer, no
pyplot, no display, no global state). :func:`position_chart` needs nothing but the records.
Positions are on the one scale :func:`~specprobe.analysis.position.choose_position` picks.
Labels from user text go through :func:`_label` (``$`` escaped: a label holding TeX is
text, not mathtext), and a figure with nothing to draw is None rather than an empty axis
with a warning.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from specprobe.analysis.family import (
    MIN_FIT_SIZES,
    Position,
    PositionSeries,
    amplification,
    analysed,
    fit_power_law,
    position_vs_compute,
    spectral_reach,
)
from specprobe.analysis.position import choose_position
from specprobe.errors import SpecprobeError
from specprobe.report.tables import checkpoint_name, one_line
from specprobe.store.folder import atomic_write, check_output
from specprobe.store.records import Record
from specprobe.text import count

EIGEN_KEY: Final = "eigen_top"
"""Record key of the top eNTK eigenvalues (descending), when the sweep computed them."""

FORMATS = ("png", "svg")
_POSITION_LABEL = {
    Position.POPULATION: f"population position {Position.POPULATION.symbol}",
    Position.NORMALIZED: f"spectral position {Position.NORMALIZED.symbol} (1 = unaligned)",
    Position.RAW: f"spectral position {Position.RAW.symbol}",
}


def _label(text: object) -> str:
    """User text as matplotlib shows it literally: one line, every ``$`` escaped (else a
    pair starts mathtext, and ``$\\frac{`` raises), and a leading ``_`` kept visible
    (legends hide labels that start with one)."""
    out = one_line(text).replace("$", r"\$")
    return f" {out}" if out.startswith("_") or not out else out


def _legend(ax: Any) -> None:
    """The legend, when some artist has a label (an empty legend is a matplotlib warning)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)


def _matplotlib() -> Any:
    """The matplotlib module, or a SpecprobeError that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise SpecprobeError(
            "figures need matplotlib, which is not installed", 'pip install "specprobe[plots]"'
        ) from None
    return matplotlib


def _figure(width: float = 5.0, height: float = 3.6) -> Any:
    _matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _style(ax: Any) -> None:
    ax.grid(True, which="major", alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _readable_log(ax: Any) -> None:
    """Plain numbers (0.3, 2, 50) on a log y axis, and labelled minor ticks (2, 5 ×10^k) only
    when the axis spans less than two decades (else they crowd)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis = ax.yaxis
    low, high = sorted(ax.get_ylim())  # get_ylim settles the autoscaled limits
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    if low > 0 and high / low < 100:

        def minor(v: float, _: Any) -> str:
            mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
            return f"{v:g}" if round(mantissa) in (2, 5) and abs(mantissa - round(mantissa)) < 1e-6 else ""

        axis.set_minor_formatter(FuncFormatter(minor))
    else:
        axis.set_minor_formatter(NullFormatter())


def _size_ticks(ax: Any, sizes: Sequence[float]) -> None:
    """Ticks at the model sizes, labelled 18.9k, 495k, … (the sizes a reader looks for)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(sorted(set(sizes))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([count(s) for s in sorted(set(sizes))])


def _spans_decades(values: Sequence[float], ratio: float = 10.0) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and bool(positive) and max(positive) / min(positive) >= ratio


def _colours(n: int) -> list[Any]:
    _matplotlib()
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(1, n - 1)) for i in range(n)]


def _params(n: int | None) -> str:
    return "? parameters" if n is None else f"{count(n)} parameters"


# ---- figures ---------------------------------------------------------------------------------


def uses_compute(series: Sequence[PositionSeries]) -> bool:
    """Whether position is drawn against compute C = 6·N·T (some revision knows its tokens
    seen) or against the training step: the one choice of the figure, the text chart and
    the HTML caption (:func:`position_axis`)."""
    return any(p.compute for s in series for p in s.points)


def position_axis(records: Sequence[Record], position: Position | str | None = None) -> str:
    """What the position figure's horizontal axis is, in words: ``training compute C =
    6·N·T`` or ``training step`` (when no record knows its tokens seen)."""
    series = position_vs_compute(records, choose_position(records, position))
    return "training compute C = 6·N·T" if uses_compute(series) else "training step"


def loss_vs_size_figure(records: Sequence[Record], position: Position | str | None = None) -> Any:
    """Two panels against N (log–log): final loss, and spectral reach, with power-law fits
    (exponent ± its standard error in the legend) where there are at least three sizes.
    Returns a matplotlib Figure."""
    position = choose_position(records, position)
    reaches = [r for r in spectral_reach(records, position) if r.num_params is not None]
    fig = _figure(8.0, 3.4)
    axes = fig.subplots(1, 2)
    panels = (
        (
            "final_loss",
            [r.final_loss for r in reaches],
            [r.final_loss_stderr for r in reaches],
            "final loss (cross-entropy, nats/token)",
            "L",
        ),
        (
            "reach",
            [r.reach for r in reaches],
            [r.reach_stderr for r in reaches],
            f"spectral reach, lowest {position.symbol}",
            "reach",
        ),
    )
    sizes = [float(r.num_params or 0) for r in reaches]
    colours = _colours(len(reaches))
    for ax, (quantity, values, errors, label, symbol) in zip(axes, panels, strict=True):
        for x, y, e, c, r in zip(sizes, values, errors, colours, reaches, strict=True):
            ax.errorbar(
                x, y, yerr=e or None, fmt="o", color=c, capsize=3, markersize=6, label=_label(r.label)
            )
        if len(set(sizes)) >= MIN_FIT_SIZES and all(v > 0 for v in values):
            fit = fit_power_law(sizes, values, quantity)
            lo, hi = min(sizes), max(sizes)
            xs = [lo * (hi / lo) ** (i / 49) for i in range(50)]
            ax.plot(
                xs,
                [fit.predict(x) for x in xs],
                "--",
                color="0.3",
                linewidth=1.2,
                label=f"{symbol} ∝ N^({fit.exponent:.3f} ± {fit.exponent_stderr:.2g})  (R² = {fit.r_squared:.2f})",
            )
        ax.set_xscale("log")
        _size_ticks(ax, sizes)
        if _spans_decades(values):
            ax.set_yscale("log")
            _readable_log(ax)
        ax.set_xlabel("parameters N", fontsize=10)
        ax.set_ylabel(label, fontsize=10)
        _style(ax)
        _legend(ax)
    axes[0].set_title("loss against size", fontsize=10)
    axes[1].set_title("spectral reach against size", fontsize=10)
    return fig


def position_vs_compute_figure(
    records: Sequence[Record], position: Position | str | None = None
) -> Any | None:
    """Spectral position against training compute C = 6·N·T (FLOPs, log axis), one line per
    model ordered by size; against step when no record knows its tokens seen. None when no
    revision has a place on the axis (no step, or only step 0)."""
    position = choose_position(records, position)
    series = position_vs_compute(records, position)
    use_compute = uses_compute(series)
    fig = _figure()
    ax = fig.subplots()
    values: list[float] = []
    for s, colour in zip(series, _colours(len(series)), strict=True):
        xs, ys, es = _series_xy(s, use_compute)
        if not xs:
            continue
        values.extend(ys)
        _series_line(ax, xs, ys, es, colour, f"{_label(s.label)} ({_params(s.num_params)})")
    if not values:
        return None
    ax.set_xscale("log")
    if _spans_decades(values):
        ax.set_yscale("log")
        _readable_log(ax)
    if position is Position.NORMALIZED:
        ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel("training compute C = 6·N·T (FLOPs)" if use_compute else "training step", fontsize=10)
    ax.set_ylabel(_POSITION_LABEL[position], fontsize=10)
    ax.set_title("spectral position during training", fontsize=10)
    _style(ax)
    _legend(ax)
    return fig


def _series_line(
    ax: Any, xs: Sequence[float], ys: Sequence[float], errors: Sequence[float], colour: Any, label: str
) -> None:
    """One model's values over training: markers joined by a line, with error bars."""
    ax.errorbar(
        xs, ys, yerr=errors, fmt="o-", color=colour, capsize=2, markersize=4, linewidth=1.3, label=label
    )


def _series_xy(s: PositionSeries, use_compute: bool) -> tuple[list[float], list[float], list[float]]:
    xs, ys, es = [], [], []
    for p in s.points:
        x = p.compute if use_compute else p.step
        if x is None or x <= 0:  # no tokens known, or step 0: no place on a log axis
            continue
        xs.append(float(x))
        ys.append(p.position)
        es.append(p.position_stderr)
    return xs, ys, es


def amplification_figure(records: Sequence[Record]) -> Any | None:
    """Gradient amplification χ_net(t)/χ_net(t₀) against training step, one line per model;
    None when no revision knows its step."""
    series = amplification(records)
    fig = _figure()
    ax = fig.subplots()
    ratios: list[float] = []
    steps: list[float] = []
    for s, colour in zip(series, _colours(len(series)), strict=True):
        pts = [p for p in s.points if p.step is not None]
        if not pts:
            continue
        xs = [float(p.step or 0) for p in pts]
        ys = [p.amplification for p in pts]
        steps.extend(xs)
        ratios.extend(ys)
        _series_line(
            ax,
            xs,
            ys,
            [p.amplification_stderr for p in pts],
            colour,
            f"{_label(s.label)} ({_params(s.num_params)})",
        )
    if not steps:
        return None
    if steps and min(steps) <= 0:
        ax.set_xscale("symlog", linthresh=1.0)
    elif _spans_decades(steps):
        ax.set_xscale("log")
    if _spans_decades(ratios):
        ax.set_yscale("log")
        _readable_log(ax)
    ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel("training step", fontsize=10)
    ax.set_ylabel("gradient amplification χ_net(t) / χ_net(t₀)", fontsize=10)
    ax.set_title("eNTK trace relative to the first checkpoint", fontsize=10)
    _style(ax)
    _legend(ax)
    return fig


def has_spectra(records: Sequence[Record]) -> bool:
    """Whether any analysed record carries eigenvalues under :data:`EIGEN_KEY`."""
    return any(r.get(EIGEN_KEY) for rows in analysed(records).values() for r in rows)


def spectra_figure(records: Sequence[Record]) -> Any | None:
    """λ_k/Tr Θ against k (log–log) for the last analysed revision of each model that has
    eigenvalues, with the spectral position χ_pos marked (a dotted line at λ/TrΘ = χ_pos, and
    the position index k* = #{k : λ_k ≥ χ_pos·TrΘ} when it lies inside the known top-k).
    None when no record has eigenvalues."""
    chosen = []
    for rows in analysed(records).values():
        with_eigen = [r for r in rows if r.get(EIGEN_KEY)]
        if with_eigen:
            chosen.append(with_eigen[-1])
    if not chosen:
        return None
    fig = _figure()
    ax = fig.subplots()
    marked = False
    longest = 1
    for r, colour in zip(chosen, _colours(len(chosen)), strict=True):
        eig = [math.nan if v is None else float(v) for v in r[EIGEN_KEY]]
        trace = float(r.get("chi_net") or sum(eig))
        norm = [v / trace for v in eig if v > 0]
        ks = list(range(1, len(norm) + 1))
        longest = max(longest, len(norm))
        label = _label(checkpoint_name(r))
        ax.plot(ks, norm, "-", color=colour, linewidth=1.4, label=label)
        pos = float(r["spectral_position"])
        ax.axhline(pos, color=colour, linestyle=":", linewidth=1)
        k_star = sum(v >= pos for v in norm)
        # Marked only inside the known eigenvalues: below the last one k* lies past them.
        if 1 <= k_star < len(norm):
            ax.plot([k_star], [norm[k_star - 1]], "v", color=colour, markersize=7)
            marked = True
    # The legend explains only what is drawn: the dotted lines always, ▼ when some is.
    ax.plot([], [], ":", color="0.4", linewidth=1, label="χ_pos (λ/Tr Θ at the position)")
    if marked:
        ax.plot([], [], "v", color="0.4", linestyle="none", markersize=6, label="position index k*")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _index_ticks(ax, longest)
    _readable_log(ax)
    ax.set_xlabel("eigenvalue index k", fontsize=10)
    ax.set_ylabel("normalised eigenvalue λ_k / Tr Θ", fontsize=10)
    ax.set_title("eNTK spectrum", fontsize=10)
    _style(ax)
    _legend(ax)
    return fig


def _index_ticks(ax: Any, largest: int) -> None:
    """Whole indices on the log k axis, labelled as plain numbers (1, 2, 5, 10, 20, …; every
    index up to 10 when there are at most 10), never 2×10⁰."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    if largest <= 10:
        ticks = list(range(1, largest + 1))
    else:
        ticks = [
            m * 10**e for e in range(int(math.log10(largest)) + 1) for m in (1, 2, 5) if m * 10**e <= largest
        ]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def write_figures(
    records: Sequence[Record],
    out_dir: Path | str,
    *,
    position: Position | str | None = None,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Draw the family figures and write each in every format; return the files written.

    A figure with nothing to draw is skipped: the spectra when no record carries
    eigenvalues, position and amplification when no revision knows its step. PNGs are 200 dpi.

    Raises:
        SpecprobeError: matplotlib is missing (hint: the ``plots`` extra), or no record was
            analysed successfully.
    """
    _matplotlib()
    if not analysed(records):
        raise SpecprobeError(
            "expected at least one successfully analysed record to plot, found none",
            "run specprobe analyze first; failed and duplicate revisions are not plotted",
        )
    out = check_output(out_dir, "the figures folder", folder=True)
    out.mkdir(parents=True, exist_ok=True)
    drawn = {
        "loss_vs_size": loss_vs_size_figure(records, position),
        "position_vs_compute": position_vs_compute_figure(records, position),
        "amplification": amplification_figure(records),
        "spectra": spectra_figure(records),
    }
    figures = {name: fig for name, fig in drawn.items() if fig is not None}
    written = []
    for name, fig in figures.items():
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            image = io.BytesIO()  # drawn in memory, written by the one writer
            fig.savefig(image, dpi=200 if fmt == "png" else None, format=fmt)
            atomic_write(path, image.getvalue(), what="the figures")
            written.append(path)
    return written


# ---- text chart --------------------------------------------------------------------------------

MARKERS = "123456789abcdefghijklmnopqrstuvwxyz"


def position_chart(
    records: Sequence[Record],
    *,
    width: int = 60,
    height: int = 14,
    position: Position | str | None = None,
) -> list[str]:
    """Spectral position against compute as plain text lines (no colour, no markup).

    A log–log grid of ``width × height`` characters, one marker per model (``1`` for the
    smallest, ``2`` …; ``*`` where several fall on one cell), axis labels at the corners,
    and a legend line per model (and one for ``*`` when it appears). Against training step when tokens seen are unknown.
    Returns an empty list when there is nothing to place.
    """
    position = choose_position(records, position)
    series = position_vs_compute(records, position)
    use_compute = uses_compute(series)
    points: list[tuple[float, float, str]] = []
    for index, s in enumerate(series):
        xs, ys, _ = _series_xy(s, use_compute)
        points.extend((x, y, MARKERS[index % len(MARKERS)]) for x, y in zip(xs, ys, strict=True) if y > 0)
    if not points:
        return []
    lx = [math.log10(x) for x, _, _ in points]
    ly = [math.log10(y) for _, y, _ in points]
    x0, x1 = min(lx), max(lx)
    y0, y1 = min(ly), max(ly)
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    grid = [[" "] * width for _ in range(height)]
    for (_, _, mark), u, v in zip(points, lx, ly, strict=True):
        col = round((u - x0) / (x1 - x0) * (width - 1))
        line = height - 1 - round((v - y0) / (y1 - y0) * (height - 1))
        grid[line][col] = mark if grid[line][col] in (" ", mark) else "*"
    top, bottom = f"{10**y1:.3g}", f"{10**y0:.3g}"
    pad = max(len(top), len(bottom))
    lines = [f"{position.symbol} (log) against {'compute C = 6·N·T, FLOPs' if use_compute else 'step'} (log)"]
    for i, cells in enumerate(grid):
        label = top if i == 0 else bottom if i == height - 1 else ""
        lines.append(f"{label:>{pad}} |{''.join(cells)}")
    lines.append(" " * pad + " +" + "-" * width)
    left, right = f"{10**x0:.3g}", f"{10**x1:.3g}"
    lines.append(" " * (pad + 2) + left + " " * max(1, width - len(left) - len(right)) + right)
    for index, s in enumerate(series):
        lines.append(f"  {MARKERS[index % len(MARKERS)]}  {one_line(s.label)} ({_params(s.num_params)})")
    if any("*" in cells for cells in grid):
        lines.append("  *  several models in one cell")
    return lines
