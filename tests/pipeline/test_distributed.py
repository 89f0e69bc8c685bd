"""Sweeps across processes: real launches (accelerate launch, torchrun) of 2 CPU processes
(gloo, one thread each) over a local hub cache and a training directory, compared record by
record with a one-process run of the same plan; plus the pure logic (GPU groups, order)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.errors import SpecprobeError
from specprobe.models.tiny import tiny_causal_lm
from specprobe.pipeline.processes import (
    Launch,
    SharedError,
    first_difference,
    gpu_assignment,
    largest_first,
    refuse_differences,
)
from specprobe.store.results import ResultStore
from tests.hubcache import add_revision, corpus_lines, make_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--num-sequences", "8", "--seq-len", "16", "--batch-size", "2", "--probes", "4"]
VOLATILE = {"timings", "finished_at", "peak_memory_bytes", "time_s"}


RECIPE = """\
version: 1
family:
  name: dist-test
  description: two hub models (one republishes a revision) and a training folder
models:
  - {{id: org/dist-small, label: small, revisions: [step1, step2, step4]}}
  - {{id: org/dist-large, label: large, revisions: [step1]}}
  - {{id: "{train}", label: trained}}
data:
  dataset: "{corpus}"
  num_sequences: 8
  seq_len: 16
  batch_size: 2
  seed: 0
probe:
  probes: 4
  device: cpu
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two hub models (one larger, one with a republished revision) and a training folder
    whose last checkpoint is broken: 7 checkpoints (one fails to load), 4 batches each."""
    tokenizer = make_tokenizer()
    vocab = len(tokenizer)
    for revision, seed in (("step1", 0), ("step2", 1), ("step4", 0)):  # step4 republishes step1
        model = tiny_causal_lm("gpt_neox", vocab_size=vocab, hidden_size=16, seed=seed, max_positions=64)
        add_revision("org/dist-small", revision, model, tokenizer)
    large = tiny_causal_lm("gpt_neox", vocab_size=vocab, hidden_size=32, seed=3, max_positions=64)
    add_revision("org/dist-large", "step1", large, tokenizer)
    root = tmp_path_factory.mktemp("dist")
    train = root / "train"
    for step, seed in ((10, 4), (20, 5)):
        model = tiny_causal_lm("gpt_neox", vocab_size=vocab, hidden_size=16, seed=seed, max_positions=64)
        model.save_pretrained(train / f"checkpoint-{step}")
    broken = train / "checkpoint-30"
    tiny_causal_lm("gpt_neox", vocab_size=vocab, hidden_size=16, max_positions=64).save_pretrained(broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short: this checkpoint fails to load
    tokenizer.save_pretrained(train)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines(200)) + "\n")
    path = root / "recipe.yaml"
    path.write_text(RECIPE.format(train=train, corpus=corpus))
    return path


def sweep_args(recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(recipe), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The one-process run of the plan, in this process."""
    out = tmp_path_factory.mktemp("single") / "run"
    result = CliRunner().invoke(app, sweep_args(recipe, out))
    assert result.exit_code == 1, result.output  # the broken checkpoint is recorded as failed
    records = ResultStore(out).records()
    assert [r["status"] for r in records] == ["ok"] * 6 + ["failed"]
    return records


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        COLUMNS="220",
    )
    if sys.platform == "linux":
        env["GLOO_SOCKET_IFNAME"] = "lo"  # the loopback interface only
    return env


def accelerate_launch(*args: str, processes: int = 2, port: int | None = None) -> list[str]:
    """``accelerate launch`` as users type it on a CPU machine (its --multi_gpu selects the
    torch launcher; without it, --cpu starts a single process or needs MPI)."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port or free_port()),
        "-m",
        "specprobe",
        *args,
    ]


def run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=timeout)


def numbers(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what changes from run to run (times, memory)."""
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    out["batches"] = [{k: v for k, v in b.items() if k not in VOLATILE} for b in record.get("batches", [])]
    return out


