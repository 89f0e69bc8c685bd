"""`specprobe analyze` end to end through the CLI, on a local hub cache (offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import specprobe
from specprobe.cli.app import app
from specprobe.config import DataSpec
from specprobe.models.data import build_subset
from specprobe.models.fingerprint import fingerprint_tokenizer
from specprobe.models.tiny import tiny_causal_lm
from specprobe.report.tables import value_error
from specprobe.store.results import ResultStore
from tests.hubcache import add_revision, corpus_lines, make_tokenizer

runner = CliRunner()
REPO = "org/tiny-neox"
SMALL = ["--num-sequences", "4", "--seq-len", "16", "--batch-size", "2", "--probes", "4"]
SHORT = ["--num-sequences", "4", "--seq-len", "8", "--batch-size", "2", "--probes", "4"]  # for exact runs


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return make_tokenizer()


@pytest.fixture(scope="session")
def hub(tokenizer: Any) -> dict[str, str]:
    """org/tiny-neox at step1, step2 and step4, where step4 republishes step1's weights."""
    vocab = len(tokenizer)
    commits = {}
    for revision, seed in (("step1", 0), ("step2", 1), ("step4", 0)):
        model = tiny_causal_lm("gpt_neox", vocab_size=vocab, hidden_size=16, seed=seed, max_positions=64)
        commits[revision] = add_revision(REPO, revision, model, tokenizer)
    return commits


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n".join(corpus_lines(200)) + "\n")
    return path


def analyze(*args: str) -> Any:
    return runner.invoke(app, ["analyze", *args])


@pytest.mark.slow
def test_analyze_hub_revisions_end_to_end(
    hub: dict[str, str], corpus: Path, tmp_path: Path, tokenizer: Any
) -> None:
    out = tmp_path / "run"
    result = analyze(
        REPO,
        "--revisions",
        "step1,step2,step4",
        "--dataset",
        str(corpus),
        *SHORT,
        "--estimator",
        "exact",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    records = ResultStore(out).records()
    assert [r["revision"] for r in records] == ["step1", "step2", "step4"]
    assert [r["commit"] for r in records] == [hub["step1"], hub["step2"], hub["step4"]]
    assert [r["step"] for r in records] == [1, 2, 4]
    assert all(r["status"] == "ok" for r in records)
    # step4 serves step1's weights: flagged by fingerprint, in the record and the report.
    assert records[2]["fingerprint"] == records[0]["fingerprint"] != records[1]["fingerprint"]
    assert [r["duplicate_of"] for r in records] == [None, None, "step1"]
    assert "duplicate of 1" in result.output  # under the header "step"
    # Every checkpoint saw the same token ids, and they are the subset the data module builds.
    spec = DataSpec(dataset=str(corpus), num_sequences=4, seq_len=8, batch_size=2)
    subset = build_subset(spec, tokenizer, fingerprint_tokenizer(tokenizer))
    assert {r["dataset_fingerprint"] for r in records} == {subset.fingerprint}
    # The numbers are those of specprobe.measure on that data, averaged over the 2 batches.
    model = tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), hidden_size=16, seed=1, max_positions=64)
    direct = [specprobe.measure(model, {"input_ids": ids}, estimator="exact") for ids in subset.batches(2)]
    for field in ("loss", "chi_loss", "chi_net", "spectral_position", "grad_norm_sq"):
        expected = sum(getattr(m, field) for m in direct) / 2
        assert records[1][field] == pytest.approx(expected, rel=1e-5), field
    assert records[1]["num_outputs"] == 2 * 7 * len(tokenizer)
    assert records[1]["num_batches"] == 2 and len(records[1]["batches"]) == 2
    for key in ("settings", "timings", "peak_memory_bytes", "specprobe_version", "num_params"):
        assert records[1][key], key
    # The report's table holds each revision's row with its position and amplification.
    assert "┃ step ┃" in result.output and "χ_pos" in result.output
    amplification = records[1]["chi_net"] / records[0]["chi_net"]
    assert f"{amplification:.3g}" in result.output
    (config,) = json.loads((out / "config.json").read_text())["invocations"]
    assert config["invocation"]["models"] == [REPO]
    assert config["settings"]["data"]["seq_len"] == 8


