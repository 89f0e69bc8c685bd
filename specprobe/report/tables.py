"""The report's tables as data: columns in order of importance, cells with text and sort key.

``terminal.py`` renders these with Rich and fits them to the terminal (dropping the least
important columns first); ``html.py`` renders the same tables as sortable HTML. Nothing
here draws or prints.

Cells are compact: a value and its standard error share one cell, the value rounded to the
precision of its error (``2.92 ± 0.05``, ``1.32e6 ± 3.9e4``), and revisions that share a
prefix lose it (``checkpoint-1024`` shows as ``1024`` under the header ``checkpoint``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from specprobe.analysis.family import FamilySummary, SizeGroup
from specprobe.analysis.position import (
    Position,
    group_by_model,
    ordered,
    population_problem,
    position_value,
    read,
    run_of,
    unit,
    usable,
)
from specprobe.errors import SpecprobeError
from specprobe.store.records import GroupRow, Record
from specprobe.text import count, number, percent, value_error

# ---- user text -------------------------------------------------------------------------------


def one_line(text: object) -> str:
    """User text (a model folder, a revision, a label) as one printable line: characters
    that are not printable — line and paragraph separators (U+2028, U+2029), control
    characters, escape sequences — are shown as their escape (``\\u2028``), so a name never
    breaks a table row, a legend or a terminal. Markup is the renderers' to neutralise."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


# ---- revisions -------------------------------------------------------------------------------

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def short_revisions(
    revisions: Sequence[str], steps: Sequence[int | None] | None = None
) -> tuple[str, dict[str, str]]:
    """A header and a short label per revision: when every revision is one prefix and a
    number (``checkpoint-1024``, ``step143000``), the prefix moves into the header
    (``checkpoint``, ``step``) and the cells keep the number; otherwise ``revision`` and
    the revisions unchanged. Distinct revisions stay distinct either way. With ``steps``
    (each revision's parsed step), only when every number is its revision's step: an
    unparsed ``ckpt_000100`` (a data chunk) stays whole, never shown as if parsed."""
    unique = list(dict.fromkeys(revisions))
    matches = [_NUMBERED.match(r) for r in unique]
    prefixes = {m.group(1) for m in matches if m}
    if steps is not None:
        stated = dict(zip(revisions, steps, strict=True))
        if any(m is None or stated.get(r) != int(m.group(2)) for r, m in zip(unique, matches, strict=True)):
            return "revision", {r: r for r in unique}
    if unique and all(matches) and len(prefixes) == 1:
        prefix = prefixes.pop()
        header = prefix.rstrip("-_ .=/")
        short = {r: m.group(2) for r, m in zip(unique, matches, strict=True) if m}
        if header and len(set(short.values())) == len(short):
            return header, short
    return "revision", {r: r for r in unique}


# ---- tables ----------------------------------------------------------------------------------


class Tone(str, Enum):
    """How a cell reads at a glance (the renderers colour it)."""

    PLAIN = "plain"
    GOOD = "good"
    WARN = "warn"
    BAD = "bad"


@dataclass(frozen=True)
class Cell:
    """One cell: the text shown, and the key a sortable table orders by (None sorts last)."""

    text: str
    sort: float | str | None = None
    tone: Tone = Tone.PLAIN


@dataclass(frozen=True)
class Column:
    """A column; ``essential`` ones are never dropped to fit a narrow terminal."""

    header: str
    numeric: bool = True
    essential: bool = False
    help: str = ""