def assert_same_records(records: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    """Every checkpoint exactly once, every number equal to rounding, everything else equal."""
    keys = [(r["model"], r["revision"]) for r in records]
    assert len(keys) == len(set(keys)), keys
    assert sorted(keys) == sorted((r["model"], r["revision"]) for r in reference)
    by_key = {(r["model"], r["revision"]): r for r in records}
    for ref in reference:
        assert_close(numbers(by_key[(ref["model"], ref["revision"])]), numbers(ref), ref["revision"])


def assert_close(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        # The population estimates are differences ‖V‖² − Σ‖v_s‖² that cancel up to
        # B_noise-fold (all of it for an estimate ≤ 0): a rounding of the sums that differs
        # with the thread count grows by that factor, so they compare at 1e-6.
        population = any(k in where for k in ("population", "noise_scale", "mean_grad_sq", "position_at"))
        assert got == pytest.approx(want, rel=1e-6 if population else 1e-9, abs=1e-12), where
    else:
        assert got == want, where


# ---- the pure logic --------------------------------------------------------------------------


def test_gpu_groups_one_process_per_group_or_per_gpu() -> None:
    # One process per GPU, K=1: each its own GPU; more processes than GPUs share them.
    assert [gpu_assignment(r, 8, 1, 8) for r in range(8)] == [(r,) for r in range(8)]
    assert [gpu_assignment(r, 4, 1, 2) for r in range(4)] == [(0,), (1,), (0,), (1,)]
    # 4 processes owning 2 GPUs each.
    assert [gpu_assignment(r, 4, 2, 8) for r in range(4)] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    # 8 processes (the launchers' default) in groups of 4: the first of each group loads.
    groups = [gpu_assignment(r, 8, 4, 8) for r in range(8)]
    assert groups == [(0, 1, 2, 3), None, None, None, (4, 5, 6, 7), None, None, None]
    with pytest.raises(SpecprobeError, match="needs 12 GPUs"):
        gpu_assignment(0, 6, 2, 4)
    with pytest.raises(SpecprobeError, match="groups of 4"):
        gpu_assignment(0, 6, 4, 6)  # 6 processes do not form groups of 4
    with pytest.raises(SpecprobeError, match="CUDA"):
        gpu_assignment(0, 2, 1, 0)


def test_largest_first_is_stable() -> None:
    assert largest_first([5, 9, 5, 1, 9]) == [1, 4, 0, 2, 3]


def test_launch_environment() -> None:
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert Launch.from_environment(env) == Launch(4, 3, 1, 2)
    assert Launch.from_environment({}) == Launch(1, 0, 0, 1)
    with pytest.raises(SpecprobeError, match="integer"):
        Launch.from_environment({"WORLD_SIZE": "two"})


def test_different_settings_are_refused_naming_the_field() -> None:
    summary = {"settings": {"probe": {"probes": 4}}, "resume": False}
    other = {"settings": {"probe": {"probes": 8}}, "resume": False}
    refuse_differences([(None, summary), (None, dict(summary))])
    with pytest.raises(SharedError, match=r"settings\.probe\.probes is 4 in process 0 and 8 in process 1"):
        refuse_differences([(None, summary), (None, other)])
    with pytest.raises(SpecprobeError, match="process 1: no data"):
        refuse_differences([(None, summary), (("no data", "hint"), summary)])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab", max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("xyz", min_size=1, max_size=2), inner, max_size=3)
    ),
    max_leaves=12,
)


def _leaves(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list) and value:
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}[{i}]")]
    return [path]


def _replace(value: Any, path: str, new: Any, here: str = "") -> Any:
    if here == path:
        return new
    if isinstance(value, dict):
        return {k: _replace(v, path, new, f"{here}.{k}" if here else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, path, new, f"{here}[{i}]") for i, v in enumerate(value)]
    return value


