"""``specprobe demo``: a tiny model family trained offline, then measured and reported."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from specprobe.cli.common import check_outputs, console, err_console, handle_errors
from specprobe.cli.execute import execute_plan
from specprobe.cli.options import OUTPUT, Html, Wide, flag

if TYPE_CHECKING:
    from specprobe.demo.config import DemoConfig
    from specprobe.pipeline.plan import SweepPlan


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

Trains a family of tiny models on a synthetic language (no downloads), then measures every \
checkpoint: the default preset runs the bundled tiny-local recipe on it, the same analysis \
as `specprobe run`; the other presets run the same sweep on their own family. Presets: \
{listed(default | {FAST_PRESET: "--fast"})}.
"""
    fast = f"A smaller family and measurement ({PRESETS[FAST_PRESET].budget}): --preset {FAST_PRESET}."
    return epilog, fast, f"Which family: {listed(default)}."


EPILOG, _FAST_HELP, _PRESET_HELP = _demo_help()


@handle_errors
def demo(
    fast: Annotated[bool, flag("--fast", _FAST_HELP)] = False,
    preset: Annotated[str, typer.Option(help=_PRESET_HELP, metavar="NAME")] = "tiny-neox",
    device: Annotated[
        str | None,
        typer.Option(help="Train and measure on cpu or cuda (default: the preset's).", metavar="DEVICE"),
    ] = None,
    out: Annotated[str, typer.Option(help="Output directory.", metavar="DIR", rich_help_panel=OUTPUT)] = (
        "specprobe-demo"
    ),
    plots: Annotated[
        bool, typer.Option(help="Write the figures (needs specprobe\\[plots]).", rich_help_panel=OUTPUT)
    ] = True,
    html: Html = None,
    wide: Wide = False,
) -> None:
    """Train a tiny model family offline and show spectral position and reach across it."""
    from dataclasses import replace

    from specprobe.demo.config import DemoLayout
    from specprobe.demo.prepare import prepare
    from specprobe.demo.presets import DEFAULT_PRESET, FAST_PRESET
    from specprobe.demo.presets import preset as find_preset
    from specprobe.errors import SpecprobeError
    from specprobe.store.folder import check_run_folder, output_path

    if fast and preset not in (DEFAULT_PRESET, FAST_PRESET):
        raise SpecprobeError(
            f"expected either --fast or --preset, found both (--preset {preset})",
            f"drop --fast: it is the preset {FAST_PRESET}",
        )
    chosen = find_preset(FAST_PRESET if fast else preset)
    config = chosen.config if device is None else replace(chosen.config, device=device)
    # Everything checked before any training: the demo's folder, its run folder, --html.
    DemoLayout(output_path(out)).check_own()
    check_run_folder(output_path(out) / "run")
    check_outputs(output_path(out) / "run", html=html)
    prepared = prepare(out, config, console=err_console)
    layout = prepared.layout
    if prepared.reused:
        console.print(f"reusing the family trained in {layout.family}", highlight=False, markup=False)
    invocation: dict[str, Any] = {"command": "demo", "argv": sys.argv[1:], "preset": chosen.name}
    plan = _demo_plan(layout.root, config, invocation)
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
            wide=wide,
        )
    except SpecprobeError as err:
        if not plots or "matplotlib" not in err.message:
            raise
        err_console.print(f"no figures: {err.message} ({err.hint})", highlight=False, markup=False)


def _demo_plan(root: Path, config: DemoConfig, invocation: dict[str, Any]) -> SweepPlan:
    """The sweep of the demo family in ``root``; the recipe it ran, if any, into ``invocation``."""
    from specprobe.demo.plan import demo_plan
    from specprobe.recipes.recipe import load_recipe, with_overrides

    if config.arch == "gpt_neox" and config.depths is None and config.measure_on == "eval":
        # The original family: through the bundled recipe, as `specprobe run tiny-local` would.
        # (Here, not in the demo package: demo/ and recipes/ are siblings in the layers.)
        recipe = with_overrides(
            load_recipe("tiny-local", variables={"root": str(root)}),
            only=list(config.model_names()),
            num_sequences=config.eval_sequences,
            seq_len=config.eval_seq_len,
            batch_size=config.eval_batch_size,
            seed=config.seed,
            probes=config.probes,
            directory=str(root / "run"),
            resume=True,
        )
        invocation["recipe"] = recipe.to_dict()
        return recipe.to_plan()
    return demo_plan(root, config)
