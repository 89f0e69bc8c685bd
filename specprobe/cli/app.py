"""The ``specprobe`` command line: thin, lazy imports, library errors mapped to exit codes.

Exit codes: 0 success; 1 a check or measurement failed; 2 bad input or setting (one line
``error: ...`` with a hint; ``--debug`` shows the traceback instead), including an output
folder that is not specprobe's or that another process is writing, a recipe that sets
``trust_remote_code``, and a checkpoint missing weights of its model.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from specprobe.choices import Device, DType, Estimator, Split, TinyArch
from specprobe.config import LIMITS, upper

app = typer.Typer(
    name="specprobe",
    help="Spectral position of the empirical NTK (eNTK) across models and checkpoints.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _low(name: str) -> int:
    """The option's smallest value, from the one table of limits (``specprobe.config``)."""
    return LIMITS[name].low


_high = upper
"""The option's largest value, from the same table."""


class _State:
    debug = False


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
    _State.debug = debug


def handle_errors(command: F) -> F:
    """Turn a SpecprobeError into ``error: ...`` / ``hint: ...`` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from specprobe.errors import SpecprobeError

        try:
            return command(*args, **kwargs)
        except SpecprobeError as err:
            if _State.debug:
                raise
            rank = _launched_rank()
            if rank and getattr(err, "shared", False):  # every process has it; process 0 says it
                raise typer.Exit(code=2) from None
            where = f"process {rank}: " if rank else ""
            err_console.print(f"[bold red]error:[/] {where}{err.message}", highlight=False, soft_wrap=True)
            if err.hint:
                err_console.print(f"[bold]hint:[/] {err.hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except OSError as err:  # the file system refused a path given to us: bad input, one line
            if _State.debug:
                raise
            where = f": {err.filename}" if err.filename else ""
            err_console.print(
                f"[bold red]error:[/] {err.strerror or err}{where}", highlight=False, soft_wrap=True
            )
            err_console.print(
                "[bold]hint:[/] check the paths given, their permissions and the free space",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _launched_rank() -> int:
    """This process's rank under a launcher (0 without one)."""
    from specprobe.pipeline.processes import process_rank

    return process_rank()


@app.command(
    epilog="Examples:\n\n  specprobe selftest\n\n  specprobe selftest --arch gpt2 --device cuda",
)
@handle_errors
def selftest(
    arch: Annotated[TinyArch, typer.Option(help="Tiny architecture to check.")] = TinyArch.GPT_NEOX,
    device: Annotated[Device, typer.Option(help="Where to run the check.")] = Device.cpu,
    probes: Annotated[int, typer.Option(min=2, help="Hutchinson probes.")] = 64,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the model, the batch and the probes.")] = 0,
) -> None:
    """Check this installation: measure a tiny random model and compare with the dense eNTK.

    Builds J and Θ = J Jᵀ explicitly in float64 for a tiny causal LM with a padded batch,
    and checks that the matrix-free measurement agrees: exact quantities to 1e-6 relative,
    the Hutchinson estimate of χ_net to within 4 of its standard errors.
    """
    import torch

    import specprobe
    from specprobe.errors import SpecprobeError
    from specprobe.models.tiny import tiny_causal_lm
    from specprobe.report.terminal import CheckRow, selftest_table

    if device is Device.cuda and not torch.cuda.is_available():
        raise SpecprobeError("expected a CUDA device, found none", "run with --device cpu")
    where = (
        "cuda" if device is Device.cuda or (device is Device.auto and torch.cuda.is_available()) else "cpu"
    )
    model = tiny_causal_lm(arch.value, vocab_size=32, hidden_size=16, seed=seed, dtype=torch.float64)
    model = model.to(where)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 32, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[3, 5:] = 0
    batch = {"input_ids": ids.to(where), "attention_mask": mask.to(where)}
    ref = specprobe.dense_kernel(model, batch)
    exact = specprobe.measure(model, batch, estimator="exact")
    est = specprobe.measure(model, batch, estimator="hutchinson", probes=probes, seed=seed)
    rows = [
        CheckRow(name, getattr(exact, name), getattr(ref, name), 1e-6)
        for name in ("loss", "grad_norm_sq", "chi_loss", "chi_net", "spectral_position")
    ]
    rows.append(CheckRow("chi_net (hutchinson)", est.chi_net, ref.chi_net, 4.0, est.chi_net_stderr))
    title = (
        f"selftest: tiny {arch.value} on {where}, D={exact.num_outputs} outputs, "
        f"P={exact.num_params} parameters"
    )
    console.print(selftest_table(rows, title))
    if not all(row.ok for row in rows):
        err_console.print("[bold red]selftest failed[/]: the measurement disagrees with the dense reference")
        raise typer.Exit(code=1)
    console.print("[green]all checks passed[/]")


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


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


