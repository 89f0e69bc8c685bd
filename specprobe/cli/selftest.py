"""``specprobe selftest``: the installation self-check (:mod:`specprobe.pipeline.selftest`)."""

from __future__ import annotations

from typing import Annotated

import typer

from specprobe.choices import Device, TinyArch
from specprobe.cli.common import console, err_console, handle_errors

EPILOG = "Examples:\n\n  specprobe selftest\n\n  specprobe selftest --arch gpt2 --device cuda"


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
    from specprobe.pipeline.selftest import run_selftest
    from specprobe.report.terminal import selftest_table

    check = run_selftest(arch, device, probes=probes, seed=seed)
    console.print(selftest_table(check))
    if not check.ok:
        err_console.print("[bold red]selftest failed[/]: the measurement disagrees with the dense reference")
        raise typer.Exit(code=1)
    console.print("[green]all checks passed[/]")
