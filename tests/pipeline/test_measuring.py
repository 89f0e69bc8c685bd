"""How a sweep measures its subset (issue 18): the whole subset as one set (the default)
or the mean over batches (``batch_size`` set, the way before); the record's population
fields and χ_pos at the training batch; records of earlier versions still load and frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from specprobe.choices import DType
from specprobe.config import DataSpec, Measuring, ProbeSpec
from specprobe.models.tiny import tiny_causal_lm
from specprobe.pipeline.plan import ModelSpec, SweepPlan
from specprobe.pipeline.sweep import sweep_into
from specprobe.store.frames import csv_text, load_batches, load_results
from specprobe.store.results import ResultStore
from tests.hubcache import corpus_lines, make_tokenizer

POPULATION = (
    "population_position",
    "normalized_population_position",
    "single_position",
    "mean_grad_sq",
    "noise_scale",
    "noise_scale_tokens",
)
NEW_FIELDS = (
    "measurement",
    "population_status",
    "sequences_needed",
    "train_batch_sequences",
    "train_batch_position",
    "train_batch_position_stderr",
    *POPULATION,
    *(f"{name}_stderr" for name in POPULATION if name != "noise_scale_tokens"),
)
"""Record fields added by issue 18 (absent from records of earlier versions)."""

MAIN_BATCHES = {
    "checkpoint-1": (5.708263038452118, 1865180.0291212671, 7.832185164760796e-05, 1.6152407552749365e-05),
    "checkpoint-2": (5.725784167905009, 1756582.300150814, 0.00013464194988787893, 5.235342428942219e-05),
}
"""(loss, chi_net, spectral_position, its stderr) of :func:`batches_plan`, as specprobe
before issue 18 (main at dd37e5d) wrote them."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A training folder of two tiny GPT-NeoX checkpoints (its specprobe.json names the
    training batch) and a corpus."""
    root = tmp_path_factory.mktemp("measuring")
    tokenizer = make_tokenizer()
    run = root / "train"
    for step, seed in ((1, 0), (2, 1)):
        model = tiny_causal_lm(
            "gpt_neox", vocab_size=len(tokenizer), hidden_size=16, seed=seed, max_positions=64
        )
        model.save_pretrained(run / f"checkpoint-{step}")
    tokenizer.save_pretrained(run)
    (run / "specprobe.json").write_text('{"tokens_per_step": 64, "train_batch_sequences": 4}')
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines(200)) + "\n")
    return run, corpus


def batches_plan(run: Path, corpus: Path) -> SweepPlan:
    return SweepPlan(
        models=(ModelSpec(str(run)),),
        data=DataSpec(dataset=str(corpus), num_sequences=8, seq_len=16, batch_size=4),
        probe=ProbeSpec(probes=4, dtype=DType.float64, groups="auto"),
    )


def whole_plan(run: Path, corpus: Path, micro: int | None = None, **model: Any) -> SweepPlan:
    return SweepPlan(
        models=(ModelSpec(str(run), **model),),
        data=DataSpec(dataset=str(corpus), num_sequences=12, seq_len=16),
        probe=ProbeSpec(probes=4, dtype=DType.float64, groups="auto", micro_batch_size=micro),
    )


def swept(plan: SweepPlan, out: Path) -> list[Any]:
    sweep_into(plan, out)
    return ResultStore(out).records()


def test_batches_records_equal_the_numbers_of_earlier_versions(
    folder: tuple[Path, Path], tmp_path: Path
) -> None:
    records = swept(batches_plan(*folder), tmp_path / "run")
    for record in records:
        loss, chi_net, position, position_se = MAIN_BATCHES[record["revision"]]
        assert record["loss"] == pytest.approx(loss, rel=1e-9)
        assert record["chi_net"] == pytest.approx(chi_net, rel=1e-9)
        assert record["spectral_position"] == pytest.approx(position, rel=1e-9)
        assert record["spectral_position_stderr"] == pytest.approx(position_se, rel=1e-9)
        assert record["measurement"] == Measuring.BATCHES.value and record["num_batches"] == 2
        # A ratio over a per-batch ‖M‖²^ has no useful mean: the noise scale is the whole's only.
        assert record["noise_scale"] is None and record["sequences_needed"] is None
        assert record["train_batch_sequences"] == 4


def test_whole_subset_is_one_measurement_equal_across_micro_batches(
    folder: tuple[Path, Path], tmp_path: Path
) -> None:
    one = swept(whole_plan(*folder), tmp_path / "one")
    for micro in (1, 5):
        split = swept(whole_plan(*folder, micro=micro), tmp_path / f"micro{micro}")
        for a, b in zip(split, one, strict=True):
            for name in ("loss", "chi_net", "spectral_position", *POPULATION, "train_batch_position"):
                assert a[name] is not None, name
                assert a[name] == pytest.approx(b[name], rel=1e-9), (micro, name)
            for group_a, group_b in zip(a["groups"], b["groups"], strict=True):
                assert group_a["population_position"] == pytest.approx(
                    group_b["population_position"], rel=1e-9
                )
    record = one[0]
    assert record["measurement"] == "whole" and record["num_batches"] == 1
    assert record["num_tokens"] == 12 * 15 and record["population_status"] in ("ok", "noisy", "nonpositive")
    batch = record["batches"][0]
    for name in POPULATION:
        assert record[name] == batch[name]  # the measurement's own values
    # χ_pos at the training batch of the folder's specprobe.json (4 sequences).
    expected = batch["population_position"] + (batch["single_position"] - batch["population_position"]) / 4
    assert record["train_batch_position"] == pytest.approx(expected, rel=1e-12)


def test_train_batch_sequences_from_the_plan_or_the_known_families() -> None:
    from specprobe.models.hub import Checkpoint
    from specprobe.pipeline.plan import PlannedCheckpoint, tokens_seen, train_batch_sequences

    def planned(model: str, **spec: Any) -> PlannedCheckpoint:
        return PlannedCheckpoint(ModelSpec(model, **spec), Checkpoint(model, "step10"), None)

    pythia = planned("EleutherAI/pythia-160m")
    assert train_batch_sequences(pythia) == 1024  # the registry of families (families.yaml)
    assert tokens_seen(pythia) == 10 * 1024 * 2048  # one table for both
    assert train_batch_sequences(planned("EleutherAI/pythia-160m", train_batch_sequences=8)) == 8
    assert train_batch_sequences(planned("org/other")) is None


def test_records_of_earlier_versions_load_and_frame(folder: tuple[Path, Path], tmp_path: Path) -> None:
    """A run folder whose records have none of issue 18's fields (as earlier versions
    wrote them) loads, frames, writes CSV and renders its report."""
    pytest.importorskip("pandas")
    out = tmp_path / "run"
    records = swept(batches_plan(*folder), out)
    old = []
    for record in records:
        for name in NEW_FIELDS:
            record.pop(name)  # type: ignore[misc]
            for batch in record["batches"]:
                batch.pop(name, None)
        for group in record.get("groups", []):
            group.pop("population_position")  # type: ignore[misc]
            group.pop("population_position_stderr")  # type: ignore[misc]
        old.append(json.dumps(record))
    (out / "results.jsonl").write_text("\n".join(old) + "\n")
    frame = load_results(out)
    assert list(frame["revision"]) == ["checkpoint-1", "checkpoint-2"]
    assert "population_position" not in frame.columns
    assert len(load_batches(out)) == 4
    assert csv_text(ResultStore(out).records()).count("\n") == 3
    from specprobe.report.document import build_document

    build_document(ResultStore(out).records())
