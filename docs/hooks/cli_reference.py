"""The command-line reference, generated from the Typer app at build time.

``mkdocs build`` calls :func:`on_page_markdown` for every page; on a page holding the
marker ``<!-- specprobe-cli-reference -->`` it puts the reference that :func:`render`
writes by walking the click command tree of :data:`specprobe.cli.app`: each command's
usage, help, arguments and options (grouped by their help panel, with type, range and
default) and its examples. The page therefore cannot drift from the code; the test
``tests/test_docs.py::test_cli_reference_lists_every_option`` checks the walk itself.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

import typer.main
from typer.core import TyperArgument, TyperOption

MARKER = "<!-- specprobe-cli-reference -->"
_MARKUP = re.compile(r"\[/?(bold|italic|dim|red|green|yellow|blue|cyan|magenta|b|i|u|code)\]")


def _plain(text: str | None) -> str:
    """Help text without rich markup, on one line, with Markdown's table bars escaped."""
    if not text:
        return ""
    text = " ".join(_MARKUP.sub("", text).split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _type(param: Any) -> str:
    """The value a parameter takes: its metavar (its enum's values for a choice), with its range."""
    if getattr(param, "is_flag", False):
        return ""
    annotation = param.type_descriptor.annotation
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        metavar = " or ".join(f"`{member.value}`" for member in annotation)
    else:
        metavar = param.metavar or getattr(annotation, "__name__", "VALUE").upper()
    lo, hi = param.min, param.max
    if lo is not None or hi is not None:
        bounds = [f"≥ {lo}" if lo is not None else "", f"≤ {hi}" if hi is not None else ""]
        metavar += " (" + ", ".join(b for b in bounds if b) + ")"
    return metavar


def _default(param: Any) -> str:
    if isinstance(param, TyperOption) and param.is_flag and not param.secondary_opts:
        return ""
    default = param.default
    if default is None or default == () or (isinstance(param, TyperOption) and param.show_default is False):
        return ""
    if isinstance(default, bool) and isinstance(param, TyperOption) and param.secondary_opts:
        return param.opts[0] if default else param.secondary_opts[0]
    value = getattr(default, "value", default)
    return f"`{value}`"


def _command(name: str, command: Any, parent: Any) -> list[str]:
    ctx = command.context_class(command, info_name=name, parent=parent)
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    lines = [
        f"## `specprobe {name}`",
        "",
        "```text",
        usage,
        "```",
        "",
        _MARKUP.sub("", command.help or ""),
        "",
    ]
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [p for p in params if isinstance(p, TyperArgument)]
    if arguments:
        lines += ["| argument | takes | meaning |", "| --- | --- | --- |"]
        for p in arguments:
            required = " (required)" if p.required else ""
            lines.append(
                f"| `{p.metavar or p.name}` | {p.nargs if p.nargs != -1 else 'one or more'} | "
                f"{_plain(getattr(p, 'help', ''))}{required} |"
            )
        lines.append("")
    panels: dict[str, list[Any]] = {}
    for p in params:
        if isinstance(p, TyperOption) and p.name != "help":
            panels.setdefault(getattr(p, "rich_help_panel", None) or "Options", []).append(p)
    for panel, options in panels.items():
        lines += [f"**{panel}**", "", "| option | value | default | meaning |", "| --- | --- | --- | --- |"]
        for p in options:
            names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            lines.append(f"| {names} | {_type(p)} | {_default(p)} | {_plain(p.help)} |")
        lines.append("")
    if command.epilog:
        lines += ["Examples and notes:", "", "```text", command.epilog.strip(), "```", ""]
    return lines


def render(app: Any = None) -> str:
    """The reference of every command of ``app`` (default: specprobe's) as Markdown."""
    if app is None:
        from specprobe.cli import app
    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="specprobe")
    lines = [
        "```text",
        " ".join(["specprobe", *group.collect_usage_pieces(root)]),
        "```",
        "",
        _MARKUP.sub("", group.help or ""),
        "",
    ]
    lines += ["| option | meaning |", "| --- | --- |"]
    for p in group.get_params(root):
        if isinstance(p, TyperOption) and p.name != "help":
            lines.append(f"| {', '.join(f'`{o}`' for o in p.opts)} | {_plain(p.help)} |")
    lines.append("")
    for name in group.list_commands(root):
        command = group.get_command(root, name)
        if command is not None and not command.hidden:
            lines += _command(name, command, root)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: fill the marker with the generated reference."""
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown
