"""The settings object and its hash: pinned to the values the previous version wrote (so
``--resume`` on an old run folder finds its finished records), and one key for equal
settings whichever entry point built them (command line, recipe, Python, library Probe)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from specprobe.choices import Estimator
from specprobe.cli.app import app
from specprobe.config import LIMITS, BatchSpec, DataSpec, Measuring, ProbeSpec, Settings, check_range
from specprobe.errors import SpecprobeError
from specprobe.pipeline.plan import ModelSpec, SweepPlan
from specprobe.recipes.recipe import load_recipe

DEFAULT_CLI_HASH = "31c23a8a07384f28"
"""``specprobe analyze MODEL`` with every default. Changed by issue 18 on purpose: the
default measures 256 sequences of 64 tokens as one set (``batch_size`` None), where it
averaged batches of 8 of 32 sequences of 128 tokens; the numbers differ, so must the key."""
OLD_DEFAULT_CLI_HASH = "b601e52b22973e34"
"""``specprobe analyze MODEL`` before issue 18 (and since issue 17); the same settings given
explicitly (``--num-sequences 32 --seq-len 128 --batch-size 8``) keep it, so old runs resume."""
TINY_LOCAL_HASH = "78e5116c68de71f5"
"""``specprobe run tiny-local --set root=/tmp/x``: the demo's analysis, 256 sequences of 64
tokens as one set, 4 probes (issue 18; before it, batches of 8 of 32 sequences, 16 probes:
802b0ecb53febf2f, which ``OLD_TINY_LOCAL_HASH`` pins)."""
OLD_TINY_LOCAL_HASH = "802b0ecb53febf2f"


def test_default_plan_hash_is_pinned() -> None:
    assert SweepPlan(models=(ModelSpec("x"),)).settings.hash() == DEFAULT_CLI_HASH
    assert Settings().hash() == DEFAULT_CLI_HASH
    assert Settings().data.measuring is Measuring.WHOLE


def test_batches_keep_the_hash_of_earlier_versions() -> None:
    old = DataSpec(num_sequences=32, seq_len=128, batch_size=8)
    assert old.measuring is Measuring.BATCHES
    assert Settings(data=old).hash() == OLD_DEFAULT_CLI_HASH
    with pytest.raises(SpecprobeError, match="multiple of batch_size"):
        DataSpec(num_sequences=30, batch_size=8).validate()
    DataSpec(num_sequences=30).validate()  # a whole subset need not cut into batches


def test_recipe_plan_hash_is_pinned() -> None:
    plan = load_recipe("tiny-local", variables={"root": "/tmp/x"}).to_plan()
    assert plan.settings.hash() == TINY_LOCAL_HASH


def _planned_by(monkeypatch: pytest.MonkeyPatch, *args: str) -> SweepPlan:
    """The plan a command hands to the pipeline (nothing is measured)."""
    import specprobe.pipeline.sweep as sweep

    seen: list[SweepPlan] = []

    def capture(plan: SweepPlan, out: Any, **kwargs: Any) -> Any:
        seen.append(plan)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "sweep_into", capture)
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 130, result.output
    return seen[0]


def test_equal_settings_give_equal_keys_across_entry_points(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    default = _planned_by(monkeypatch, "analyze", "org/x")
    assert default.settings.hash() == DEFAULT_CLI_HASH
    cli = _planned_by(
        monkeypatch,
        "analyze",
        "org/x",
        "--dataset",
        "/tmp/x/data/eval.txt",
        "--num-sequences",
        "256",
        "--seq-len",
        "64",
        "--probes",
        "4",
    )
    recipe = _planned_by(monkeypatch, "run", "tiny-local", "--set", "root=/tmp/x")
    python = SweepPlan(
        models=(ModelSpec("org/x"),),
        data=DataSpec(dataset="/tmp/x/data/eval.txt", num_sequences=256, seq_len=64),
        probe=ProbeSpec(probes=4),
    )
    assert cli.settings == recipe.settings == python.settings
    assert cli.settings.hash() == recipe.settings.hash() == python.settings.hash() == TINY_LOCAL_HASH
    old = SweepPlan(
        models=(ModelSpec("org/x"),),
        data=DataSpec(dataset="/tmp/x/data/eval.txt", num_sequences=32, seq_len=64, batch_size=8),
        probe=ProbeSpec(probes=16),
    )
    assert old.settings.hash() == OLD_TINY_LOCAL_HASH  # the old demo's runs still resume
    # Where it runs is not part of the key.
    moved = _planned_by(monkeypatch, "analyze", "org/x", "--device", "auto", "--micro-batch-size", "2")
    assert moved.settings.hash() == DEFAULT_CLI_HASH
    old = ("--num-sequences", "32", "--seq-len", "128", "--batch-size", "8")
    assert _planned_by(monkeypatch, "analyze", "org/x", *old).settings.hash() == OLD_DEFAULT_CLI_HASH


def test_probe_records_use_the_same_shape_and_hash(tmp_path: Path) -> None:
    from specprobe.models.tiny import tiny_causal_lm
    from specprobe.pipeline.probe import Probe
    from specprobe.store.results import ResultStore

    model = tiny_causal_lm("gpt_neox", vocab_size=32, hidden_size=16, seed=0)
    ids = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))
    probe = Probe({"input_ids": ids}, probes=4, out=tmp_path / "run")
    probe.measure(model, step=0)
    (record,) = ResultStore(tmp_path / "run").records()
    expected = Settings(
        data=BatchSpec(fingerprint=probe.data_fingerprint(), adapter="causal_lm"),
        probe=ProbeSpec(estimator=Estimator.HUTCHINSON_PER_SAMPLE, probes=4),  # the CLI's default
    )
    assert record["settings"] == expected.to_dict() and record["settings_hash"] == expected.hash()
    assert set(record["settings"]["probe"]) == set(Settings().to_dict()["probe"])


def test_settings_are_frozen_and_checked_against_one_table() -> None:
    with pytest.raises(FrozenInstanceError):
        Settings().probe.probes = 3  # type: ignore[misc]
    with pytest.raises(SpecprobeError, match=r"--probes: expected an integer from 2 to 10,000, found 1"):
        Settings(probe=ProbeSpec(probes=1)).validate()
    with pytest.raises(SpecprobeError, match=r"--seq-len: expected an integer >= 2"):
        Settings(data=DataSpec(seq_len=1)).validate()
    assert LIMITS["eigen"].high == 1_000
    check_range("eigen", 1_000)
