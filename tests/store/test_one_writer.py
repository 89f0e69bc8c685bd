"""One way to write a file (issue 29, section 1): every file specprobe writes goes through
``store.folder.atomic_write``, which refuses special files, never follows a link inside a
run folder, never writes into an input or the Hugging Face cache, and reads ``-`` as
standard output where the format allows it. The generated cases build file-system states
around every output and run-folder path and check that nothing outside what specprobe owns
changes; the listed cases are the ones the fourth adversarial pass found."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.errors import SpecprobeError
from specprobe.store.folder import (
    CONFIG_FILE,
    LOCK_FILE,
    MARKER_FILE,
    PROTECTED_FILES,
    RESULTS_FILE,
    atomic_write,
    check_output,
    check_run_folder,
)
from specprobe.store.results import ResultStore
from tests.cli import test_analyze
from tests.store.test_results_safety import record

runner = CliRunner()
hub, corpus, tokenizer = test_analyze.hub, test_analyze.corpus, test_analyze.tokenizer

# ---- the file-system states ----------------------------------------------------------------

STATES = (
    "absent",
    "file",  # a regular file (specprobe's own inside a run folder, the user's outside)
    "link-to-user-file",
    "link-to-user-folder",
    "dangling-link",
    "link-to-device",  # /dev/null: a character device that must stay one
    "link-loop",
    "fifo",
    "socket",
    "folder",
)


def tree(root: Path) -> dict[str, Any]:
    """Everything under ``root`` as it is: each entry's kind and its bytes, link target or mode
    (FIFOs and sockets are never opened)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            info = os.lstat(path)
            key = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                out[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                out[key] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))
            else:
                out[key] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode))
    return out


@contextmanager
def place(path: Path, state: str, user: Path) -> Iterator[None]:
    """Put ``state`` at ``path`` (the user's files in ``user``); close a socket afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = None
    if state == "file":
        path.write_bytes(b"already here\n")
    elif state == "link-to-user-file":
        path.symlink_to(user / "precious.txt")
    elif state == "link-to-user-folder":
        path.symlink_to(user / "folder")
    elif state == "dangling-link":
        path.symlink_to(user / "not-there")
    elif state == "link-to-device":
        path.symlink_to("/dev/null")
    elif state == "link-loop":
        path.symlink_to(path.name)
    elif state == "fifo":
        os.mkfifo(path)
    elif state == "socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
    elif state == "folder":
        path.mkdir()
    try:
        yield
    finally:
        if sock is not None:
            sock.close()


def user_area(root: Path) -> Path:
    """The user's files, which nothing may change: a file, a folder of images."""
    user = root / "user"
    (user / "folder").mkdir(parents=True)
    (user / "precious.txt").write_bytes(b"the user's own words\n")
    (user / "folder" / "loss_vs_size.png").write_bytes(b"the user's own image")
    (user / "folder" / "loss_vs_size.svg").write_bytes(b"<svg/>")
    return user


def a_run(root: Path) -> ResultStore:
    store = ResultStore(root / "run")
    store.append(record("step1"))
    return store


def figures(store: ResultStore) -> None:
    from specprobe.report.plots import write_figures

    write_figures(
        [*store.records(), record("step2", num_params=2000, chi_net=5.0)],
        store.directory / "figures",
        formats=("svg",),
    )


WRITERS: dict[str, tuple[str, Callable[[ResultStore, Path], None]]] = {
    # slot (a path relative to the root) -> the write that goes there
    "results": (f"run/{RESULTS_FILE}", lambda s, _p: s.append(record("step2"))),
    "config": (f"run/{CONFIG_FILE}", lambda s, _p: s.update_config(lambda c: c.update(x=1))),
    "marker": (f"run/{MARKER_FILE}", lambda s, _p: s.append(record("step3"))),
    "lock": (f"run/{LOCK_FILE}", lambda s, _p: s.append(record("step4"))),
    "html": ("out/report.html", lambda s, p: _html(s, p)),
    "csv": ("out/report.csv", lambda s, p: _csv(s, p)),
    "html-in-run": ("run/report.html", lambda s, p: _html(s, p)),
}


