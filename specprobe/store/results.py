"""The results store: one JSON record per (model, revision), written atomically.

The run folder's files and the check that a folder is specprobe's live in
:mod:`specprobe.store.folder`, its lock in :mod:`specprobe.store.lock`. Each record is
written as soon as its checkpoint finishes, by writing the whole file anew beside the old
one and renaming it over the old one, so a crash or Ctrl-C at any moment leaves the file
either before or after that record, never half-written. ``--resume`` skips checkpoints
whose record is ``ok`` and was measured with the same settings (``settings_hash``).

Safety rules, each enforced here so that every writer (a sweep, a :class:`~specprobe.Probe`
with ``out``, a distributed sweep's rank 0) gets them:

* **The folder belongs to specprobe** (:func:`~specprobe.store.folder.check_run_folder`),
  checked before anything is written.
* **One writer at a time** (:class:`~specprobe.store.lock.RunLock`). ``config.json``
  updates are read-modify-write under that lock.
* **Nothing lost.** A line that is not a usable record (cut by a full disk, from a newer
  specprobe, missing fields, hand-edited numbers that are not finite) is skipped by
  readers with a warning naming the line, and kept verbatim (byte for byte) by writers; a
  cut last line is moved to ``results.partial.jsonl`` before the next record is written,
  so its checkpoint is measured again. Temporary files a killed writer left are removed
  when the folder is next opened for writing.
* **A line ends at ``\n`` and nowhere else.** Readers and writers split the file on the
  byte ``\n`` only (never ``str.splitlines``, which also breaks at U+2028, U+2029, ``\x85``,
  ``\r``, ... that other JSON tools write raw inside strings); records are written with
  ``ensure_ascii``, so specprobe's own lines hold no such character.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from specprobe.errors import SpecprobeError
from specprobe.store.folder import (
    CONFIG_FILE,
    PARTIAL_FILE,
    RESULTS_FILE,
    atomic_write,
    check_run_folder,
    output_path,
    remove_temporary_files,
    write_marker,
)
from specprobe.store.lock import RunLock
from specprobe.store.records import OK_RECORD_FIELDS, RECORD_FIELDS, Record

WRITE_TIMEOUT_S = 60.0
"""How long a single write outside ``open_for_writing`` (a Probe's record) waits for the lock."""


# ---- reading: good records, and the lines that are not -------------------------------------


@dataclass(frozen=True)
class SkippedLine:
    """A line of results.jsonl that is not a usable record, and why."""

    number: int
    reason: str
    cut: bool = False
    """The file's last line, cut short (no newline, not valid JSON): an interrupted write."""

    def warning(self, path: Path) -> str:
        if self.cut:
            return (
                f"{path} line {self.number} is cut short (an interrupted write, a full disk?); "
                "skipped — --resume sets it aside in results.partial.jsonl and measures that checkpoint again"
            )
        return f"{path} line {self.number} skipped: {self.reason}"


@dataclass(frozen=True)
class StoreContents:
    records: list[Record]
    """The usable records, in the order written."""
    skipped: list[SkippedLine]
    """The lines that are not, with the reason."""


def check_record(record: Any) -> str | None:
    """Why ``record`` (a parsed line) is not a usable record, or None when it is (then it
    is a :class:`~specprobe.store.records.Record`)."""
    from specprobe.version import __version__

    if not isinstance(record, dict):
        return f"expected a JSON object, found {type(record).__name__}"
    version = record.get("specprobe_version")
    if isinstance(version, str) and _newer(version, __version__):
        return f"written by specprobe {version}, newer than this one ({__version__}); upgrade specprobe to read it"
    missing = [name for name in RECORD_FIELDS if name not in record]
    if record.get("status") == "ok":
        missing += [
            name
            for name in OK_RECORD_FIELDS
            if not isinstance(record.get(name), int | float) or isinstance(record.get(name), bool)
        ]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if record.get("status") == "ok":
        # json reads NaN and Infinity; a measured record never holds them (a NaN output is
        # a failed record), so a hand-edited one is not passed on as ok
        odd = [name for name in OK_RECORD_FIELDS if not math.isfinite(record[name])]
        if odd:
            return f"field(s) {', '.join(odd)} not finite ({', '.join(str(record[n]) for n in odd)})"
        if record["chi_net"] <= 0:
            return f"chi_net is {record['chi_net']} (the trace of the eNTK is positive in a measured record)"
    return None


def dumps(record: Record) -> str:
    """One record as its line (without the newline): ASCII only, so no character in it
    can be read as a line break by any tool."""
    return json.dumps(record, default=str, ensure_ascii=True)


def _newer(version: str, current: str) -> bool:
    """Whether release ``version`` (``1.2.3``, maybe with a suffix) is later than ``current``;
    False when either does not start with a release number."""

    def release(text: str) -> tuple[int, ...] | None:
        match = re.match(r"\d+(?:\.\d+)*", text.strip().lstrip("v"))
        return tuple(int(part) for part in match.group().split(".")) if match else None

    if "unknown" in current:  # specprobe run from a source tree without metadata: cannot tell
        return False
    new, old = release(version), release(current)
    return new is not None and old is not None and new > old


class ResultStore:
    """Records of one run directory. Reading never fails on a missing directory.

    Writing (``append``, ``update_config``) happens under the folder's lock: inside
    ``with store.open_for_writing(): ...`` for a whole run, or, outside one, each write
    takes the lock for its own duration (waiting up to ``WRITE_TIMEOUT_S`` for it).
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = output_path(directory)
        self.results_path = self.directory / RESULTS_FILE
        self.config_path = self.directory / CONFIG_FILE
        self.partial_path = self.directory / PARTIAL_FILE
        self._lock: RunLock | None = None

    def exists(self) -> bool:
        return self.results_path.is_file()

    @classmethod
    def existing(cls, directory: Path | str, hint: str) -> ResultStore:
        """The store of a run directory that holds results; SpecprobeError (with ``hint``:
        where such a directory comes from) when it holds none."""
        store = cls(directory)
        if not store.exists():
            raise SpecprobeError(
                f"expected a run directory with results.jsonl, found none in {directory}", hint
            )
        return store

    # -- reading

    def _bytes(self) -> bytes:
        """results.jsonl as it is on disk (empty when there is none)."""
        if not self.results_path.is_file():
            return b""
        try:
            return self.results_path.read_bytes()
        except OSError as err:
            raise SpecprobeError(
                f"cannot read {self.results_path}: {err.strerror}", "check the file's permissions"
            ) from None

    def read(self) -> StoreContents:
        """The usable records and the skipped lines (with their reasons)."""
        lines = self._bytes().split(b"\n")  # the one definition of a line: see the module
        records: list[Record] = []
        skipped: list[SkippedLine] = []
        for index, raw in enumerate(lines):
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            number, last = index + 1, index == len(lines) - 1  # last: no newline after it
            try:
                record = json.loads(line)
            except ValueError as err:
                reason = f"not valid JSON ({getattr(err, 'msg', err)})"
                skipped.append(SkippedLine(number, reason, cut=last))
                continue
            problem = check_record(record)
            if problem is not None:
                skipped.append(SkippedLine(number, problem))
            else:  # checked: from here on the line is a Record
                records.append(cast(Record, record))
        return StoreContents(records, skipped)

    def records(self) -> list[Record]:
        """All usable records, in the order written (see :meth:`read` for the others)."""
        return self.read().records

    def warnings(self) -> list[str]:
        """One line per skipped line of results.jsonl."""
        return [s.warning(self.results_path) for s in self.read().skipped]

    def finished(self, settings: str) -> dict[tuple[str, str], Record]:
        """The ``ok`` records measured with settings hash ``settings``, by (model, revision),
        and a local model's also by (``model_path``, revision)."""
        done: dict[tuple[str, str], Record] = {}
        for r in self.records():
            if r.get("status") == "ok" and r.get("settings_hash") == settings:
                done[(r["model"], r["revision"])] = r
                if path := r.get("model_path"):
                    done[(path, r["revision"])] = r
        return done

    def config(self) -> dict[str, Any] | None:
        """The run's config.json, or None when there is none; SpecprobeError when it is corrupt."""
        if not self.config_path.is_file():
            return None
        try:
            loaded = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SpecprobeError(
                f"{self.config_path} is not valid JSON ({getattr(err, 'msg', None) or err})",
                f"restore it, or move it away (the records in {RESULTS_FILE} do not need it) and rerun",
            ) from None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("invocations", []), list):
            raise SpecprobeError(
                f"{self.config_path} is not a specprobe config (expected an object with 'invocations')",
                f"move it away (the records in {RESULTS_FILE} do not need it) and rerun",
            )
        return loaded

    # -- writing

    @contextmanager
    def open_for_writing(
        self,
        *,
        wait: bool = False,
        timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[ResultStore]:
        """Claim the run folder for this process: check that it is (or can be) specprobe's,
        take its lock (RunLockedError if another process holds it; with ``wait``, wait for
        it, at most ``timeout`` seconds if given), write the marker, and release the lock on
        leaving the block. Nested blocks on one store reuse the lock."""
        if self._lock is not None:
            yield self
            return
        check_run_folder(self.directory)
        lock = RunLock(self.directory)
        lock.acquire(wait=wait, timeout=timeout, on_wait=on_wait)
        try:
            check_run_folder(self.directory)  # again, now that no one else writes
            remove_temporary_files(self.directory)  # a killed writer's; no one else has one open
            write_marker(self.directory)
            self._lock = lock
            yield self
        finally:
            self._lock = None
            lock.release()

    def _writing(self) -> Any:
        """The lock for one write: the held one, else taken for this write (waiting up to
        ``WRITE_TIMEOUT_S`` for another writer's write to finish)."""
        return self.open_for_writing(wait=True, timeout=WRITE_TIMEOUT_S)

    def set_aside_cut_line(self) -> Path | None:
        """Move a cut last line of results.jsonl into results.partial.jsonl (under the lock);
        returns that file when a line was moved."""
        with self._writing():
            data = self._bytes()
            if not data or data.endswith(b"\n"):
                return None
            head, _, tail = data.rpartition(b"\n")
            try:
                json.loads(tail)
                return None  # a whole record without its newline
            except ValueError:
                pass
            previous = self.partial_path.read_bytes() if self.partial_path.is_file() else b""
            atomic_write(self.partial_path, previous + tail + b"\n", run_file=True)
            atomic_write(self.results_path, head + b"\n" if head else b"", run_file=True)
            return self.partial_path

    def append(self, record: Record) -> None:
        """Add a record, replacing an earlier one of the same model, revision and settings.

        Lines that are not usable records are kept as they are, except a cut last line,
        which is first set aside (:meth:`set_aside_cut_line`)."""
        key = _key(record)
        with self._writing():
            self.set_aside_cut_line()
            kept: list[bytes] = []
            for line in self._bytes().split(b"\n"):  # b"\n" only, as :meth:`read` splits
                if not line.strip():
                    continue
                try:
                    old = json.loads(line)
                except ValueError:
                    old = None
                if check_record(old) is None and _key(cast(Record, old)) == key:
                    continue
                kept.append(line)  # verbatim: a line this version cannot read is not rewritten
            atomic_write(
                self.results_path,
                b"\n".join([*kept, dumps(record).encode("ascii")]) + b"\n",
                run_file=True,
            )

    def update_config(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read config.json (or start ``{"invocations": []}``), apply ``change`` in place and
        write it back atomically, all under the lock; returns the new config."""
        with self._writing():
            config = self.config() or {"invocations": []}
            change(config)
            atomic_write(
                self.config_path,
                json.dumps(config, indent=2, default=str, ensure_ascii=True) + "\n",
                run_file=True,
            )
            return config

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace config.json (under the lock)."""
        with self._writing():
            atomic_write(
                self.config_path,
                json.dumps(config, indent=2, default=str, ensure_ascii=True) + "\n",
                run_file=True,
            )


def _key(record: Record) -> tuple[str | None, str | None, str | None, str | None]:
    """What a new record replaces: the record of the same model, revision, settings and
    Probe run (another training run's records are never replaced)."""
    return record.get("model"), record.get("revision"), record.get("settings_hash"), record.get("probe_run")
