"""``specprobe analyze``: measure models and their revisions (or ONNX graphs) given on the
command line."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from specprobe.choices import Device, DType, Estimator, Split, Task
from specprobe.cli.common import (
    check_outputs,
    err_console,
    handle_errors,
    print_json_lines,
    report_console,
    split_list,
    write_html,
)
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
    Wide,
    choices,
    field_names,
    flag,
    limited,
    option,
    setting_values,
)
from specprobe.cli.relaunch import relaunch

if TYPE_CHECKING:
    from specprobe.config import ProbeSpec

EPILOG = """Examples:

  specprobe analyze EleutherAI/pythia-160m --revisions step1000,step143000

  specprobe analyze EleutherAI/pythia-70m EleutherAI/pythia-160m --out runs/p

  specprobe analyze ./my-run --dataset texts.jsonl --num-sequences 64

  specprobe analyze ./my-run --out runs/mine --resume --wide

(./my-run: a training output directory with checkpoint-<step>/ folders; --dataset: a hub dataset or a local .txt, .jsonl or .parquet file.)

  specprobe analyze google/multiberts-seed_0-step_{20k,200k}

  specprobe analyze allenai/OLMo-1B-hf --revisions step20000-tokens84B

  specprobe analyze LLM360/Amber --revisions ckpt_000100,ckpt_000200

  specprobe analyze google/t5-efficient-tiny --dataset pairs.jsonl

  specprobe analyze google/vit-base-patch16-224 --dataset ./images

(MultiBERTs publish a repository per step: they form one run, measured as a masked LM, the task read from the config. pairs.jsonl: the source in --text-column, the target in --target-column. ./images: an imagefolder, one subfolder per label.)

Training positions (step, tokens seen, compute 6·N·tokens) come from --position/--tokens-per-step, the registry of published families, the revision names, or trainer_state.json; checkpoints are ordered by them, never by the order typed (docs/families.md).

