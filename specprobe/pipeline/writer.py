"""The one writer of a run folder: open the run, skip what is finished, append each record,
tell the observer, and settle ``duplicate_of`` in plan order.

Both executors write through :class:`RunWriter` (in a launch, process 0 alone): a record is
appended the moment it is handed over, so an interruption keeps every finished checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from specprobe.config import Settings
from specprobe.errors import SpecprobeError
from specprobe.pipeline.plan import Observer, PlannedCheckpoint, SweepPlan, SweepResult
from specprobe.store.folder import check_run_folder
from specprobe.store.records import Record
from specprobe.store.results import ResultStore

Key = tuple[str, str]
"""(model, revision)."""


def stamp(record: Record, settings: Settings) -> Record:
    """Add what every record ends with: its settings, their hash, the version, the time."""
    from specprobe.version import __version__

    record.update(
        {
            "settings": settings.to_dict(),
            "settings_hash": settings.hash(),
            "specprobe_version": __version__,
            "finished_at": now(),
        }
    )
    return record


def now() -> str:
    """The time in UTC, to the second (ISO 8601), as records and config.json write it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_store(store: ResultStore, resume: bool, settings: Settings | None = None) -> None:
    """What must hold before anything is written into the run folder (read-only): it is
    specprobe's, it holds no results unless ``resume``, its config.json is sound, and, with
    ``settings``, what it holds was measured with those settings (:func:`check_same_settings`)."""
    check_run_folder(store.directory)
    contents = store.read()
    if not resume and (contents.records or contents.skipped):
        raise SpecprobeError(
            f"{store.directory} already holds results",
            "pass --resume to continue that run, or choose another --out directory",
        )
    config = store.config()  # a corrupt config.json is refused here, not after writing
    if resume and settings is not None:
        earlier = [r.get("settings") for r in contents.records]
        earlier += [i.get("settings") for i in (config or {}).get("invocations", []) if isinstance(i, dict)]
        check_same_settings(store, settings, [e for e in earlier if isinstance(e, dict)])


def check_same_settings(store: ResultStore, settings: Settings, earlier: list[dict[str, Any]]) -> None:
    """Refuse a resume whose settings differ from those the run folder was written with
    (its records and config.json invocations), in anything that changes the numbers: the
    rows of the two could not be told apart in a report. Settings that do not
    (:data:`specprobe.config.RUN_ONLY`: the device, ...) are not in ``Settings.to_dict``,
    so they may differ."""
    now_flat = _flat(settings.to_dict())
    for before in earlier:
        old_flat = _flat(before)
        differing = sorted(k for k in old_flat.keys() | now_flat.keys() if old_flat.get(k) != now_flat.get(k))
        if differing:
            shown = "; ".join(
                f"{k} {_shown(old_flat.get(k))} there, {_shown(now_flat.get(k))} now" for k in differing[:4]
            ) + (f" and {len(differing) - 4} more" if len(differing) > 4 else "")
            raise SpecprobeError(
                f"--resume on {store.directory} with other settings than its records were measured with "
                f"({shown}); the two would be mixed in one run",
                "rerun with the run's settings to continue it, or give a new --out to start a new run "
                "with these",
            )


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"probe": {"probes": 4}}`` as ``{"probe.probes": 4}`` (lists and values as they are)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _shown(value: Any) -> str:
    return "unset" if value is None else json.dumps(value, default=str)


