"""The documentation runs: every code block of README.md and docs/*.md is checked here.

The convention for a page's code blocks (follow it in every docs/*.md page):

- ```python blocks run, offline, in the page's order, in one namespace and in a fresh
  temporary directory (the working directory while they run): a later block may use what
  an earlier one of the same page defined, and files they write (``runs/mine``,
  ``model.onnx``) land in that directory. Build what a block needs in the blocks (tiny
  models from ``specprobe.models.tiny``, random token ids, ``datasets.Dataset.from_dict``):
  there is no network and no hub cache beyond the tests' empty one. Keep a page's blocks
  to a few seconds. A block that must not run (for instance a fragment shown inside
  prose) is written as ```text, not ```python.
- ```bash blocks are parsed: every ``specprobe …`` command in them (also after
  ``.venv/bin/``, ``python -m`` or a launcher's ``-m specprobe``; lines joined at a
  trailing backslash, ``# comments`` dropped, ``&&``/``;``/``|`` separating commands)
  must parse against the Typer app: the command exists, every option exists and every
  value has its type and range. Placeholders in capitals (``RECIPE``, ``DIR``) and ``…``
  are fine where a value goes.
- ```yaml blocks that start with ``version:`` are recipes: each must pass the recipe
  schema (``specprobe.recipes.loader.load_recipe``).
- Terminal output is shown in ```text (or bare ```) blocks, which are not run.

The command-line reference (docs/cli-reference.md) is generated at build time from the
Typer app by docs/hooks/cli_reference.py; the test below checks that walk against the
app's own options, and ``mkdocs build --strict`` (CI, the ``docs`` extra) builds the site.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer.main

from specprobe.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.glob("*.md")])
FENCE = re.compile(r"^```([A-Za-z]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def blocks(page: Path, language: str) -> list[str]:
    """The code blocks of ``page`` fenced as ``language``, in order."""
    return [m.group(2) for m in FENCE.finditer(page.read_text(encoding="utf-8")) if m.group(1) == language]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


PYTHON_PAGES = [p for p in PAGES if blocks(p, "python")]
BASH_PAGES = [p for p in PAGES if blocks(p, "bash")]
# Pages whose blocks train, export or launch for more than a few seconds: the slow run.
SLOW_PAGES = {"docs/library.md"}


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, id=page_id(p), marks=[pytest.mark.slow] if page_id(p) in SLOW_PAGES else [])
        for p in PYTHON_PAGES
    ],
)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    for number, code in enumerate(blocks(page, "python"), 1):
        try:
            exec(compile(code, f"{page_id(page)} python block {number}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"{page_id(page)}: python block {number} failed: {err!r}") from err


def test_the_library_page_shows_the_population_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first block of the library guide measures with the library's defaults, which are
    the command line's: the population position and the noise scale are there."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(blocks(DOCS / "library.md", "python")[0], "library block 1", "exec"), namespace)
    m = namespace["m"]
    assert m.estimator == "hutchinson_per_sample"
    assert m.population_position is not None and m.population_status is not None


def _group() -> Any:
    return typer.main.get_command(app)


def parse_command(args: list[str]) -> dict[str, Any]:
    """Parse ``specprobe ARGS`` as the command line would, without running it: the
    subcommand's parameters, or an error (click's UsageError) for an unknown command,
    option or a value of the wrong type or range."""
    group = _group()
    ctx = group.make_context("specprobe", list(args))
    rest = [*ctx._protected_args, *ctx.args]
    name, command, rest = group.resolve_command(ctx, rest)
    assert command is not None, f"no command in {args}"
    return dict(command.make_context(name, rest, parent=ctx).params)


_ENTRY = re.compile(r"^(?:\S*/)?specprobe$")
_REDIRECT = re.compile(r"\d?(?:>>?|<|&>)")
"""A redirection whose target is the next word (``> report.html``, ``2> err.txt``)."""
_REDIRECT_TO = re.compile(r"\d?(?:>>?|<|&>)\S+")
"""A redirection with its target attached (``>report.html``, ``2>/dev/null``)."""


def specprobe_commands(code: str) -> list[list[str]]:
    """Every ``specprobe …`` invocation in a bash block, as its argument list."""
    joined = re.sub(r"\\\n\s*", " ", code)
    found = []
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise AssertionError(f"cannot split {line!r}: {err}") from err
        command: list[str] = []
        redirected = False  # the word after a redirection (> FILE) is its target
        for word in [*words, ";"]:
            if redirected:
                redirected = False
            elif _REDIRECT.fullmatch(word):
                redirected = True
            elif _REDIRECT_TO.fullmatch(word):
                continue
            elif word in ("&&", ";", "|", "||"):
                found.extend(_invocation(command))
                command = []
            else:
                command.append(word)
    return found


def _invocation(words: list[str]) -> list[list[str]]:
    for i, word in enumerate(words):
        if _ENTRY.match(word) and (i == 0 or words[i - 1] == "-m" or "/" in word):
            return [words[i + 1 :]]
    return []


def test_specprobe_commands_are_found() -> None:
    code = (
        "python3 -m venv .venv && .venv/bin/pip install x && .venv/bin/specprobe demo  # install\n"
        "accelerate launch --multi_gpu --num_processes 8 -m specprobe run pythia --device cuda \\\n"
        "  --out runs/p\n"
        "specprobe report runs/p --wide | less -S\n"
        "specprobe report runs/p --html - > report.html 2>/dev/null\n"
        "pip install specprobe\n"
    )
    assert specprobe_commands(code) == [
        ["demo"],
        ["run", "pythia", "--device", "cuda", "--out", "runs/p"],
        ["report", "runs/p", "--wide"],
        ["report", "runs/p", "--html", "-"],
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "m", "--no-such-option"], "No such option: --no-such-option"),
        (["analyze", "m", "--probes", "1"], "greater than or equal to 2"),
        (["report"], "Missing parameter"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_a_wrong_command_fails_to_parse(args: list[str], message: str) -> None:
    with pytest.raises(Exception, match=message):  # click's UsageError (typer's own copy of click)
        parse_command(args)


@pytest.mark.parametrize("page", [pytest.param(p, id=page_id(p)) for p in BASH_PAGES])
def test_bash_blocks_parse(page: Path) -> None:
    commands = [c for code in blocks(page, "bash") for c in specprobe_commands(code)]
    for args in commands:
        if "--help" in args or "--version" in args:
            continue
        try:
            parse_command(args)
        except Exception as err:
            raise AssertionError(f"{page_id(page)}: specprobe {shlex.join(args)}: {err}") from err


def test_every_bash_page_calls_specprobe_somewhere() -> None:
    """The parser above finds the commands (a change of the pattern cannot silence it)."""
    readme = [c for code in blocks(ROOT / "README.md", "bash") for c in specprobe_commands(code)]
    assert ["demo"] in readme


def test_recipe_blocks_validate(tmp_path: Path) -> None:
    from specprobe.recipes.loader import load_recipe

    recipes = [
        code for page in PAGES for code in blocks(page, "yaml") if code.lstrip().startswith("version:")
    ]
    assert recipes, "the recipes page shows a recipe"
    for number, code in enumerate(recipes):
        path = tmp_path / f"recipe-{number}.yaml"
        path.write_text(code, encoding="utf-8")
        recipe = load_recipe(path)
        assert recipe.models


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "hooks" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_lists_every_option() -> None:
    hook = load_hook()
    page = (DOCS / "cli-reference.md").read_text(encoding="utf-8")
    assert hook.MARKER in page
    rendered = hook.on_page_markdown(page, None, None, None)
    group = _group()
    ctx = group.context_class(group, info_name="specprobe")
    for name in group.list_commands(ctx):
        assert f"## `specprobe {name}`" in rendered
        command = group.get_command(ctx, name)
        for param in command.get_params(ctx):
            for option in [*param.opts, *param.secondary_opts]:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}`" in rendered, f"{name} {option}"
    assert "`--probes` | N (≥ 2, ≤ 10000) | `32` |" in rendered
    assert (
        "`--estimator` | `exact` or `hutchinson` or `hutchinson_per_sample` | `hutchinson_per_sample`"
        in rendered
    )


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None,
    reason="needs the docs extra",
)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    html = (tmp_path / "site" / "cli-reference" / "index.html").read_text(encoding="utf-8")
    assert "--num-sequences" in html and "specprobe-cli-reference" not in html


def test_citation_names_the_tool_and_the_paper() -> None:
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    for key in ("cff-version", "message", "title", "authors", "type"):
        assert cff[key], key
    assert cff["type"] == "software" and cff["cff-version"] == "1.2.0"
    (paper,) = cff["references"]
    assert paper["title"] == "Spectral Reach: Understanding Neural Scaling as Progress into the Spectral Tail"
    assert [a["family-names"] for a in paper["authors"]] == [
        "Nikolaou",
        "Scheunemann",
        "Krippendorf",
        "Tovey",
        "Holm",
    ]
    assert paper["url"].endswith("2605.31244") and paper["year"] == 2026


def test_readme_is_a_landing_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 160
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.(?:md|png|cff))\)", readme):
        assert (ROOT / link).is_file(), link


DEMO_PAGES = [ROOT / "README.md", DOCS / "getting-started.md"]


def demo_excerpts(page: Path) -> list[list[list[str]]]:
    """The demo excerpts of a page (its ```text blocks that open with the demo's table
    title), each as its segments (split at lines ``...``) of lines."""
    out = []
    for code in blocks(page, "text"):
        if code.startswith("neox-w"):
            segments: list[list[str]] = [[]]
            for line in code.rstrip("\n").split("\n"):
                if line == "...":
                    segments.append([])
                else:
                    segments[-1].append(line)
            out.append(segments)
    return out


def test_every_demo_page_has_an_excerpt() -> None:
    for page in DEMO_PAGES:
        assert demo_excerpts(page), page_id(page)


@pytest.mark.skipif(
    "SPECPROBE_DEMO_OUTPUT" not in __import__("os").environ,
    reason="set SPECPROBE_DEMO_OUTPUT to a file holding `COLUMNS=100 specprobe demo` output",
)
def test_demo_excerpts_equal_the_demo_output() -> None:
    """Each segment of each excerpt is a run of consecutive lines of the demo's output,
    digit for digit (the demo takes minutes, so its output is given, not produced here):
    COLUMNS=100 specprobe demo > demo.txt; SPECPROBE_DEMO_OUTPUT=demo.txt pytest -k excerpts."""
    import os

    output = Path(os.environ["SPECPROBE_DEMO_OUTPUT"]).read_text(encoding="utf-8").split("\n")
    output = [line.rstrip() for line in output]
    for page in DEMO_PAGES:
        for segments in demo_excerpts(page):
            for segment in segments:
                lines = [line.rstrip() for line in segment]
                found = any(output[i : i + len(lines)] == lines for i in range(len(output)))
                assert found, f"{page_id(page)}: not in the demo's output: {lines[0]!r} …"
