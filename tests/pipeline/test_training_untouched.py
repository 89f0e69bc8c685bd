"""A library that never disturbs the training it watches (issue 29, section 2): attached to
training, specprobe changes nothing the training computes or logs (weights, RNG streams,
log history, bit for bit), never raises into the loop for its own I/O, and never mixes or
replaces another run's records. Each listed case failed before the fix."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import specprobe
from specprobe.errors import SpecprobeError
from specprobe.pipeline.probe import Probe
from specprobe.store.lock import RunLock
from specprobe.store.results import ResultStore
from tests.store.test_results_safety import record

TIMINGS = ("train_runtime", "train_samples_per_second", "train_steps_per_second")
"""The only log entries that differ between two identical runs (wall-clock time)."""


def _trainer_run(
    tmp_path: Path, probe: Probe | None
) -> tuple[Any, list[dict[str, Any]], list[dict[str, float]]]:
    """Six Trainer steps of a tiny GPT-NeoX, logging every step; returns the model, the log
    history (timings left out) and what a logger callback received."""
    datasets = pytest.importorskip("datasets")
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from specprobe.models.tiny import tiny_causal_lm
    from specprobe.pipeline.trainer import SpecprobeCallback

    class Logger(TrainerCallback):  # stands for TensorBoard / W&B
        def __init__(self) -> None:
            self.seen: list[dict[str, float]] = []

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            self.seen.append(dict(logs or {}))

    torch.manual_seed(0)
    model = tiny_causal_lm("gpt_neox", vocab_size=32, hidden_size=16, max_positions=32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 32, (16, 12), generator=g)
    train = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=3,
    )
    logger = Logger()
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[logger])
    if probe is not None:
        SpecprobeCallback.attach(trainer, probe)
    trainer.train()
    history = [{k: v for k, v in h.items() if k not in TIMINGS} for h in trainer.state.log_history]
    return model, history, logger.seen


def test_trainer_log_history_is_identical_with_the_callback(tmp_path: Path) -> None:
    """The callback's ``trainer.log`` cleared ``should_log``: the loss of every measured
    step was lost and the next entry averaged the skipped steps."""
    ids = torch.randint(0, 32, (4, 12), generator=torch.Generator().manual_seed(5))
    probe = Probe({"input_ids": ids}, probes=4, schedule=[0, 2, 5], out=tmp_path / "run", label="tiny")
    with_probe, history, seen = _trainer_run(tmp_path / "a", probe)
    without, plain, _ = _trainer_run(tmp_path / "b", None)
    assert history == plain  # bit for bit: every loss, grad norm, learning rate, step
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(with_probe.parameters(), without.parameters(), strict=True):
        assert torch.equal(a, b)
    measured = [s for s in seen if "specprobe/chi_net" in s]  # the loggers still get them
    assert [s["specprobe/chi_net"] for s in measured] == [m.chi_net for _, m in probe.measurements]
    assert [r["step"] for r in ResultStore(tmp_path / "run").records()] == [0, 2, 5]


def _norm_model(kind: str, width: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    norm: torch.nn.Module = (
        torch.nn.LayerNorm(width)
        if kind == "layernorm"
        else torch.nn.RMSNorm(width)
        if kind == "rmsnorm"
        else torch.nn.Identity()
    )
    return torch.nn.Sequential(torch.nn.Linear(3, width), norm, torch.nn.Tanh(), torch.nn.Linear(width, 2))


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(["layernorm", "rmsnorm", "none"]),
    width=st.integers(2, 9),
    estimator=st.sampled_from(["hutchinson", "hutchinson_per_sample", "exact"]),
    seed=st.integers(0, 3),
)
def test_measure_never_advances_the_global_rng(kind: str, width: int, estimator: str, seed: int) -> None:
    """An unseeded ``torch.randn`` in the norm layers' check advanced the global stream on
    the first ``measure`` of a model with norm layers."""
    model = _norm_model(kind, width, seed)
    g = torch.Generator().manual_seed(seed)
    batch = (torch.randn(5, 3, generator=g), torch.randint(0, 2, (5,), generator=g))
    torch.manual_seed(1234 + seed)
    before = torch.get_rng_state()
    specprobe.measure(model, batch, estimator=estimator, probes=2)
    assert torch.equal(torch.get_rng_state(), before)


def _tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(6, 3, generator=g), torch.randint(0, 2, (6,), generator=g)


def test_two_training_runs_into_one_folder_keep_both(tmp_path: Path) -> None:
    """With the default label the second run replaced the first run's records."""
    for seed in (0, 1):
        probe = Probe(_tiny_batch(), probes=2, out=tmp_path / "run")
        probe.measure(_norm_model("none", 4, seed), step=10)
        probe.measure(_norm_model("none", 4, seed + 10), step=20)
    records = ResultStore(tmp_path / "run").records()
    assert [(r["model"], r["revision"]) for r in records] == [
        ("model", "step10"),
        ("model", "step20"),
        ("model-2", "step10"),
        ("model-2", "step20"),
    ]
    assert len({r["probe_run"] for r in records}) == 2


