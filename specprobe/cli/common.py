"""What the commands share: the consoles, library errors mapped to exit codes, the parsers
of text options, and the printing of records, warnings, HTML reports and figures.

Exit codes: 0 success; 1 a check or measurement failed; 2 bad input or setting (one line
``error: ...`` with a hint; ``--debug`` shows the traceback instead), including an output
folder that is not specprobe's or that another process is writing, a recipe that sets
``trust_remote_code``, and a checkpoint missing weights of its model; 130 interrupted
(Ctrl-C; the finished records kept); 141 the reader of standard output stopped reading
(``| head``; nothing said, the records kept). Everything heavy is
imported inside the functions: ``specprobe --help`` stays torch-free.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from specprobe.store.records import Record
    from specprobe.store.results import ResultStore

MIN_WIDTH = 80
"""The narrowest the report is laid out (``COLUMNS=40`` or ``COLUMNS=0`` would squeeze its
columns to one character or to nothing; a narrower terminal wraps the lines instead)."""


SIGPIPE_EXIT = 141
"""The exit code when the reader of standard output stops reading (``| head -1``): 128 +
SIGPIPE, as a command killed by the closed pipe gives; said nowhere, the records are kept."""


class _Console(Console):
    """Rich's console, but a closed standard output (``| head -1``) ends the command with
    :data:`SIGPIPE_EXIT`, quietly, not with 1 (the code of a failed check)."""

    def on_broken_pipe(self) -> None:
        _quiet_stdout()
        raise typer.Exit(code=SIGPIPE_EXIT)

    def _write_buffer(self) -> None:
        # A stream that refuses a write (standard output on /dev/full, a disk that filled)
        # is named as the stream, not as a path given to us (the OSError has none).
        try:
            super()._write_buffer()
        except BrokenPipeError:
            raise
        except OSError as err:
            from specprobe.errors import SpecprobeError

            stream = "standard error" if self.stderr else "standard output"
            raise SpecprobeError(
                f"expected to write the output to {stream}, found it refused: {err.strerror or err}",
                f"records already measured are kept in the run folder; send {stream} elsewhere "
                "(a file with room, or a terminal) and rerun (analyze: with --resume)",
            ) from None


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so that the flush at exit raises nothing either."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


console = _Console()
err_console = _Console(stderr=True)
for _console in (console, err_console):
    if _console.width < MIN_WIDTH:
        _console.width = MIN_WIDTH


def tolerant_output() -> None:
    """Standard output and error that cannot encode a character (``LC_ALL=C``,
    ``PYTHONIOENCODING=latin-1``) write ``?`` for it instead of raising after the work is
    done; Rich then draws the tables with ASCII lines."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        reconfigure = getattr(stream, "reconfigure", None)
        if encoding not in ("utf8", "utf8sig") and reconfigure is not None:
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):  # a stream that cannot change now: left as it is
                continue


