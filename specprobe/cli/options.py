"""The options several commands share, each said once, and the one way options become
settings (:func:`setting_values`).

An option that is the same everywhere is an ``Annotated`` alias here. An option that sets a
field of the settings (``specprobe.config``) has its help per command (analyze says what it
is, run what it overrides) but its bounds from the one table of limits, through
:func:`limited`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from enum import Enum
from typing import Annotated, Any

import typer

from specprobe.choices import Split
from specprobe.cli.common import parse_groups, split_list
from specprobe.config import LIMITS

# The panels of a command's help, in the order they are listed (typer lists them in the
# order their first option appears in the signature).
MODELS = "Models"
DATA = "Data"
PROBE = "Probe"
EIGEN = "Eigen"
OUTPUT = "Output"
LAUNCH = "Launch"

PROCESS_SPLIT_HELP = (
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


def limited(name: str, help: str, panel: str | None = None, metavar: str = "N") -> Any:
    """A ``typer.Option`` for the setting ``name``, bounded by ``LIMITS[name]`` (its low, and
    its high where it has one), in the help panel ``panel``."""
    limit = LIMITS[name]
    return typer.Option(min=limit.low, max=limit.high, help=help, metavar=metavar, rich_help_panel=panel)


def option(help: str, panel: str | None = None, metavar: str | None = None, name: str | None = None) -> Any:
    """A ``typer.Option`` with its ``help``, in the help panel ``panel``, its value shown as
    ``metavar`` (short names keep the help's columns within 80), declared as ``name`` where
    the parameter's name is not the option's (``--density/--no-density``)."""
    return typer.Option(*([name] if name else []), help=help, metavar=metavar, rich_help_panel=panel)


def flag(name: str, help: str, panel: str | None = None) -> Any:
    """A ``typer.Option`` that is a flag off unless given (``--name``, with no ``--no-name``
    twin: turning off what is off says nothing, and the twin's column would not fit the help
    at 80 columns)."""
    return option(help, panel, name=name)


def choices(enum: type[Enum]) -> str:
    """The values of ``enum`` as the help lists them (``a, b or c``), so the value column
    of the help stays narrow at 80 columns."""
    values = [str(member.value) for member in enum]
    return ", ".join(values[:-1]) + " or " + values[-1] if len(values) > 1 else values[0]


JsonOutput = Annotated[bool, flag("--json", "Print the records as JSON lines.", OUTPUT)]
Plots = Annotated[bool, flag("--plots", PLOTS_HELP, OUTPUT)]
Wide = Annotated[bool, flag("--wide", WIDE_HELP, OUTPUT)]
Html = Annotated[str | None, option(HTML_HELP, OUTPUT, "FILE")]
ProcessSplit = Annotated[Split, option(PROCESS_SPLIT_HELP, LAUNCH, "UNIT", "--process-split")]
GpusPerModel = Annotated[int, limited("gpus_per_model", GPUS_HELP, LAUNCH, "K")]
Processes = Annotated[int, limited("processes", PROCESSES_HELP, LAUNCH)]
RecipeArgument = Annotated[
    str, typer.Argument(help="A recipe file, or the name of a bundled recipe.", metavar="RECIPE")
]
RecipeVariables = Annotated[
    list[str] | None,
    option("Recipe variable NAME=VALUE (repeatable).", metavar="NAME=VALUE", name="--set"),
]
RunDirectory = Annotated[str, typer.Argument(help="A run directory (holding results.jsonl).", metavar="DIR")]

RENAMED = {"dataset_config": "config", "out": "directory"}
"""Options whose setting has another name (``--dataset-config`` sets ``data.config``)."""
PARSERS: dict[str, Callable[[Any], Any]] = {
    "only": split_list,
    "revisions": split_list,
    "params": split_list,
    "groups": parse_groups,
}
"""Settings given as text on the command line, and how they are read."""


def setting_values(options: Mapping[str, Any], names: Collection[str]) -> dict[str, Any]:
    """The values of the ``options`` (a command's parameters by name) that set the settings
    ``names``, keyed by setting name and parsed from their text (comma lists as tuples,
    ``--groups`` as its mapping). Options that set nothing in ``names`` are left out."""
    values = {}
    for option, value in options.items():
        name = RENAMED.get(option, option)
        if name in names:
            parse = PARSERS.get(name)
            values[name] = value if parse is None else parse(value)
    return values


def field_names(*specs: type) -> set[str]:
    """The field names of the settings dataclasses ``specs``."""
    return {f.name for spec in specs for f in dataclasses.fields(spec)}
