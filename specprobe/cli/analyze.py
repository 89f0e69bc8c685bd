"""``specprobe analyze``: measure models and their revisions (or ONNX graphs) given on the
command line."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from specprobe.choices import Device, DType, Estimator, Split
from specprobe.cli.common import console, err_console, handle_errors, print_json_lines, split_list, write_html
from specprobe.cli.execute import execute_plan, parallel
from specprobe.cli.options import (
    GpusPerModel,
    Html,
    JsonOutput,
    ParallelSplit,
    Plots,
    Processes,
    field_names,
    limited,
    setting_values,
)
from specprobe.cli.relaunch import relaunch

if TYPE_CHECKING:
    from specprobe.config import ProbeSpec

EPILOG = """Examples:

  specprobe analyze EleutherAI/pythia-160m --revisions step1000,step10000,step143000

  specprobe analyze EleutherAI/pythia-70m EleutherAI/pythia-160m --revisions step143000 --dataset NeelNanda/pile-10k --num-sequences 64 --seq-len 256 --out runs/pythia

  specprobe analyze ./my-run        (a training output directory with checkpoint-*/ folders)

Exit codes: 0 all checkpoints measured; 1 some checkpoint failed (recorded as failed); 2 bad input; 130 interrupted (finished records are kept; rerun with --resume).
"""


# Long because Typer reads the options from the signature; the body is parse → settings →
# one sweep → render.
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
        int, limited("num_sequences", "Sequences in the subset, measured as one set.")
    ] = 256,
    seq_len: Annotated[int, limited("seq_len", "Tokens per sequence.")] = 64,
    batch_size: Annotated[
        int | None,
        limited(
            "batch_size",
            "Measure in batches of N sequences and average them (the way before issue 18, "
            "for comparison with earlier runs). Default: the subset as one set.",
        ),
    ] = None,
    seed: Annotated[int, limited("seed", "Seed of the subset and the probes.")] = 0,
    estimator: Annotated[Estimator, typer.Option(help="χ_net estimator.")] = Estimator.HUTCHINSON_PER_SAMPLE,
    probes: Annotated[int, limited("probes", "Hutchinson probes per batch.")] = 32,
    params: Annotated[
        str | None, typer.Option(help="Comma list of parameter-name globs (default: all trainable).")
    ] = None,
    micro_batch_size: Annotated[
        int | None, limited("micro_batch_size", "Sequences per forward pass (default: the batch).")
    ] = None,
    groups: Annotated[
        str | None,
        typer.Option(
            help="Split χ_net and ‖∇L‖² by layer: 'auto' (embeddings, blocks, final norm, head) "
            "or 'NAME=GLOB,GLOB;NAME=GLOB'. Adds the head-only (frozen-feature) position."
        ),
    ] = None,
    eigen: Annotated[int, limited("eigen", "Top K eigenpairs of the eNTK per checkpoint (0: off).")] = 0,
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
        limited("tokens_per_step", "Tokens per training step, for tokens seen (Pythia's is known)."),
    ] = None,
    train_batch_sequences: Annotated[
        int | None,
        limited(
            "train_batch_sequences",
            "Sequences per training step, for χ_pos at the training batch (Pythia's is known).",
        ),
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Run directory (default: ./specprobe-runs/<timestamp>).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Skip checkpoints already measured with the same settings.")
    ] = False,
    json_output: JsonOutput = False,
    plots: Plots = False,
    inputs: Annotated[
        str | None,
        typer.Option(help="For .onnx models: an .npz/.pt file with the graph inputs and 'targets'."),
    ] = None,
    html: Html = None,
    split_: ParallelSplit = Split.checkpoints,
    gpus_per_model: GpusPerModel = 1,
    processes: Processes = 1,
) -> None:
    """Measure spectral position across models and their training revisions (or ONNX graphs)."""
    options = dict(locals())  # the parameters by name: the settings take theirs from here
    relaunch(processes)
    from specprobe.config import DataSpec, ProbeSpec

    probe = ProbeSpec(**setting_values(options, field_names(ProbeSpec)))
    if any(m.endswith(".onnx") for m in models):
        _analyze_onnx(models, inputs, probe, out, json_output, html)
        return
    from specprobe.pipeline.plan import ModelSpec, SweepPlan

    plan = SweepPlan(
        models=tuple(
            ModelSpec(
                id=m,
                revisions=split_list(revisions),
                tokens_per_step=tokens_per_step,
                train_batch_sequences=train_batch_sequences,
            )
            for m in models
        ),
        data=DataSpec(**setting_values(options, field_names(DataSpec))),
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
        parallel=parallel(split_, gpus_per_model),
        html=html,
    )


def _analyze_onnx(
    models: list[str],
    inputs: str | None,
    probe: ProbeSpec,
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
        print_json_lines(records)
    else:
        render_run(records, console)
        console.print(f"results in {store.results_path}", highlight=False)
    if html is not None:
        write_html(store.records(), html, store)
