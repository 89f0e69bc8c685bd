"""Rendering with Rich: the one module that draws tables. Compute returns data; this shows it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from specprobe.sweep import Observer


def fmt(value: float, stderr: float | None = None) -> str:
    """A number in 4 significant digits, with ``± stderr`` when one is given and non-zero."""
    text = f"{value:.4g}"
    return f"{text} ± {stderr:.2g}" if stderr else text


@dataclass(frozen=True)
class CheckRow:
    """One compared quantity of the self-check: the fast path against the dense reference."""

    name: str
    measured: float
    reference: float
    tolerance: float
    stderr: float | None = None

    @property
    def error(self) -> float:
        """Relative error for exact quantities; distance in standard errors for estimates."""
        if self.stderr:
            return abs(self.measured - self.reference) / self.stderr
        return abs(self.measured - self.reference) / max(abs(self.reference), 1e-300)

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance


def selftest_table(rows: Sequence[CheckRow], title: str) -> Table:
    """The self-check as a table: value, reference, error and verdict per quantity."""
    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("specprobe", justify="right")
    table.add_column("dense reference", justify="right")
    table.add_column("error", justify="right")
    table.add_column("", justify="center")
    for row in rows:
        unit = " se" if row.stderr else " rel"
        table.add_row(
            row.name,
            fmt(row.measured, row.stderr),
            fmt(row.reference),
            f"{row.error:.1e}{unit}",
            "[green]ok[/]" if row.ok else "[red]FAIL[/]",
        )
    return table


# ---- sweep reports -------------------------------------------------------------------------


def _se(record: dict[str, Any], name: str) -> str:
    return fmt(record[name], record.get(f"{name}_stderr"))


def _status(record: dict[str, Any]) -> str:
    if record.get("status") != "ok":
        return f"[red]failed[/]: {record.get('error') or 'unknown error'}"
    if record.get("duplicate_of"):
        return f"[yellow]duplicate of {record['duplicate_of']}[/]"
    return "[green]ok[/]"


def group_by_model(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records per model, each list sorted by step (revisions without a step keep their order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["model"], []).append(record)
    for rows in groups.values():
        rows.sort(key=lambda r: (r.get("step") is None, r.get("step") or 0))
    return groups


def model_table(model: str, rows: Sequence[dict[str, Any]]) -> Table:
    """One model over its revisions: the decomposition, position and amplification.

    Optional columns appear when the records carry them: the head-only (frozen-feature)
    position when a layer decomposition was measured.
    """
    label = rows[0].get("label") or model
    ok = [r for r in rows if r.get("status") == "ok"]
    first = ok[0] if ok else None
    params = f", {ok[0]['num_params']:,} parameters" if ok and ok[0].get("num_params") else ""
    per_batch = f", D = {ok[0]['num_outputs']:,} outputs per batch" if ok else ""
    table = Table(title=f"{label}{params}{per_batch}", title_justify="left")
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("loss", lambda r: _se(r, "loss")),
        ("χ_loss", lambda r: fmt(r["chi_loss"])),
        ("χ_net", lambda r: _se(r, "chi_net")),
        ("‖∇L‖²", lambda r: fmt(r["grad_norm_sq"])),
        ("χ_pos", lambda r: _se(r, "spectral_position")),
        ("D·χ_pos", lambda r: fmt(r["normalized_position"])),
        ("χ_net/χ_net₀", lambda r: f"{r['chi_net'] / first['chi_net']:.3g}" if first else ""),
    ]
    if any(_head(r) is not None for r in ok):
        columns.append(("χ_pos head only", lambda r: fmt(h["spectral_position"]) if (h := _head(r)) else ""))
    if any(r.get("spectrum") for r in ok):
        columns += [
            ("position index", lambda r: _position_index(r.get("spectrum"))),
            ("top-K mass", lambda r: _spec(r, "captured_residual_mass", "{:.1%}")),
            ("eff. rank", lambda r: _spec(r, "effective_rank", "{:.4g}")),
            ("λ_k ∝ k^-α", lambda r: _spec(r, "power_law_alpha", "α={:.2f}")),
        ]
    table.add_column("revision")
    table.add_column("step", justify="right")
    table.add_column("tokens seen", justify="right")
    for header, _ in columns:
        table.add_column(header, justify="right")
    table.add_column("status")
    for r in rows:
        cells = [render(r) for _, render in columns] if r.get("status") == "ok" else [""] * len(columns)
        table.add_row(r["revision"], _opt(r.get("step")), _tokens(r.get("tokens_seen")), *cells, _status(r))
    return table


def _spec(record: dict[str, Any], key: str, pattern: str) -> str:
    value = (record.get("spectrum") or {}).get(key)
    return pattern.format(value) if value is not None else ""


def _position_index(spectrum: dict[str, Any] | None) -> str:
    """``k*`` when counted from converged top-K pairs; ``≈k* ± se`` from the SLQ density;
    ``> K`` when it lies beyond the top K and no density was computed."""
    if not spectrum:
        return ""
    index = spectrum.get("position_index")
    if index is None:
        bound = spectrum.get("position_index_lower_bound")
        return f"> {bound}" if bound is not None else ""
    if spectrum.get("position_index_is_estimate"):
        return f"≈{index:.4g} ± {spectrum.get('position_index_stderr') or 0:.2g}"
    return f"{int(index)}"


SPARK = "▁▂▃▄▅▆▇█"


def density_line(record: dict[str, Any]) -> str | None:
    """The SLQ eigenvalue density of a record as one line: counts per log-spaced bin."""
    density = (record.get("spectrum") or {}).get("spectral_density")
    if not density:
        return None
    # Bar heights on a log scale of the counts: a few large eigenvalues stay visible beside
    # the bulk of (near-)zero ones.
    counts = [math.log1p(max(c or 0.0, 0.0)) for c in density["counts"]]
    top = max(counts) or 1.0
    bars = "".join(SPARK[min(len(SPARK) - 1, int(len(SPARK) * c / top))] if c > 0.01 else " " for c in counts)
    lo, hi = density["edges"][0], density["edges"][-1]
    label = f"{record.get('label') or record['model']} @ {record['revision']}"
    return f"eNTK eigenvalue density of {label} (SLQ; λ from {lo:.2g} to {hi:.2g} on a log axis; log counts): {bars}"


def _head(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's ``head`` group (the frozen-feature counterfactual), if measured."""
    for group in record.get("groups") or ():
        if group["name"] == "head":
            return dict(group)
    return None


