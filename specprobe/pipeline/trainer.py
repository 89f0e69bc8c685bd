"""Measuring during a Hugging Face ``Trainer`` run: a ``TrainerCallback`` around a Probe.

    from specprobe import SpecprobeCallback
    trainer = Trainer(model=model, args=args, train_dataset=data)
    SpecprobeCallback.attach(trainer, specprobe.Probe(probe_batch, out="runs/train"))
    trainer.train()

At the steps of the probe's schedule (log-spaced by default) the callback measures the
model on the probe batch, hands the decomposition to the Trainer's loggers (the ``on_log``
of its callbacks: TensorBoard, W&B or any logger the Trainer reports to, under
``specprobe/...``) and appends a record to the probe's results directory (with the
Trainer's batch, per device × accumulation steps × processes, as ``train_batch_sequences``
unless the probe has one). The training is left exactly as it was: the optimizer,
gradients, weights, RNG streams, training mode, ``state.log_history`` and the control
flags (the Trainer logs the loss of a measured step as it would without the callback).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from specprobe.pipeline.probe import Probe


class SpecprobeCallback(TrainerCallback):
    """Measures at the probe's scheduled steps (``state.global_step``) during training."""

    def __init__(self, probe: Probe, trainer: Any | None = None) -> None:
        self.probe = probe
        self.trainer = trainer

    @classmethod
    def attach(cls, trainer: Any, probe: Probe) -> SpecprobeCallback:
        """Create the callback for ``trainer`` (so it can log through it) and add it."""
        callback = cls(probe, trainer)
        trainer.add_callback(callback)
        return callback

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.probe.train_batch_sequences is None:  # the batch one optimizer step sees
            self.probe.train_batch_sequences = (
                args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            )
        self._maybe(state.global_step, kwargs.get("model"))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._maybe(state.global_step, kwargs.get("model"))

    def _maybe(self, step: int, model: Any) -> None:
        if model is None or not self.probe.due(step):
            return
        measured = [s for s, _ in self.probe.measurements]
        if step in measured:  # on_train_begin and on_step_end can both see step 0 on resume
            return
        result = self.probe.measure(model, step=step)
        if self.trainer is not None:
            self._report(self.probe.log_dict(result))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.probe.flush()  # records a locked folder held back (with a warning if still locked)

    def _report(self, logs: dict[str, float]) -> None:
        """Hand ``logs`` to the Trainer's loggers (its callbacks' ``on_log``: TensorBoard,
        W&B, …) without touching the training's own logging: ``trainer.log`` would add an
        entry to ``state.log_history`` and clear ``control.should_log`` (so the loss of a
        measured step was never logged and the next entry averaged the skipped steps). The
        Trainer's control flags are restored as they were."""
        trainer: Any = self.trainer
        saved = dataclasses.asdict(trainer.control)
        others = [c for c in trainer.callback_handler.callbacks if c is not self]
        for callback in others:
            callback.on_log(trainer.args, trainer.state, trainer.control, logs=dict(logs))
        for name, value in saved.items():
            setattr(trainer.control, name, value)