@dataclass(frozen=True)
class TableData:
    """A table: columns in order of importance (renderers drop from the end), and rows."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    kind: str = "table"
    """What the table shows (``model``, ``groups``, ``comparison``, ``reach``)."""

    def keep(self, indices: Sequence[int]) -> TableData:
        """The same table with only the columns at ``indices`` (in their order)."""
        return TableData(
            title=self.title,
            columns=tuple(self.columns[i] for i in indices),
            rows=tuple(tuple(row[i] for i in indices) for row in self.rows),
            kind=self.kind,
        )


@dataclass
class _Builder:
    columns: list[tuple[Column, Callable[[Record], Cell]]] = field(default_factory=list)

    def add(self, column: Column, cell: Callable[[Record], Cell]) -> None:
        self.columns.append((column, cell))


def _est(record: Mapping[str, Any], name: str) -> Cell:
    """The estimate ``name`` of a record or a group, with its ``<name>_stderr``."""
    value = record.get(name)
    if value is None:
        return Cell("")
    return Cell(value_error(value, record.get(f"{name}_stderr")), float(value))


def _head(record: Record) -> GroupRow | None:
    """The record's ``head`` group (the frozen-feature counterfactual), if measured."""
    for group in record.get("groups") or ():
        if group["name"] == "head":
            return group
    return None


def _spec(record: Record, key: str, text: Callable[[float], str]) -> Cell:
    value = (record.get("spectrum") or {}).get(key)
    return Cell(text(value), float(value)) if value is not None else Cell("")


def position_index(spectrum: dict[str, Any] | None) -> Cell:
    """``k*`` when counted from converged top-K pairs; ``≈k* ± se`` from the SLQ density;
    ``> K`` when it lies beyond the top K and no density was computed."""
    if not spectrum:
        return Cell("")
    index = spectrum.get("position_index")
    if index is None:
        bound = spectrum.get("position_index_lower_bound")
        return Cell(f"> {bound}", float(bound)) if bound is not None else Cell("")
    if spectrum.get("position_index_is_estimate"):
        return Cell(f"≈{value_error(index, spectrum.get('position_index_stderr'))}", float(index))
    return Cell(f"{int(index)}", float(index))


def status(record: Record, revisions: dict[str, str] | None = None) -> Cell:
    """ok, failed, or the revision whose weights this one duplicates."""
    if record.get("status") != "ok":
        return Cell("failed", "failed", Tone.BAD)
    if record.get("duplicate_of"):
        other = str(record["duplicate_of"])
        return Cell(f"duplicate of {(revisions or {}).get(other, other)}", "duplicate", Tone.WARN)
    return Cell("ok", "ok", Tone.GOOD)


def _checkpoint_in_run(record: Record, rows: Sequence[Record]) -> str:
    """A checkpoint's name within its run: the revision, or, for a run whose checkpoints
    are separate repositories, the repository (with its revision unless ``main``)."""
    revision = str(record.get("revision"))
    if len({r.get("model") for r in rows}) == 1:
        return revision
    model = str(record.get("model"))
    return model if revision == "main" else f"{model} @ {revision}"


def _step(value: Any) -> float | None:
    return float(value) if value is not None else None