@settings(max_examples=60, deadline=None)
@given(
    summary=st.dictionaries(st.sampled_from(["settings", "checkpoints", "resume"]), _JSON, min_size=1),
    data=st.data(),
)
def test_the_setting_that_differs_is_named(summary: dict[str, Any], data: Any) -> None:
    """Processes launched with different settings got an error showing two identical
    truncated strings instead of the setting that differs."""
    path = data.draw(st.sampled_from(_leaves(summary)))
    other = _replace(summary, path, "changed!")
    where, _, theirs = first_difference(summary, other)
    assert (where, theirs) == (path or "the settings", "changed!")
    with pytest.raises(SharedError) as err:
        refuse_differences([(None, summary), (None, other)])
    assert (
        f"{path or 'the settings'} is " in err.value.message
        and '"changed!" in process 1' in err.value.message
    )


def test_gpu_options_are_checked_before_anything_runs(tmp_path: Path) -> None:
    """--gpus-per-model needs GPUs; with --process-split batches it is refused (checked on every
    process during the common checks, so all refuse together)."""
    from types import SimpleNamespace

    from specprobe.choices import Device, Split
    from specprobe.pipeline.launched import LaunchedExecutor
    from specprobe.pipeline.processes import Parallel

    team: Any = SimpleNamespace(rank=0, world_size=2, launch=Launch(2, 0, 0, 2))
    with pytest.raises(SpecprobeError, match="needs GPUs"):
        LaunchedExecutor(team, Parallel(gpus_per_model=2)).devices(Device.cpu)
    assert LaunchedExecutor(team, Parallel(Split.batches)).devices(Device.cpu) is None


# ---- real launches ---------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_equal_one(recipe: Path, reference: list[dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run(accelerate_launch(*sweep_args(recipe, out)))
    assert done.returncode == 1, done.stderr[-3000:]  # 1: a checkpoint failed
    records = ResultStore(out).records()
    assert_same_records(records, reference)
    # The republished revision is flagged against the first in plan order, as in one process.
    assert {r["revision"]: r["duplicate_of"] for r in records if r["model"] == "org/dist-small"} == {
        "step1": None,
        "step2": None,
        "step4": "step1",
    }
    # config.json records the world size.
    config = ResultStore(out).config()
    assert config is not None and config["invocations"][-1]["world_size"] == 2
    # Process 0 printed the report once, in plan order.
    assert done.stdout.count("6 measured, 0 resumed, 1 failed") == 1  # the failed one is not "measured"
    assert done.stdout.index("small ·") < done.stdout.index("large ·") < done.stdout.index("trained ·")