def _html(store: ResultStore, path: Path) -> None:
    from specprobe.report.html import write_html

    write_html(store.records(), path)


def _csv(store: ResultStore, path: Path) -> None:
    from specprobe.report.spreadsheet import write_csv

    write_csv(store.records(), path)


def check_only_owned_changed(
    root: Path, slot: str, state: str, write: Callable[[], None], *, folder: bool = False
) -> None:
    """Run ``write``; afterwards everything outside the slot's own file is as it was, the
    device is still a device, and the slot holds a regular file (written) or is as it was
    (refused with a SpecprobeError)."""
    before = tree(root)
    followed = {"link-to-user-file": "user/precious.txt", "dangling-link": "user/not-there"}
    if not slot.startswith("run/") and state in followed:
        # The user's own link outside the run folder is followed: the file it points at is
        # the output (replaced whole, or made), the link stays.
        before.pop(followed[state], None)
    try:
        write()
        written = True
    except SpecprobeError:
        written = False
    after = tree(root)
    if not slot.startswith("run/") and state in followed:
        assert written and (root / slot).is_symlink(), (slot, state)
        after.pop(followed[state])
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert {k: v for k, v in after.items() if k.startswith("user")} == {
        k: v for k, v in before.items() if k.startswith("user")
    }, (slot, state)
    if state in ("fifo", "socket", "link-to-device", "link-loop", "link-to-user-folder") or (
        state == "folder" and not folder
    ):
        assert not written, (slot, state)  # never a special file, a folder, or through a loop
    inside_run = slot.startswith("run/")
    if inside_run and state.endswith(("link", "user-file", "user-folder", "device", "loop")):
        assert not written, (slot, state)  # never through a link in the run folder
    if not written:
        assert after.get(slot) == before.get(slot), (slot, state)
    elif slot in ("out/report.html", "out/report.csv", "run/report.html", f"run/{RESULTS_FILE}"):
        assert os.path.isfile(root / slot)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slot=st.sampled_from(sorted(WRITERS)), state=st.sampled_from(STATES))
def test_no_write_changes_anything_specprobe_does_not_own(slot: str, state: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        user = user_area(root)
        store = a_run(root)
        path, write = WRITERS[slot]
        target = root / path
        if target.exists() or target.is_symlink():
            target.unlink()
        with place(target, state, user):
            check_only_owned_changed(root, path, state, lambda: write(ResultStore(store.directory), target))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.sampled_from([s for s in STATES if s not in ("absent", "file")]))
def test_figures_never_go_through_a_link_or_into_a_special_file(state: str) -> None:
    pytest.importorskip("matplotlib")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        user = user_area(root)
        store = a_run(root)
        with place(store.directory / "figures", state, user):
            check_only_owned_changed(root, "run/figures", state, lambda: figures(store), folder=True)


