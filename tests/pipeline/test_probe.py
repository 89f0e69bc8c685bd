"""Probe: repeated measurement during training, without disturbing the training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import specprobe
from specprobe.cli.app import app
from specprobe.pipeline.probe import Probe, log_steps
from specprobe.store.results import ResultStore


def test_log_steps() -> None:
    steps = log_steps(1000, 7)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 1000
    assert steps == sorted(set(steps))
    assert log_steps(10, 30, include_zero=False) == list(range(1, 11))
    with pytest.raises(specprobe.SpecprobeError, match="first <= last"):
        log_steps(0, 5)


def _train(probe: Probe | None, steps: int = 12) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    model.train()
    for step in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        if probe is not None:  # between backward and step: .grad must survive the measurement
            probe.maybe_measure(step, model)
        optimizer.step()
    return model


def test_plain_loop_is_not_disturbed(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(2)
    batch = (torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))
    probe = Probe(batch, probes=4, schedule=[0, 3, 10], out=tmp_path / "run", label="mlp", tokens_per_step=32)
    with_probe = _train(probe)
    without = _train(None)
    for a, b in zip(with_probe.parameters(), without.parameters(), strict=True):
        assert torch.equal(a, b)  # same dropout masks, same gradients, same optimizer steps
    assert with_probe.training
    assert [s for s, _ in probe.measurements] == [0, 3, 10]
    records = ResultStore(tmp_path / "run").records()
    assert [r["revision"] for r in records] == ["step0", "step3", "step10"]
    assert [r["tokens_seen"] for r in records] == [0, 96, 320]
    assert records[1]["spectral_position"] == probe.measurements[1][1].spectral_position
    assert len({r["fingerprint"] for r in records}) == 3
    shown = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert shown.exit_code == 0 and "┃ step ┃" in shown.output  # step0 … step10 shown as 0 … 10


def test_trainer_callback_logs_and_records(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from transformers import Trainer, TrainingArguments

    from specprobe.models.tiny import tiny_causal_lm
    from specprobe.pipeline.trainer import SpecprobeCallback

    model = tiny_causal_lm("gpt_neox", vocab_size=32, hidden_size=16, max_positions=32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 32, (16, 12), generator=g)
    train = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=100,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train)
    probe = Probe({"input_ids": ids[:4]}, probes=4, schedule=[0, 2, 6], out=tmp_path / "run", label="tiny")
    SpecprobeCallback.attach(trainer, probe)
    trainer.train()
    assert [s for s, _ in probe.measurements] == [0, 2, 6]
    # Not in the training's log history (it stays as without the callback; the loggers get
    # the values through on_log: tests/pipeline/test_training_untouched.py).
    assert not [h for h in trainer.state.log_history if "specprobe/spectral_position" in h]
    assert [r["step"] for r in ResultStore(tmp_path / "run").records()] == [0, 2, 6]