def model_table(model: str, rows: Sequence[Record], scale: Position = Position.NORMALIZED) -> TableData:
    """One model over its revisions, the most telling columns first: revision, the position
    on ``scale`` (with the gradient noise scale B_noise beside the population position, and
    its status when some estimate is noisy or ≤ 0), loss, B_noise in tokens, χ_pos at the training batch when
    known, D·χ_pos over batches, χ_pos, χ_net growth, tokens seen, then the optional
    measurements (head-only position, spectrum), χ_net, ‖∇L‖² and χ_loss. A status column
    appears only when some revision failed or duplicates another; the step only when the
    revision does not say it."""
    label = rows[0].get("label") or model
    ok = [r for r in rows if r.get("status") == "ok"]
    first = ok[0] if ok else None
    title = str(label)
    if ok and ok[0].get("num_params"):
        title += f" · {ok[0]['num_params']:,} parameters"
    if ok and ok[0].get("num_outputs"):
        title += f" · D = {ok[0]['num_outputs']:,} outputs per batch"
    names = [_checkpoint_in_run(r, rows) for r in rows]
    header, short = short_revisions(names, [r.get("step") for r in rows])
    b = _Builder()
    b.add(
        Column(header, numeric=header != "revision", essential=True, help="the checkpoint measured"),
        lambda r: Cell(
            short[_checkpoint_in_run(r, rows)],
            _step(r.get("step")) if header == "revision" else _num(short[_checkpoint_in_run(r, rows)]),
        ),
    )
    if any(status(r).tone is not Tone.GOOD for r in rows):
        b.add(Column("status", numeric=False, essential=True), lambda r: status(r, short))
    b.add(Column(scale.symbol, essential=True, help=_SCALE_HELP[scale]), lambda r: _position(r, scale))
    if scale is Position.POPULATION:
        _population_columns(b, ok)
    b.add(Column("loss", help="mean loss over the measured batches"), lambda r: _est(r, "loss"))
    if scale is Position.POPULATION and any(
        read(r, "noise_scale_tokens") is not None and unit(r) == "sequences" for r in ok
    ):
        b.add(
            Column("B_noise tokens", help="gradient noise scale B_noise, in tokens"),
            lambda r: (
                Cell(count(v), float(v)) if (v := read(r, "noise_scale_tokens")) is not None else Cell("")
            ),
        )
    if any(read(r, "train_batch_position") is not None for r in ok):
        b.add(
            Column(
                "χ_pos at training batch", help="χ_pos predicted at the batch size the model was trained with"
            ),
            lambda r: _train_batch(r),
        )
    if scale is not Position.NORMALIZED:
        b.add(
            Column("D·χ_pos (batches)", help="D·χ_pos over the measured batches: depends on the batch size"),
            lambda r: _position(r, Position.NORMALIZED),
        )
    if any(r.get("tokens_seen") is not None for r in rows):
        b.add(Column("tokens", help="tokens seen in training"), lambda r: _tokens(r))
    if header == "revision" and any(r.get("step") is not None for r in rows):
        b.add(
            Column("step"),
            lambda r: Cell("" if r.get("step") is None else str(r["step"]), _step(r.get("step"))),
        )
    if any(r.get("chunk") is not None for r in rows):
        b.add(
            Column("chunk", help="the data chunk the checkpoint follows (LLM360 ckpt_NNN): not a step"),
            lambda r: Cell("" if r.get("chunk") is None else str(r["chunk"]), _step(r.get("chunk"))),
        )
    if len(ok) > 1 and ordered(ok):  # a ratio to the first needs a training order
        b.add(
            Column("χ_net/χ_net₀", help="gradient amplification: χ_net relative to the first revision"),
            lambda r: _growth(r, first),
        )
    b.add(Column("χ_pos", help="spectral position χ_loss/χ_net"), lambda r: _est(r, "spectral_position"))
    if any(_head(r) is not None for r in ok):
        b.add(
            Column("χ_pos head only", help="χ_pos with θ restricted to the head (frozen features)"),
            lambda r: _est(h, "spectral_position") if (h := _head(r)) else Cell(""),
        )
    if any(r.get("spectrum") for r in ok):
        _spectrum_columns(b)
    b.add(Column("χ_net", help="eNTK trace term χ_net"), lambda r: _est(r, "chi_net"))
    b.add(Column("‖∇L‖²", help="squared gradient norm"), lambda r: _est(r, "grad_norm_sq"))
    b.add(Column("χ_loss", help="loss term χ_loss"), lambda r: _est(r, "chi_loss"))
    cells = []
    for r in rows:
        measured = r.get("status") == "ok"
        cells.append(
            tuple(render(r) if measured or column.essential else Cell("") for column, render in b.columns)
        )
    return TableData(title, tuple(c for c, _ in b.columns), tuple(cells), kind="model")


_SCALE_HELP = {
    Position.POPULATION: "population position (D/N)·χ_pos^∞: the data's own gradient, free of the batch size",
    Position.NORMALIZED: "normalised spectral position (1 = unaligned)",
    Position.RAW: "spectral position χ_pos",
}


