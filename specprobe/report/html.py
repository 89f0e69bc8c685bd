"""The report as one self-contained HTML file, to share with people who do not run specprobe.

``write_html(records, path)`` writes a single file with no network access and no external
assets: the run's settings, the verdict, the family view (reach table, power-law fits,
figures as inline SVG), every table of the terminal report with all its columns (sortable
by clicking a header: a few lines of inline JavaScript), the layer decompositions, the
eigenvalue densities and the notes. It reads in any browser, on a phone (tables scroll
sideways) and prints (figures and tables are kept whole on a page).

The sections are those of :mod:`specprobe.report.document` (this module walks them as the terminal
report does), so the terminal and the file show the same numbers. Figures need matplotlib (``specprobe[plots]``); without it the file says so and
shows the text chart instead.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from specprobe.report.document import Document, FamilyView, Note, SettingsSection, build_document
from specprobe.report.tables import TableData, Tone
from specprobe.store.folder import atomic_write
from specprobe.store.records import Record

_CSS = """
:root { --fg: #1d2433; --muted: #5b6475; --line: #d9dde5; --head: #f3f5f8; --accent: #2f5d9f;
  --good: #1f7a3a; --warn: #9a6a00; --bad: #b3261e; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  margin: 0 auto; max-width: 1400px; padding: 1.2rem 1rem 3rem; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
.meta, .muted { color: var(--muted); font-size: .9rem; }
.verdict { border-left: 4px solid var(--accent); background: #f5f8fd; padding: .7rem 1rem; margin: .8rem 0; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; margin: .4rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid var(--line); }
th { background: var(--head); text-align: left; font-weight: 600; vertical-align: bottom; }
td span { white-space: nowrap; }
td.num, th.num { text-align: right; }
th button { all: inherit; cursor: pointer; padding: 0; }
th button::after { content: " \\2195"; color: #aab1bf; font-size: .8em; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; color: var(--accent); }
th[aria-sort="descending"] button::after { content: " \\25BC"; color: var(--accent); }
tr:hover td { background: #fafbfd; }
.good { color: var(--good); } .warn { color: var(--warn); } .bad { color: var(--bad); font-weight: 600; }
.blocks { display: flex; flex-wrap: wrap; gap: 0 2.5rem; } .blocks h3 { margin: .4rem 0 .2rem; }
code { font-size: .85rem; background: var(--head); padding: .1rem .3rem; overflow-wrap: anywhere; }
dl.settings { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .4rem 0; font-size: .9rem; }
dl.settings dt { color: var(--muted); } dl.settings dd { margin: 0; overflow-wrap: anywhere; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 460px), 1fr)); gap: 1rem; }
figure { margin: 0; } figure svg { width: 100%; height: auto; display: block; }
figure.wide { grid-column: 1 / -1; } figure.wide svg { max-width: 860px; margin: 0 auto; }
figcaption { color: var(--muted); font-size: .85rem; }
pre { font-size: .8rem; overflow-x: auto; background: var(--head); padding: .5rem; }
ul.notes li, ul.claims li { margin: .2rem 0; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  .scroll { overflow: visible; }
  th button::after { content: ""; }
  table, figure, .verdict { break-inside: avoid; }
  h2 { break-after: avoid; }
}
"""

# Click a header to sort by it (again to reverse); cells sort by their data-sort key,
# numbers as numbers, empty cells last. No libraries, nothing fetched.
_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.querySelector("button").addEventListener("click", function () {
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (row) {
        var v = row.cells[col].getAttribute("data-sort");
        if (v === null || v === "") { return null; }
        var n = Number(v);
        return isNaN(n) ? v : n;
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        if (typeof x === "number" && typeof y === "number") { return dir * (x - y); }
        return dir * String(x).localeCompare(String(y));
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

_TONE_CLASS = {Tone.GOOD: "good", Tone.WARN: "warn", Tone.BAD: "bad"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def table_html(data: TableData, *, heading: str = "h3") -> str:
    """A TableData as a sortable HTML table (every column) in a sideways-scrolling box."""
    head = "".join(
        f'<th scope="col"{" class=num" if c.numeric else ""}'
        f'{f" title={_q(c.help)}" if c.help else ""}><button type="button">{_e(c.header)}</button></th>'
        for c in data.columns
    )
    body = []
    for row in data.rows:
        cells = []
        for index, (column, cell) in enumerate(zip(data.columns, row, strict=True)):
            classes = " ".join(
                c for c in ("num" if column.numeric else "", _TONE_CLASS.get(cell.tone, "")) if c
            )
            sort = "" if cell.sort is None else _sort_key(cell.sort)
            cells.append(
                f'<td{f" class={_q(classes)}" if classes else ""} data-sort="{_e(sort)}">{_cell_html(cell.text, column.numeric or index == 0)}</td>'
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<{heading}>{_e(data.title)}</{heading}>\n"
        f'<div class="scroll"><table class="sortable" data-kind="{_e(data.kind)}">'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>"
    )


_BREAKS = re.compile(r" (?=± |\()")
"""Where a cell may wrap when its table is wider than the page: before ``± error`` and
before a bracket (``(n = 16)``), never inside a number or a name."""


def _cell_html(text: str, whole: bool = True) -> str:
    """A cell's text for a table that must fit the page: a number (``whole``, as the row's
    name) in unbreakable pieces (:data:`_BREAKS`), so that a wide table narrows its columns
    by wrapping ``0.0254 ± 0.0015`` into value and error instead of running off the page;
    other text (a status, a note) wraps between words, as the headers do. The cell's text
    is unchanged."""
    if not whole:
        return _e(text)
    return " ".join(f"<span>{_e(part)}</span>" for part in _BREAKS.split(text))


def _q(text: str) -> str:
    return f'"{_e(text)}"'


def _sort_key(value: float | str) -> str:
    return repr(float(value)) if isinstance(value, int | float) else str(value)


def _settings_html(settings: SettingsSection) -> str:
    """The settings section's body: the command, and a list of settings per block."""
    command = f"<p><code>{_e(settings.command)}</code></p>" if settings.command else ""
    html_blocks = "".join(
        f'<div><h3>{_e(name)}</h3><dl class="settings">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
        + "</dl></div>"
        for name, items in settings.blocks
    )
    return f'{command}<div class="blocks">{html_blocks}</div>'


