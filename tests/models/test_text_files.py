"""Local text datasets read without the datasets library (issue 29, sections 4 and 6): the
same documents as its ``text`` builder gives, in bounded memory for a file without
newlines, with a read-only Hugging Face cache, and with bytes that are not UTF-8 named by
their line. Each listed case failed before the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specprobe.config import DataSpec
from specprobe.models.data import PIECE_BYTES, Continued, _dataset_texts, build_subset, iter_texts
from tests.cli import test_analyze

tokenizer = test_analyze.tokenizer

ROOT = Path(__file__).resolve().parents[2]

LINE_ENDS = ["\n", "\r\n", "\r"]
TEXT = st.text(
    alphabet=st.sampled_from([*"ab χ\t", "\u2028", "\x85", "\u00a0", "\u3000", "\x0c", "é"]),
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.tuples(TEXT, st.sampled_from(LINE_ENDS)), min_size=1, max_size=8),
    last_end=st.booleans(),
)
def test_the_documents_are_the_text_builders(lines: list[tuple[str, str]], last_end: bool) -> None:
    """Lines end at \\n, \\r\\n or \\r and nowhere else; blank lines are no documents."""
    body = "".join(text + end for text, end in lines)
    if not last_end:
        body = body.rstrip("\r\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_bytes(body.encode("utf-8"))
        spec = DataSpec(dataset=str(path))
        assert list(iter_texts(spec)) == list(_dataset_texts(spec))


def test_a_file_without_newlines_is_read_in_pieces(tmp_path: Path, tokenizer: Any) -> None:
    """A 50 MB file with no newline took 8.6 GB and 82 s to give 128 tokens: the whole line
    was one document, read at once."""
    path = tmp_path / "one-line.txt"
    word = "the cat sat on the mat "
    path.write_text(word * (3 * PIECE_BYTES // len(word)))  # 3 MiB, no newline
    pieces = iter_texts(DataSpec(dataset=str(path)))
    first = next(pieces)
    assert isinstance(first, Continued) and len(first) <= PIECE_BYTES and first.endswith(" ")
    subset = build_subset(DataSpec(dataset=str(path), num_sequences=2, seq_len=16), tokenizer, "t")
    assert subset.input_ids.shape == (2, 16) and subset.num_documents == 0  # the one document goes on
    whole = tmp_path / "words.txt"
    whole.write_text(word * 200)
    small = build_subset(DataSpec(dataset=str(whole), num_sequences=2, seq_len=16), tokenizer, "t")
    cut = build_subset(DataSpec(dataset=str(path), num_sequences=2, seq_len=16), tokenizer, "t")
    assert cut.input_ids.tolist() == subset.input_ids.tolist()  # deterministic
    assert small.input_ids.shape == cut.input_ids.shape


def test_a_byte_that_is_not_utf8_is_replaced_and_its_line_named(tmp_path: Path, tokenizer: Any) -> None:
    """One invalid UTF-8 byte made the whole dataset unreadable ("check the name, config
    and split")."""
    path = tmp_path / "corpus.txt"
    good = b"the cat sat on the mat and the dog ran to the door\n"
    path.write_bytes(good * 2 + b"a bad \xff byte in the third line\n" + good * 40)
    subset = build_subset(DataSpec(dataset=str(path), num_sequences=4, seq_len=16), tokenizer, "t")
    assert subset.input_ids.shape == (4, 16)
    assert subset.note is not None and f"{path} line 3: bytes that are not UTF-8 (byte 7" in subset.note
    texts = list(iter_texts(DataSpec(dataset=str(path))))
    assert texts[2] == "a bad \ufffd byte in the third line"


def test_a_read_only_hugging_face_cache_reads_a_local_text_file(tmp_path: Path) -> None:
    """A read-only HF_HOME made a local .txt dataset fail ("check the name, config and
    split"): the datasets library wanted to write its cache there."""
    path = tmp_path / "corpus.txt"
    path.write_text("first document\nsecond document\n")
    script = (
        "from specprobe.config import DataSpec\nfrom specprobe.models.data import iter_texts\n"
        f"print(list(iter_texts(DataSpec(dataset={str(path)!r}))))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HOME": "/proc/specprobe-no-such/hf",
    }  # unwritable, even by root
    env.pop("HF_DATASETS_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-1500:]
    assert done.stdout.decode().strip() == "['first document', 'second document']"
