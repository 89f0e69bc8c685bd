"""The results store: one JSON record per (model, revision), written atomically.

A run directory holds ``results.jsonl`` (one record a line, in the order measured) and
``config.json`` (the full invocation). Each record is written as soon as its checkpoint
finishes, by writing the whole file anew beside the old one and renaming it over the old
one, so a crash or Ctrl-C at any moment leaves the file either before or after that
record, never half-written. ``--resume`` skips checkpoints whose record is ``ok`` and
was measured with the same settings (``settings_hash``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from specprobe.errors import SpecprobeError

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"


def settings_hash(settings: dict[str, Any]) -> str:
    """A short hash of the settings that change the numbers (data and probe settings)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """Records of one run directory. Reading never fails on a missing directory."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.results_path = self.directory / RESULTS_FILE
        self.config_path = self.directory / CONFIG_FILE

    def exists(self) -> bool:
        return self.results_path.is_file()

    def records(self) -> list[dict[str, Any]]:
        """All records, in the order written."""
        if not self.results_path.is_file():
            return []
        records = []
        for number, line in enumerate(self.results_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SpecprobeError(
                    f"{self.results_path} line {number} is not valid JSON ({err.msg})",
                    "the file was edited by hand; remove or fix that line",
                ) from None
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Add a record, replacing an earlier one of the same model, revision and settings."""
        key = _key(record)
        kept = [r for r in self.records() if _key(r) != key]
        lines = [json.dumps(r, default=str) for r in [*kept, record]]
        atomic_write(self.results_path, "\n".join(lines) + "\n")

    def finished(self, settings: str) -> dict[tuple[str, str], dict[str, Any]]:
        """The ``ok`` records measured with settings hash ``settings``, by (model, revision)."""
        return {
            (r["model"], r["revision"]): r
            for r in self.records()
            if r.get("status") == "ok" and r.get("settings_hash") == settings
        }

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.config_path, json.dumps(config, indent=2, default=str) + "\n")

    def config(self) -> dict[str, Any] | None:
        if not self.config_path.is_file():
            return None
        loaded: dict[str, Any] = json.loads(self.config_path.read_text(encoding="utf-8"))
        return loaded


def _key(record: dict[str, Any]) -> tuple[Any, Any, Any]:
    return record.get("model"), record.get("revision"), record.get("settings_hash")