ANALYZE_EPILOG = """Examples:

  specprobe analyze EleutherAI/pythia-160m --revisions step1000,step10000,step143000

  specprobe analyze EleutherAI/pythia-70m EleutherAI/pythia-160m --revisions step143000 --dataset NeelNanda/pile-10k --num-sequences 64 --seq-len 256 --out runs/pythia

  specprobe analyze ./my-run        (a training output directory with checkpoint-*/ folders)

Exit codes: 0 all checkpoints measured; 1 some checkpoint failed (recorded as failed); 2 bad input; 130 interrupted (finished records are kept; rerun with --resume).
"""


@app.command(epilog=ANALYZE_EPILOG)
@handle_errors
def analyze(
    models: Annotated[list[str], typer.Argument(help="Hub ids (org/name) or local directories.")],
    revisions: Annotated[
        str | None,
        typer.Option(help="Comma list of revisions (hub branches/tags, or checkpoint-<step> folder names)."),
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="Hub dataset name, or a local .txt/.jsonl/.parquet file or folder.")
    ] = "NeelNanda/pile-10k",
    dataset_config: Annotated[str | None, typer.Option(help="The hub dataset's configuration.")] = None,
    split: Annotated[str, typer.Option(help="Dataset split.")] = "train",
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    num_sequences: Annotated[
        int, typer.Option(min=_low("num_sequences"), help="Sequences in the subset.")
    ] = 32,
    seq_len: Annotated[int, typer.Option(min=_low("seq_len"), help="Tokens per sequence.")] = 128,
    batch_size: Annotated[
        int, typer.Option(min=_low("batch_size"), help="Sequences per measured batch.")
    ] = 8,
    seed: Annotated[int, typer.Option(min=_low("seed"), help="Seed of the subset and the probes.")] = 0,
    estimator: Annotated[Estimator, typer.Option(help="χ_net estimator.")] = Estimator.HUTCHINSON_PER_SAMPLE,
    probes: Annotated[
        int, typer.Option(min=_low("probes"), max=_high("probes"), help="Hutchinson probes per batch.")
    ] = 32,
    params: Annotated[
        str | None, typer.Option(help="Comma list of parameter-name globs (default: all trainable).")
    ] = None,
    micro_batch_size: Annotated[
        int | None,
        typer.Option(min=_low("micro_batch_size"), help="Sequences per forward pass (default: the batch)."),
    ] = None,
    groups: Annotated[
        str | None,
        typer.Option(
            help="Split χ_net and ‖∇L‖² by layer: 'auto' (embeddings, blocks, final norm, head) "
            "or 'NAME=GLOB,GLOB;NAME=GLOB'. Adds the head-only (frozen-feature) position."
        ),
    ] = None,
    eigen: Annotated[
        int,
        typer.Option(
            min=_low("eigen"),
            max=_high("eigen"),
            help="Top K eigenpairs of the eNTK per checkpoint (0: off).",
        ),
    ] = 0,
    density: Annotated[
        bool,
        typer.Option(help="With --eigen: a spectral density (SLQ), effective rank, deep position index."),
    ] = False,
    exact: Annotated[bool, typer.Option(help="With --eigen: dense eigensolver (tiny models only).")] = False,
    device: Annotated[Device, typer.Option(help="cpu, cuda, or auto (spread over GPUs).")] = Device.cpu,
    dtype: Annotated[DType, typer.Option(help="Precision the model runs in.")] = DType.float32,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow model code from the hub (off by default).")
    ] = False,
    tokens_per_step: Annotated[
        int | None,
        typer.Option(
            min=_low("tokens_per_step"), help="Tokens per training step, for tokens seen (Pythia's is known)."
        ),
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Run directory (default: ./specprobe-runs/<timestamp>).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Skip checkpoints already measured with the same settings.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the records as JSON lines.")] = False,
    plots: Annotated[bool, typer.Option(help=PLOTS_HELP)] = False,
    inputs: Annotated[
        str | None,
        typer.Option(help="For .onnx models: an .npz/.pt file with the graph inputs and 'targets'."),
    ] = None,
    html: Annotated[str | None, typer.Option(help=HTML_HELP)] = None,
    split_: Annotated[Split, typer.Option("--split", help=SPLIT_HELP)] = Split.checkpoints,
    gpus_per_model: Annotated[int, typer.Option(min=_low("gpus_per_model"), help=GPUS_HELP)] = 1,
    processes: Annotated[int, typer.Option(min=_low("processes"), help=PROCESSES_HELP)] = 1,
) -> None:
    """Measure spectral position across models and their training revisions (or ONNX graphs)."""
    _relaunch(processes)
    from specprobe.config import DataSpec, ProbeSpec

    probe = ProbeSpec(
        estimator=estimator,
        probes=probes,
        seed=seed,
        params=_split(params),
        micro_batch_size=micro_batch_size,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        groups=parse_groups(groups),
        eigen=eigen,
        density=density,
        exact=exact,
    )
    if any(m.endswith(".onnx") for m in models):
        _analyze_onnx(models, inputs, probe, out, json_output, html)
        return
    from specprobe.pipeline.plan import ModelSpec, SweepPlan

    plan = SweepPlan(
        models=tuple(
            ModelSpec(id=m, revisions=_split(revisions), tokens_per_step=tokens_per_step) for m in models
        ),
        data=DataSpec(
            dataset=dataset,
            config=dataset_config,
            split=split,
            text_column=text_column,
            num_sequences=num_sequences,
            seq_len=seq_len,
            batch_size=batch_size,
            seed=seed,
        ),
        probe=probe,
    )
    if resume and out is None:
        from specprobe.errors import SpecprobeError

        raise SpecprobeError(
            "--resume continues a run in a directory, found no --out",
            "pass --out DIR with the directory of the run to continue",
        )
    invocation = {"command": "analyze", "argv": sys.argv[1:], "models": models, "revisions": revisions}
    execute_plan(
        plan,
        out,
        resume=resume,
        json_output=json_output,
        invocation=invocation,
        plots=plots,
        parallel=_parallel(split_, gpus_per_model),
        html=html,
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
) -> None:
    """Run a sweep with a progress display, then print the report (and write the figures
    with ``plots``); exit 1 if a checkpoint failed. Under a launcher only process 0
    displays and prints; the others measure silently."""
    from contextlib import nullcontext

    from specprobe.pipeline.plan import Observer
    from specprobe.pipeline.processes import SweepStopped
    from specprobe.pipeline.sweep import sweep_into
    from specprobe.report.progress import SweepProgress
    from specprobe.report.terminal import render_run

    worker = _launched_rank() != 0
    display: Any = nullcontext(Observer()) if worker else SweepProgress(err_console)
    try:
        with display as progress:
            done = sweep_into(
                plan, out, resume=resume, observer=progress, invocation=invocation, parallel=parallel
            )
    except KeyboardInterrupt as err:
        if worker or not isinstance(err, SweepStopped):
            raise typer.Exit(code=130) from None
        if err.missing:
            err_console.print(f"not measured: {', '.join(err.missing)}", highlight=False, soft_wrap=True)
        err_console.print(
            f"interrupted: {err.saved} finished record(s) are kept in {err.directory}; "
            "rerun the same command with --resume to continue"
        )
        raise typer.Exit(code=err.exit_code) from None
    result, store, directory = done.result, done.store, done.directory
    if worker:
        return
    _print_warnings(result.warnings)
    if json_output:
        _print_json_lines(result.records)
    else:
        render_run(result.records, console)
        console.print(
            f"{result.measured} measured, {result.skipped} resumed, {result.failed} failed; "
            f"results in {directory / 'results.jsonl'}",
            highlight=False,
        )
    if html is not None:
        _write_html(result.records, html, store)
    if plots:
        _write_figures(result.records, directory / "figures")
    if result.failed:
        raise typer.Exit(code=1)


