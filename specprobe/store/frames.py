"""Results as tables for pandas and spreadsheets: one row per checkpoint, flat columns.

    import specprobe
    df = specprobe.load_results("specprobe-demo/run")        # one row per (model, revision)
    df[["label", "step", "normalized_position", "normalized_position_stderr"]]
    per_batch = specprobe.load_batches("specprobe-demo/run")  # one row per measured batch

Nested fields of a record are flattened into dotted column names (``settings.data.seq_len``,
``timings.measure_s``, ``spectrum.effective_rank``); lists stay whole in their cell
(``batches``, ``groups``, ``eigen_top``, ``spectrum.top_eigenvalues``) and are left out of
the CSV, which holds the scalar columns only. pandas is optional
(``pip install "specprobe[pandas]"``); :func:`flat_records` and :func:`write_csv` need
nothing but the standard library.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specprobe.errors import SpecprobeError
from specprobe.store.folder import atomic_write
from specprobe.store.records import Record
from specprobe.store.results import ResultStore

if TYPE_CHECKING:
    import pandas as pd

IDENTITY = ("model", "label", "run", "revision", "step", "tokens_seen", "status")
"""Columns that name a row, first in every frame (those the records have)."""

BATCH_KEY = ("model", "label", "run", "revision", "step", "settings_hash", "probe_run")
"""The record's columns that say which series and checkpoint a batch row belongs to."""


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(_flatten(item, f"{name}."))
        else:
            out[name] = item
    return out


def flat_records(records: Iterable[Record]) -> list[dict[str, Any]]:
    """Records with nested dictionaries flattened to dotted keys; lists kept as they are
    (a row, not a Record: its keys are the dotted names)."""
    return [_flatten(r) for r in records]


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every key of the rows, identity columns first, then in order of first appearance."""
    seen = dict.fromkeys(c for c in IDENTITY if any(c in r for r in rows))
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise SpecprobeError(
            "load_results needs pandas, which is not installed",
            'pip install "specprobe[pandas]" (or read results.jsonl with specprobe.ResultStore)',
        ) from None
    return pandas


def _records(directory: Path | str) -> list[Record]:
    return ResultStore.existing(
        directory, "give the --out directory of specprobe analyze, run or demo"
    ).records()


def results_frame(records: Sequence[Record]) -> pd.DataFrame:
    """The records as a DataFrame: one row per record, in the order given."""
    pandas = _pandas()
    rows = flat_records(records)
    return pandas.DataFrame(rows, columns=_columns(rows))


def load_results(directory: Path | str) -> pd.DataFrame:
    """The records of a run directory as a pandas DataFrame, one row per checkpoint.

    Columns are the record's fields (``loss``, ``loss_stderr``, ``chi_net``,
    ``spectral_position``, ``normalized_position``, … as in ``results.jsonl``), nested ones
    flattened with dots (``settings.probe.estimator``, ``spectrum.effective_rank``); the
    per-batch values stay in the ``batches`` column as a list of dicts
    (:func:`load_batches` gives them as a frame of their own).

    Raises:
        SpecprobeError: pandas is missing (hint: the ``pandas`` extra), or the directory
            holds no results.jsonl.
    """
    _pandas()
    return results_frame(_records(directory))


def load_batches(directory: Path | str) -> pd.DataFrame:
    """The per-batch values of a run as a DataFrame: one row per measured batch, with the
    record's identity (``model``, ``label``, ``run``, ``revision``, ``step``,
    ``settings_hash``, ``probe_run``: what tells two series apart) and the batch's
    ``batch`` index (0, 1, …) first."""
    pandas = _pandas()
    rows = []
    for record in _records(directory):
        for index, batch in enumerate(record.get("batches") or ()):
            key = {k: record.get(k) for k in BATCH_KEY}
            rows.append({**key, "batch": index, **_flatten(batch)})
    return pandas.DataFrame(rows, columns=_columns(rows) if rows else ["model", "revision", "batch"])


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (OWASP, CSV injection)."""


def spreadsheet_safe(value: Any) -> Any:
    """A cell a spreadsheet shows as text: a string that begins with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return gets a leading ``'`` (OWASP's advice: a model named
    ``=HYPERLINK(…)`` is not run as a formula); numbers stay numbers (−2.5 is a value)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_text(records: Sequence[Mapping[str, Any]]) -> str:
    """The records' scalar columns as CSV text (lists left out; numbers as Python writes
    them, so floats read back exactly; text cells :func:`spreadsheet_safe`). Rows end in
    CRLF (RFC 4180): the csv module then quotes a cell holding a lone CR, which it leaves
    bare under a "\\n" terminator (a row a reader splits in two)."""
    rows = [_flatten(r) for r in records]
    columns = [c for c in _columns(rows) if not any(isinstance(r.get(c), list) for r in rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writerow({c: spreadsheet_safe(c) for c in columns})
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else spreadsheet_safe(row[c]) for c in columns})
    return buffer.getvalue()


def write_csv(records: Sequence[Mapping[str, Any]], path: Path | str) -> tuple[int, int]:
    """Write :func:`csv_text` to ``path`` atomically; return (rows, columns) written."""
    text = csv_text(records)
    atomic_write(path, text, what="the CSV file", stdout=True)  # ``-``: standard output
    header = text.splitlines()[0] if text else ""
    return len(records), len(next(csv.reader([header]))) if header else 0
