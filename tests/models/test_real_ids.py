"""Real hub ids are hub ids: a name is a path only if it exists or is written as one.

The ids below are the published ones (their model cards, 2026); several hold a dot in
the name (``pythia-1.4b``, ``Qwen2.5-0.5B``), which an earlier version took for a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.errors import SpecprobeError
from specprobe.models.hub import find_checkpoints, written_as_path
from specprobe.models.tiny import tiny_causal_lm
from specprobe.store.results import ResultStore
from tests.hubcache import add_revision, corpus_lines, make_tokenizer

REAL_IDS = [
    *(f"EleutherAI/pythia-{s}" for s in ("14m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")),
    "EleutherAI/pythia-1.4b-deduped",
    "EleutherAI/pythia-160m-seed3",
    "allenai/OLMo-2-0425-1B",
    "allenai/OLMo-1B-hf",
    "LLM360/Amber",
    "google/multiberts-seed_0-step_20k",
    "stanford-crfm/alias-gpt2-small-x21",
    "HuggingFaceTB/SmolLM2-1.7B",
    "HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints",
    "TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1T",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "Qwen/Qwen2.5-0.5B",
    "meta-llama/Llama-3.2-1B",
    "bigscience/bloom-560m-intermediate",
    "gpt2",
]


@pytest.mark.parametrize("model", REAL_IDS)
def test_every_published_id_is_a_hub_id(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    (checkpoint,) = find_checkpoints(model, ["main"])
    assert checkpoint.model == model and checkpoint.path is None


@pytest.mark.parametrize(
    "name",
    [
        "./pythia-1.4b",
        "../m",
        "/abs/model",
        "~/models/m",
        "a/b/c",
        "org/name/",
        "model.onnx",
        "w.safetensors",
    ],
)
def test_names_written_as_paths_that_do_not_exist(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecprobeError, match="does not exist"):
        find_checkpoints(name)


def test_an_existing_folder_wins_over_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``EleutherAI/pythia-1.4b`` in the working directory is that folder, as a user who
    saved a model there means it."""
    monkeypatch.chdir(tmp_path)
    model = tiny_causal_lm("gpt_neox", vocab_size=32, hidden_size=8)
    model.save_pretrained(tmp_path / "EleutherAI" / "pythia-1.4b")
    (checkpoint,) = find_checkpoints("EleutherAI/pythia-1.4b")
    assert checkpoint.path == Path("EleutherAI/pythia-1.4b")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(SpecprobeError, match="which is a file"):
        find_checkpoints("weights.bin")


_PART = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,20}[A-Za-z0-9])?", fullmatch=True).filter(
    lambda p: ".." not in p and "--" not in p and not p.endswith(".git")
)


@settings(max_examples=300, deadline=None)
@given(org=_PART, name=_PART)
def test_what_the_hub_accepts_is_taken_for_an_id(org: str, name: str) -> None:
    """The invariant: a name huggingface_hub accepts as a repo id, not written as a path
    and not ending in a model file's suffix, is a hub id (never refused as a missing path)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    model = f"{org}/{name}"
    try:
        validate_repo_id(model)
    except HFValidationError:
        return
    if Path(name).suffix.lower() in {
        ".onnx",
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".json",
        ".yaml",
        ".yml",
    }:
        assert written_as_path(model)
        return
    assert not written_as_path(model)
    if not Path(model).exists():
        (checkpoint,) = find_checkpoints(model, ["main"])
        assert checkpoint.model == model


@pytest.mark.slow
def test_analyze_runs_under_a_dotted_real_id(tmp_path: Path) -> None:
    """The flagship family's dotted ids measure end to end from a local hub cache."""
    tokenizer: Any = make_tokenizer()
    repo = "EleutherAI/pythia-1.4b"
    for revision, seed in (("step1000", 0), ("step143000", 1)):
        model = tiny_causal_lm(
            "gpt_neox", vocab_size=len(tokenizer), hidden_size=16, seed=seed, max_positions=64
        )
        add_revision(repo, revision, model, tokenizer)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines(100)) + "\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            repo,
            "--revisions",
            "step1000,step143000",
            "--dataset",
            str(corpus),
            "--num-sequences",
            "4",
            "--seq-len",
            "8",
            "--probes",
            "4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    records = ResultStore(out).records()
    assert [(r["model"], r["revision"], r["status"]) for r in records] == [
        (repo, "step1000", "ok"),
        (repo, "step143000", "ok"),
    ]