@pytest.mark.slow
def test_two_machines_on_localhost(recipe: Path, reference: list[dict[str, Any]], tmp_path: Path) -> None:
    """--num_machines 2: two launchers, one per 'machine', meeting at 127.0.0.1."""
    out = tmp_path / "run"
    port = free_port()
    launchers = []
    for machine in (0, 1):
        command = accelerate_launch(*sweep_args(recipe, out), processes=2, port=port)
        at = command.index("--num_machines")
        command[at + 1 : at + 2] = ["2", "--machine_rank", str(machine), "--main_process_ip", "127.0.0.1"]
        launchers.append(
            subprocess.Popen(
                command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [p.communicate(timeout=300) for p in launchers]
    # Process 0 (machine 0) exits 1 for the failed checkpoint; machine 1's process, 0.
    assert [p.returncode for p in launchers] == [1, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert_same_records(ResultStore(out).records(), reference)
    assert "6 measured, 0 resumed, 1 failed" in outputs[0][0] and "measured" not in outputs[1][0]


@pytest.mark.slow
def test_split_batches_ctrl_c_and_resume_equal_unsplit(
    recipe: Path, reference: list[dict[str, Any]], tmp_path: Path
) -> None:
    """--processes 2 (torchrun under the hood) with --process-split batches; Ctrl-C after the first
    record exits 130 keeping the records; --resume finishes; every record equals the
    one-process record. Started with SIGINT ignored, as a background job of a script is
    (``cmd &``): torchrun's agent handles SIGINT regardless, so the relaunching process
    must too (it used to pass on the agent's exit 1 then)."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "specprobe", *sweep_args(recipe, out, "--process-split", "batches")]
    command += ["--processes", "2"]
    ignoring = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
    launcher = subprocess.Popen(
        [sys.executable, "-c", ignoring, *command],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_a_record(launcher, out)
        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 130, stderr[-3000:]
    kept = ResultStore(out).records()
    # At least the first record is kept. On quiet cores the other tiny checkpoints can all
    # finish while the interrupt travels through torchrun's agent, so all may be kept: the
    # exit code, the message and the resume below are what this test is about.
    assert 1 <= len(kept) <= len(reference)
    assert "interrupted" in stderr or len(kept) == len(reference)  # (the sweep had ended)
    resumed = run([*command, "--resume"])
    assert resumed.returncode == 1, resumed.stderr[-3000:]
    assert_same_records(ResultStore(out).records(), reference)
    ok = sum(r["status"] == "ok" for r in kept)  # failed records are measured again
    failed = sum(r["status"] != "ok" for r in reference)  # not counted as measured
    assert f"{len(reference) - ok - failed} measured, {ok} resumed, {failed} failed" in resumed.stdout
    config = ResultStore(out).config()
    assert config is not None
    assert [(i["world_size"], i["split"]) for i in config["invocations"]] == [(2, "batches")] * 2


def wait_for_a_record(launcher: subprocess.Popen[str], out: Path) -> None:
    deadline = time.monotonic() + 240
    while not ResultStore(out).records():
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="finds the process to kill in /proc")
def test_killed_process_loses_nothing_after_resume(
    recipe: Path, reference: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    launcher = subprocess.Popen(
        accelerate_launch(*sweep_args(recipe, out)),
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_a_record(launcher, out)
        os.kill(_rank_pid(launcher.pid, 1), signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    kept = ResultStore(out).records()
    assert 1 <= len(kept) < len(reference)
    assert "not measured" in stderr
    resumed = run(accelerate_launch(*sweep_args(recipe, out, "--resume")))
    assert resumed.returncode == 1, resumed.stderr[-3000:]
    assert_same_records(ResultStore(out).records(), reference)
    ok = sum(r["status"] == "ok" for r in kept)  # failed records are measured again
    failed = sum(r["status"] != "ok" for r in reference)  # not counted as measured
    assert f"{len(reference) - ok - failed} measured, {ok} resumed, {failed} failed" in resumed.stdout


@pytest.mark.slow
def test_mismatched_launch_is_refused_before_writing(recipe: Path, tmp_path: Path) -> None:
    """Two 'machines' started with different --probes: both refuse, nothing is written."""
    out = tmp_path / "run"
    port = free_port()
    launchers = []
    for machine, probes in ((0, "4"), (1, "6")):
        command = accelerate_launch(*sweep_args(recipe, out, "--probes", probes), processes=2, port=port)
        at = command.index("--num_machines")
        command[at + 1 : at + 2] = ["2", "--machine_rank", str(machine), "--main_process_ip", "127.0.0.1"]
        launchers.append(
            subprocess.Popen(
                command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [p.communicate(timeout=300) for p in launchers]
    assert all(p.returncode != 0 for p in launchers)
    assert "different settings" in outputs[0][1]
    assert not out.exists()


def _rank_pid(launcher: int, rank: int) -> int:
    """The pid of the launched process with RANK=rank (Linux /proc)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ and _descends_from(int(entry.name), launcher):
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no process with RANK={rank} under {launcher}")


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


@pytest.mark.slow
def test_split_batches_shares_the_whole_subset_equal_to_one_process(recipe: Path, tmp_path: Path) -> None:
    """The subset measured as one set (no batch_size), float64: with --split batches the
    2 processes measure halves of the sequences and all-reduce the gradient sum; every
    number equals the one-process record (relative 1e-9), the population fields included.
    The micro-batch (the processes' halves are measured whole) is where it ran, not a number."""
    text = (
        recipe.read_text()
        .replace("  batch_size: 2\n", "")
        .replace("  probes: 4\n", "  probes: 4\n  dtype: float64\n")
    )
    whole = tmp_path / "whole.yaml"
    whole.write_text(text)
    single = tmp_path / "single"
    assert CliRunner().invoke(app, sweep_args(whole, single)).exit_code == 1  # the broken checkpoint
    reference = [_where_free(r) for r in ResultStore(single).records()]
    assert all(r["measurement"] == "whole" for r in reference if r["status"] == "ok")
    assert all(r["population_position"] is not None for r in reference if r["status"] == "ok")
    out = tmp_path / "run"
    done = run(
        [
            sys.executable,
            "-m",
            "specprobe",
            *sweep_args(whole, out, "--process-split", "batches", "--processes", "2"),
        ]
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert_same_records([_where_free(r) for r in ResultStore(out).records()], reference)


def _where_free(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its micro-batch sizes (how it ran, not what it measured)."""
    out = {k: v for k, v in record.items() if k != "micro_batch_size"}
    out["batches"] = [
        {k: v for k, v in b.items() if k != "micro_batch_size"} for b in record.get("batches", [])
    ]
    return out


def _reduction_worker(rank: int, port: int, out: str) -> None:
    """One of 2 processes: three whole-subset exchanges through TeamReduction (ok; process 1
    failing before any collective; ok again), the results into ``out``/rank.json."""
    import json

    import numpy as np
    import torch

    from specprobe.pipeline.processes import BatchShare, Team

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    share = BatchShare(Team(Launch(2, rank, rank, 2)))
    seen: dict[str, Any] = {}
    for round_ in range(3):
        span, reduction = share.sequences(5)
        assert reduction is not None and reduction.offset == span.start
        try:
            if round_ == 1 and rank == 1:
                raise RuntimeError("boom")  # fails before the first collective
            tensors = [
                torch.full((2, 3), float(rank + 1), dtype=torch.float64),
                torch.arange(4.0) * (rank + 1),
            ]
            reduction.sum_(tensors)
            rows = reduction.gather(np.array([[s, 10 * s] for s in span], dtype=float))
            scalars = reduction.sum_scalars(np.array([len(span), 0.5]))
            share.finish(object(), None)  # type: ignore[arg-type]
            seen[str(round_)] = [t.tolist() for t in tensors] + [rows.tolist(), scalars.tolist(), list(span)]
        except Exception as err:  # the failure, on both processes
            try:
                share.finish(None, err)
            except Exception as raised:
                seen[str(round_)] = f"raised: {raised}"
        share.settle(None)
    Path(out, f"{rank}.json").write_text(json.dumps(seen))
    share.team.close()


def test_team_reduction_sums_gathers_and_fails_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TeamReduction over gloo, 2 processes: the in-place sum, the gather in sequence order
    and the scalar sums equal one process's; a process that fails before a collective makes
    both raise its error (no one waits), and the next checkpoint's exchange is in step."""
    import json

    import torch.multiprocessing as mp

    if sys.platform == "linux":
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # the loopback interface only
    mp.spawn(_reduction_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    for rank, seen in enumerate(results):
        for round_ in ("0", "2"):
            first, second, rows, scalars, span = seen[round_]
            assert first == [[3.0] * 3] * 2 and second == [0.0, 3.0, 6.0, 9.0]
            assert rows == [[s, 10.0 * s] for s in range(5)] and scalars == [5.0, 1.0]
            assert span == ([0, 1] if rank == 0 else [2, 3, 4])
        assert seen["1"] == "raised: process 1: RuntimeError: boom"
