"""Deterministic token subsets: text from a dataset, tokenised, packed, chosen by seed.

Every checkpoint that shares a tokenizer is measured on exactly the same token ids: the
subset depends only on the data settings and the tokenizer, and its fingerprint (a hash of
the ids) is recorded with every result.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from specprobe.config import DataSpec
from specprobe.errors import SpecprobeError

POOL_FACTOR = 4
"""Packed sequences read per sequence kept: the subset is drawn by seed from a pool this
many times larger than asked for (or from all the text, when there is less)."""

_LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class TokenSubset:
    """The packed token ids every checkpoint with this tokenizer is measured on."""

    input_ids: Tensor
    """(num_sequences, seq_len) int64."""
    fingerprint: str
    """Hash of the ids: equal fingerprint, equal data."""
    tokenizer_fingerprint: str
    num_documents: int
    """Documents read to fill the pool the subset was drawn from."""
    note: str | None = None
    """Something the user should be told about how the subset was made (a warning line),
    e.g. documents joined without a separator; None when there is nothing to say."""

    fields: dict[str, Tensor] | None = None
    """The model's inputs for the whole set when the task needs more than ``input_ids``
    (a masked LM: the masked ids and their labels; seq2seq: source, mask and target; image
    classification: pixel values and labels), each with one row per sample; None: just
    ``input_ids`` (a causal LM)."""

    @property
    def num_samples(self) -> int:
        """Sequences (or images) in the set."""
        return int(next(iter(self.fields.values())).shape[0]) if self.fields else int(self.input_ids.shape[0])

    def batch(self, start: int = 0, stop: int | None = None) -> dict[str, Tensor]:
        """The model's inputs of samples ``start:stop`` (default: all)."""
        fields = self.fields or {"input_ids": self.input_ids}
        return {name: value[start:stop] for name, value in fields.items()}

    def batches(self, batch_size: int) -> list[Tensor]:
        """The subset's token ids in consecutive batches of ``batch_size`` sequences."""
        return list(self.input_ids.split(batch_size))

    def batch_inputs(self, batch_size: int) -> list[dict[str, Tensor]]:
        """The model's inputs in consecutive batches of ``batch_size`` samples."""
        n = self.num_samples
        return [self.batch(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


PIECE_BYTES = 1 << 20
"""The longest piece of one line read at once (1 MiB): a document of a text file longer
than this (a file without newlines) is read and tokenised piece by piece, so its memory is
bounded whatever its length."""


class Continued(str):
    """A piece of a document whose text goes on in the next piece (no separator between)."""


def iter_texts(spec: DataSpec, notes: list[str] | None = None) -> Iterator[str]:
    """The documents of the dataset, streamed (a hub corpus is not downloaded whole). A
    document longer than :data:`PIECE_BYTES` in a text file comes in pieces, all but the
    last :class:`Continued`. What the reader should be told (bytes that are not UTF-8,
    replaced) is appended to ``notes``."""
    path = Path(spec.dataset).expanduser()
    if path.exists() and _local_files(path)[0] == "text":
        for file in _local_files(path)[1]:
            yield from _text_file(file, notes if notes is not None else [])
        return
    yield from _dataset_texts(spec)


def _text_file(path: Path, notes: list[str]) -> Iterator[str]:
    """The lines of a text file as documents, read as the datasets library's ``text``
        builder reads them (lines end at ``\n``, ``\r\n`` or ``\r``), without it: nothing
        is written into the Hugging Face cache (a read-only ``HF_HOME`` is fine), a line longer
        than :data:`PIECE_BYTES` comes in pieces (cut at a space where there is one), and bytes
        that are not UTF-8 are replaced by U+FFFD, the first such line named in ``notes``
    (a piece's line, for a long one)."""
    said = False
    number = 1  # the line being read

    def text(data: bytes) -> str:
        nonlocal said
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            if not said:  # told at once: the reading may stop before the end of the file
                notes.append(
                    f"{path} line {number}: bytes that are not UTF-8 (byte {err.start + 1} of the "
                    "line and perhaps more), read as U+FFFD"
                )
                said = True
            return data.decode("utf-8", errors="replace")

    pending = b""
    try:
        with open(path, "rb") as f:
            while raw := f.readline(PIECE_BYTES):
                *lines, pending = re.split(rb"\r\n|\r|\n", pending + raw)
                for line in lines:
                    document = text(line)
                    if document.strip():  # blank lines are no documents (as the builder's)
                        yield document
                    number += 1
                while len(pending) >= PIECE_BYTES:  # a long line: its next piece
                    cut = _cut(pending)
                    yield Continued(text(pending[:cut]))
                    pending = pending[cut:]
    except OSError as err:
        raise SpecprobeError(
            f"cannot read the dataset file {path}: {err.strerror}", "check the path and its permissions"
        ) from None
    last = text(pending)
    if last.strip():
        yield last


def _cut(data: bytes) -> int:
    """Where to cut a long line's bytes: after the last space of the piece's second half,
    else at the last character boundary (never inside a UTF-8 sequence)."""
    space = data.rfind(b" ", PIECE_BYTES // 2, PIECE_BYTES)
    if space >= 0:
        return space + 1
    cut = PIECE_BYTES
    while cut > 0 and data[cut] & 0xC0 == 0x80:  # a continuation byte: back to the start
        cut -= 1
    return cut or PIECE_BYTES


def _dataset_texts(spec: DataSpec) -> Iterator[str]:
    """The documents of a hub dataset or local JSON-lines/Parquet files, through the
    datasets library, streamed."""
    for row in iter_rows(spec, (spec.text_column,)):
        text = row[spec.text_column]
        if text is not None and not isinstance(text, str):
            raise SpecprobeError(
                f"expected text in column {spec.text_column!r} of dataset {spec.dataset}, found "
                f"{type(text).__name__} ({str(text)[:40]!r})",
                "pass --text-column with the column that holds the text",
            )
        if isinstance(text, str) and text.strip():
            yield text


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""Files that make a local folder an ``imagefolder`` dataset (one subfolder per label)."""


def iter_rows(spec: DataSpec, columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The rows of the dataset, streamed, checked to hold ``columns`` (the first row says
    which are missing, with "did you mean"). A local folder of images is read as an
    ``imagefolder`` (its subfolders are the labels)."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(spec.dataset).expanduser()
    if not path.exists():
        check_hub_dataset(spec)
    try:
        if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
            stream = datasets.load_dataset("imagefolder", data_dir=str(path), split="train", streaming=True)
        elif path.exists():
            builder, files = _local_files(path)
            stream = datasets.load_dataset(
                builder, data_files=[str(f) for f in files], split="train", streaming=True
            )
        else:
            if spec.dataset.startswith((".", "/", "~")) or Path(spec.dataset).suffix in _LOCAL_BUILDERS:
                raise SpecprobeError(
                    f"dataset file or folder {spec.dataset!r} does not exist",
                    "check the path, or give a hub dataset name such as NeelNanda/pile-10k",
                )
            stream = datasets.load_dataset(spec.dataset, spec.config, split=spec.split, streaming=True)
        first = True
        for row in stream:
            if first:
                for column in columns:
                    _check_column(row, spec, column)
                first = False
            yield row
    except SpecprobeError:
        raise
    except (FileNotFoundError, ConnectionError, ValueError, OSError) as err:
        raise SpecprobeError(
            f"could not read dataset {spec.dataset!r}"
            + (f" (config {spec.config!r})" if spec.config else "")
            + f" split {spec.split!r}: {str(err).splitlines()[0][:200]}",
            "check the name, config and split; offline, give a local .txt/.jsonl/.parquet file",
        ) from None
    except Exception as err:  # datasets raises its own hierarchy (DatasetNotFoundError, ...)
        if type(err).__module__.startswith("datasets"):
            raise SpecprobeError(
                f"could not read dataset {spec.dataset!r}: {str(err).splitlines()[0][:200]}",
                "check the name, config and split; offline, give a local .txt/.jsonl/.parquet file",
            ) from None
        raise


def check_hub_dataset(spec: DataSpec) -> None:
    """Fail at once, with one line, when ``spec.dataset`` names a hub dataset and the hub
    cannot be used: HF_HUB_OFFLINE is set, or one attempt (no retries) finds the hub
    unreachable. Without this the datasets library retries for half a minute."""
    if Path(spec.dataset).expanduser().exists():
        return
    if spec.dataset.startswith((".", "/", "~")) or Path(spec.dataset).suffix in _LOCAL_BUILDERS:
        return  # a local path that does not exist: iter_texts says so
    from specprobe.models.hub import cache_only, hub_unreachable, hub_unreachable_reason

    reason = "HF_HUB_OFFLINE is set" if cache_only() and hub_unreachable_reason() is None else None
    if reason is None:
        reason = hub_unreachable(spec.dataset, "main", "README.md", repo_type="dataset")
    if reason is not None:
        raise SpecprobeError(
            f"dataset {spec.dataset!r} is on the Hugging Face hub, which cannot be reached ({reason})",
            "give a local .txt/.jsonl/.parquet file or folder with --dataset (offline runs need one), "
            "or run with network access",
        )


def build_subset(spec: DataSpec, tokenizer: Any, tokenizer_fingerprint: str) -> TokenSubset:
    """Tokenise documents, pack them into ``seq_len`` chunks and draw ``num_sequences``.

    Documents are joined with the tokenizer's EOS token in between (without a separator,
    and saying so in :attr:`TokenSubset.note`, when it has none), cut into chunks of
    ``seq_len`` tokens (the last, partial chunk is dropped), and read until a pool of
    ``POOL_FACTOR × num_sequences`` chunks is full or the text ends. ``num_sequences``
    chunks are then drawn from the pool without replacement by ``seed``.
    """
    spec.validate()
    want = spec.num_sequences * POOL_FACTOR
    eos = getattr(tokenizer, "eos_token_id", None)
    buffer: list[int] = []
    pool: list[list[int]] = []
    documents = 0
    notes: list[str] = []
    for text in iter_texts(spec, notes):
        buffer.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        if not isinstance(text, Continued):  # a document ends here (a piece goes on in the next)
            documents += 1
            if eos is not None:
                buffer.append(eos)
        while len(buffer) >= spec.seq_len and len(pool) < want:
            pool.append(buffer[: spec.seq_len])
            buffer = buffer[spec.seq_len :]
        if len(pool) >= want:
            break
    if len(pool) < spec.num_sequences:
        have = len(pool) * spec.seq_len + len(buffer)
        raise SpecprobeError(
            f"too little text in {spec.dataset}: found {have:,} tokens in {documents} documents, need "
            f"num_sequences × seq_len = {spec.num_sequences} × {spec.seq_len} = "
            f"{spec.num_sequences * spec.seq_len:,}",
            "lower --num-sequences or --seq-len, or give more text",
        )
    chosen = np.random.default_rng(spec.seed).choice(len(pool), size=spec.num_sequences, replace=False)
    ids = torch.tensor([pool[i] for i in chosen], dtype=torch.long)
    return TokenSubset(
        input_ids=ids,
        fingerprint=fingerprint_ids(ids),
        tokenizer_fingerprint=tokenizer_fingerprint,
        num_documents=documents,
        note="; ".join(
            notes
            + (
                []
                if eos is not None
                else [
                    f"the tokenizer has no EOS token: the documents of {spec.dataset} are joined without a separator"
                ]
            )
        )
        or None,
    )


def fingerprint_ids(ids: Tensor) -> str:
    """Hash of a tensor of token ids (shape and values)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(tuple(ids.shape)).encode())
    digest.update(ids.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _local_files(path: Path) -> tuple[str, list[Path]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in _LOCAL_BUILDERS)
    kinds = {_LOCAL_BUILDERS.get(f.suffix) for f in files}
    if not files or None in kinds:
        found = ", ".join(sorted({f.suffix or f.name for f in files})) or "no data files"
        raise SpecprobeError(
            f"expected .txt, .jsonl or .parquet files in {path}, found {found}",
            "give a text (one document per line), JSON-lines or Parquet file, or a folder of them",
        )
    if len(kinds) > 1:
        raise SpecprobeError(
            f"expected one kind of data file in {path}, found {', '.join(sorted(str(k) for k in kinds))}",
            "put one kind of file in the folder, or point at a single file",
        )
    return kinds.pop() or "text", files


def _check_column(row: dict[str, Any], spec: DataSpec, column: str) -> None:
    if column in row:
        return
    columns = sorted(row)
    close = get_close_matches(column, columns, n=1)
    texts = [c for c in columns if isinstance(row[c], str)]
    if not close and len(texts) == 1 and column == spec.text_column:  # the only text column is the likely one
        close = texts
    flag = next(
        (
            f"--{name.replace('_', '-')}"
            for name in ("text_column", "target_column", "image_column", "label_column")
            if getattr(spec, name, None) == column
        ),
        "--text-column",
    )
    raise SpecprobeError(
        f"dataset {spec.dataset} has no column {column!r}"
        + (f"; did you mean {close[0]!r}?" if close else "")
        + f" (columns: {', '.join(columns)})",
        f"pass {flag} with one of the columns",
    )