def _population_columns(b: _Builder, ok: Sequence[Record]) -> None:
    """Beside the population position: B_noise in sequences (or images), and the
    estimate's status when some revision's is noisy or ≤ 0 (then never dropped). B_noise in
    tokens follows the loss (it says B_noise again, in other units)."""
    units = {unit(r) for r in ok} or {"sequences"}
    b.add(
        Column("B_noise", help=f"gradient noise scale B_noise, in {' or '.join(sorted(units))}"),
        lambda r: _est(r, "noise_scale"),
    )
    if any(population_problem(r) for r in ok):
        b.add(
            Column(
                "population estimate",
                numeric=False,
                essential=True,
                help=f"noisy or ≤ 0: more {' or '.join(sorted(units))} needed",
            ),
            population_status,
        )


def population_status(record: Record) -> Cell:
    """``ok``, or why the population estimate is not to be trusted (noisy, ≤ 0) with the
    sequences it needs; coloured so that it is seen."""
    problem = population_problem(record)
    if problem is None:
        return Cell("ok", "ok")
    bad = read(record, "population_status") == "nonpositive"
    return Cell(problem, problem, Tone.BAD if bad else Tone.WARN)


def _train_batch(record: Record) -> Cell:
    value = read(record, "train_batch_position")
    if value is None:
        return Cell("")
    text = value_error(value, read(record, "train_batch_position_stderr"))
    n = read(record, "train_batch_sequences")
    return Cell(f"{text} (n = {n:,})" if n else text, float(value))


def _spectrum_columns(b: _Builder) -> None:
    """The columns of ``--eigen``'s spectral summaries: position index, top-K mass,
    effective rank and the spectrum's power-law exponent."""
    b.add(Column("position index", help="position index k*"), lambda r: position_index(r.get("spectrum")))
    b.add(
        Column("top-K mass", help="residual mass captured by the top K eigenvectors"),
        lambda r: _spec(r, "captured_residual_mass", percent),
    )
    b.add(Column("eff. rank"), lambda r: _spec(r, "effective_rank", lambda v: number(v, 4)))
    b.add(
        Column("λ ∝ k^-α", help="power-law exponent α of the spectrum, λ_k ∝ k^-α"),
        lambda r: _spec(r, "power_law_alpha", lambda v: f"α={v:.2f}"),
    )


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _position(record: Record, scale: Position) -> Cell:
    """The record's position on ``scale`` ± its error; flagged when the population estimate
    is noisy or ≤ 0."""
    if record.get("status") != "ok":
        return Cell("")
    try:
        value, stderr = position_value(record, scale)
    except SpecprobeError:
        return Cell("")
    problem = scale is Position.POPULATION and population_problem(record)
    tone = (Tone.BAD if not usable(record, scale) else Tone.WARN) if problem else Tone.PLAIN
    return Cell(value_error(value, stderr), value, tone)


def _growth(record: Record, first: Record | None) -> Cell:
    if first is None or not first.get("chi_net") or record.get("chi_net") is None:
        return Cell("")
    ratio = record["chi_net"] / first["chi_net"]
    return Cell(number(ratio, 3), ratio)


def _tokens(record: Record) -> Cell:
    value = record.get("tokens_seen")
    return Cell(count(value), float(value)) if value is not None else Cell("")


def population_scale(record: Record) -> float | None:
    """D/N, the factor from χ_pos^∞ to the record's (D/N)·χ_pos^∞ (its outputs per sequence
    measured together): the ratio of the two fields it recorded, else ``num_outputs /
    num_samples``; None when neither is known."""
    value, normalized = read(record, "population_position"), read(record, "normalized_population_position")
    if value and normalized is not None:
        return float(normalized) / float(value)
    outputs, samples = read(record, "num_outputs"), read(record, "num_samples")
    return float(outputs) / float(samples) if outputs and samples else None