@settings(max_examples=8, deadline=None)
@given(moves=st.lists(st.sampled_from(["a", "b", "a/sub"]), min_size=1, max_size=3))
def test_a_relative_out_stays_one_folder_when_the_loop_changes_directory(moves: list[str]) -> None:
    """``Probe(out="runs/x")`` wrote each record relative to the working directory of the
    moment: a training script that changes directory (a notebook's ``%cd``, a framework's
    per-run folder) split its records over two run folders. The folder is the one named
    when the Probe was made."""
    import os
    import tempfile

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("a", "b", "a/sub"):
            (root / name).mkdir(parents=True, exist_ok=True)
        try:
            os.chdir(root / "a")
            probe = Probe(_tiny_batch(), probes=2, out="runs/x")
            probe.measure(_norm_model("none", 4, 0), step=0)
            for step, move in enumerate(moves, start=1):
                os.chdir(root / move)
                probe.measure(_norm_model("none", 4, 0), step=step)
        finally:
            os.chdir(cwd)
        found = sorted(str(p.relative_to(root)) for p in root.rglob("results.jsonl"))
        assert found == ["a/runs/x/results.jsonl"], found
        steps = [r["step"] for r in ResultStore(root / "a" / "runs" / "x").records()]
        assert steps == list(range(len(moves) + 1))


def test_a_probe_into_a_run_of_other_settings_is_refused(tmp_path: Path) -> None:
    """``Probe(out=<an analyze run>)`` appended records of other settings, and the report
    mixed them into one verdict."""
    store = ResultStore(tmp_path / "run")
    store.append(record("step1", settings_hash="0123456789abcdef"))
    before = store.results_path.read_bytes()
    with pytest.raises(SpecprobeError) as err:
        Probe(_tiny_batch(), probes=2, out=store.directory)
    assert "other settings" in err.value.message and "0123456789abcdef" in err.value.message
    assert store.results_path.read_bytes() == before
    same = Probe(_tiny_batch(), probes=2, out=tmp_path / "mine")  # same settings: accepted
    same.measure(_norm_model("none", 4, 0), step=1)
    Probe(_tiny_batch(), probes=2, out=tmp_path / "mine")
    with pytest.raises(SpecprobeError, match="other settings"):
        Probe(_tiny_batch(), probes=3, out=tmp_path / "mine")


def test_a_locked_folder_never_raises_into_the_loop(tmp_path: Path) -> None:
    """A Probe whose folder was locked raised into the training loop and lost the record."""
    probe = Probe(_tiny_batch(), probes=2, out=tmp_path / "run")
    model = _norm_model("none", 4, 0)
    lock = RunLock(tmp_path / "run")  # another writer (RunLocks exclude each other in one process)
    lock.acquire()
    try:
        with pytest.warns(RuntimeWarning, match="not written yet"):
            probe.measure(model, step=1)
        with pytest.warns(RuntimeWarning, match="2 record"):
            probe.measure(model, step=2)
        assert not ResultStore(tmp_path / "run").records()
    finally:
        lock.release()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe.measure(model, step=3)  # written now, with the two kept
    assert [r["revision"] for r in ResultStore(tmp_path / "run").records()] == ["step1", "step2", "step3"]
    assert probe.pending == [] and probe.flush()