def test_resume_skips_finished_records(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    first = analyze(REPO, "--revisions", "step1,step2", "--dataset", str(corpus), *SMALL, "--out", out)
    assert first.exit_code == 0, first.output
    again = analyze(REPO, "--revisions", "step1,step2,step4", "--dataset", str(corpus), *SMALL, "--out", out)
    assert again.exit_code == 2 and "already holds results" in again.output
    # The memory plan is said once per model, beside a training step's (issue 31).
    assert first.output.count(f"memory for {REPO}: about ") == 1, first.output
    assert "(a training step: about" in first.output, first.output
    resumed = analyze(
        REPO, "--revisions", "step1,step2,step4", "--dataset", str(corpus), *SMALL, "--out", out, "--resume"
    )
    assert resumed.exit_code == 0, resumed.output
    assert "1 measured, 2 resumed, 0 failed" in resumed.output
    invocations = json.loads((Path(out) / "config.json").read_text())["invocations"]
    assert [i["invocation"]["revisions"] for i in invocations] == ["step1,step2", "step1,step2,step4"]
    records = ResultStore(out).records()
    assert [r["revision"] for r in records] == ["step1", "step2", "step4"]
    assert records[2]["duplicate_of"] == "step1"  # known from the resumed record's fingerprint
    # Other settings are not mixed into the run: refused (issue 20), nothing written.
    other = analyze(
        REPO, "--revisions", "step1", "--dataset", str(corpus), *SMALL[:-1], "8", "--out", out, "--resume"
    )
    assert other.exit_code == 2 and "other settings" in other.output
    assert len(ResultStore(out).records()) == 3


def test_interrupt_keeps_finished_records(
    hub: dict[str, str], corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import specprobe.pipeline.checkpoint as sweep

    real = sweep.load_checkpoint
    calls = []

    def interrupting(checkpoint: Any, **kwargs: Any) -> Any:
        calls.append(checkpoint.revision)
        if checkpoint.revision == "step2":
            raise KeyboardInterrupt
        return real(checkpoint, **kwargs)

    monkeypatch.setattr(sweep, "load_checkpoint", interrupting)
    out = str(tmp_path / "run")
    result = analyze(REPO, "--revisions", "step1,step2", "--dataset", str(corpus), *SMALL, "--out", out)
    assert result.exit_code == 130
    assert "1 finished record(s) are kept" in result.output and "--resume" in result.output
    assert [r["revision"] for r in ResultStore(out).records()] == ["step1"]
    assert not list(Path(out).glob(".*.tmp"))


def test_failed_checkpoint_is_recorded_and_others_continue(
    tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    repo = "org/tiny-nan"
    good = tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), seed=0, max_positions=64)
    bad = tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), seed=0, max_positions=64)
    with torch.no_grad():
        bad.lm_head.weight[3, 0] = float("nan")
    add_revision(repo, "step1", bad, tokenizer)
    add_revision(repo, "step2", good, tokenizer)
    out = tmp_path / "run"
    result = analyze(repo, "--revisions", "step1,step2", "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert result.exit_code == 1
    records = ResultStore(out).records()
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "NaN or inf" in records[0]["error"]
    assert "1 checkpoint(s) failed" in result.output and "failed" in result.output
    assert "1 measured, 0 resumed, 1 failed" in result.output  # a failure is not "measured" (issue 20)


def test_out_of_memory_retries_with_smaller_micro_batches(
    hub: dict[str, str], corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import specprobe.pipeline.checkpoint as sweep

    real = sweep.measure
    seen = []

    def tight(model: Any, batch: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["micro_batch_size"])
        if (kwargs["micro_batch_size"] or batch["input_ids"].shape[0]) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, batch, **kwargs)

    monkeypatch.setattr(sweep, "measure", tight)
    out = tmp_path / "run"
    result = analyze(REPO, "--revisions", "step1", "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert seen[:2] == [None, 1]
    assert ResultStore(out).records()[0]["micro_batch_size"] == 1


def test_local_training_directory(tokenizer: Any, corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "my-run"
    for step, seed in ((10, 1), (2, 0), (40, 2)):
        model = tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), seed=seed, max_positions=64)
        model.save_pretrained(run / f"checkpoint-{step}")
    tokenizer.save_pretrained(run)  # the Trainer's output dir holds the tokenizer, not each checkpoint
    (run / "specprobe.json").write_text('{"tokens_per_step": 1000}')
    out = tmp_path / "out"
    result = analyze(str(run), "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert result.exit_code == 0, result.output
    records = ResultStore(out).records()
    assert [r["revision"] for r in records] == ["checkpoint-2", "checkpoint-10", "checkpoint-40"]
    assert [r["tokens_seen"] for r in records] == [2000, 10000, 40000]
    # The checkpoints have no tokenizer: the training directory's is used, and the data is
    # exactly the subset that tokenizer gives (not an empty tokenizer's EOS-only sequences).
    spec = DataSpec(dataset=str(corpus), num_sequences=4, seq_len=16, batch_size=2)
    subset = build_subset(spec, tokenizer, fingerprint_tokenizer(tokenizer))
    assert {r["dataset_fingerprint"] for r in records} == {subset.fingerprint}
    assert all(r["commit"] is None for r in records)
    filtered = analyze(
        str(run),
        "--revisions",
        "40,checkpoint-2",
        "--dataset",
        str(corpus),
        *SMALL,
        "--out",
        str(tmp_path / "out2"),
    )
    assert filtered.exit_code == 0, filtered.output
    assert [r["revision"] for r in ResultStore(tmp_path / "out2").records()] == [
        "checkpoint-2",
        "checkpoint-40",
    ]
    single = analyze(
        str(run / "checkpoint-10"), "--dataset", str(corpus), *SMALL, "--out", str(tmp_path / "out3")
    )
    assert single.exit_code == 0, single.output
    assert ResultStore(tmp_path / "out3").records()[0]["revision"] == "local"


def test_checkpoints_without_any_tokenizer(tokenizer: Any, corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "bare-run"
    tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), max_positions=64).save_pretrained(
        run / "checkpoint-1"
    )
    result = analyze(str(run), "--dataset", str(corpus), *SMALL, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "found no tokenizer files" in result.output and "tokenizer.save_pretrained" in result.output


def test_two_models_get_a_comparison(
    hub: dict[str, str], tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    wide = tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), hidden_size=32, seed=5, max_positions=64)
    add_revision("org/tiny-neox-wide", "step1", wide, tokenizer)
    out = tmp_path / "run"
    result = analyze(
        REPO,
        "org/tiny-neox-wide",
        "--revisions",
        "step1",
        "--dataset",
        str(corpus),
        *SMALL,
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "comparison across models" in result.output
    assert "org/tiny-neox-wide" in result.output
    shown = runner.invoke(app, ["report", str(out)])
    assert shown.exit_code == 0 and "comparison across models" in shown.output
    as_json = runner.invoke(app, ["report", str(out), "--json"])
    assert as_json.exit_code == 0
    lines = [json.loads(line) for line in as_json.output.splitlines()]
    assert [r["model"] for r in lines] == [REPO, "org/tiny-neox-wide"]
    assert lines == ResultStore(out).records()


# ---- bad input: one line with a hint, exit code 2, nothing written ------------------------


def _bad_cases(corpus: Path, tmp: Path) -> list[tuple[list[str], str]]:
    jsonl = tmp / "docs.jsonl"
    jsonl.write_text('{"content": "hello there"}\n')
    short = tmp / "short.txt"
    short.write_text("just a few words here\n")
    data = ["--dataset", str(corpus), *SMALL]
    return [
        ([REPO, "--revisions", "step999", *data], "not in the local cache"),
        (["org/does-not-exist", *data], "not in the local cache"),
        ([str(tmp / "missing-dir"), *data], "does not exist"),
        ([REPO, "--revisions", "step1", "--dataset", str(tmp / "nope.txt"), *SMALL], "does not exist"),
        (
            [REPO, "--revisions", "step1", "--dataset", str(jsonl), *SMALL],
            "no column 'text'; did you mean 'content'?",
        ),
        ([REPO, "--revisions", "step1", "--dataset", str(short), *SMALL], "too little text"),
        ([REPO, "--revisions", "step1", "--dataset", str(corpus), "--seq-len", "100"], "exceeds the context"),
        (
            [
                REPO,
                "--revisions",
                "step1",
                "--dataset",
                str(corpus),
                "--num-sequences",
                "5",
                "--batch-size",
                "2",
            ],
            "multiple of batch_size",
        ),
        (["org/vision", "--task", "causal-lm", *data], "has no causal-lm head"),
        ([REPO, "--revisions", "step1", *data, "--resume"], "found no --out"),
    ]


def test_bad_inputs(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    from transformers import ViTConfig

    add_revision(
        "org/vision",
        "main",
        None,
        None,
        config_only=ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8),
    )
    for args, message in _bad_cases(corpus, tmp_path):
        out = tmp_path / "out"
        result = analyze(*args, *([] if "--resume" in args else ["--out", str(out)]))
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "hint:" in result.output
        assert "Traceback" not in result.output
        assert not out.exists(), args


def test_report_of_a_missing_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "expected a run directory with results.jsonl" in result.output


def test_layer_decomposition_in_records_and_report(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = analyze(
        REPO,
        "--revisions",
        "step1",
        "--dataset",
        str(corpus),
        *SHORT,
        "--estimator",
        "exact",
        "--groups",
        "auto",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    (record,) = ResultStore(out).records()
    names = [g["name"] for g in record["groups"]]
    assert names == ["embeddings", "block 0", "block 1", "final norm", "head"]
    assert sum(g["chi_net"] for g in record["groups"]) == pytest.approx(record["chi_net"], rel=1e-10)
    assert sum(g["grad_norm_sq"] for g in record["groups"]) == pytest.approx(
        record["grad_norm_sq"], rel=1e-10
    )
    assert "layer decomposition of org/tiny-neox @ step1" in result.output
    assert "χ_pos head only" in result.output
    head = record["groups"][-1]
    assert value_error(head["spectral_position"], head.get("spectral_position_stderr")) in result.output
    custom = analyze(
        REPO,
        "--revisions",
        "step1",
        "--dataset",
        str(corpus),
        *SMALL,
        "--groups",
        "attention=*.attention.*;mlp=*.mlp.*",
        "--out",
        str(tmp_path / "c"),
    )
    assert custom.exit_code == 0, custom.output
    assert [g["name"] for g in ResultStore(tmp_path / "c").records()[0]["groups"]] == [
        "other",
        "attention",
        "mlp",
    ]
    bad = analyze(
        REPO,
        "--revisions",
        "step1",
        "--dataset",
        str(corpus),
        *SMALL,
        "--groups",
        "attention",
        "--out",
        str(tmp_path / "d"),
    )
    assert bad.exit_code == 2 and "NAME=GLOB" in bad.output


@pytest.mark.slow
def test_eigenpairs_in_records_and_report(
    hub: dict[str, str], corpus: Path, tmp_path: Path, tokenizer: Any
) -> None:
    out = tmp_path / "run"
    args = ["--num-sequences", "1", "--seq-len", "7", "--batch-size", "1", "--probes", "8"]  # D = 1,800
    result = analyze(
        REPO,
        "--revisions",
        "step2",
        "--dataset",
        str(corpus),
        *args,
        "--eigen",
        "6",
        "--density",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    (record,) = ResultStore(out).records()
    spectrum = record["spectrum"]
    # Against the dense reference of the same batch, in float64.
    spec = DataSpec(dataset=str(corpus), num_sequences=1, seq_len=7, batch_size=1)
    ids = build_subset(spec, tokenizer, fingerprint_tokenizer(tokenizer)).input_ids
    model = tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), hidden_size=16, seed=1, max_positions=64)
    ref = specprobe.dense_kernel(model.double(), {"input_ids": ids})
    lam = ref.eigenvalues.numpy()
    assert spectrum["top_eigenvalues"] == pytest.approx(lam[:6], rel=1e-4)
    assert spectrum["top_overlaps"] == pytest.approx(ref.overlaps[:6].numpy(), rel=1e-3, abs=1e-7)
    assert record["eigen_top"] == spectrum["top_eigenvalues"]
    threshold = ref.spectral_position * ref.chi_net
    assert spectrum["position_index"] == pytest.approx(int((lam >= threshold).sum()), rel=0.1)
    assert abs(spectrum["deflated_trace"] - ref.chi_net) <= 4 * spectrum["deflated_trace_stderr"]
    assert "position index" in result.output and "eNTK eigenvalue density" in result.output
