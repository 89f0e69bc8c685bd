"""Nothing lost, nothing run that was not asked for: the result store, recipes and inputs
under attack (each case of issue 11 as a test that failed before the fixes)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.errors import SpecprobeError
from specprobe.models.tiny import tiny_causal_lm
from specprobe.recipes.loader import MAX_INCLUDE_DEPTH
from specprobe.recipes.recipe import RecipeError, load_recipe
from specprobe.store.folder import LOCK_FILE, MARKER_FILE, PARTIAL_FILE, check_run_folder
from specprobe.store.lock import RunLock, RunLockedError
from specprobe.store.results import ResultStore
from tests.cli import test_analyze
from tests.cli.test_analyze import REPO, SMALL, analyze

runner = CliRunner()
# The offline hub cache, corpus and tokenizer of the analyze tests (session fixtures).
hub, corpus, tokenizer = test_analyze.hub, test_analyze.corpus, test_analyze.tokenizer


def snapshot(root: Path, skip: Path | None = None) -> dict[str, bytes]:
    """Every file under ``root`` (except under ``skip``) with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (skip is None or skip not in p.parents)
    }


def one_line_error(result: Any, *needles: str) -> None:
    """Exit code 2, an ``error:`` line with a hint, no traceback, and every needle in the output."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "error:" in result.output and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


@pytest.fixture
def model_folder(tmp_path: Path, tokenizer: Any) -> Path:
    """A saved model (what a Trainer's output folder holds at the end)."""
    folder = tmp_path / "model"
    tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), max_positions=64).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---- data loss: the output folder belongs to specprobe ---------------------------------


def test_out_into_a_model_folder_is_refused(
    hub: dict[str, str],
    corpus: Path,
    model_folder: Path,
) -> None:
    from transformers import AutoModelForCausalLM

    before = snapshot(model_folder)
    for extra in ([], ["--resume"]):
        result = analyze(
            REPO, "--revisions", "step1", "--dataset", str(corpus), *SMALL, "--out", str(model_folder), *extra
        )
        one_line_error(result, "is not a specprobe run folder", "config.json", "model.safetensors")
    assert snapshot(model_folder) == before
    AutoModelForCausalLM.from_pretrained(model_folder)  # still loads


def test_recipe_output_into_a_foreign_folder_is_refused(
    corpus: Path, model_folder: Path, tmp_path: Path
) -> None:
    before = snapshot(model_folder)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"version: 1\nfamily: {{name: x}}\nmodels: [{{id: {model_folder}}}]\n"
        f"data: {{dataset: {corpus}, num_sequences: 4, seq_len: 16, batch_size: 2}}\nprobe: {{probes: 4}}\n"
        f"output: {{directory: {model_folder}, resume: true}}\n"
    )
    validated = runner.invoke(app, ["validate", str(recipe)])
    one_line_error(validated, "output.directory", "not a specprobe run folder")
    run = runner.invoke(app, ["run", str(recipe)])
    one_line_error(run, "not a specprobe run folder")
    assert snapshot(model_folder) == before


def test_validate_shows_the_resolved_output_folder(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "version: 1\nfamily: {name: x}\nmodels: [{id: org/m}]\noutput: {directory: runs/here}\n"
    )
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    # relative to the recipe file's folder, not to the working directory
    assert str((tmp_path / "runs" / "here").resolve()) in result.output.replace("\n", "")


