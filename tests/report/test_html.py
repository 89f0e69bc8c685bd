"""The HTML report: one self-contained file with the settings, every table (sortable), the
figures as inline SVG, the family view and the verdict; and, where Chromium is installed,
the file as a browser shows it."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from specprobe.analysis.family import summarize
from specprobe.cli.app import app
from specprobe.report.html import render_html, write_html
from specprobe.report.tables import value_error
from specprobe.store.results import ResultStore
from tests.cli.test_analyze import REPO, SMALL, corpus, hub, tokenizer  # noqa: F401  (fixtures)
from tests.report.test_report import full_run

VOID = {"meta", "br", "hr", "img", "input", "link", "path", "use", "stop", "rect", "circle", "line"}


class Document(HTMLParser):
    """Collects tags, attributes and text; checks that every element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[list[list[str]]] = []
        self.headers: list[list[str]] = []
        self.sort_keys: list[list[str | None]] = []
        self._cell: list[str] | None = None
        self._in_head = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
            self.headers.append([])
            self.sort_keys.append([])
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr" and not self._in_head and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
            if tag == "td":
                self.sort_keys[-1].append(dict(attrs).get("data-sort"))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            if tag == "th":
                self.headers[-1].append(text)
            else:
                self.tables[-1][-1].append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> Document:
    doc = Document()
    doc.feed(text)
    doc.close()
    assert not doc.errors, doc.errors[:5]
    assert doc.stack == [], doc.stack
    return doc


CONFIG = {"invocations": [{"invocation": {"command": "run", "argv": ["run", "tiny-local", "--probes", "4"]}}]}