NOT_REGULAR = tuple(s for s in STATES if s not in ("absent", "file"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(PROTECTED_FILES), state=st.sampled_from(NOT_REGULAR))
def test_a_run_folder_whose_own_file_is_not_a_regular_file_is_refused_before_work(
    name: str, state: str
) -> None:
    """A run folder whose results.jsonl (config.json, marker, lock, set-aside file) is a
    FIFO, a folder, a socket or a link is refused by the check every writer makes before
    any work (``analyze --resume`` measured the model, appended to config.json and only
    then refused to write results.jsonl, with a hint to write ``results.jsonl/report.html``;
    a link at results.jsonl was read through)."""
    from specprobe.pipeline.writer import check_store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        user = user_area(root)
        store = a_run(root)
        (store.directory / name).unlink(missing_ok=True)
        with place(store.directory / name, state, user):
            before = tree(root)
            with pytest.raises(SpecprobeError) as err:
                check_run_folder(store.directory)
            assert name in err.value.message and "not a regular file" in err.value.message
            assert "\n" not in err.value.message and "move it away" in (err.value.hint or "")
            with pytest.raises(SpecprobeError):
                check_store(ResultStore(store.directory), resume=True)
            assert tree(root) == before


def test_resume_onto_a_fifo_results_file_measures_nothing(
    hub: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    from tests.cli.test_analyze import REPO, SMALL, analyze

    out = tmp_path / "run"
    first = analyze(REPO, "--revisions", "step1", "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert first.exit_code == 0, first.output
    (out / RESULTS_FILE).unlink()
    os.mkfifo(out / RESULTS_FILE)
    before = tree(tmp_path)
    again = analyze(
        REPO, "--revisions", "step1,step2", "--dataset", str(corpus), *SMALL, "--out", str(out), "--resume"
    )
    assert again.exit_code == 2 and "a FIFO (named pipe), not a regular file" in again.output, again.output
    assert "memory for" not in again.output  # refused before the model was loaded
    assert tree(tmp_path) == {k: v for k, v in before.items()}


INPUTS = ("hub-snapshot", "model-folder", "dataset")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(INPUTS),
    name=st.sampled_from(["tokenizer.json", "config.json", "report.html", "sub/report.csv", "."]),
    link=st.booleans(),
)
def test_no_write_into_an_input(where: str, name: str, link: bool) -> None:
    """Hub snapshots (anything under HF_HOME), model folders and the command's dataset are
    never written, reached directly or through a link of the user's."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        snapshot = Path(os.environ["HF_HOME"]) / "hub" / "models--org--m" / "snapshots" / "c0ffee"
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / "tokenizer.json").write_text("{}")
        model = root / "model"
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "gpt2"}')
        (model / "model.safetensors").write_bytes(b"weights")
        dataset = root / "corpus.txt"
        dataset.write_text("some text\n")
        base = {"hub-snapshot": snapshot, "model-folder": model, "dataset": dataset}[where]
        if link:
            (root / "link").symlink_to(base)
            base = root / "link"
        target = base if where == "dataset" or name == "." else base / name
        watched = snapshot.parent if where == "hub-snapshot" else root
        before = tree(watched)
        with pytest.raises(SpecprobeError) as err:
            atomic_write(target, "<html/>", what="--html", inputs=[dataset])
        assert (
            "would overwrite an input" in err.value.message
            or "never writes" in (err.value.hint or "")
            or ("expected a file name" in err.value.message)
        )
        with pytest.raises(SpecprobeError):
            check_output(target, "--html", inputs=[dataset])
        assert tree(watched) == before


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(["hub-snapshot", "hf-home", "model-folder"]),
    spelling=st.sampled_from(["direct", "link", "dotdot"]),
    writer=st.sampled_from(["check", "append", "probe"]),
)
def test_a_run_folder_inside_an_input_is_refused_and_nothing_is_made(
    where: str, spelling: str, writer: str
) -> None:
    """``analyze --out $HF_HOME/run`` (or a folder inside a model folder, or a ``Probe`` with
    such an ``out``) was refused only when the marker was written, after the lock had made
    the folder and written ``.specprobe.lock`` into the cache; a Probe kept its records
    pending for ever. The run folder's place is refused by the check every writer makes
    first, and nothing is made."""
    import specprobe

    hf_home = Path(os.environ["HF_HOME"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        snapshot = hf_home / "hub" / "models--EleutherAI--pythia-14m" / "snapshots" / "f33025"
        snapshot.mkdir(parents=True, exist_ok=True)
        model = root / "model"
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "gpt_neox"}')
        (model / "model.safetensors").write_bytes(b"weights")
        base = {"hub-snapshot": snapshot, "hf-home": hf_home, "model-folder": model}[where]
        if spelling == "link":
            (root / "link").symlink_to(base)
            base = root / "link"
        elif spelling == "dotdot":
            base = base / ".." / base.name
        run = base / "runs" / "mine"
        watched = [tree(hf_home), tree(root)]
        batch = (torch.ones(2, 3), torch.zeros(2, dtype=torch.long))
        try:
            with pytest.raises(SpecprobeError) as err:
                if writer == "check":
                    check_run_folder(run)
                elif writer == "append":
                    ResultStore(run).append(record("step1"))
                else:
                    specprobe.Probe(batch, probes=2, out=run)
            assert "never writes" in (err.value.hint or ""), err.value
            assert [tree(hf_home), tree(root)] == watched
        finally:  # what a failing run made must not spoil the next example
            for made in (hf_home / "runs", snapshot / "runs"):
                shutil.rmtree(made, ignore_errors=True)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spelling=st.sampled_from(["direct", "link", "dotdot", "nested"]),
    kind=st.sampled_from(["txt", "jsonl"]),
)
def test_a_run_folder_inside_the_dataset_is_refused_before_any_work(
    hub: dict[str, str], corpus: Path, spelling: str, kind: str
) -> None:
    """``analyze --dataset DS --out DS/run`` wrote its run folder into the dataset folder
    (``--html DS/report.html`` was refused): the next run on DS failed ("found json,
    text"), or, for a folder of .jsonl files, would have read results.jsonl as text."""
    from tests.cli.test_analyze import REPO, SMALL, analyze

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "texts"
        data.mkdir()
        lines = corpus.read_text().splitlines()
        if kind == "txt":
            (data / "a.txt").write_text("\n".join(lines) + "\n")
        else:
            (data / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
        out = {
            "direct": data / "run",
            "link": root / "link" / "run",
            "dotdot": data / ".." / data.name / "run",
            "nested": data / "runs" / "today",
        }[spelling]
        (root / "link").symlink_to(data)
        before = tree(root)
        result = analyze(REPO, "--revisions", "step1", "--dataset", str(data), *SMALL, "--out", str(out))
        assert result.exit_code == 2 and "would overwrite an input of this command" in result.output, (
            result.output
        )
        assert "memory for" not in result.output  # refused before the model was loaded
        assert tree(root) == before


# ---- the listed cases ------------------------------------------------------------------------


def test_html_onto_a_link_to_a_device_keeps_the_link(tmp_path: Path) -> None:
    """``report R --html /dev/stdout`` replaced the system's /dev/stdout link with a file."""
    store = a_run(tmp_path)
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/dev/null")
    result = runner.invoke(app, ["report", str(store.directory), "--html", str(stdout)])
    assert result.exit_code == 2 and "character device" in result.output, result.output
    assert stdout.is_symlink() and os.readlink(stdout) == "/dev/null"


@pytest.mark.parametrize("kind", ["fifo", "socket", "folder"])
def test_csv_onto_a_special_file_is_refused(tmp_path: Path, kind: str) -> None:
    store = a_run(tmp_path)
    target = tmp_path / "out.csv"
    with place(target, kind, user_area(tmp_path)):
        result = runner.invoke(app, ["report", str(store.directory), "--csv", str(target)])
        assert result.exit_code == 2 and "expected a file name for --csv" in result.output, result.output
        assert os.lstat(target).st_mode == os.lstat(target).st_mode and not target.is_file()


def test_dash_is_standard_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--csv -`` wrote a file named ``-``; now the CSV goes to standard output alone."""
    store = a_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["report", str(store.directory), "--csv", "-"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "-").exists()
    lines = result.stdout.splitlines()
    assert lines[0].startswith("model,") and "step1" in lines[1] and len(lines) == 2
    html = runner.invoke(app, ["report", str(store.directory), "--html", "-"])
    assert html.exit_code == 0 and html.stdout.lstrip().startswith("<!DOCTYPE html>"), html.stdout[:200]
    both = runner.invoke(app, ["report", str(store.directory), "--html", "-", "--csv", "-"])
    assert both.exit_code == 2 and "at most one output on standard output" in both.output


@pytest.mark.parametrize("option", ["--html", "--csv"])
def test_dash_with_standard_output_closed_is_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    """``report R --csv - >&-`` (standard output closed) ended in an AttributeError
    traceback (``sys.stdout`` is None), exit 1; ``--html -`` too, after the work."""
    store = a_run(tmp_path)
    monkeypatch.setattr("sys.stdout", None)
    with pytest.raises(SpecprobeError) as err:
        check_output("-", option)
    assert "standard output is closed" in err.value.message and option in err.value.message
    with pytest.raises(SpecprobeError):
        atomic_write("-", "model\n", what=option, stdout=True)
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "specprobe", "report", str(store.directory), option, "-"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),  # the child starts with standard output closed
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr


@settings(max_examples=30, deadline=None)
@given(
    base=st.sampled_from([RESULTS_FILE, CONFIG_FILE, MARKER_FILE]),
    middle=st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8),
    option=st.sampled_from(["--html", "--csv"]),
)
def test_no_output_takes_a_name_the_store_removes(base: str, middle: str, option: str) -> None:
    """``report R --html R/.results.jsonl.mine.tmp`` was written (exit 0), and the next
    ``analyze --out R --resume`` removed it as a killed writer's temporary file: the
    output was lost, silently. Such a name is refused like the store's own files."""
    with tempfile.TemporaryDirectory() as tmp:
        store = a_run(Path(tmp))
        target = store.directory / f".{base}.{middle}.tmp"
        before = tree(Path(tmp))
        with pytest.raises(SpecprobeError) as err:
            check_output(target, option, runs=[store.directory])
        assert "run folder" in err.value.message
        with pytest.raises(SpecprobeError):
            atomic_write(target, "<html/>", what=option)
        assert tree(Path(tmp)) == before


def test_a_link_at_the_lock_is_never_written_through(tmp_path: Path) -> None:
    """A link at RUN/.specprobe.lock: the lock was written into the file it points at."""
    store = a_run(tmp_path)
    precious = tmp_path / "precious.txt"
    precious.write_text("mine\n")
    (store.directory / LOCK_FILE).unlink()
    (store.directory / LOCK_FILE).symlink_to(precious)
    with pytest.raises(SpecprobeError) as err:
        store.append(record("step2"))
    assert "lock file" in err.value.message and "symbolic link" in err.value.message
    assert precious.read_text() == "mine\n"
    assert [r["revision"] for r in store.records()] == ["step1"]


def test_plot_never_follows_a_figures_link(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    store = a_run(tmp_path)
    store.append(record("step2", num_params=2000, chi_net=5.0))
    user = user_area(tmp_path)
    (store.directory / "figures").symlink_to(user / "folder")
    before = tree(user)
    result = runner.invoke(app, ["plot", str(store.directory)])
    assert result.exit_code == 2 and "symbolic link inside the run folder" in result.output, result.output
    assert tree(user) == before


def test_html_into_a_hub_snapshot_is_refused(tmp_path: Path) -> None:
    store = a_run(tmp_path)
    snapshot = Path(os.environ["HF_HOME"]) / "hub" / "models--EleutherAI--pythia-70m" / "snapshots" / "a1b2"
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "tokenizer.json").write_text('{"version": "1.0"}')
    result = runner.invoke(app, ["report", str(store.directory), "--html", str(snapshot / "tokenizer.json")])
    assert result.exit_code == 2 and "inside the Hugging Face cache" in result.output, result.output
    assert (snapshot / "tokenizer.json").read_text() == '{"version": "1.0"}'


def test_demo_refuses_a_folder_it_did_not_make_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    (out / "data" / "train.txt").write_text("my own corpus\n")
    (out / "tokenizer").mkdir()
    (out / "tokenizer" / "tokenizer.json").write_text("{}")
    before = tree(out)
    result = runner.invoke(app, ["demo", "--fast", "--out", str(out), "--no-plots"])
    assert result.exit_code == 2 and "not a folder the demo made" in result.output, result.output
    assert tree(out) == before


def test_demo_checks_its_run_folder_before_training(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    (out / "run").mkdir(parents=True)
    (out / "demo.json").write_text("{}")  # an earlier demo's folder
    (out / "run" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["demo", "--fast", "--out", str(out), "--no-plots"])
    assert result.exit_code == 2 and "not a specprobe run folder" in result.output, result.output
    assert not (out / "family").exists() and not (out / "data").exists()