def _svg(figure: Any, prefix: str) -> str:
    """A matplotlib figure as inline SVG: no XML prolog, ids made unique with ``prefix``
    (several figures share one document), scaled to the page by CSS."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    for name in set(re.findall(r'id="([^"]+)"', text)):
        text = text.replace(f'id="{name}"', f'id="{prefix}-{name}"').replace(
            f"#{name})", f"#{prefix}-{name})"
        )
        text = text.replace(f'href="#{name}"', f'href="#{prefix}-{name}"')
    return text


_FIGURES = (
    ("position_vs_compute", "Spectral position during training, against {axis}."),
    ("amplification", "Gradient amplification χ_net(t)/χ_net(t₀) against training step."),
    ("loss_vs_size", "Final loss and spectral reach against size, with power-law fits from three sizes."),
    ("spectra", "Normalised eNTK spectra with the spectral position marked."),
)


def _figures_html(doc: Document) -> str:
    from specprobe.report import plots

    if not doc.analysed:
        return ""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        chart = doc.chart()
        text = f"<pre>{_e(chr(10).join(chart))}</pre>" if chart else ""
        return (
            '<p class="muted">No figures: matplotlib is not installed '
            '(pip install "specprobe[plots]").</p>' + text
        )
    draw = {
        "position_vs_compute": plots.position_vs_compute_figure,
        "loss_vs_size": plots.loss_vs_size_figure,
        "amplification": plots.amplification_figure,
        "spectra": plots.spectra_figure,
    }
    out = []
    for name, caption in _FIGURES:
        figure = draw[name](doc.records)
        if figure is None:
            continue
        wide = ' class="wide"' if name == "loss_vs_size" else ""
        caption = caption.format(axis=plots.position_axis(doc.records, doc.position))
        out.append(
            f'<figure{wide} id="figure-{name}">{_svg(figure, name)}<figcaption>{_e(caption)}</figcaption></figure>'
        )
    return f'<div class="figures">{"".join(out)}</div>'


def _family_html(family: FamilyView | None) -> tuple[str, str]:
    """The verdict (a short list: what was judged, one claim a line with its numbers, the
    closing sentence), and the family section (reach table, fits, notes); empty strings
    when fewer than two models were analysed."""
    if family is None:
        return "", ""
    head, *claims = family.verdict_lines or (family.verdict,)
    closing = claims.pop() if len(claims) > 1 else ""
    items = "".join(f"<li>{_e(line)}</li>" for line in claims)
    verdict = (
        '<section id="verdict"><h2>Verdict</h2>'
        f'<div class="verdict"><p>{_e(head)}</p>'
        + (f'<ul class="claims">{items}</ul>' if items else "")
        + (f"<p>{_e(closing)}</p>" if closing else "")
        + '<p class="muted">Computed from the numbers below.</p></div></section>'
    )
    parts = [table_html(family.reach)]
    fits = [
        f"<li>{_e(f.quantity)} {_e(f.law)} ({_e(f.r_squared)}, {f.num_points} sizes)</li>"
        for f in family.fits
    ]
    if fits:
        parts.append(f"<p>Power laws across sizes:</p><ul>{''.join(fits)}</ul>")
    parts += [f'<p class="muted">{_e(note)}</p>' for note in family.notes]
    return verdict, '<section id="family"><h2>Family view</h2>' + "\n".join(parts) + "</section>"


def _checkpoints_html(doc: Document) -> str:
    """Every model's table, its layer decomposition and density line, and the comparison."""
    parts = []
    for section in doc.models:
        parts.append(table_html(section.table))
        if section.groups is not None:
            parts.append(table_html(section.groups))
        if section.density is not None:
            parts.append(f"<pre>{_e(section.density)}</pre>")
    if doc.comparison is not None:
        parts.append(table_html(doc.comparison))
    return (
        '<section id="checkpoints"><h2>Checkpoints</h2>'
        '<p class="muted">Value ± standard error; click a column header to sort.</p>'
        + ("\n".join(parts) or "<p>No records yet.</p>")
        + "</section>"
    )


