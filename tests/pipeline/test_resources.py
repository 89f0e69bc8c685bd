"""Resources checked before work, and failures that recover (issue 29, section 4): the
memory plan reads the address-space and cgroup limits besides the host's MemAvailable, an
allocation that fails retries smaller, and what cannot run (``--eigen`` beyond the memory
or the dense limit, ``--device cuda`` without a GPU) is refused before anything is
written. Each listed case failed before the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.config import ProbeSpec
from specprobe.core.memory import cgroup_headroom
from specprobe.pipeline import checkpoint
from tests.cli import test_analyze
from tests.cli.test_analyze import REPO, SMALL

runner = CliRunner()
hub, corpus, tokenizer = test_analyze.hub, test_analyze.corpus, test_analyze.tokenizer
ROOT = Path(__file__).resolve().parents[2]


def test_the_address_space_limit_bounds_the_plan() -> None:
    """Under ``ulimit -v`` the planner read MemAvailable alone and the checkpoint failed
    with "could not create a primitive"."""
    script = (
        "import resource, torch\n"
        "from specprobe.core.memory import available_bytes\n"
        "size = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + 300 * 2**20, resource.RLIM_INFINITY))\n"
        "print(available_bytes(torch.device('cpu')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-1500:]
    assert 0 <= int(done.stdout) <= 0.7 * 300 * 2**20


@settings(max_examples=20, deadline=None)
@given(limit=st.integers(1, 2**40), used=st.integers(0, 2**40), version=st.sampled_from([1, 2]))
def test_the_cgroup_limit_bounds_the_plan(limit: int, used: int, version: int, tmp_path_factory: Any) -> None:
    root = tmp_path_factory.mktemp("cgroup")
    if version == 2:
        (root / "memory.max").write_text(f"{limit}\n")
        (root / "memory.current").write_text(f"{used}\n")
    else:
        (root / "memory").mkdir()
        (root / "memory" / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (root / "memory" / "memory.usage_in_bytes").write_text(f"{used}\n")
    assert cgroup_headroom(str(root)) == max(0, limit - used)
    (root / ("memory.max" if version == 2 else "memory/memory.limit_in_bytes")).write_text(
        "max\n" if version == 2 else f"{2**63 - 4096}\n"
    )
    assert cgroup_headroom(str(root)) is None  # no limit


@pytest.mark.parametrize(
    "message",
    [
        "could not create a primitive",
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory",
        "std::bad_alloc",
    ],
)
def test_an_allocation_that_fails_retries_smaller(monkeypatch: pytest.MonkeyPatch, message: str) -> None:
    tried: list[int | None] = []

    def measure_with(model: Any, batch: Any, probe: Any, **kw: Any) -> str:
        tried.append(kw["micro_batch_size"])
        if kw["micro_batch_size"] is None or kw["micro_batch_size"] > 2:
            raise RuntimeError(message)
        return "measured"

    monkeypatch.setattr(checkpoint, "measure_with", measure_with)
    batch = {"input_ids": torch.zeros(16, 4, dtype=torch.long)}
    assert checkpoint.measure_with_retry(torch.nn.Linear(1, 1), batch, ProbeSpec(), 0) == "measured"
    assert tried == [None, 8, 4, 2]


def _refused_before_any_work(result: Any, out: Path, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_refused_before_anything_is_written(
    hub: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    """It wrote a failed record per checkpoint and exited 1."""
    out = tmp_path / "run"
    args = [REPO, "--revisions", "step1,step2", "--dataset", str(corpus), *SMALL, "--out", str(out)]
    result = runner.invoke(app, ["analyze", *args, "--device", "cuda"])
    _refused_before_any_work(result, out, "expected a CUDA device", "--device cpu")


def test_eigen_exact_beyond_the_dense_limit_is_refused_before_anything_is_written(
    hub: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    """It failed late, with a hint naming library parameters."""
    out = tmp_path / "run"
    args = [REPO, "--revisions", "step1", "--dataset", str(corpus), *SMALL, "--out", str(out)]
    result = runner.invoke(app, ["analyze", *args, "--eigen", "5", "--exact"])
    _refused_before_any_work(result, out, "--eigen 5 --exact", "at most 4,096", "drop --exact")


def test_eigen_beyond_the_memory_is_refused_before_anything_is_written(
    hub: dict[str, str], corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--eigen 1000`` attempted a 29 GB allocation (a raw allocator error)."""
    import specprobe.core.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 2**20)
    out = tmp_path / "run"
    args = [REPO, "--revisions", "step1", "--dataset", str(corpus), *SMALL, "--out", str(out)]
    result = runner.invoke(app, ["analyze", *args, "--eigen", "1000"])
    _refused_before_any_work(result, out, "--eigen 1000 keeps a Lanczos basis", "lower --eigen")
