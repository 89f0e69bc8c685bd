"""Running a sweep plan for the commands that measure (analyze, run, demo): the progress
display, the report, and the exit code."""

from __future__ import annotations

from typing import Any

import typer

from specprobe.choices import Split
from specprobe.cli.common import (
    check_outputs,
    err_console,
    launched_rank,
    print_json_lines,
    print_warnings,
    report_console,
    write_figures,
    write_html,
)


def execute_plan(
    plan: Any,
    out: str | None,
    *,
    resume: bool,
    json_output: bool,
    invocation: dict[str, Any],
    plots: bool = False,
    html: str | None = None,
    parallel: Any = None,
    wide: bool = False,
) -> None:
    """Run a sweep with a progress display, then print the report (and write the figures
    with ``plots``; every column with ``wide``); exit 1 if a checkpoint failed. Under a launcher only process 0
    displays and prints; the others measure silently."""
    from contextlib import nullcontext

    from specprobe.errors import SpecprobeError
    from specprobe.pipeline.plan import Observer
    from specprobe.pipeline.processes import SweepStopped
    from specprobe.pipeline.sweep import default_out_dir, drop_if_empty, plan_inputs, sweep_into
    from specprobe.report.progress import SweepProgress
    from specprobe.report.terminal import render_run

    screen = report_console(json_output, html=html)  # `--html -` takes standard output
    claimed = default_out_dir() if out is None else None  # made now: unique even within a second
    out = out if claimed is None else str(claimed)
    worker = launched_rank() != 0
    display: Any = nullcontext(Observer()) if worker else SweepProgress(err_console)
    try:
        check_outputs(out, html=html, inputs=plan_inputs(plan))  # before any work
        with display as progress:
            done = sweep_into(
                plan, out, resume=resume, observer=progress, invocation=invocation, parallel=parallel
            )
    except SpecprobeError:
        if claimed is not None:
            drop_if_empty(claimed)  # refused before anything was written: no empty folder left
        raise
    except KeyboardInterrupt as err:
        if worker or not isinstance(err, SweepStopped):
            raise typer.Exit(code=130) from None
        if err.missing:
            err_console.print(
                f"not measured: {', '.join(err.missing)}", highlight=False, soft_wrap=True, markup=False
            )
        err_console.print(
            f"interrupted: {err.saved} finished record(s) are kept in {err.directory}; "
            "rerun the same command with --resume to continue",
            markup=False,
        )
        raise typer.Exit(code=err.exit_code) from None
    result, store, directory = done.result, done.store, done.directory
    if worker:
        return
    print_warnings(result.warnings)
    if json_output:
        print_json_lines(result.records)
    else:
        render_run(result.records, screen, wide=wide)
        screen.print(
            f"{result.measured} measured, {result.skipped} resumed, {result.failed} failed; "
            f"results in {directory / 'results.jsonl'}",
            highlight=False,
            markup=False,  # the folder's name is text, brackets included
        )
    if html is not None:
        write_html(result.records, html, store)
    if plots:
        write_figures(result.records, directory / "figures")
    if result.failed:
        raise typer.Exit(code=1)


def parallel(split: Split, gpus_per_model: int) -> Any:
    """How launched processes share the sweep (``--split``, ``--gpus-per-model``)."""
    from specprobe.pipeline.processes import Parallel

    return Parallel(split, gpus_per_model)