def test_out_that_is_a_file_or_unwritable(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    data = ["--revisions", "step1", "--dataset", str(corpus), *SMALL]
    one_line_error(analyze(REPO, *data, "--out", str(a_file)), "found a file")
    one_line_error(analyze(REPO, *data, "--out", str(a_file / "run")), "cannot write into the run folder")
    assert a_file.read_text() == "mine"


def test_run_folders_of_specprobe_are_accepted(tmp_path: Path) -> None:
    check_run_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty")
    legacy = tmp_path / "legacy"  # an older specprobe's run: no marker, only its own files
    legacy.mkdir()
    (legacy / "results.jsonl").write_text("")
    (legacy / "config.json").write_text('{"invocations": []}')
    check_run_folder(legacy)
    (legacy / "config.json").write_text('{"hidden_size": 16}')
    with pytest.raises(SpecprobeError, match="not a specprobe config"):
        check_run_folder(legacy)
    marked = tmp_path / "marked"  # with the marker, the user's own notes beside it are fine
    with ResultStore(marked).open_for_writing():
        pass
    assert (marked / MARKER_FILE).is_file()
    (marked / "notes.txt").write_text("mine")
    check_run_folder(marked)


def test_probe_out_into_a_foreign_folder_is_refused(model_folder: Path) -> None:
    import specprobe
    from tests.conftest import lm_batch

    before = snapshot(model_folder)
    with pytest.raises(SpecprobeError, match="not a specprobe run folder"):  # before any training
        specprobe.Probe(lm_batch(), estimator="exact", out=model_folder)
    assert snapshot(model_folder) == before


# ---- one writer at a time ------------------------------------------------------------------


def test_a_second_writer_is_refused_with_the_holder(
    hub: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    data = ["--dataset", str(corpus), *SMALL, "--out", str(out)]
    with ResultStore(out).open_for_writing():  # another process's sweep, in effect
        before = snapshot(out)
        result = analyze(REPO, "--revisions", "step1", *data)
        one_line_error(result, "is being written by another specprobe process", "pid ", "--resume")
        assert snapshot(out) == before


@pytest.mark.slow
def test_resume_waits_for_the_writer_then_continues(
    hub: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    data = ["--dataset", str(corpus), *SMALL, "--out", str(out)]
    first = analyze(REPO, "--revisions", "step1", *data)
    assert first.exit_code == 0, first.output
    holder = RunLock(out)
    holder.acquire()
    releaser = threading.Timer(1.0, holder.release)
    releaser.start()
    start = time.monotonic()
    second = analyze(REPO, "--revisions", "step1,step2", *data, "--resume")
    waited = time.monotonic() - start
    releaser.join()
    assert second.exit_code == 0, second.output
    assert waited >= 1.0
    assert "1 measured, 1 resumed" in second.output
    invocations = json.loads((out / "config.json").read_text())["invocations"]
    assert [i["invocation"]["revisions"] for i in invocations] == ["step1", "step1,step2"]


def test_a_waiting_writer_names_the_holder_of_the_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three writers: A holds, B and C wait. When A lets go and B takes the lock, C said
    it waited for A until it got the lock itself; it now names B (issue 29, section 6)."""
    import specprobe.store.lock as lock_module

    monkeypatch.setattr(lock_module, "HOLDER_RECHECK_S", 0.05)
    monkeypatch.setattr(lock_module.sys, "argv", ["specprobe", "analyze", "A"])
    a = RunLock(tmp_path)
    a.acquire()
    told: list[str] = []
    got = threading.Event()

    def c() -> None:
        lock = RunLock(tmp_path)
        lock.acquire(wait=True, timeout=30, on_wait=told.append)
        got.set()
        lock.release()

    waiter = threading.Thread(target=c)
    handed_over = threading.Event()  # C may not take the lock in the moment A lets it go
    real_try = lock_module._try_lock
    monkeypatch.setattr(
        lock_module,
        "_try_lock",
        lambda fd: (
            real_try(fd) if threading.current_thread() is not waiter or handed_over.is_set() else False
        ),
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while not told and time.monotonic() < deadline:
        time.sleep(0.01)
    b = RunLock(tmp_path)
    monkeypatch.setattr(lock_module.sys, "argv", ["specprobe", "analyze", "B"])
    a.release()
    b.acquire()
    handed_over.set()
    deadline = time.monotonic() + 10
    while len(told) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not got.is_set()
    b.release()
    waiter.join(timeout=30)
    assert got.is_set()
    assert told[0].endswith("(specprobe analyze A)") and told[-1].endswith("(specprobe analyze B)")


def test_lock_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from specprobe.store.lock import RunLock; RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=r"pid \d+"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path)
    lock.acquire()  # the kernel released the dead process's lock
    lock.release()
    assert (tmp_path / LOCK_FILE).is_file()


WRITER = """
import sys
from specprobe.store.results import ResultStore
store, rank = ResultStore(sys.argv[1]), int(sys.argv[2])
for i in range(10):
    store.append({"model": "m", "revision": f"r{rank}-{i}", "status": "failed", "settings_hash": "h"})
    store.update_config(lambda c: c["invocations"].append(f"{rank}-{i}"))
"""


def test_concurrent_writers_lose_no_record_and_no_config_update(tmp_path: Path) -> None:
    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(rank)]) for rank in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    store = ResultStore(out)
    assert sorted(r["revision"] for r in store.records()) == sorted(
        f"r{k}-{i}" for k in range(4) for i in range(10)
    )
    assert len(store.config()["invocations"]) == 40  # type: ignore[index]


# ---- a cut last line, unreadable lines -----------------------------------------------------


@pytest.mark.slow
def test_cut_last_line_report_and_resume(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    data = ["--dataset", str(corpus), *SMALL, "--out", str(out)]
    assert analyze(REPO, "--revisions", "step1,step2", *data).exit_code == 0
    results = out / "results.jsonl"
    lines = results.read_text().splitlines()
    cut = lines[1][: len(lines[1]) // 2]
    results.write_text(lines[0] + "\n" + cut)  # a full disk stopped the copy mid-line
    shown = runner.invoke(app, ["report", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "line 2 is cut short" in shown.output
    listed = runner.invoke(app, ["report", str(out), "--json"])
    assert [json.loads(line)["revision"] for line in listed.stdout.splitlines() if line.startswith("{")] == [
        "step1"
    ]
    config_before = (out / "config.json").read_text()
    resumed = analyze(REPO, "--revisions", "step1,step2", *data, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "1 measured, 1 resumed" in resumed.output and "moved to" in resumed.output
    assert (out / PARTIAL_FILE).read_text() == cut + "\n"
    store = ResultStore(out)
    assert [r["revision"] for r in store.records()] == ["step1", "step2"]
    assert store.warnings() == []
    assert len(json.loads((out / "config.json").read_text())["invocations"]) == 2
    assert (out / "config.json").read_text() != config_before


def test_resume_with_a_corrupt_config_writes_nothing(
    hub: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    data = ["--dataset", str(corpus), *SMALL, "--out", str(out)]
    assert analyze(REPO, "--revisions", "step1", *data).exit_code == 0
    (out / "config.json").write_text('{"invocations": [')
    before = snapshot(out)
    result = analyze(REPO, "--revisions", "step1,step2", *data, "--resume")
    one_line_error(result, "config.json is not valid JSON", "move it away")
    assert snapshot(out) == before


def test_report_skips_unusable_lines_with_a_warning(tmp_path: Path) -> None:
    good = {
        "model": "m",
        "revision": "step1",
        "status": "ok",
        "loss": 1.0,
        "grad_norm_sq": 1.0,
        "chi_loss": 1.0,
        "chi_net": 2.0,
        "spectral_position": 0.5,
        "normalized_position": 0.5,
        "num_outputs": 4,
        "specprobe_version": "0.1.0",
    }
    newer = {**good, "revision": "step2", "specprobe_version": "99.0"}
    no_loss = {k: v for k, v in {**good, "revision": "step3"}.items() if k != "loss"}
    lines = [json.dumps(good), json.dumps(newer), json.dumps(no_loss), "[1, 2]", "{oops", json.dumps(good)]
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    for needle in (
        "line 2 skipped: written by specprobe 99.0",
        "line 3 skipped: missing field(s) loss",
        "line 4 skipped: expected a JSON object, found list",
        "line 5 skipped: not valid JSON",
    ):
        assert needle in result.output.replace("\n", ""), needle
    as_json = runner.invoke(app, ["report", str(out), "--json"])
    assert [json.loads(line)["revision"] for line in as_json.stdout.splitlines()] == ["step1", "step1"]
    # A writer keeps them verbatim (nothing lost).
    ResultStore(out).append({**good, "revision": "step9"})
    assert (out / "results.jsonl").read_text().splitlines()[:6] == lines[:6]


# ---- code run without being asked ----------------------------------------------------------


@pytest.fixture
def custom_code_model(tmp_path: Path) -> Path:
    """A model folder whose config needs its own Python code, which leaves a trace when run."""
    folder = tmp_path / "custom"
    folder.mkdir()
    auto_map = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilLM"}
    (folder / "config.json").write_text(json.dumps({"model_type": "evilmodel", "auto_map": auto_map}))
    (folder / "configuration_evil.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('code ran')\n"
        "from transformers import PretrainedConfig\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evilmodel'\n"
    )
    return folder


def test_recipe_may_not_trust_remote_code(custom_code_model: Path, corpus: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"version: 1\nfamily: {{name: x}}\nmodels: [{{id: {custom_code_model}}}]\n"
        f"data: {{dataset: {corpus}, num_sequences: 4, seq_len: 16, batch_size: 2}}\n"
        f"probe: {{trust_remote_code: true}}\noutput: {{directory: {tmp_path / 'out'}}}\n"
    )
    for command in ("validate", "run"):
        result = runner.invoke(app, [command, str(recipe)])
        one_line_error(result, "probe.trust_remote_code", "--trust-remote-code")
    assert not (custom_code_model / "RAN").exists()
    assert not (tmp_path / "out").exists()


def test_remote_code_refusal_names_the_file_and_the_flag(
    custom_code_model: Path, corpus: Path, tmp_path: Path
) -> None:
    result = analyze(str(custom_code_model), "--dataset", str(corpus), *SMALL, "--out", str(tmp_path / "out"))
    one_line_error(result, str(custom_code_model / "configuration_evil.py"), "--trust-remote-code")
    assert not (custom_code_model / "RAN").exists()
    assert not (tmp_path / "out").exists()


# ---- hostile and careless recipes ----------------------------------------------------------

MINIMAL = "version: 1\nfamily: {name: tiny}\nmodels: [{id: org/model}]\n"


def _fast_error(path: Path, needle: str) -> None:
    start = time.monotonic()
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert time.monotonic() - start < 2.0
    assert needle in str(err.value) and str(path) in err.value.message and err.value.hint
    assert "\n" not in err.value.message


def test_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)]
    path = tmp_path / "bomb.yaml"
    path.write_text(MINIMAL + "\n".join(bomb) + "\n")
    _fast_error(path, "recipes may not use aliases")
    merge = tmp_path / "merge.yaml"
    merge.write_text(MINIMAL + "base: &base {seq_len: 8}\ndata:\n  <<: *base\n")
    _fast_error(merge, "alias")


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(MINIMAL + "revisions: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RecipeError):
        load_recipe(path)


@pytest.mark.parametrize(
    ("revisions", "needle"),
    [
        ("{log: {points: 1000000000}}", "revisions.log.points: expected at most 154"),
        ("{every: {n: 1, stop: 100000000}}", "revisions.every: expected at most 10000 revisions"),
    ],
)
def test_revision_generators_are_bounded(tmp_path: Path, revisions: str, needle: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL + f"revisions: {revisions}\n")
    _fast_error(path, needle)


def test_include_depth_is_bounded(tmp_path: Path) -> None:
    for i in range(1000):
        (tmp_path / f"r{i}.yaml").write_text(f"include: r{i + 1}.yaml\n")
    (tmp_path / "r1000.yaml").write_text(MINIMAL)
    start = time.monotonic()
    with pytest.raises(RecipeError, match=f"include chain longer than {MAX_INCLUDE_DEPTH} files"):
        load_recipe(tmp_path / "r0.yaml")
    assert time.monotonic() - start < 2.0
    result = runner.invoke(app, ["validate", str(tmp_path / "r0.yaml")])
    one_line_error(result, "include chain longer than")


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ("probe: {micro_batch_size: 0}", "probe.micro_batch_size: expected an integer >= 1, found 0"),
        ("probe: {eigen: -2}", "probe.eigen: expected an integer from 0 to 1,000, found -2"),
        ("data: {seed: -3}", "data.seed: expected an integer >= 0, found -3"),
        ("family: {name: x, tokens_per_step: -5}", "family.tokens_per_step: expected an integer >= 1"),
        ("probe: {groups: 12}", "probe.groups: expected 'auto' or a mapping"),
        ("probe: {probes: 1}", "probe.probes: expected an integer from 2 to 10,000, found 1"),
        ("probe: {probes: 100000000000000000000}", "probe.probes: expected an integer from 2 to 10,000"),
        ("models: [{id: org/model, params: 0}]", "models[0].params: expected an integer >= 1"),
        ("data: {num_sequences: 5, batch_size: 2}", "data: expected num_sequences to be a multiple"),
        ("data: {seq_len: 1}", "data.seq_len: expected an integer >= 2"),
    ],
)
def test_validate_range_checks_every_value(tmp_path: Path, section: str, needle: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nfamily: {name: tiny}\nmodels: [{id: org/model}]\n" + section + "\n")
    result = runner.invoke(app, ["validate", str(path)])
    one_line_error(result, needle, str(path))


# ---- wrong numbers, silently: a checkpoint without its output head -------------------------


def test_checkpoint_without_output_head_is_refused(tokenizer: Any, corpus: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    full = tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), max_positions=64)
    full.gpt_neox.save_pretrained(base)  # GPTNeoXModel: no lm_head
    tokenizer.save_pretrained(base)
    result = analyze(str(base), "--dataset", str(corpus), *SMALL, "--out", str(tmp_path / "out"))
    one_line_error(result, "lm_head.weight", "missing", "no output head")
    assert ResultStore(tmp_path / "out").records() == []


# ---- tracebacks that became one line -------------------------------------------------------


def test_config_with_a_wrong_type_is_one_line(
    tokenizer: Any,
    corpus: Path,
    model_folder: Path,
    tmp_path: Path,
) -> None:
    config = json.loads((model_folder / "config.json").read_text())
    config["hidden_size"] = "sixteen"
    (model_folder / "config.json").write_text(json.dumps(config))
    result = analyze(str(model_folder), "--dataset", str(corpus), *SMALL, "--out", str(tmp_path / "out"))
    one_line_error(result, "hidden_size", "config.json")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("org/", "expected a hub id"),
        ("org/na me", "expected a hub id"),
        ("org/model@step1", "--revisions step1"),
    ],
)
def test_malformed_hub_ids_are_one_line(corpus: Path, tmp_path: Path, model: str, needle: str) -> None:
    result = analyze(model, "--dataset", str(corpus), *SMALL, "--out", str(tmp_path / "out"))
    one_line_error(result, needle)


@pytest.mark.parametrize(
    "option",
    [
        ["--seed", "-1"],
        ["--tokens-per-step", "-1"],
        ["--eigen", "5000"],
        ["--probes", "99999999999999999999"],
    ],
)
def test_out_of_range_options_are_refused(corpus: Path, tmp_path: Path, option: list[str]) -> None:
    result = analyze(
        REPO, "--revisions", "step1", "--dataset", str(corpus), *SMALL, *option, "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 2 and option[0] in result.output
    assert not (tmp_path / "o").exists()


def test_library_plans_get_the_same_range_checks(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    from specprobe.config import DataSpec, ProbeSpec
    from specprobe.pipeline.plan import ModelSpec, SweepPlan
    from specprobe.pipeline.sweep import run_sweep

    model = ModelSpec(REPO, revisions=("step1",))
    data = DataSpec(dataset=str(corpus), num_sequences=2, seq_len=8, batch_size=2)
    bad = [
        (
            SweepPlan(models=(ModelSpec(REPO, ("step1",), tokens_per_step=-1),), data=data),
            "--tokens-per-step",
        ),
        (SweepPlan(models=(model,), data=data, probe=ProbeSpec(probes=4, seed=-1)), "--seed"),
        (SweepPlan(models=(model,), data=data, probe=ProbeSpec(probes=4, groups=12)), "--groups"),  # type: ignore[arg-type]
        (
            SweepPlan(
                models=(model,), data=DataSpec(str(corpus), num_sequences=2, seq_len=8, batch_size=2, seed=-1)
            ),
            "seed",
        ),
    ]
    for plan, needle in bad:
        with pytest.raises(SpecprobeError, match=needle):
            run_sweep(plan, ResultStore(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