def _scaled(group: Mapping[str, Any], name: str, factor: float | None) -> Cell:
    """``group``'s estimate ``name`` ± its error, times ``factor`` (raw when None)."""
    value = group.get(name)
    if value is None:
        return Cell("")
    factor = 1.0 if factor is None else factor
    error = group.get(f"{name}_stderr")
    return Cell(value_error(factor * value, None if error is None else factor * error), factor * float(value))


def groups_table(record: Record) -> TableData:
    """Which layers carry the kernel: each group's share of χ_net and ‖∇L‖², and its
    position when θ is restricted to it (for the head: the frozen-feature counterfactual);
    each group's population position when recorded, as (D/N)·χ_pos^∞ like the model tables
    (the record's D/N, :func:`population_scale`)."""
    groups = list(record.get("groups") or ())
    population = any(read(g, "population_position") is not None for g in groups)
    factor = population_scale(record)
    symbol = Position.POPULATION.symbol if factor is not None else "χ_pos^∞"
    columns = (
        Column("group", numeric=False, essential=True),
        Column("share of χ_net", essential=True),
        *(
            (Column(f"{symbol} (θ = group)", essential=True, help="the group's population position"),)
            if population
            else ()
        ),
        Column("χ_pos (θ = group)", essential=True),
        Column("share of ‖∇L‖²"),
        Column("parameters"),
        Column("χ_net"),
    )
    rows = []
    for g in groups:
        rows.append(
            (
                Cell(g["name"], g["name"]),
                Cell(percent(g["chi_net_share"]), g["chi_net_share"]),
                *((_scaled(g, "population_position", factor),) if population else ()),
                _est(g, "spectral_position"),
                Cell(percent(g["grad_norm_sq_share"]), g["grad_norm_sq_share"]),
                Cell(f"{g['num_params']:,}", g["num_params"]),
                _est(g, "chi_net"),
            )
        )
    rows.append(
        (
            Cell("all", "~all"),
            Cell("100%", 1.0),
            *((_scaled(record, "population_position", factor),) if population else ()),
            _est(record, "spectral_position"),
            Cell("100%", 1.0),
            Cell(f"{record['num_params_selected']:,}", record["num_params_selected"])
            if record.get("num_params_selected")
            else Cell(""),
            _est(record, "chi_net"),
        )
    )
    return TableData(f"layer decomposition of {checkpoint_name(record)}", columns, tuple(rows), "groups")


def comparison_table(groups: dict[str, list[Record]], scale: Position = Position.NORMALIZED) -> TableData:
    """Across models, by size: the lowest position on ``scale`` reached and where, the final loss."""
    by_size = sorted(groups.items(), key=lambda item: _size(item[1]))
    lows = {}
    for model, rows in by_size:
        ok = [r for r in rows if r.get("status") == "ok" and not r.get("duplicate_of")]
        if ok:
            ranked = [r for r in ok if usable(r, scale)] or ok
            lows[model] = (ok, min(ranked, key=lambda r: position_value(r, scale)[0]))
    at = {model: _checkpoint_in_run(low, ok) for model, (ok, low) in lows.items()}
    header, short = short_revisions(list(at.values()), [low.get("step") for _, low in lows.values()])
    columns = (
        Column("model", numeric=False, essential=True),
        Column(f"lowest {scale.symbol}", essential=True),
        Column(f"at {header}", numeric=header != "revision", essential=True),
        Column("final loss"),
        Column("parameters"),
        Column("lowest χ_pos"),
    )
    out = []
    for model, rows in by_size:
        name = str(rows[0].get("label") or model)
        if model not in lows:
            out.append((Cell(name, name), Cell("no successful revision", None, Tone.BAD), *[Cell("")] * 4))
            continue
        ok, low = lows[model]
        out.append(
            (
                Cell(name, name),
                _position(low, scale),
                Cell(short[at[model]], _num(short[at[model]]) if header != "revision" else at[model]),
                _est(ok[-1], "loss") if ordered(ok) else Cell("order unknown", None, Tone.WARN),
                Cell(f"{ok[0].get('num_params', 0):,}", ok[0].get("num_params")),
                _est(low, "spectral_position"),
            )
        )
    return TableData("comparison across models", columns, tuple(out), "comparison")


