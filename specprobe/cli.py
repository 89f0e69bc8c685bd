"""The ``specprobe`` command line: thin, lazy imports, library errors mapped to exit codes.

Exit codes: 0 success; 1 a check or measurement failed; 2 bad input or setting (one line
``error: ...`` with a hint; ``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

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


class _State:
    debug = False


def _version(value: bool) -> None:
    if value:
        from specprobe import __version__

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
            err_console.print(f"[bold red]error:[/] {err.message}", highlight=False, soft_wrap=True)
            if err.hint:
                err_console.print(f"[bold]hint:[/] {err.hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


class ArchChoice(str, Enum):
    """Tiny architectures for ``selftest``."""

    gpt_neox = "gpt_neox"
    gpt2 = "gpt2"
    llama = "llama"


class DeviceChoice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


@app.command(
    epilog="Examples:\n\n  specprobe selftest\n\n  specprobe selftest --arch gpt2 --device cuda",
)
@handle_errors
def selftest(
    arch: Annotated[ArchChoice, typer.Option(help="Tiny architecture to check.")] = ArchChoice.gpt_neox,
    device: Annotated[DeviceChoice, typer.Option(help="Where to run the check.")] = DeviceChoice.cpu,
    probes: Annotated[int, typer.Option(min=2, help="Hutchinson probes.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the model, the batch and the probes.")] = 0,
) -> None:
    """Check this installation: measure a tiny random model and compare with the dense eNTK.

    Builds J and Θ = J Jᵀ explicitly in float64 for a tiny causal LM with a padded batch,
    and checks that the matrix-free measurement agrees: exact quantities to 1e-6 relative,
    the Hutchinson estimate of χ_net to within 4 of its standard errors.
    """
    import torch

    import specprobe
    from specprobe.errors import SpecprobeError
    from specprobe.models import tiny_causal_lm
    from specprobe.report import CheckRow, selftest_table

    if device is DeviceChoice.cuda and not torch.cuda.is_available():
        raise SpecprobeError("expected a CUDA device, found none", "run with --device cpu")
    model = tiny_causal_lm(arch.value, vocab_size=32, hidden_size=16, seed=seed, dtype=torch.float64)
    model = model.to(device.value)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 32, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[3, 5:] = 0
    batch = {"input_ids": ids.to(device.value), "attention_mask": mask.to(device.value)}
    ref = specprobe.dense_kernel(model, batch)
    exact = specprobe.measure(model, batch, estimator="exact")
    est = specprobe.measure(model, batch, estimator="hutchinson", probes=probes, seed=seed)
    rows = [
        CheckRow(name, getattr(exact, name), getattr(ref, name), 1e-6)
        for name in ("loss", "grad_norm_sq", "chi_loss", "chi_net", "spectral_position")
    ]
    rows.append(CheckRow("chi_net (hutchinson)", est.chi_net, ref.chi_net, 4.0, est.chi_net_stderr))
    title = (
        f"selftest: tiny {arch.value} on {device.value}, D={exact.num_outputs} outputs, "
        f"P={exact.num_params} parameters"
    )
    console.print(selftest_table(rows, title))
    if not all(row.ok for row in rows):
        err_console.print("[bold red]selftest failed[/]: the measurement disagrees with the dense reference")
        raise typer.Exit(code=1)
    console.print("[green]all checks passed[/]")