def open_run(
    plan: SweepPlan,
    store: ResultStore,
    *,
    resume: bool,
    invocation: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> tuple[dict[Key, Record], list[str]]:
    """With the run folder's lock held: check the folder again (another writer may have
    finished while we waited), set a cut last line aside when resuming, add this
    invocation to config.json (with ``extra``, e.g. the world size), and return the
    finished records and the warnings about skipped lines."""
    from specprobe.version import __version__

    check_store(store, resume, plan.settings)
    settings = plan.settings
    warnings = store.warnings()
    aside = store.set_aside_cut_line() if resume else None
    if aside is not None:
        warnings.append(f"the cut last line of {store.results_path} was moved to {aside}")
    entry = {
        "invocation": invocation or {},
        "settings": settings.to_dict(),
        "settings_hash": settings.hash(),
        "models": [asdict(m) for m in plan.models],
        "device": plan.probe.device.value,
        "trust_remote_code": plan.probe.trust_remote_code,
        "micro_batch_size": plan.probe.micro_batch_size,
        "specprobe_version": __version__,
        "started_at": now(),
        **(extra or {}),
    }
    # config.json keeps every invocation that wrote into this directory (resumes included).
    store.update_config(lambda config: config.setdefault("invocations", []).append(entry))
    return (store.finished(settings.hash()) if resume else {}), warnings


def duplicate_name(original: Key, key: Key) -> str | None:
    """``duplicate_of`` of ``key`` whose weights equal ``original``'s: None for itself, the
    same model's revision by name, another model's as model@revision."""
    if original == key:
        return None
    return original[1] if original[0] == key[0] else "@".join(original)


class RunWriter:
    """Writes the records of one sweep into its (opened, locked) run folder.

    ``done`` are the finished records ``--resume`` skips (told to the observer at once);
    :attr:`todo` are the plan indices left to measure. :meth:`accept` takes a measured
    record in any order; :meth:`result` returns every record in plan order.

    ``duplicate_of`` names the first checkpoint in plan order with the same weights
    (fingerprint). A record is written with what is known when it arrives; one that arrived
    before an earlier checkpoint with its weights (a launch measures out of plan order) is
    written again, corrected, by :meth:`result`. In one process records arrive in plan
    order and are written once.
    """

    def __init__(
        self,
        plan: SweepPlan,
        store: ResultStore,
        planned: list[PlannedCheckpoint],
        done: dict[Key, Record],
        observer: Observer,
        warnings: list[str] | None = None,
    ) -> None:
        self.plan, self.store, self.planned, self.observer = plan, store, planned, observer
        # Under its plan key, found by any of its keys (a local model from another directory).
        found = ((item.key, next((done[k] for k in item.keys if k in done), None)) for item in planned)
        self.done = {key: record for key, record in found if record is not None}
        self.warnings = warnings or []
        self.todo = [i for i, item in enumerate(planned) if item.key not in self.done]
        self.received: dict[int, Record] = {}
        self._first: dict[str, int] = {}  # fingerprint -> the first plan index known with it
        observer.planned([item.checkpoint for item in planned])
        for index, item in enumerate(planned):
            if item.key in self.done:
                self._register(index, self.done[item.key])
                observer.skipped(item.checkpoint, self.done[item.key])

    def _register(self, index: int, record: Record) -> None:
        fingerprint = record.get("fingerprint")
        if fingerprint:
            self._first[fingerprint] = min(self._first.get(fingerprint, index), index)

    def _duplicate_of(self, index: int, record: Record) -> str | None:
        fingerprint = record.get("fingerprint")
        if not fingerprint:
            return None
        return duplicate_name(self.planned[self._first[fingerprint]].key, self.planned[index].key)

    def accept(self, index: int, record: Record) -> None:
        """Write the measured record of plan index ``index`` and tell the observer."""
        self._register(index, record)
        record["duplicate_of"] = self._duplicate_of(index, record)
        self.store.append(record)
        self.received[index] = record
        self.observer.finished(self.planned[index].checkpoint, record)

    def missing(self, order: list[int] | None = None) -> list[str]:
        """The checkpoints left to measure that were not handed over (``model @ revision``),
        in ``order`` (plan indices; default: plan order)."""
        return [self.planned[i].checkpoint.name for i in order or self.todo if i not in self.received]

    def result(self) -> SweepResult:
        """Every record of the plan in plan order, ``duplicate_of`` settled in plan order
        (a record whose value changed is written again: the last line of a key wins)."""
        records: list[Record] = []
        for index, item in enumerate(self.planned):
            record = self.done.get(item.key) or self.received[index]
            if index in self.received:
                duplicate = self._duplicate_of(index, record)
                if record.get("duplicate_of") != duplicate:
                    record["duplicate_of"] = duplicate
                    self.store.append(record)
            records.append(record)
        measured = list(self.received.values())
        failed = sum(r.get("status") != "ok" for r in measured)
        return SweepResult(
            records=records,
            measured=len(measured) - failed,  # "1 measured, 0 resumed, 1 failed" counts a checkpoint once
            skipped=len(self.done),
            failed=failed,
            warnings=self.warnings,
        )
