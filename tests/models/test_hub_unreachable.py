"""An unreachable hub: one attempt, then the cache or a one-line error; never a minute of
retry messages."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from specprobe.errors import SpecprobeError
from specprobe.models.hub import resolve_commit
from tests.cli.test_analyze import REPO, SMALL, corpus, hub, tokenizer  # noqa: F401  (session fixtures)

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Unavailable:
    """A localhost hub that answers every request with 503 Service Unavailable (which
    huggingface_hub retries with back-off), counting the requests."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    self.lines.append(data.split(b"\r\n", 1)[0].decode())
                    conn.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )

    @property
    def requests(self) -> int:
        """Requests for files (huggingface_hub also asks /api/... once per process)."""
        return sum("/resolve/" in line for line in self.lines)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


def sweep_command(corpus: Path, out: Path, revisions: str = "step1,step2") -> list[str]:  # noqa: F811
    """``specprobe analyze`` of the cached revisions on a small subset of ``corpus``."""
    return ["analyze", REPO, "--revisions", revisions, "--dataset", str(corpus), *SMALL, "--out", str(out)]


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> Iterator[Unavailable]:
    """This process as if online, with the hub at a server that answers 503."""
    from huggingface_hub import constants

    server = Unavailable()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)  # both read HF_ENDPOINT at import
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    yield server
    server.close()


def test_unreachable_hub_and_empty_cache_fail_at_once(tmp_path: Path) -> None:
    """As a user meets it: HF_ENDPOINT at a closed port, nothing cached, no HF_HUB_OFFLINE."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        HF_HOME=str(tmp_path / "hf"),
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    data = tmp_path / "corpus.txt"
    data.write_text("a b c\n" * 20)
    code = "from specprobe.cli.app import app; app()"
    args = [
        "analyze",
        "org/not-cached",
        "--revisions",
        "step1",
        "--dataset",
        str(data),
        "--out",
        str(tmp_path / "r"),
    ]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "Retrying" not in done.stderr and "Retry" not in done.stdout  # no back-off
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "org/not-cached at revision 'step1' is not in the local cache" in errors[0]
    assert "the hub cannot be reached" in errors[0] and "Connection refused" in errors[0]
    assert "HF_HUB_OFFLINE=1" in done.stderr and "Traceback" not in done.stderr


def test_one_attempt_then_the_error(online: Unavailable) -> None:
    with pytest.raises(SpecprobeError) as err:
        resolve_commit("org/not-cached", "step1")
    assert online.requests == 1
    assert "the hub cannot be reached (HTTP 503" in err.value.message
    assert "HF_HUB_OFFLINE=1" in (err.value.hint or "")


def test_one_attempt_then_the_cache(online: Unavailable, hub: dict[str, str]) -> None:  # noqa: F811
    assert resolve_commit(REPO, "step2") == hub["step2"]
    assert online.requests == 1


def test_cached_revision_loads_with_the_hub_unreachable(online: Unavailable, hub: dict[str, str]) -> None:  # noqa: F811
    from specprobe.models.hub import Checkpoint
    from specprobe.models.loading import load_checkpoint

    loaded: Any = load_checkpoint(Checkpoint(model=REPO, revision="step1"))
    assert loaded.commit == hub["step1"] and loaded.num_params > 0
    assert online.requests == 1


def test_after_one_failure_every_hub_call_reads_the_cache(online: Unavailable, hub: dict[str, str]) -> None:  # noqa: F811
    """The checks before a sweep (config, tokenizer, skeleton) and the loading of every
    revision after the hub was found unreachable: one request in all, no retries."""
    from specprobe.models.hub import Checkpoint
    from specprobe.models.loading import inspect_checkpoint, load_checkpoint

    commit = resolve_commit(REPO, "step1")
    info = inspect_checkpoint(Checkpoint(model=REPO, revision="step1"), commit)
    assert info.skeleton is not None and info.max_positions
    assert resolve_commit(REPO, "step2") == hub["step2"]
    loaded: Any = load_checkpoint(Checkpoint(model=REPO, revision="step4"))
    assert loaded.commit == hub["step4"]
    assert online.requests == 1, online.lines


def test_a_sweep_with_the_hub_unreachable_makes_one_attempt(
    online: Unavailable,
    hub: dict[str, str],  # noqa: F811
    corpus: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from specprobe.cli.app import app

    args = sweep_command(corpus, tmp_path / "r")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert online.requests == 1, online.lines
    assert "Retrying" not in result.output


def test_the_default_dataset_offline_fails_at_once(hub: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    """HF_HUB_OFFLINE=1 (as the tests run) and no --dataset: one line saying the default
    dataset is on the hub, before any tokenising or retries."""
    from typer.testing import CliRunner

    from specprobe.cli.app import app

    args = ["analyze", REPO, "--revisions", "step1", "--seq-len", "16", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "dataset 'NeelNanda/pile-10k' is on the Hugging Face hub" in result.output
    assert "HF_HUB_OFFLINE is set" in result.output and "local .txt" in result.output
    assert not (tmp_path / "r").exists()


def test_the_default_dataset_with_the_hub_unreachable_is_one_attempt(online: Unavailable) -> None:
    from specprobe.config import DataSpec
    from specprobe.models.data import iter_texts

    with pytest.raises(SpecprobeError) as err:
        next(iter_texts(DataSpec(dataset="org/some-corpus")))
    assert "is on the Hugging Face hub, which cannot be reached (HTTP 503" in err.value.message
    assert online.requests == 1


def test_the_unreachable_endpoint_with_a_cached_revision_is_quick(
    hub: dict[str, str],  # noqa: F811
    corpus: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """As the issue met it: HF_ENDPOINT at a closed port, HF_HUB_OFFLINE unset, the revisions
    in the cache: the sweep runs from the cache without a single "Retrying" line."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        HF_HUB_ETAG_TIMEOUT="2",
        HF_HUB_DOWNLOAD_TIMEOUT="2",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    args = sweep_command(corpus, tmp_path / "r")
    code = "from specprobe.cli.app import app; app()"
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Retrying" not in done.stderr + done.stdout
    assert "2 measured, 0 resumed, 0 failed" in done.stdout