def _write_html(records: list[dict[str, Any]], path: str, store: Any) -> None:
    from specprobe.report.html import write_html

    written = write_html(
        records, path, config=store.config(), title=f"specprobe report: {store.directory.name}"
    )
    console.print(f"HTML report in {written}", highlight=False)


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _write_figures(records: list[dict[str, Any]], directory: Any) -> None:
    from specprobe.report.plots import write_figures

    written = write_figures(records, directory)
    names = sorted({p.stem for p in written})
    console.print(f"figures ({', '.join(names)}; PNG and SVG) in {directory}", highlight=False)


SPLIT_HELP = (
    "Under a launcher: 'checkpoints' (each process takes whole checkpoints) or "
    "'batches' (every process measures a share of every checkpoint's batches)."
)
GPUS_HELP = "Under a launcher: GPUs each model is spread over."
PROCESSES_HELP = "Start this many local processes (torchrun) and share the sweep."
HTML_HELP = "Also write the whole report as one self-contained HTML file (tables, figures, verdict) to share."
WIDE_HELP = (
    "Show every table column, however wide (by default the least important are left out to fit the terminal)."
)
PLOTS_HELP = "Also write the family figures (PNG and SVG) into DIR/figures (needs specprobe\\[plots])."


@app.command(
    epilog="Examples:\n\n  specprobe report specprobe-runs/20261128-120000\n\n  specprobe report runs/pythia --json\n\n  specprobe report runs/pythia --wide | less -S\n\n  specprobe report runs/pythia --csv pythia.csv --html pythia.html"
)
@handle_errors
def report(
    directory: Annotated[str, typer.Argument(help="A run directory (holding results.jsonl).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the records as JSON lines.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help=WIDE_HELP)] = False,
    csv: Annotated[
        str | None,
        typer.Option(
            help="Also write the records' scalar columns to this CSV file (one row per checkpoint)."
        ),
    ] = None,
    html: Annotated[str | None, typer.Option(help=HTML_HELP)] = None,
) -> None:
    """Show the report of a finished or partial run."""
    from pathlib import Path

    from specprobe.errors import SpecprobeError
    from specprobe.report.terminal import render_run
    from specprobe.store.results import ResultStore

    store = ResultStore(Path(directory))
    if not store.exists():
        raise SpecprobeError(
            f"expected a run directory with results.jsonl, found none in {directory}",
            "give the --out directory of specprobe analyze",
        )
    contents = store.read()
    _print_warnings([line.warning(store.results_path) for line in contents.skipped])
    records = contents.records
    if json_output:
        _print_json_lines(records)
    else:
        render_run(records, console, wide=wide)
    if csv is not None:
        from specprobe.store.frames import write_csv

        rows, columns = write_csv(records, csv)
        err_console.print(f"CSV ({rows} rows, {columns} columns) in {csv}", highlight=False)
    if html is not None:
        _write_html(records, html, store)


def _print_json_lines(records: list[dict[str, Any]]) -> None:
    """One JSON object a line, as in results.jsonl: for jq and other tools."""
    for record in records:
        typer.echo(json.dumps(record, default=str))


def _parse_sets(values: list[str] | None) -> dict[str, str]:
    from specprobe.errors import SpecprobeError

    out = {}
    for item in values or []:
        if "=" not in item:
            raise SpecprobeError(f"expected --set NAME=VALUE, found {item!r}", "e.g. --set root=/data/runs")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


RUN_EPILOG = """Examples:

  specprobe run recipes/pythia.yaml

  specprobe run pythia --only pythia-160m --revisions step143000

  specprobe run my-recipe.yaml --set root=/data/runs --num-sequences 64

  accelerate launch --multi_gpu --num_processes 8 -m specprobe run pythia --device cuda   (one sweep across 8 GPUs)

  specprobe run tiny-local --processes 2   (two local processes, torchrun under the hood)

Command-line options override the recipe's fields; the effective recipe is written into the run's config.json.
"""


@app.command(epilog=RUN_EPILOG)
@handle_errors
def run(
    recipe: Annotated[str, typer.Argument(help="A recipe file, or the name of a bundled recipe.")],
    only: Annotated[str | None, typer.Option(help="Comma list of model labels (or ids) to run.")] = None,
    revisions: Annotated[str | None, typer.Option(help="Comma list of revisions, for every model.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Recipe variable NAME=VALUE (repeatable).")
    ] = None,
    num_sequences: Annotated[
        int | None, typer.Option(min=_low("num_sequences"), help="Override data.num_sequences.")
    ] = None,
    seq_len: Annotated[int | None, typer.Option(min=_low("seq_len"), help="Override data.seq_len.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=_low("batch_size"), help="Override data.batch_size.")
    ] = None,
    estimator: Annotated[Estimator | None, typer.Option(help="Override probe.estimator.")] = None,
    probes: Annotated[
        int | None, typer.Option(min=_low("probes"), max=_high("probes"), help="Override probe.probes.")
    ] = None,
    groups: Annotated[
        str | None, typer.Option(help="Override probe.groups ('auto' or NAME=GLOB;...).")
    ] = None,
    eigen: Annotated[
        int | None,
        typer.Option(min=_low("eigen"), max=_high("eigen"), help="Override probe.eigen (top K eigenpairs)."),
    ] = None,
    density: Annotated[
        bool | None, typer.Option("--density/--no-density", help="Override probe.density.")
    ] = None,
    exact: Annotated[bool | None, typer.Option("--exact/--no-exact", help="Override probe.exact.")] = None,
    device: Annotated[Device | None, typer.Option(help="Override probe.device.")] = None,
    dtype: Annotated[DType | None, typer.Option(help="Override probe.dtype.")] = None,
    out: Annotated[str | None, typer.Option(help="Override output.directory.")] = None,
    resume: Annotated[
        bool | None, typer.Option("--resume/--no-resume", help="Override output.resume.")
    ] = None,
    trust_remote_code: Annotated[
        bool,
        typer.Option(help="Allow the models' own code from the hub or their folders (recipes cannot)."),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the records as JSON lines.")] = False,
    plots: Annotated[bool, typer.Option(help=PLOTS_HELP)] = False,
    html: Annotated[str | None, typer.Option(help=HTML_HELP)] = None,
    split_: Annotated[Split, typer.Option("--split", help=SPLIT_HELP)] = Split.checkpoints,
    gpus_per_model: Annotated[int, typer.Option(min=_low("gpus_per_model"), help=GPUS_HELP)] = 1,
    processes: Annotated[int, typer.Option(min=_low("processes"), help=PROCESSES_HELP)] = 1,
) -> None:
    """Run the sweep a recipe describes (the same pipeline and results store as analyze)."""
    _relaunch(processes)
    from specprobe.recipes.recipe import load_recipe, with_overrides

    loaded = load_recipe(recipe, variables=_parse_sets(set_))
    effective = with_overrides(
        loaded,
        only=_split(only),
        revisions=_split(revisions),
        num_sequences=num_sequences,
        seq_len=seq_len,
        batch_size=batch_size,
        estimator=estimator,
        probes=probes,
        groups=parse_groups(groups),
        eigen=eigen,
        density=density,
        exact=exact,
        device=device,
        dtype=dtype,
        directory=out,
        resume=resume,
        trust_remote_code=True if trust_remote_code else None,
    )
    invocation = {"command": "run", "argv": sys.argv[1:], "recipe": effective.to_dict()}
    execute_plan(
        effective.to_plan(),
        effective.output.directory,
        resume=effective.output.resume,
        json_output=json_output,
        invocation=invocation,
        plots=plots,
        html=html,
        parallel=_parallel(split_, gpus_per_model),
    )


def _parallel(split: Split, gpus_per_model: int) -> Any:
    from specprobe.pipeline.processes import Parallel

    return Parallel(split, gpus_per_model)


def _relaunch(processes: int) -> None:
    """With ``--processes N`` (N > 1) outside a launcher: run this same command in N local
    processes under torchrun, wait for them, and exit with their status."""
    import os
    import subprocess

    if processes <= 1 or "WORLD_SIZE" in os.environ:  # already launched (this stays torch-free)
        return
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={processes}", "-m", "specprobe", *args]
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    launcher = subprocess.Popen(command, env=env)
    interrupted = False
    while True:  # Ctrl-C reaches the processes too: let them keep their records and end
        try:
            code = launcher.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
    raise typer.Exit(code=130 if interrupted else code)


@app.command(epilog="Examples:\n\n  specprobe validate my-recipe.yaml\n\n  specprobe validate pythia")
@handle_errors
def validate(
    recipe: Annotated[str, typer.Argument(help="A recipe file, or the name of a bundled recipe.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Recipe variable NAME=VALUE (repeatable).")
    ] = None,
) -> None:
    """Check a recipe without loading anything big: schema, local paths, revisions, local data."""
    from pathlib import Path

    from specprobe.recipes.recipe import check_recipe, load_recipe

    loaded = load_recipe(recipe, variables=_parse_sets(set_))
    problems = check_recipe(loaded)
    for problem in problems:
        err_console.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(code=2)
    checkpoints = sum(len(loaded.model_revisions(m) or ()) or 1 for m in loaded.models)
    directory = loaded.output.directory
    where = (
        f"{Path(directory).resolve()}{' (resumed if it holds a run)' if loaded.output.resume else ''}"
        if directory is not None
        else "a new folder under ./specprobe-runs/"
    )
    console.print(
        f"[green]ok[/]: {loaded.source}: family {loaded.family.name}, {len(loaded.models)} models, "
        f"{checkpoints} checkpoints (local training folders count as one here); output folder: {where}",
        highlight=False,
        soft_wrap=True,
    )


@app.command(name="recipes")
def list_recipes() -> None:
    """List the bundled recipes with their descriptions."""
    from specprobe.recipes.recipe import bundled_recipes, load_recipe
    from specprobe.report.terminal import recipes_table

    rows = []
    for name, path in bundled_recipes().items():
        loaded = load_recipe(path)
        rows.append((name, len(loaded.models), loaded.family.description))
    console.print(recipes_table(rows))


def _analyze_onnx(
    models: list[str],
    inputs: str | None,
    probe: Any,
    out: str | None,
    json_output: bool,
    html: str | None = None,
) -> None:
    from specprobe.pipeline.onnx import measure_onnx_files
    from specprobe.report.terminal import render_run

    def checked(model: str, check: Any) -> None:
        err_console.print(
            f"{model}: converted graph matches onnxruntime to {check.max_rel_error:.1e} (relative; "
            f"tolerance {check.tolerance:g})",
            highlight=False,
        )

    store, records = measure_onnx_files(models, inputs, probe, out, checked=checked)
    if json_output:
        _print_json_lines(records)
    else:
        render_run(records, console)
        console.print(f"results in {store.results_path}", highlight=False)
    if html is not None:
        _write_html(store.records(), html, store)


@app.command(
    epilog="Examples:\n\n  specprobe plot specprobe-demo/run\n\n  specprobe plot runs/pythia --out paper/figures"
)
@handle_errors
def plot(
    directory: Annotated[str, typer.Argument(help="A run directory (holding results.jsonl).")],
    out: Annotated[
        str | None, typer.Option(help="Where to write the figures (default: DIR/figures).")
    ] = None,
) -> None:
    """Write the family figures of a run: loss and reach against size, position against
    compute, gradient amplification, and eNTK spectra when eigenpairs were computed."""
    from pathlib import Path

    from specprobe.errors import SpecprobeError
    from specprobe.store.results import ResultStore

    store = ResultStore(Path(directory))
    if not store.exists():
        raise SpecprobeError(
            f"expected a run directory with results.jsonl, found none in {directory}",
            "give the --out directory of specprobe analyze or run",
        )
    _print_warnings(store.warnings())
    _write_figures(store.records(), Path(out) if out else Path(directory) / "figures")


def _demo_help() -> tuple[str, str, str]:
    """The demo's epilog and its --fast and --preset help, from the presets (their names and
    stated costs live there, once; reading them does not import torch)."""
    from specprobe.demo.presets import DEFAULT_PRESET, FAST_PRESET, PRESETS

    def listed(marks: dict[str, str]) -> str:
        return ", ".join(f"{name} ({marks[name]})" if name in marks else name for name in PRESETS)

    default = {DEFAULT_PRESET: "default"}
    epilog = f"""Examples:

  specprobe demo                  ({PRESETS[DEFAULT_PRESET].budget})

  specprobe demo --fast --out /tmp/demo

  specprobe demo --preset llama-cpu --out llama-demo

  specprobe demo --preset llama-gpu --device cuda --out llama-gpu

Trains a family of tiny models on a synthetic language (no downloads), then measures every
checkpoint: the default preset runs the bundled tiny-local recipe on it, the same analysis
as `specprobe run`; the other presets run the same sweep on their own family. Presets:
{listed(default | {FAST_PRESET: "--fast"})}.
"""
    fast = f"A smaller family and measurement ({PRESETS[FAST_PRESET].budget}): --preset {FAST_PRESET}."
    return epilog, fast, f"Which family: {listed(default)}."


DEMO_EPILOG, _DEMO_FAST_HELP, _DEMO_PRESET_HELP = _demo_help()


@app.command(epilog=DEMO_EPILOG)
@handle_errors
def demo(
    fast: Annotated[bool, typer.Option(help=_DEMO_FAST_HELP)] = False,
    preset: Annotated[str, typer.Option(help=_DEMO_PRESET_HELP)] = "tiny-neox",
    device: Annotated[
        str | None, typer.Option(help="Train and measure on cpu or cuda (default: the preset's).")
    ] = None,
    out: Annotated[str, typer.Option(help="Output directory.")] = "specprobe-demo",
    plots: Annotated[bool, typer.Option(help="Write the figures (needs specprobe\\[plots]).")] = True,
    html: Annotated[str | None, typer.Option(help=HTML_HELP)] = None,
) -> None:
    """Train a tiny model family offline and show spectral position and reach across it."""
    from dataclasses import replace

    from specprobe.demo.plan import demo_plan
    from specprobe.demo.prepare import prepare
    from specprobe.demo.presets import DEFAULT_PRESET, FAST_PRESET
    from specprobe.demo.presets import preset as find_preset
    from specprobe.errors import SpecprobeError
    from specprobe.recipes.recipe import load_recipe, with_overrides

    if fast and preset not in (DEFAULT_PRESET, FAST_PRESET):
        raise SpecprobeError(
            f"expected either --fast or --preset, found both (--preset {preset})",
            f"drop --fast: it is the preset {FAST_PRESET}",
        )
    chosen = find_preset(FAST_PRESET if fast else preset)
    config = chosen.config if device is None else replace(chosen.config, device=device)
    prepared = prepare(out, config, console=err_console)
    layout = prepared.layout
    if prepared.reused:
        console.print(f"reusing the family trained in {layout.family}", highlight=False)
    invocation: dict[str, Any] = {"command": "demo", "argv": sys.argv[1:], "preset": chosen.name}
    if config.arch == "gpt_neox" and config.depths is None and config.measure_on == "eval":
        # The original family: through the bundled recipe, as `specprobe run tiny-local` would.
        # (Here, not in the demo package: demo/ and recipes/ are siblings in the layers.)
        recipe = with_overrides(
            load_recipe("tiny-local", variables={"root": str(layout.root)}),
            only=list(config.model_names()),
            num_sequences=config.eval_sequences,
            seq_len=config.eval_seq_len,
            batch_size=config.eval_batch_size,
            seed=config.seed,
            probes=config.probes,
            directory=str(layout.root / "run"),
            resume=True,
        )
        plan, invocation["recipe"] = recipe.to_plan(), recipe.to_dict()
    else:
        plan = demo_plan(layout.root, config)
    invocation["demo"] = config.to_dict()
    try:
        execute_plan(
            plan,
            str(layout.root / "run"),
            resume=True,
            json_output=False,
            invocation=invocation,
            plots=plots,
            html=html,
        )
    except SpecprobeError as err:
        if not plots or "matplotlib" not in err.message:
            raise
        err_console.print(f"no figures: {err.message} ({err.hint})", highlight=False)