def groups_table(record: dict[str, Any]) -> Table:
    """Which layers carry the kernel: each group's share of χ_net and ‖∇L‖², and its
    position when θ is restricted to it (for the head: the frozen-feature counterfactual)."""
    table = Table(
        title=f"layer decomposition of {record.get('label') or record['model']} @ {record['revision']}",
        title_justify="left",
    )
    for col in ("group", "parameters", "χ_net", "share of χ_net", "share of ‖∇L‖²", "χ_pos (θ = group)"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for g in record.get("groups") or ():
        table.add_row(
            g["name"],
            f"{g['num_params']:,}",
            fmt(g["chi_net"], g.get("chi_net_stderr")),
            f"{g['chi_net_share']:.1%}",
            f"{g['grad_norm_sq_share']:.1%}",
            fmt(g["spectral_position"]),
        )
    table.add_row(
        "all",
        "",
        fmt(record["chi_net"], record.get("chi_net_stderr")),
        "100%",
        "100%",
        fmt(record["spectral_position"]),
    )
    return table


def comparison_table(groups: dict[str, list[dict[str, Any]]]) -> Table:
    """Across models: size, final loss, and the lowest spectral position reached."""
    table = Table(title="comparison across models", title_justify="left")
    for col in ("model", "parameters", "final loss", "lowest χ_pos", "at revision", "lowest D·χ_pos"):
        table.add_column(col, justify="left" if col in ("model", "at revision") else "right")

    def size(item: tuple[str, list[dict[str, Any]]]) -> int:
        ok = [r for r in item[1] if r.get("status") == "ok"]
        return int(ok[0].get("num_params") or 0) if ok else 0

    for model, rows in sorted(groups.items(), key=size):
        ok = [r for r in rows if r.get("status") == "ok" and not r.get("duplicate_of")]
        if not ok:
            table.add_row(rows[0].get("label") or model, "", "", "", "[red]no successful revision[/]", "")
            continue
        low = min(ok, key=lambda r: r["spectral_position"])
        table.add_row(
            rows[0].get("label") or model,
            f"{ok[0].get('num_params', 0):,}",
            _se(ok[-1], "loss"),
            _se(low, "spectral_position"),
            low["revision"],
            fmt(low["normalized_position"]),
        )
    return table


def run_notes(records: Sequence[dict[str, Any]]) -> list[str]:
    """Things a reader must know: failures, duplicated weights, differing data subsets."""
    notes = []
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        names = ", ".join(f"{r['model']}@{r['revision']}" for r in failed)
        notes.append(f"[red]{len(failed)} checkpoint(s) failed[/]: {names}")
    for r in records:
        if r.get("duplicate_of"):
            notes.append(
                f"[yellow]{r['model']}@{r['revision']} has the same weights as {r['duplicate_of']}[/] "
                "(fingerprint match): the published revision likely serves the wrong checkpoint"
            )
    subsets: dict[str, set[str]] = {}
    for r in records:
        if r.get("dataset_fingerprint"):
            subsets.setdefault(r["dataset_fingerprint"], set()).add(r.get("label") or r["model"])
    if len(subsets) > 1:
        groups = "; ".join(", ".join(sorted(models)) for models in subsets.values())
        notes.append(
            f"models with different tokenizers were measured on their own token subsets ({groups}): "
            "their losses and positions are not on the same data; compare D·χ_pos"
        )
    return notes


def render_run(records: Sequence[dict[str, Any]], console: Console) -> None:
    """The full report of a run: a table per model, the comparison, and the notes."""
    if not records:
        console.print("no records yet")
        return
    groups = group_by_model(records)
    for model, rows in groups.items():
        console.print(model_table(model, rows))
        decomposed = [r for r in rows if r.get("status") == "ok" and r.get("groups")]
        if decomposed:
            console.print(groups_table(decomposed[-1]))
        with_density = [line for r in rows if r.get("status") == "ok" and (line := density_line(r))]
        if with_density:
            console.print(with_density[-1], highlight=False)
    if len(groups) > 1:
        console.print(comparison_table(groups))
    family_report(records, console)
    for note in run_notes(records):
        console.print(note)


def _opt(value: Any) -> str:
    return "" if value is None else str(value)


def _tokens(value: int | None) -> str:
    if value is None:
        return ""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return str(value)


class SweepProgress(Observer):
    """A Rich progress display for ``run_sweep``: checkpoints overall, batches of the current one."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.overall = self.progress.add_task("preparing", total=None)
        self.batches = self.progress.add_task("", total=None, visible=False)

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def planned(self, checkpoints: Sequence[Any]) -> None:
        self.progress.update(self.overall, description="checkpoints", total=len(checkpoints), completed=0)

    def preparing(self, what: str) -> None:
        self.progress.update(self.overall, description=what)

    def loading(self, checkpoint: Any) -> None:
        self.progress.update(self.overall, description=f"loading {checkpoint.model} @ {checkpoint.revision}")

    def measuring(self, checkpoint: Any, batches: int) -> None:
        self.progress.update(self.overall, description=f"{checkpoint.model} @ {checkpoint.revision}")
        self.progress.reset(self.batches, total=batches, description="  batches", visible=True)

    def batch_done(self, checkpoint: Any, index: int) -> None:
        self.progress.advance(self.batches)

    def finished(self, checkpoint: Any, record: dict[str, Any]) -> None:
        self.progress.advance(self.overall)
        self.progress.update(self.batches, visible=False)
        if record.get("status") != "ok":
            self.progress.console.print(
                f"[red]failed[/] {checkpoint.model} @ {checkpoint.revision}: {record.get('error')}"
            )

    def skipped(self, checkpoint: Any, record: dict[str, Any]) -> None:
        self.progress.advance(self.overall)


def recipes_table(rows: Sequence[tuple[str, int, str]]) -> Table:
    """Bundled recipes: name, number of models, description (what a run costs)."""
    table = Table(title="bundled recipes (specprobe run NAME)", title_justify="left")
    table.add_column("name")
    table.add_column("models", justify="right")
    table.add_column("description")
    for name, models, description in rows:
        table.add_row(name, str(models), description)
    return table


# ---- family view ---------------------------------------------------------------------------


def family_report(records: Sequence[dict[str, Any]], console: Console) -> None:
    """The family view: reach per model ranked by size, power-law fits, gradient
    amplification, a text chart of position against compute, and the verdict paragraph."""
    from rich.panel import Panel

    from specprobe.family import Position, analysed, summarize
    from specprobe.plots import position_chart

    if len(analysed(records)) < 2:
        return
    summary = summarize(records)
    scale = "D·χ_pos" if summary.position is Position.NORMALIZED else "χ_pos"
    table = Table(title=f"spectral reach (lowest {scale} over the revisions), by size", title_justify="left")
    for col in ("model", "parameters", "reach", "at", "χ_pos there", "final loss", "χ_net growth"):
        table.add_column(col, justify="left" if col in ("model", "at") else "right")
    growth = {a.model: a for a in summary.amplification}
    for r in summary.reach:
        amp = growth.get(r.model)
        last = amp.points[-1].amplification if amp is not None and amp.points else None
        table.add_row(
            r.label,
            f"{r.num_params:,}" if r.num_params else "",
            fmt(r.reach, r.reach_stderr),
            r.revision
            + (f" (step {r.step})" if r.step is not None and str(r.step) not in r.revision else ""),
            fmt(r.spectral_position, r.spectral_position_stderr),
            fmt(r.final_loss, r.final_loss_stderr),
            f"×{last:.3g}" if last is not None else "",
        )
    console.print(table)
    for fit in (summary.loss_fit, summary.reach_fit):
        if fit is not None:
            console.print(
                f"power law across sizes: {fit.quantity} ∝ N^{fit.exponent:.3f} ± {fit.exponent_stderr:.2g} "
                f"(R² {fit.r_squared:.2f}, {fit.num_points} sizes)",
                highlight=False,
            )
    for note in summary.notes:
        console.print(note, highlight=False)
    chart = position_chart(records)
    if chart:
        console.print("\n".join(chart), highlight=False, markup=False)
    console.print(
        Panel(summary.verdict.text, title="verdict (computed from the numbers above)", expand=False)
    )


class TrainingDisplay:
    """A Rich progress display for the demo's training: one bar per model, loss and ETA."""

    def __init__(self, console: Console, models: Sequence[str], steps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("training {task.description:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks = {m: self.progress.add_task(m, total=steps, loss="") for m in models}

    def __enter__(self) -> TrainingDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, event: Any) -> None:
        """The ``progress_callback`` of ``specprobe.demo.train_family``."""
        self.progress.update(self.tasks[event.model], completed=event.step, loss=f"{event.loss:.3f}")
