"""``specprobe run``, ``validate`` and ``recipes``: sweeps described by recipe files."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from specprobe.choices import Device, DType, Estimator, Split, Task
from specprobe.cli.common import console, err_console, handle_errors, parse_sets
from specprobe.cli.execute import execute_plan, parallel
from specprobe.cli.options import (
    DATA,
    EIGEN,
    MODELS,
    OUTPUT,
    PROBE,
    GpusPerModel,
    Html,
    JsonOutput,
    Plots,
    Processes,
    ProcessSplit,
    RecipeArgument,
    RecipeVariables,
    Wide,
    choices,
    field_names,
    flag,
    limited,
    option,
    setting_values,
)
from specprobe.cli.relaunch import relaunch

RUN_EPILOG = """Examples:

  specprobe run recipes/pythia.yaml

  specprobe run pythia --only pythia-160m --revisions step143000

  specprobe run my-recipe.yaml --set root=/data/runs --num-sequences 64

  specprobe run tiny-local --set root=specprobe-demo --dataset texts.jsonl

  accelerate launch --multi_gpu --num_processes 8 -m specprobe run pythia

  specprobe run tiny-local --set root=specprobe-demo --processes 2

(accelerate launch: one sweep across 8 processes, one per GPU with --device cuda; --processes 2: two local processes, torchrun under the hood.)

Command-line options override the recipe's fields; the effective recipe is written into the run's config.json.
"""
VALIDATE_EPILOG = "Examples:\n\n  specprobe validate my-recipe.yaml\n\n  specprobe validate pythia"


# Long because Typer reads the options from the signature; the body is parse → settings →
# one sweep → render.
@handle_errors
def run(
    recipe: RecipeArgument,
    only: Annotated[
        str | None,
        option("Comma list of model labels (or ids) to run.", MODELS, "LIST"),
    ] = None,
    revisions: Annotated[
        str | None,
        option("Comma list of revisions, for every model.", MODELS, "LIST"),
    ] = None,
    trust_remote_code: Annotated[
        bool,
        flag(
            "--trust-remote-code",
            "Allow the models' own code, from the hub or their folders (recipes cannot).",
            MODELS,
        ),
    ] = False,
    set_: RecipeVariables = None,
    task: Annotated[Task | None, option(f"Override data.task: {choices(Task)}.", MODELS, "TASK")] = None,
    dataset: Annotated[
        str | None,
        option(
            "Override data.dataset: a hub dataset name, or a local .txt, .jsonl or .parquet file or folder.",
            DATA,
            "SOURCE",
        ),
    ] = None,
    dataset_config: Annotated[
        str | None, option("Override data.config (the hub dataset's configuration).", DATA, "NAME")
    ] = None,
    split: Annotated[str | None, option("Override data.split (the dataset's split).", DATA, "NAME")] = None,
    text_column: Annotated[str | None, option("Override data.text_column.", DATA, "NAME")] = None,
    num_sequences: Annotated[
        int | None, limited("num_sequences", "Override data.num_sequences.", DATA)
    ] = None,
    seq_len: Annotated[int | None, limited("seq_len", "Override data.seq_len.", DATA)] = None,
    batch_size: Annotated[int | None, limited("batch_size", "Override data.batch_size.", DATA)] = None,
    estimator: Annotated[
        Estimator | None,
        option(f"Override probe.estimator: {choices(Estimator)}.", PROBE, "NAME"),
    ] = None,
    probes: Annotated[int | None, limited("probes", "Override probe.probes.", PROBE)] = None,
    groups: Annotated[
        str | None,
        option("Override probe.groups ('auto' or NAME=GLOB;...).", PROBE, "GROUPS"),
    ] = None,
    device: Annotated[Device | None, option("Override probe.device.", PROBE)] = None,
    dtype: Annotated[
        DType | None,
        option(f"Override probe.dtype: {choices(DType)}.", PROBE, "DTYPE"),
    ] = None,
    eigen: Annotated[
        int | None, limited("eigen", "Override probe.eigen (top K eigenpairs).", EIGEN, "K")
    ] = None,
    density: Annotated[
        bool | None,
        option("Override probe.density.", EIGEN, name="--density/--no-density"),
    ] = None,
    exact: Annotated[bool | None, option("Override probe.exact.", EIGEN, name="--exact/--no-exact")] = None,
    out: Annotated[str | None, option("Override output.directory.", OUTPUT, "DIR")] = None,
    resume: Annotated[
        bool | None,
        option("Override output.resume.", OUTPUT, name="--resume/--no-resume"),
    ] = None,
    json_output: JsonOutput = False,
    plots: Plots = False,
    html: Html = None,
    wide: Wide = False,
    process_split: ProcessSplit = Split.checkpoints,
    gpus_per_model: GpusPerModel = 1,
    processes: Processes = 1,
) -> None:
    """Run the sweep a recipe describes (the same pipeline and results store as analyze)."""
    options = dict(locals())  # the parameters by name: the overrides take theirs from here
    relaunch(processes)
    from specprobe.config import DataSpec, ProbeSpec
    from specprobe.recipes.recipe import RecipeOutput, load_recipe, with_overrides

    overrides = setting_values(
        options, {"only", "revisions"} | field_names(DataSpec, ProbeSpec, RecipeOutput)
    )
    overrides["trust_remote_code"] = trust_remote_code or None  # the flag turns it on, never off
    effective = with_overrides(load_recipe(recipe, variables=parse_sets(set_)), **overrides)
    invocation = {"command": "run", "argv": sys.argv[1:], "recipe": effective.to_dict()}
    execute_plan(
        effective.to_plan(),
        effective.output.directory,
        resume=effective.output.resume,
        json_output=json_output,
        invocation=invocation,
        plots=plots,
        html=html,
        parallel=parallel(process_split, gpus_per_model),
        wide=wide,
    )


@handle_errors
def validate(recipe: RecipeArgument, set_: RecipeVariables = None) -> None:
    """Check a recipe without loading anything big: schema, local paths, revisions, local data."""
    from pathlib import Path

    from specprobe.recipes.recipe import check_recipe, load_recipe

    loaded = load_recipe(recipe, variables=parse_sets(set_))
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
        "[green]ok[/]: "
        + escape(
            f"{loaded.source}: family {loaded.family.name}, {len(loaded.models)} models, "
            f"{checkpoints} checkpoints (local training folders count as one here); output folder: {where}"
        ),
        highlight=False,
        soft_wrap=True,
    )


def list_recipes() -> None:
    """List the bundled recipes with their descriptions."""
    from specprobe.recipes.recipe import bundled_recipes, load_recipe
    from specprobe.report.terminal import recipes_table

    rows = []
    for name, path in bundled_recipes().items():
        loaded = load_recipe(path)
        rows.append((name, len(loaded.models), loaded.family.description))
    console.print(recipes_table(rows))