Exit codes: 0 all checkpoints measured; 1 some checkpoint failed (recorded as failed); 2 bad input; 130 interrupted (finished records are kept; rerun with --resume).
"""


# Long because Typer reads the options from the signature; the body is parse → settings →
# one sweep → render.
@handle_errors
def analyze(
    models: Annotated[
        list[str], typer.Argument(help="Hub ids (org/name) or local directories.", metavar="MODEL...")
    ],
    revisions: Annotated[
        str | None,
        option(
            "Comma list of revisions (hub branches/tags, or checkpoint-<step> folder names).", MODELS, "LIST"
        ),
    ] = None,
    tokens_per_step: Annotated[
        int | None,
        limited(
            "tokens_per_step",
            "Tokens per training step, for tokens seen (the registry knows the published families'); "
            "an error where a checkpoint has no step.",
            MODELS,
        ),
    ] = None,
    position: Annotated[
        str | None,
        option(
            "Comma list of REVISION=STEP or REVISION=STEP:TOKENS (tokens as 4096, 84B, 4T): training "
            "positions stated, trusted over the registry and the revision names.",
            MODELS,
            "LIST",
        ),
    ] = None,
    stage_tokens: Annotated[
        str | None,
        option(
            "Comma list of STAGE=TOKENS: tokens seen before a stage that restarts its step counter "
            "(OLMo-2: stage2-ingredient1=3896B); without it such a stage is a sibling run.",
            MODELS,
            "LIST",
        ),
    ] = None,
    run: Annotated[
        str | None,
        option(
            "Name one training run for all the models given: separate repositories, one per checkpoint "
            "(MultiBERTs, TinyLlama, SmolLM2 are recognised without it).",
            MODELS,
            "NAME",
        ),
    ] = None,
    run_seed: Annotated[
        int | None,
        option(
            "The run's seed (runs of one size with different seeds are averaged, not fitted as sizes).",
            MODELS,
        ),
    ] = None,
    train_batch_sequences: Annotated[
        int | None,
        limited(
            "train_batch_sequences",
            "Sequences per training step, for χ_pos at the training batch (Pythia's is known).",
            MODELS,
        ),
    ] = None,
    trust_remote_code: Annotated[
        bool,
        flag(
            "--trust-remote-code",
            "Allow the models' own code (from the hub or their folders); off by default.",
            MODELS,
        ),
    ] = False,
    inputs: Annotated[
        str | None,
        option("For .onnx models: an .npz/.pt file with the graph inputs and 'targets'.", MODELS, "FILE"),
    ] = None,
    task: Annotated[
        Task,
        option(
            f"What the models were trained for: {choices(Task)}. 'auto' reads the config's head and "
            "refuses a checkpoint it cannot tell apart.",
            MODELS,
            "TASK",
        ),
    ] = Task.AUTO,
    dataset: Annotated[
        str,
        option(
            "Hub dataset name (the default is on the hub: it needs the network), or a local .txt, "
            ".jsonl or .parquet file or folder.",
            DATA,
            "SOURCE",
        ),
    ] = "NeelNanda/pile-10k",
    dataset_config: Annotated[
        str | None,
        option("The hub dataset's configuration.", DATA, "NAME"),
    ] = None,
    split: Annotated[str, option("Dataset split.", DATA, "NAME")] = "train",
    text_column: Annotated[
        str, option("Column holding the text (seq2seq with --target-column: the source).", DATA, "NAME")
    ] = "text",
    target_column: Annotated[
        str | None,
        option("seq2seq-lm: column holding the target text (default: T5's span corruption).", DATA, "NAME"),
    ] = None,
    image_column: Annotated[
        str, option("image-classification: column holding the image.", DATA, "NAME")
    ] = "image",
    label_column: Annotated[
        str, option("image-classification: column holding the class index.", DATA, "NAME")
    ] = "label",
    mask_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="masked-lm: fraction of positions masked (80/10/10 mask/random/kept); seq2seq-lm "
            "from plain text: fraction of tokens in corrupted spans.",
            metavar="RATE",
            rich_help_panel=DATA,
        ),
    ] = 0.15,
    num_sequences: Annotated[
        int, limited("num_sequences", "Sequences (or images) in the subset, measured as one set.", DATA)
    ] = 256,
    seq_len: Annotated[int, limited("seq_len", "Tokens per sequence.", DATA)] = 64,
    batch_size: Annotated[
        int | None,
        limited(
            "batch_size",
            "Measure in batches of N sequences and average them (as before, to compare with "
            "earlier runs). Default: the subset as one set.",
            DATA,
        ),
    ] = None,
    seed: Annotated[int, limited("seed", "Seed of the subset and the probes.", DATA)] = 0,
    estimator: Annotated[
        Estimator,
        option(f"χ_net estimator: {choices(Estimator)}.", PROBE, "NAME"),
    ] = Estimator.HUTCHINSON_PER_SAMPLE,
    probes: Annotated[int, limited("probes", "Hutchinson probes per sequence set or batch.", PROBE)] = 32,
    params: Annotated[
        str | None,
        option("Comma list of parameter-name globs (default: all trainable).", PROBE, "GLOBS"),
    ] = None,
    micro_batch_size: Annotated[
        int | None, limited("micro_batch_size", "Sequences per forward pass (default: the batch).", PROBE)
    ] = None,
    groups: Annotated[
        str | None,
        option(
            "Split χ_net and ‖∇L‖² by layer: 'auto' (embeddings, blocks, final norm, head) "
            "or NAME=GLOB,GLOB;NAME=GLOB. Adds the head-only (frozen-feature) position.",
            PROBE,
            "GROUPS",
        ),
    ] = None,
    device: Annotated[Device, option("cpu, cuda, or auto (spread over GPUs).", PROBE)] = Device.cpu,
    dtype: Annotated[
        DType,
        option(f"Precision the model runs in: {choices(DType)}.", PROBE, "DTYPE"),
    ] = DType.float32,
    eigen: Annotated[
        int, limited("eigen", "Top K eigenpairs of the eNTK per checkpoint (0: off).", EIGEN, "K")
    ] = 0,
    density: Annotated[
        bool,
        flag(
            "--density", "With --eigen: a spectral density (SLQ), effective rank, deep position index.", EIGEN
        ),
    ] = False,
    exact: Annotated[
        bool, flag("--exact", "With --eigen: dense eigensolver (tiny models only).", EIGEN)
    ] = False,
    out: Annotated[
        str | None,
        option(
            "Run directory (default: a new folder under ./specprobe-runs/ named by the time).", OUTPUT, "DIR"
        ),
    ] = None,
    resume: Annotated[
        bool, flag("--resume", "Skip checkpoints already measured with the same settings.", OUTPUT)
    ] = False,
    json_output: JsonOutput = False,
    plots: Plots = False,
    html: Html = None,
    wide: Wide = False,
    process_split: ProcessSplit = Split.checkpoints,
    gpus_per_model: GpusPerModel = 1,
    processes: Processes = 1,
) -> None:
    """Measure spectral position across models and their training revisions (or ONNX graphs)."""
    options = dict(locals())  # the parameters by name: the settings take theirs from here
    relaunch(processes)
    from specprobe.config import DataSpec, ProbeSpec

    probe = ProbeSpec(**setting_values(options, field_names(ProbeSpec)))
    if any(m.endswith(".onnx") for m in models):
        _analyze_onnx(models, inputs, probe, out, json_output, html, wide)
        return
    from specprobe.models.positions import stated_positions, stated_stage_tokens
    from specprobe.pipeline.plan import ModelSpec, SweepPlan

    positions = stated_positions(list(split_list(position) or ())) if position else {}
    stages = stated_stage_tokens(list(split_list(stage_tokens) or ())) if stage_tokens else {}
    plan = SweepPlan(
        models=tuple(
            ModelSpec(
                id=m,
                revisions=split_list(revisions),
                tokens_per_step=tokens_per_step,
                train_batch_sequences=train_batch_sequences,
                run=run,
                seed=run_seed,
                stage_tokens=stages,
                positions=positions,
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
        parallel=parallel(process_split, gpus_per_model),
        html=html,
        wide=wide,
    )


def _analyze_onnx(
    models: list[str],
    inputs: str | None,
    probe: ProbeSpec,
    out: str | None,
    json_output: bool,
    html: str | None = None,
    wide: bool = False,
) -> None:
    from specprobe.pipeline.onnx import measure_onnx_files, parameter_note
    from specprobe.report.terminal import render_run

    def checked(model: str, check: Any) -> None:
        err_console.print(
            f"{model}: converted graph matches onnxruntime to {check.max_rel_error:.1e} (relative; "
            f"tolerance {check.tolerance:g})",
            highlight=False,
            markup=False,
        )

    screen = report_console(json_output, html=html)
    check_outputs(out, html=html, inputs=[*models, *([inputs] if inputs else [])])
    store, records = measure_onnx_files(models, inputs, probe, out, checked=checked)
    for record in records:
        note = parameter_note(record)
        if note is not None:
            err_console.print(f"{record['model']}: {note}", highlight=False, markup=False)
    if json_output:
        print_json_lines(records)
    else:
        render_run(records, screen, wide=wide)
        screen.print(f"results in {store.results_path}", highlight=False, markup=False)
    if html is not None:
        write_html(store.records(), html, store)
