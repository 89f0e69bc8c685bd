"""Nothing lost, third pass (issue 20): outputs that would overwrite a run's own files or
an input, resumes that mix settings, empty lists, names that are markup, ``~``, and the
smaller ones (counts, SIGTERM, vocabulary, data types, a tokenizer without EOS). Each
test failed before the fixes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.models.tiny import tiny_causal_lm
from specprobe.store.results import ResultStore
from tests.cli import test_analyze
from tests.cli.test_analyze import REPO, SMALL, analyze
from tests.models.test_hub_unreachable import sweep_command
from tests.test_safety import one_line_error, snapshot

runner = CliRunner()
hub, corpus, tokenizer = test_analyze.hub, test_analyze.corpus, test_analyze.tokenizer
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(hub: dict[str, str], corpus: Path, tmp_path: Path) -> Path:
    """A finished run of step1 (4 probes)."""
    out = tmp_path / "run"
    done = analyze(REPO, "--revisions", "step1", "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert done.exit_code == 0, done.output
    return out


# ---- 1. no output over the run's own files or an input -----------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["report", "{run}", "--html", "{run}/results.jsonl"],
        ["report", "{run}", "--csv", "{run}/results.jsonl"],
        ["report", "{run}", "--csv", "{run}/config.json"],
        ["report", "{run}", "--html", "{run}/.specprobe-run"],
        ["plot", "{run}", "--out", "{run}/results.jsonl"],
    ],
)
def test_report_outputs_never_replace_the_run_files(run: Path, args: list[str]) -> None:
    before = snapshot(run)
    result = runner.invoke(app, [a.format(run=run) for a in args])
    one_line_error(result, "would overwrite")
    assert snapshot(run) == before
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0


def test_analyze_html_into_its_own_results_is_refused_before_any_work(
    hub: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "new"
    data = ["--revisions", "step1", "--dataset", str(corpus), *SMALL, "--out", str(out)]
    one_line_error(
        analyze(REPO, *data, "--html", str(out / "results.jsonl")), "would overwrite results.jsonl"
    )
    assert not out.exists()  # refused before anything was measured or written
    before = corpus.read_bytes()
    one_line_error(analyze(REPO, *data, "--html", str(corpus)), "would overwrite an input")
    assert corpus.read_bytes() == before and not out.exists()


# ---- 4. a resume with other settings --------------------------------------------------


def test_resume_with_settings_that_change_the_numbers_is_refused(run: Path, corpus: Path) -> None:
    before = snapshot(run)
    base = [REPO, "--revisions", "step1,step2", "--dataset", str(corpus), *SMALL[:-1]]
    other = analyze(*base, "6", "--out", str(run), "--resume")
    one_line_error(other, "other settings", "probe.probes 4 there, 6 now", "new --out")
    assert snapshot(run) == before
    # Settings that do not change the numbers (config.RUN_ONLY) may differ.
    same = analyze(*base, "4", "--micro-batch-size", "1", "--out", str(run), "--resume")
    assert same.exit_code == 0, same.output
    assert "1 measured, 1 resumed, 0 failed" in same.output


# ---- 5. empty lists -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", ",,,", " , "])
def test_an_empty_revision_list_is_refused(
    hub: dict[str, str], corpus: Path, tmp_path: Path, value: str
) -> None:
    out = tmp_path / "run"
    result = analyze(REPO, "--revisions", value, "--dataset", str(corpus), *SMALL, "--out", str(out))
    one_line_error(result, "at least one name")
    assert not out.exists()


def test_an_empty_revision_in_a_recipe_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nfamily: {name: x}\nmodels: [{id: org/m}]\nrevisions: ['']\n")
    one_line_error(runner.invoke(app, ["validate", str(recipe)]), "non-empty list of revision names")


# ---- 6. names that are markup (the CLI's own lines) ---------------------------------------


def test_paths_with_brackets_are_shown_whole(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run[red]x[/red]"
    done = analyze(REPO, "--revisions", "step1", "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert done.exit_code == 0, done.output
    assert f"results in {out / 'results.jsonl'}" in done.output.replace("\n", "")
    missing = tmp_path / "[bold]nowhere[/bold]"
    shown = runner.invoke(app, ["report", str(missing)])
    one_line_error(shown, str(missing))


# ---- 8. ~ ----------------------------------------------------------------------------------


def test_home_is_expanded_in_every_path(
    hub: dict[str, str], corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "corpus.txt").write_bytes(corpus.read_bytes())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    done = analyze(
        REPO,
        "--revisions",
        "step1",
        "--dataset",
        "~/corpus.txt",
        *SMALL,
        "--out",
        "~/runs/a",
        "--html",
        "~/a.html",
    )
    assert done.exit_code == 0, done.output
    assert (home / "runs/a/results.jsonl").is_file() and (home / "a.html").is_file()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"version: 1\nfamily: {{name: x}}\nmodels: [{{id: {REPO}}}]\nrevisions: [step1]\n"
        "data: {dataset: ~/corpus.txt, num_sequences: 4, seq_len: 16, batch_size: 2}\nprobe: {probes: 4}\n"
        "output: {directory: ~/runs/b}\n"
    )
    ran = runner.invoke(app, ["run", str(recipe)])
    assert ran.exit_code == 0, ran.output
    assert (home / "runs/b/results.jsonl").is_file()
    reported = runner.invoke(app, ["report", "~/runs/b", "--csv", "~/b.csv"])
    assert reported.exit_code == 0, reported.output
    assert (home / "b.csv").is_file()
    assert not (tmp_path / "~").exists()


# ---- 9. the smaller ones ----------------------------------------------------------------------


SIGTERM_SCRIPT = """
import os, signal, sys
import specprobe.pipeline.checkpoint as checkpoint
from specprobe.cli.app import app
real = checkpoint.load_checkpoint
def load(ckpt, **kw):
    if ckpt.revision == "step2":
        os.kill(os.getpid(), signal.SIGTERM)
    return real(ckpt, **kw)
