"""Progress displays with Rich: the sweep's checkpoints and batches, the demo's training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from specprobe.pipeline.plan import Observer
from specprobe.report.tables import one_line
from specprobe.store.records import Record


class SweepProgress(Observer):
    """A Rich progress display for ``run_sweep``: checkpoints overall, batches of the current one."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            # Descriptions hold checkpoint names: text, never markup.
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.overall = self.progress.add_task("preparing", total=None)
        self._planned: dict[str, tuple[int, int, bool]] = {}
        self.batches = self.progress.add_task("", total=None, visible=False)

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def planned(self, checkpoints: Sequence[Any]) -> None:
        self.progress.update(self.overall, description="checkpoints", total=len(checkpoints), completed=0)

    def preparing(self, what: str) -> None:
        self.progress.update(self.overall, description=one_line(what))

    def waiting(self, holder: str, directory: Any) -> None:
        # A line, not the bar's description: without a terminal the bar is never drawn.
        message = f"waiting for {holder} to finish writing {directory} (--resume continues after it)"
        self.progress.console.print(one_line(message), markup=False, highlight=False, soft_wrap=True)
        self.progress.update(self.overall, description=one_line(f"waiting for {directory}"))

    def loading(self, checkpoint: Any) -> None:
        self.progress.update(self.overall, description=one_line(f"loading {checkpoint.name}"))

    def measuring(self, checkpoint: Any, batches: int) -> None:
        self.progress.update(self.overall, description=one_line(checkpoint.name))
        self.progress.reset(self.batches, total=batches, description="  batches", visible=True)

    def batch_done(self, checkpoint: Any, index: int) -> None:
        self.progress.advance(self.batches)

    def memory_plan(self, checkpoint: Any, plan: Any) -> None:
        # Once per model (its checkpoints share a size), and again when the plan's choices
        # change (a smaller micro-batch, V moved to the host); the process's own growth
        # between checkpoints is not news.
        choices = (plan.micro_batch_size, plan.probe_batch_size, plan.gradient_sum_on_host)
        if self._planned.get(checkpoint.model) == choices:
            return
        self._planned[checkpoint.model] = choices
        self.progress.console.print(
            one_line(f"memory for {checkpoint.model}: {plan.summary()}"),
            markup=False,
            highlight=False,
            soft_wrap=True,
            style="dim",
        )

    def finished(self, checkpoint: Any, record: Record) -> None:
        self.progress.advance(self.overall)
        self.progress.update(self.batches, visible=False)
        if record.get("status") != "ok":
            line = Text("failed", style="red")
            line.append(one_line(f" {checkpoint.name}: {record.get('error')}"))
            self.progress.console.print(line)

    def skipped(self, checkpoint: Any, record: Record) -> None:
        self.progress.advance(self.overall)


class TrainingDisplay:
    """A Rich progress display for the demo's training: one bar per model, loss and ETA."""

    def __init__(self, console: Console, models: Sequence[str], steps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("training {task.description:>10}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks = {m: self.progress.add_task(one_line(m), total=steps, loss="") for m in models}

    def __enter__(self) -> TrainingDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, event: Any) -> None:
        """The ``progress_callback`` of ``specprobe.demo.training.train_family``."""
        self.progress.update(self.tasks[event.model], completed=event.step, loss=f"{event.loss:.3f}")