def _size(rows: Sequence[Record]) -> int:
    ok = [r for r in rows if r.get("status") == "ok"]
    return int(ok[0].get("num_params") or 0) if ok else 0


def reach_table(summary: FamilySummary) -> TableData:
    """The family view's reach per model, by size: the lowest position, where, the bias a
    minimum over noisy revisions has, B_noise there (population position), the estimate's
    status when it is noisy or ≤ 0, then final loss, size, χ_net growth and the raw χ_pos."""
    scale = summary.position.symbol
    population = summary.position is Position.POPULATION
    header, short = short_revisions([r.revision for r in summary.reach], [r.step for r in summary.reach])
    growth = {a.model: a for a in summary.amplification}
    flagged = any(r.problem for r in summary.reach)
    spreads = {run: g for g in summary.sizes if g.seeds > 1 for run in g.runs}
    columns = (
        Column("model", numeric=False, essential=True),
        Column("reach", essential=True, help=f"lowest {scale} over the revisions"),
        Column(f"at {header}", numeric=header != "revision", essential=True),
        *((Column("estimate", numeric=False, essential=True),) if flagged else ()),
        Column(
            "bias of the minimum",
            help="expected amount the lowest of k noisy values lies below equal true values: σ·E[max of k normals]",
        ),
        *(
            (Column("B_noise there", help="gradient noise scale B_noise (sequences) at that revision"),)
            if population
            else ()
        ),
        *(
            (
                Column(
                    "seed spread", help="standard deviation of the reach over the seeds (runs) of this size"
                ),
            )
            if spreads
            else ()
        ),
        Column("final loss"),
        Column("parameters"),
        Column("χ_net growth", help="χ_net at the last revision relative to the first"),
        Column(
            "χ_pos at that revision", help="the unnormalised spectral position where the reach is attained"
        ),
    )
    rows = []
    for r in summary.reach:
        amp = growth.get(r.model)
        last = amp.points[-1].amplification if amp is not None and amp.points else None
        at = short[r.revision]
        if r.step is not None and str(r.step) not in r.revision:
            at += f" (step {r.step})"
        status = Cell(r.problem or "ok", r.problem or "ok", Tone.WARN if r.problem else Tone.PLAIN)
        rows.append(
            (
                Cell(r.label, r.label),
                Cell(value_error(r.reach, r.reach_stderr), r.reach, Tone.WARN if r.problem else Tone.PLAIN),
                Cell(at, _num(short[r.revision]) if header != "revision" else r.revision),
                *((status,) if flagged else ()),
                Cell(f"−{number(r.minimum_bias, 2)}" if r.minimum_bias else "0", -r.minimum_bias),
                *((_est(asdict(r), "noise_scale"),) if population else ()),
                *((_spread(spreads.get(r.model)),) if spreads else ()),
                Cell(value_error(r.final_loss, r.final_loss_stderr), r.final_loss)
                if r.ordered
                else Cell("order unknown", None, Tone.WARN),
                Cell(f"{r.num_params:,}" if r.num_params else "", r.num_params),
                Cell(f"×{number(last, 3)}" if last is not None else "", last),
                Cell(value_error(r.spectral_position, r.spectral_position_stderr), r.spectral_position),
            )
        )
    return TableData(
        f"spectral reach (lowest {scale} over the revisions), by size", columns, tuple(rows), "reach"
    )


def _spread(group: SizeGroup | None) -> Cell:
    if group is None or group.reach_spread is None:
        return Cell("")
    return Cell(f"{number(group.reach_spread, 2)} ({group.seeds} {group.kind})", group.reach_spread)