F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Set by the main callback (``specprobe --debug``) before a command runs."""

    debug = False


def handle_errors(command: F) -> F:
    """Turn a SpecprobeError into ``error: ...`` / ``hint: ...`` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from specprobe.errors import SpecprobeError

        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # the reader stopped reading (`| head`): quietly
            _quiet_stdout()
            raise typer.Exit(code=SIGPIPE_EXIT) from None
        except SpecprobeError as err:
            if State.debug:
                raise
            rank = launched_rank()
            if rank and getattr(err, "shared", False):  # every process has it; process 0 says it
                raise typer.Exit(code=2) from None
            where = f"process {rank}: " if rank else ""
            err_console.print(
                f"[bold red]error:[/] {where}{escape(err.message)}", highlight=False, soft_wrap=True
            )
            if err.hint:
                err_console.print(f"[bold]hint:[/] {escape(err.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except OSError as err:  # the file system refused a path given to us: bad input, one line
            if State.debug:
                raise
            where = f": {err.filename}" if err.filename else ""
            err_console.print(
                f"[bold red]error:[/] {escape(f'{err.strerror or err}{where}')}",
                highlight=False,
                soft_wrap=True,
            )
            err_console.print(
                "[bold]hint:[/] check the paths given, their permissions and the free space",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def launched_rank() -> int:
    """This process's rank under a launcher (0 without one)."""
    from specprobe.pipeline.processes import process_rank

    return process_rank()


# ---- parsing text options ------------------------------------------------------------------------


def parse_groups(value: str | None) -> str | dict[str, list[str]] | None:
    """``auto``, or ``NAME=GLOB,GLOB;NAME=GLOB`` as a mapping of group name to globs."""
    from specprobe.errors import SpecprobeError

    if value is None or value == "auto":
        return value
    groups: dict[str, list[str]] = {}
    for part in value.split(";"):
        name, sep, globs = part.partition("=")
        if not sep or not name.strip() or not globs.strip():
            raise SpecprobeError(
                f"expected --groups auto or NAME=GLOB,GLOB;NAME=GLOB, found {part!r}",
                "e.g. --groups 'attention=*.attention.*;mlp=*.mlp.*'",
            )
        groups[name.strip()] = [g.strip() for g in globs.split(",") if g.strip()]
    return groups


def split_list(value: str | None) -> tuple[str, ...] | None:
    """A comma list as its items (None when the option was not given); SpecprobeError when
    it was given but names nothing (``--revisions ""`` or ``",,,"`` must not mean "all")."""
    from specprobe.errors import SpecprobeError

    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise SpecprobeError(
            f"expected a comma list of at least one name, found {value!r}",
            "name at least one (e.g. --revisions step1000,step143000), or leave the option out for its default",
        )
    return items


def parse_sets(values: list[str] | None) -> dict[str, str]:
    """``--set NAME=VALUE`` options as the recipe's variables."""
    from specprobe.errors import SpecprobeError

    out = {}
    for item in values or []:
        if "=" not in item:
            raise SpecprobeError(f"expected --set NAME=VALUE, found {item!r}", "e.g. --set root=/data/runs")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


# ---- printing and writing ------------------------------------------------------------------------


def print_json_lines(records: Sequence[Record]) -> None:
    """One JSON object a line, as in results.jsonl: for jq and other tools."""
    for record in records:
        typer.echo(json.dumps(record, default=str))


def print_warnings(warnings: list[str]) -> None:
    """One ``warning: ...`` line each on stderr (the text is text: brackets shown as typed)."""
    for warning in warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def check_outputs(
    run: str | Path | None,
    *,
    html: str | None = None,
    csv: str | None = None,
    figures: str | Path | None = None,
    inputs: Sequence[str | Path] = (),
) -> None:
    """Refuse, before any work, a run folder ``run`` inside one of ``inputs`` (a dataset
    folder, a local model's folder), and an output (``--html``, ``--csv``, the figures
    folder) that would replace a file of the run folder that only the store writes, or
    one of ``inputs`` (:func:`specprobe.store.folder.check_output`, the one check every
    output path goes through; the writers below call it again)."""
    import os

    from specprobe.store.folder import check_output, check_run_folder, output_path, refuse_input_place

    runs = [run] if run is not None else []
    local = [i for i in inputs if Path(i).expanduser().exists()]
    if run is not None:  # its files would be written into the input (and read as data next time)
        check_run_folder(run)  # first: a folder of other files (a model's) is named by its files
        refuse_input_place(
            Path(os.path.realpath(output_path(run))),
            what="--out",
            shown=run,
            inputs=local,
            example=f"--out {Path.cwd() / 'specprobe-runs' / Path(run).name}",
        )
    for option, path, folder in (("--html", html, False), ("--csv", csv, False), ("--out", figures, True)):
        if path is not None:
            check_output(path, option, folder=folder, runs=runs, inputs=local)


def report_console(json_output: bool = False, **outputs: str | None) -> Console:
    """Where the report is shown: standard output, or standard error when an output (e.g.
    ``html="-"``) is standard output; SpecprobeError when two outputs claim it."""
    from specprobe.errors import SpecprobeError

    claims = [f"--{name}" for name, path in outputs.items() if path == "-"] + (
        ["--json"] if json_output else []
    )
    if len(claims) > 1:
        raise SpecprobeError(
            f"expected at most one output on standard output, found {' and '.join(claims)}",
            f"give {claims[-1]} a file name",
        )
    return err_console if any(path == "-" for path in outputs.values()) else console


def write_html(records: Sequence[Record], path: str, store: ResultStore) -> None:
    """The whole report of ``records`` as one HTML file at ``path`` (``-``: standard
    output), with the run's config."""
    from specprobe.report.html import write_html as write
    from specprobe.store.folder import check_output

    out = check_output(path, "--html", runs=[store.directory])
    written = write(records, out, config=store.config())  # titled with the family's name
    if path != "-":
        console.print(f"HTML report in {escape(str(written))}", highlight=False)


def write_csv(records: Sequence[Record], path: str) -> None:
    """The report's rows of ``records`` as one CSV file at ``path`` (``-``: standard output;
    cells that a spreadsheet would read as formulas neutralised: ``specprobe.report.spreadsheet``)."""
    from specprobe.report.spreadsheet import write_csv as write

    rows, columns = write(records, path)
    where = "on standard output" if path == "-" else f"in {escape(path)}"
    err_console.print(f"CSV ({rows} rows, {columns} columns) {where}", highlight=False)


def write_figures(records: Sequence[Record], directory: Path) -> None:
    """The family figures (PNG and SVG) of ``records`` into ``directory``."""
    from specprobe.report.plots import write_figures as write
    from specprobe.store.folder import check_output

    written = write(records, check_output(directory, "--out", folder=True))
    names = sorted({p.stem for p in written})
    console.print(
        f"figures ({escape(', '.join(names))}; PNG and SVG) in {escape(str(directory))}", highlight=False
    )
