"""``specprobe report`` and ``plot``: a run's results, shown, exported and drawn."""

from __future__ import annotations

from typing import Annotated

from specprobe.cli.common import (
    check_outputs,
    handle_errors,
    print_json_lines,
    print_warnings,
    report_console,
    write_csv,
    write_figures,
    write_html,
)
from specprobe.cli.options import OUTPUT, Html, JsonOutput, RunDirectory, Wide, option

REPORT_EPILOG = "Examples:\n\n  specprobe report specprobe-runs/20261128-120000\n\n  specprobe report runs/pythia --json\n\n  specprobe report runs/pythia --wide | less -S\n\n  specprobe report runs/pythia --csv pythia.csv --html pythia.html"
PLOT_EPILOG = (
    "Examples:\n\n  specprobe plot specprobe-demo/run\n\n  specprobe plot runs/pythia --out paper/figures"
)


@handle_errors
def report(
    directory: RunDirectory,
    json_output: JsonOutput = False,
    wide: Wide = False,
    csv: Annotated[
        str | None,
        option(
            "Also write the records' scalar columns to this CSV file (one row per checkpoint).",
            OUTPUT,
            "FILE",
        ),
    ] = None,
    html: Html = None,
) -> None:
    """Show the report of a finished or partial run."""
    from specprobe.report.terminal import render_run
    from specprobe.store.results import ResultStore

    store = ResultStore.existing(directory, "give the --out directory of specprobe analyze")
    screen = report_console(json_output, csv=csv, html=html)  # `-` takes standard output
    check_outputs(store.directory, html=html, csv=csv)
    contents = store.read()
    print_warnings([line.warning(store.results_path) for line in contents.skipped])
    records = contents.records
    if json_output:
        print_json_lines(records)
    else:
        render_run(records, screen, wide=wide)
    if csv is not None:
        write_csv(records, csv)
    if html is not None:
        write_html(records, html, store)


@handle_errors
def plot(
    directory: RunDirectory,
    out: Annotated[
        str | None, option("Where to write the figures (default: DIR/figures).", metavar="OUT")
    ] = None,
) -> None:
    """Write the family figures of a run: loss and reach against size, position against
    compute, gradient amplification, and eNTK spectra when eigenpairs were computed."""
    from pathlib import Path

    from specprobe.store.results import ResultStore

    store = ResultStore.existing(directory, "give the --out directory of specprobe analyze or run")
    figures = Path(out).expanduser() if out else store.directory / "figures"
    check_outputs(store.directory, figures=figures)
    print_warnings(store.warnings())
    write_figures(store.records(), figures)