def run_notes(records: Sequence[Record]) -> list[tuple[Tone, str]]:
    """Things a reader must know: failures (each with its error), duplicated weights,
    differing data subsets; each with its tone."""
    notes: list[tuple[Tone, str]] = []
    # In run order and training order (never the order the revisions were typed in).
    records = [r for rows in group_by_model(records).values() for r in rows]
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        notes.append((Tone.BAD, f"{len(failed)} checkpoint(s) failed:"))
        notes += [
            (Tone.PLAIN, f"  {r['model']}@{r['revision']}: {r.get('error') or 'unknown error'}")
            for r in failed
        ]
    for r in records:
        if r.get("duplicate_of"):
            notes.append(
                (
                    Tone.WARN,
                    f"{r['model']}@{r['revision']} has the same weights as {r['duplicate_of']} "
                    "(fingerprint match): the published revision likely serves the wrong checkpoint",
                )
            )
    runs: dict[str, list[Record]] = {}
    for r in records:
        if r.get("status") == "ok" and not r.get("duplicate_of"):
            runs.setdefault(run_of(r), []).append(r)
    for run, rows in sorted(runs.items()):
        if len(rows) > 1 and not ordered(rows):
            unknown = sorted(
                str(r.get("revision")) for r in rows if r.get("step") is None and r.get("chunk") is None
            )
            notes.append(
                (
                    Tone.WARN,
                    f"{rows[0].get('label') or run}: no training position known for {', '.join(unknown)}, so its "
                    "checkpoints have no order (shown by name); no claim that needs one is made (state it: "
                    "--position REVISION=STEP)",
                )
            )
        elif rows and all(r.get("chunk") is not None and r.get("step") is None for r in rows):
            notes.append(
                (
                    Tone.PLAIN,
                    f"{rows[0].get('label') or run}: checkpoints are ordered by data chunk (ckpt_NNN), not by step",
                )
            )
    for r in records:
        spectrum = r.get("spectrum") or {}
        if r.get("status") == "ok" and spectrum.get("spectrum_converged") is False:
            why = {
                "products": "it stopped at its budget of products",
                "time": "it stopped at its time budget",
                "space": "the whole space was explored",
            }.get(str(spectrum.get("spectrum_stopped_by")), "it stopped early")
            tol = spectrum.get("spectrum_tol")
            notes.append(
                (
                    Tone.WARN,
                    f"{checkpoint_name(r)}: {spectrum.get('spectrum_num_converged')} of "
                    f"{spectrum.get('spectrum_k')} eigenpairs converged"
                    + (f" to tol {tol:g}" if isinstance(tol, int | float) else "")
                    + f" ({why}); the others are approximate (their residuals are in the record)",
                )
            )
    hashes = list(dict.fromkeys(str(r["settings_hash"]) for r in records if r.get("settings_hash")))
    if len(hashes) > 1:
        notes.append(
            (
                Tone.WARN,
                f"these records were measured with {len(hashes)} different settings (numbered as in the "
                "settings below): a run folder holds one run, so they were merged from several; a model "
                "measured under more than one is shown once per settings, and positions compare only "
                "under the same data and probes",
            )
        )
    subsets: dict[str, set[str]] = {}
    for r in records:
        if fingerprint := r.get("dataset_fingerprint"):
            subsets.setdefault(fingerprint, set()).add(r.get("label") or r["model"])
    if len(subsets) > 1:
        groups = "; ".join(", ".join(sorted(models)) for models in subsets.values())
        notes.append(
            (
                Tone.PLAIN,
                f"models with different tokenizers were measured on their own token subsets ({groups}): "
                "their losses and positions are not on the same data",
            )
        )
    return notes


def checkpoint_name(record: Record) -> str:
    """How the report names one checkpoint: ``label @ revision``."""
    return f"{record.get('label') or record.get('model')} @ {record.get('revision')}"


def fit_name(quantity: str) -> str:
    """A power-law fit's quantity as a reader says it: ``reach (D·χ_pos)``, ``final loss``."""
    for position in Position:
        quantity = quantity.replace(position.value, position.symbol)
    return quantity.replace("final_loss", "final loss")
