"""What ``specprobe demo`` calls before it measures: :func:`prepare` the trained family in an
output directory, reusing the one already there when it was trained with the same settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from specprobe.demo.config import DemoConfig, DemoLayout
from specprobe.demo.training import train_family
from specprobe.report.progress import TrainingDisplay

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class PreparedDemo:
    """A finished family in ``layout``, trained with ``config``."""

    layout: DemoLayout
    config: DemoConfig
    reused: bool
    """True when the family was already there (nothing was trained)."""


def prepare(out_dir: Path | str, config: DemoConfig, *, console: Console | None = None) -> PreparedDemo:
    """Validate ``config``; reuse the family in ``out_dir`` when :func:`is_trained` says it is
    this one, otherwise train it with :func:`~specprobe.demo.training.train_family` (showing
    a progress bar per model on ``console``, if given).

    Cost: nothing when reused (reads ``demo.json``); otherwise the training, whose cost is
    the preset's ``budget``.

    Raises:
        SpecprobeError: on invalid settings, or when ``out_dir`` holds models trained with
            other settings (nothing is overwritten).
    """
    config.validate()
    layout = DemoLayout(Path(out_dir))
    layout.check_own()  # before anything is read or trained
    if is_trained(layout, config):
        return PreparedDemo(layout, config, reused=True)
    if console is None:
        train_family(layout.root, config)
    else:
        with TrainingDisplay(console, config.model_names(), config.steps) as display:
            train_family(layout.root, config, display.update)
    return PreparedDemo(layout, config, reused=False)


def is_trained(layout: DemoLayout, config: DemoConfig) -> bool:
    """Whether the folder holds a finished family trained with ``config``: its ``demo.json``
    equals ``config`` and every model has its last checkpoint."""
    try:
        saved = json.loads(layout.config.read_text())
    except (OSError, ValueError):
        return False
    finished = all(
        (layout.model_dir(name) / f"checkpoint-{config.checkpoint_steps()[-1]}").is_dir()
        for name in config.model_names()
    )
    return bool(saved == config.to_dict() and finished)