def test_html_report_is_self_contained_and_complete(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    records = full_run()
    path = write_html(records, tmp_path / "report.html", config=CONFIG, title="my run")
    text = path.read_text(encoding="utf-8")
    doc = parse(text)
    # Self-contained: nothing to fetch (links only to anchors in the file, no src, no @import).
    for tag, attrs in doc.tags:
        assert "src" not in attrs, tag
        assert tag != "link", attrs
        for name in ("href", "xlink:href"):
            if attrs.get(name) is not None:
                assert str(attrs[name]).startswith("#"), (tag, attrs)
    assert "@import" not in text and not re.search(r"url\((?!#)", text)
    # Figures inline as SVG, each with ids of its own (several share one document).
    assert sum(tag == "svg" for tag, _ in doc.tags) == 3
    ids = [attrs["id"] for _, attrs in doc.tags if attrs.get("id")]
    assert len(ids) == len(set(ids))
    # Every table of the terminal report, with all its columns, sortable, one row per record.
    kinds = [attrs.get("data-kind") for tag, attrs in doc.tags if tag == "table"]
    assert kinds == ["reach", "model", "groups", "model", "model", "model", "comparison"]
    assert all("sortable" in str(attrs.get("class")) for tag, attrs in doc.tags if tag == "table")
    first_model = doc.headers[1]
    for header in (
        "checkpoint",
        "D·χ_pos",
        "loss",
        "χ_net",
        "‖∇L‖²",
        "χ_loss",
        "position index",
        "top-K mass",
    ):
        assert header in first_model, header
    s_rows = [r for r in records if r["model"] == "s"]
    assert len(doc.tables[1]) == len(s_rows)
    position = first_model.index("D·χ_pos")
    assert [row[position] for row in doc.tables[1]] == [
        value_error(r["normalized_position"], r["normalized_position_stderr"]) for r in s_rows
    ]
    sort_keys = doc.sort_keys[1]
    assert float(sort_keys[position]) == s_rows[0]["normalized_position"]  # type: ignore[arg-type]
    # Verdict, settings, family fits and notes.
    body = html.unescape("".join(doc.text))
    verdict = summarize(records).verdict
    for line in verdict.lines:  # a short list: one claim a line, each with its numbers
        assert line in body, line
    items = re.findall(r"<li>(.*?)</li>", text[text.index('id="verdict"') : text.index("</section>")])
    assert [html.unescape(i) for i in items] == [f"{c.outcome.value}: {c.summary}" for c in verdict.claims]
    assert "specprobe run tiny-local --probes 4" in body
    assert "final loss ∝ N^" in body and "reach (D·χ_pos) ∝ N^" in body
    assert "xl@checkpoint-2000: CUDA out of memory [while loading] after 3 tries" in body
    assert "<script>" in text and "@media print" in text


def test_html_without_matplotlib_shows_the_text_chart(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    text = render_html(full_run())
    parse(text)
    assert "<svg" not in text and "matplotlib is not installed" in text and "D·χ_pos (log) against" in text


def test_report_html_option_and_bad_path(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    store = ResultStore(tmp_path / "run")
    for r in full_run():
        store.append(r)
    store.write_config(CONFIG)
    out = tmp_path / "shared" / "report.html"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--html", str(out)])
    assert result.exit_code == 0, result.output
    assert f"HTML report in {out}" in result.output
    parse(out.read_text(encoding="utf-8"))
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--html", str(tmp_path)])
    assert bad.exit_code == 2 and "expected a file name for --html, found a directory" in bad.output


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Chromium (apt-get install chromium)")
def test_browser_renders_and_sorts(tmp_path: Path) -> None:
    """Headless Chromium: the page renders at desktop and phone widths, and clicking a
    header sorts the table by that column (the inline script works)."""
    pytest.importorskip("matplotlib")
    chromium = str(_chromium())
    records = full_run()
    text = render_html(records, config=CONFIG)
    # Click "D·χ_pos" of the first model table twice (descending), then report the order.
    probe = """<script>
      var table = document.querySelectorAll('table[data-kind="model"]')[0];
      var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (c) { return c.textContent; });
      var col = heads.indexOf("D·χ_pos");
      var button = table.tHead.rows[0].cells[col].querySelector("button");
      button.click(); button.click();
      var out = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[col].getAttribute("data-sort"); });
      document.body.setAttribute("data-order", JSON.stringify(out));
    </script></body>"""
    page = tmp_path / "report.html"
    page.write_text(text.replace("</body>", probe), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [chromium, *flags, "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    order = json.loads(html.unescape(re.search(r'data-order="([^"]*)"', dom).group(1)))  # type: ignore[union-attr]
    expected = sorted((r["normalized_position"] for r in records if r["model"] == "s"), reverse=True)
    assert [float(v) for v in order] == expected
    for width in (1280, 390):
        shot = tmp_path / f"report-{width}.png"
        subprocess.run(
            [chromium, *flags, f"--window-size={width},1600", f"--screenshot={shot}", page.as_uri()],
            capture_output=True,
            timeout=120,
        )
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_analyze_writes_the_html_report(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("matplotlib")
    out = tmp_path / "report.html"
    args = ["analyze", REPO, "--revisions", "step1,step2", "--dataset", str(corpus), *SMALL]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run"), "--html", str(out)])
    assert result.exit_code == 0, result.output
    doc = parse(out.read_text(encoding="utf-8"))
    kinds = [attrs.get("data-kind") for tag, attrs in doc.tags if tag == "table"]
    assert kinds == ["model"] and len(doc.tables[0]) == 2  # one model, two revisions
    text = html.unescape("".join(doc.text))
    assert "seq_len16" in text and "probes4" in text and "checkpoints2 (2 ok)" in text  # the settings
    assert sum(tag == "svg" for tag, _ in doc.tags) >= 2  # position and amplification figures


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Chromium (apt-get install chromium)")
@pytest.mark.parametrize("family", ["full_run", "flagged_family"])
def test_tables_fit_a_1280_px_window(family: str, tmp_path: Path) -> None:
    """Headless Chromium at 1280 × 900 px: no table is wider than its box (nothing cut
    behind a sideways scroll) and the page is no wider than the window; a wide table wraps
    its cells at ' ± ' and its headers between words instead."""
    from tests.report.test_population_report import flagged_family

    records = {"full_run": full_run, "flagged_family": flagged_family}[family]()
    text = render_html(records, config=CONFIG, figures=False)
    probe = """<script>
      var boxes = Array.prototype.map.call(document.querySelectorAll("div.scroll"), function (box) {
        return box.scrollWidth - box.clientWidth;
      });
      document.body.setAttribute("data-overflow", JSON.stringify(
        {boxes: boxes, page: document.documentElement.scrollWidth - window.innerWidth}));
    </script></body>"""
    page = tmp_path / "report.html"
    page.write_text(text.replace("</body>", probe), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,900"]
    dom = subprocess.run(
        [str(_chromium()), *flags, "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = json.loads(html.unescape(re.search(r'data-overflow="([^"]*)"', dom).group(1)))  # type: ignore[union-attr]
    assert len(found["boxes"]) == len(parse(text).tables) >= 4
    assert max(found["boxes"]) <= 1, found
    assert found["page"] <= 1, found


def test_cells_wrap_only_between_value_and_error() -> None:
    from specprobe.report.html import _cell_html

    assert _cell_html("0.0254 ± 0.0015") == "<span>0.0254</span> <span>± 0.0015</span>"
    assert (
        _cell_html("2.6e-5 ± 4e-7 (n = 16)")
        == "<span>2.6e-5</span> <span>± 4e-7</span> <span>(n = 16)</span>"
    )
    assert _cell_html("neox-w128 <b>") == "<span>neox-w128 &lt;b&gt;</span>"  # a name stays whole, as text