def _notes_html(notes: Sequence[Note]) -> str:
    if not notes:
        return ""
    items = "".join(f'<li class="{_TONE_CLASS.get(n.tone, "")}">{_e(n.text.strip())}</li>' for n in notes)
    return f'<section id="notes"><h2>Notes</h2><ul class="notes">{items}</ul></section>'


def render_html(
    records: Sequence[Record],
    *,
    config: dict[str, Any] | None = None,
    title: str | None = None,
    figures: bool = True,
) -> str:
    """The whole report as one HTML document (a string). ``config`` is the run's
    ``config.json`` (for the command that made it); ``title`` defaults to the family's name
    (:func:`specprobe.report.document.family_name`); ``figures=False`` leaves out the SVGs."""
    from specprobe.version import __version__

    doc = build_document(records, config)
    title = title or doc.name
    verdict, family = _family_html(doc.family)
    figures_html = _figures_html(doc) if figures and doc.records else ""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<header><h1>{_e(title)}</h1>"
        f'<p class="meta">{len(doc.records)} records · written {stamp} by specprobe {_e(__version__)}</p>'
        f'<p class="meta" id="statistic">Statistic: {_e(doc.statistic)}.</p></header>',
        verdict,
        f'<section id="settings"><h2>Settings</h2>{_settings_html(doc.settings)}</section>',
        family,
        f'<section id="figures"><h2>Figures</h2>{figures_html}</section>' if figures_html else "",
        _checkpoints_html(doc),
        _notes_html(doc.notes),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + f"\n<script>{_JS}</script>\n</body>\n</html>\n"
    )


def write_html(
    records: Sequence[Record],
    path: Path | str,
    *,
    config: dict[str, Any] | None = None,
    title: str | None = None,
) -> Path:
    """Write :func:`render_html` to ``path`` through
    :func:`~specprobe.store.folder.atomic_write` (the old file or the new, never a part of
    one; never over an input, a run's own files or a special file) and return the path;
    ``-`` writes the page to standard output."""
    text = render_html(records, config=config, title=title)
    return atomic_write(path, text, what="the HTML report", stdout=True) or Path("-")
