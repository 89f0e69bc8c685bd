"""A masked LM measured as one set across 2 processes (torchrun, gloo, one thread each)
equals the one-process measurement: the masks are drawn per (seed, sequence, position)
for the whole set before it is shared out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.models.tiny_tasks import tiny_task_model
from specprobe.store.results import ResultStore
from tests.cli.test_tasks import word_tokenizer
from tests.hubcache import add_revision, corpus_lines
from tests.pipeline.test_distributed import assert_same_records, run

REPO = "google/multiberts-seed_1-step_40k"


@pytest.mark.slow
def test_masked_lm_across_two_processes_equals_one(tmp_path: Path) -> None:
    tokenizer = word_tokenizer(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    model = tiny_task_model("bert", vocab_size=len(tokenizer), seed=1)
    model.config.architectures = ["BertForPreTraining"]
    add_revision(REPO, "main", model, tokenizer)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines(120)) + "\n")
    args = [
        "analyze",
        REPO,
        "--dataset",
        str(corpus),
        "--num-sequences",
        "8",
        "--seq-len",
        "12",
        "--probes",
        "4",
        # float64: a process measuring 4 of the 8 sequences runs other matrix shapes than
        # one measuring all 8, so in float32 the two agree to its rounding (1e-7) only.
        "--dtype",
        "float64",
    ]
    single = tmp_path / "single"
    result = CliRunner().invoke(app, [*args, "--out", str(single)])
    assert result.exit_code == 0, result.output
    reference: list[dict[str, Any]] = ResultStore(single).records()
    assert reference[0]["task"] == "masked-lm"
    shared = tmp_path / "shared"
    command = [sys.executable, "-m", "specprobe", *args, "--out", str(shared)]
    done = run([*command, "--processes", "2", "--process-split", "batches"])
    assert done.returncode == 0, done.stderr[-3000:]
    records = ResultStore(shared).records()
    assert [r["micro_batch_size"] for r in records] == [4]  # each process measured its 4 sequences

    def numbers(record: dict[str, Any]) -> dict[str, Any]:  # where it ran is not a number
        out = {k: v for k, v in record.items() if k != "micro_batch_size"}
        out["batches"] = [{k: v for k, v in b.items() if k != "micro_batch_size"} for b in record["batches"]]
        return out

    assert_same_records([numbers(r) for r in records], [numbers(r) for r in reference])
    # In float64 the population estimates agree to 1e-9 too (the shared rule allows 1e-6).
    assert reference[0]["mean_grad_sq"] is not None
    for name in ("population_position", "single_position", "mean_grad_sq", "chi_net"):
        if reference[0][name] is not None:
            assert records[0][name] == pytest.approx(reference[0][name], rel=1e-9), name
    config = ResultStore(shared).config()
    assert config is not None and config["invocations"][-1]["world_size"] == 2
