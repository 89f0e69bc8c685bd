"""The ``specprobe`` command line: the Typer app, its main callback, and the commands'
registration (one module per command; what they share is in :mod:`specprobe.cli.common`
and :mod:`specprobe.cli.options`).

The exit codes are listed in :mod:`specprobe.cli.common`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from specprobe.cli import analyze, demo, report, run, selftest
from specprobe.cli.common import State, console

app = typer.Typer(
    name="specprobe",
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


# In the order `specprobe --help` lists them.
app.command(epilog=selftest.EPILOG)(selftest.selftest)
app.command(epilog=analyze.EPILOG)(analyze.analyze)
app.command(epilog=report.REPORT_EPILOG)(report.report)
app.command(epilog=run.RUN_EPILOG)(run.run)
app.command(epilog=run.VALIDATE_EPILOG)(run.validate)
app.command(name="recipes")(run.list_recipes)
app.command(epilog=report.PLOT_EPILOG)(report.plot)
app.command(epilog=demo.EPILOG)(demo.demo)