checkpoint.load_checkpoint = load
sys.argv = ["specprobe", *sys.argv[1:]]
app()
"""


def test_sigterm_says_what_was_kept(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = sweep_command(corpus, out)
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_SCRIPT, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 128 + signal.SIGTERM, (done.returncode, done.stderr[-2000:])
    assert "1 finished record(s) are kept" in done.stderr and "--resume" in done.stderr
    assert "Traceback" not in done.stderr
    assert [r["revision"] for r in ResultStore(out).records()] == ["step1"]


def _local_model(folder: Path, tokenizer: Any, vocab_size: int) -> Path:
    tiny_causal_lm("gpt_neox", vocab_size=vocab_size, max_positions=64).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_tokenizer_larger_than_the_vocabulary_names_the_ids(
    tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    size = len(tokenizer) - 100
    model = _local_model(tmp_path / "small-vocab", tokenizer, size)
    result = analyze(str(model), "--dataset", str(corpus), *SMALL, "--out", str(tmp_path / "run"))
    one_line_error(result, f"beyond the model's vocabulary of {size} embeddings", "resize_token_embeddings")
    assert not (tmp_path / "run").exists()


def test_a_dataset_of_integers_names_the_type(hub: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "numbers.jsonl"
    data.write_text("".join(json.dumps({"text": i}) + "\n" for i in range(50)))
    result = analyze(
        REPO, "--revisions", "step1", "--dataset", str(data), *SMALL, "--out", str(tmp_path / "r")
    )
    one_line_error(result, "expected text in column 'text'", "found int")


def test_documents_joined_without_a_separator_are_said(tokenizer: Any, corpus: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model = _local_model(tmp_path / "no-eos", tokenizer, len(tokenizer))
    loaded = AutoTokenizer.from_pretrained(model)
    loaded.eos_token = None
    loaded.save_pretrained(model)
    assert AutoTokenizer.from_pretrained(model).eos_token_id is None
    result = analyze(str(model), "--dataset", str(corpus), *SMALL, "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "no EOS token" in result.output
    assert "joined without a separator" in result.output
