"""The ``specprobe`` command line: the Typer app, its main callback, and the commands'
registration (one module per command; what they share is in :mod:`specprobe.cli.common`
and :mod:`specprobe.cli.options`).

The exit codes are listed in :mod:`specprobe.cli.common`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from specprobe.cli import analyze, demo, report, run, selftest
from specprobe.cli.common import State, console, tolerant_output


def _flags_take_no_value(params: list[Any]) -> list[Any]:
    """``params`` with every flag (``--json``, ``--help``, ``--resume/--no-resume``) shown in
    the help as taking no value: typer would show ``<bool>``, as if ``--json true`` were
    the way to write it."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Group(TyperGroup):
    """The ``specprobe`` group: its help shows flags as flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))


class Command(TyperCommand):
    """A command whose help names its arguments by their metavar (``MODEL...``, not typer's
    ``{models}...``) and shows flags as taking no value."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument) and param.metavar is not None:
                pieces.append(param.metavar)
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


app = typer.Typer(
    name="specprobe",
    cls=Group,
    help="Spectral position of the empirical NTK (eNTK) across models and checkpoints.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from specprobe.version import __version__

        console.print(f"specprobe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """Measure the loss–network–position decomposition of the eNTK: spectral position and reach."""
    State.debug = debug
    tolerant_output()


# In the order `specprobe --help` lists them.
app.command(cls=Command, epilog=selftest.EPILOG)(selftest.selftest)
app.command(cls=Command, epilog=analyze.EPILOG)(analyze.analyze)
app.command(cls=Command, epilog=report.REPORT_EPILOG)(report.report)
app.command(cls=Command, epilog=run.RUN_EPILOG)(run.run)
app.command(cls=Command, epilog=run.VALIDATE_EPILOG)(run.validate)
app.command(cls=Command, name="recipes")(run.list_recipes)
app.command(cls=Command, epilog=report.PLOT_EPILOG)(report.plot)
app.command(cls=Command, epilog=demo.EPILOG)(demo.demo)
