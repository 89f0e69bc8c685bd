"""The same thing counted once (issue 29, section 3): one identity for a local model
however it is spelled, a model listed twice measured once, duplicates only when weights and
config agree, and a default run folder per run even within one second. Each listed case
failed before the fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from specprobe.models.fingerprint import fingerprint_checkpoint
from specprobe.models.tiny import tiny_causal_lm
from specprobe.pipeline.plan import model_identity
from specprobe.pipeline.sweep import default_out_dir
from specprobe.store.results import ResultStore
from tests.cli import test_analyze
from tests.cli.test_analyze import SMALL, analyze
from tests.hubcache import add_revision

runner = CliRunner()
hub, corpus, tokenizer = test_analyze.hub, test_analyze.corpus, test_analyze.tokenizer


@settings(max_examples=40, deadline=None)
@given(
    parts=st.lists(st.sampled_from(["./", "", "x/../", "./x/.././"]), min_size=3, max_size=3),
    slash=st.booleans(),
    absolute=st.booleans(),
    link=st.booleans(),
)
def test_every_spelling_of_a_local_folder_is_one_model(
    parts: list[str], slash: bool, absolute: bool, link: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("spell")
    (root / "loc" / "run").mkdir(parents=True)
    (root / "x").mkdir()
    if link:
        (root / "alias").symlink_to(root / "loc")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        spelled = f"{parts[0]}{'alias' if link else 'loc'}/{parts[1]}run" + ("/" if slash else "")
        if absolute:
            spelled = str(root / spelled)
        assert model_identity(spelled) == model_identity("loc/run") == os.path.join("loc", "run")
    finally:
        os.chdir(cwd)
    assert model_identity(str(root / "loc" / "run")) == str(
        root.resolve() / "loc" / "run"
    )  # elsewhere: absolute


@pytest.fixture
def local_model(tmp_path: Path, tokenizer: Any) -> Path:
    folder = tmp_path / "loc" / "run"
    tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), hidden_size=16, max_positions=64).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return folder


def test_three_spellings_of_one_folder_are_measured_once(
    local_model: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``loc/run/``, ``./loc/run`` and ``$PWD/loc/run`` were three models (three records,
    "3 measured", compared in the verdict)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    spellings = ["loc/run/", "./loc/run", str(tmp_path / "loc" / "run")]
    done = analyze(*spellings, "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert done.exit_code == 0, done.output
    assert "1 measured, 0 resumed, 0 failed" in done.output
    assert [r["model"] for r in ResultStore(out).records()] == [os.path.join("loc", "run")]
    again = analyze("./loc/run/", "--dataset", str(corpus), *SMALL, "--out", str(out), "--resume")
    assert again.exit_code == 0 and "0 measured, 1 resumed" in again.output, again.output


def test_a_local_model_resumed_from_another_directory_is_measured_once(
    local_model: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed from another working directory, one local folder was measured again under
    another name (``loc/run``, ``/tmp/…/loc/run``, ``../loc/run``: three records); it is
    found by its absolute path (``model_path``) now."""
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    first = analyze("loc/run", "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert first.exit_code == 0, first.output
    for cwd, spelled in (("/", str(local_model)), (str(out), "../loc/run"), (str(local_model), ".")):
        monkeypatch.chdir(cwd)
        again = analyze(spelled, "--dataset", str(corpus), *SMALL, "--out", str(out), "--resume")
        assert again.exit_code == 0 and "0 measured, 1 resumed" in again.output, (cwd, again.output)
    records = ResultStore(out).records()
    assert len(records) == 1 and records[0]["model_path"] == os.path.realpath(local_model)


def test_a_revision_listed_twice_is_measured_once(hub: dict[str, str], corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = analyze(
        test_analyze.REPO, "--revisions", "step1,step1", "--dataset", str(corpus), *SMALL, "--out", str(out)
    )
    assert done.exit_code == 0, done.output
    assert "1 measured" in done.output and len(ResultStore(out).records()) == 1


@settings(max_examples=16, deadline=None)
@given(
    seeds=st.tuples(st.integers(0, 1), st.integers(0, 1)),
    eps=st.tuples(st.sampled_from([1e-5, 1e-2]), st.sampled_from([1e-5, 1e-2])),
)
def test_fingerprints_agree_only_when_weights_and_config_agree(
    seeds: tuple[int, int], eps: tuple[float, float]
) -> None:
    models = []
    for seed, e in zip(seeds, eps, strict=True):
        model = tiny_causal_lm("gpt_neox", vocab_size=32, hidden_size=16, seed=seed)
        model.config.layer_norm_eps = e
        model.config._name_or_path = f"saved/elsewhere-{seed}-{e}"  # bookkeeping: not the function
        models.append(model)
    same = seeds[0] == seeds[1] and eps[0] == eps[1]
    assert (fingerprint_checkpoint(models[0]) == fingerprint_checkpoint(models[1])) == same


def test_same_weights_with_another_config_are_not_a_duplicate(
    corpus: Path, tmp_path: Path, tokenizer: Any
) -> None:
    """The same weights with another norm epsilon (other numbers) were flagged as the
    published revision serving the wrong checkpoint, and left out of the plots."""
    repo = "EleutherAI/pythia-14m-eps"
    for revision, eps in (("step1", 1e-5), ("step2", 1e-5), ("step3", 0.5)):
        model = tiny_causal_lm(
            "gpt_neox", vocab_size=len(tokenizer), hidden_size=16, seed=0, max_positions=64
        )
        model.config.layer_norm_eps = eps
        for module in model.modules():
            if hasattr(module, "eps"):
                module.eps = eps
        add_revision(repo, revision, model, tokenizer)
    out = tmp_path / "out"
    done = analyze(
        repo, "--revisions", "step1,step2,step3", "--dataset", str(corpus), *SMALL, "--out", str(out)
    )
    assert done.exit_code == 0, done.output
    records = {r["revision"]: r for r in ResultStore(out).records()}
    assert records["step2"]["duplicate_of"] == "step1"  # same weights, same config
    assert records["step3"]["duplicate_of"] is None  # same weights, another function
    assert records["step3"]["chi_net"] != records["step1"]["chi_net"]


def test_default_run_folders_differ_within_one_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs without --out in one second shared a folder; the second was refused and
    told to --resume (which would have merged unrelated runs)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    folders = [default_out_dir() for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() for f in folders)
    assert all(f.resolve().parent == tmp_path.resolve() / "specprobe-runs" for f in folders)


def test_a_refused_run_leaves_no_default_folder(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = analyze(str(tmp_path / "nothing-here/"), "--dataset", str(corpus), *SMALL)
    assert done.exit_code == 2, done.output
    assert not (tmp_path / "specprobe-runs").exists() or not any((tmp_path / "specprobe-runs").iterdir())


@settings(max_examples=6, deadline=None)
@given(
    listed=st.lists(st.sampled_from(["step1", "c:step1", "step2", "c:step2"]), min_size=2, max_size=4).filter(
        lambda names: len({n.removeprefix("c:") for n in names}) < len(names)
    )
)
def test_a_revision_and_its_commit_are_one_checkpoint(
    hub: dict[str, str], corpus: Path, listed: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``--revisions step1,<step1's commit>`` measured step1 twice ("2 measured") and the
    report said the commit "has the same weights as step1: the published revision likely
    serves the wrong checkpoint". A checkpoint is its commit, however it is named: listed
    twice, it is measured once, under the name listed first."""
    out = tmp_path_factory.mktemp("commits") / "run"
    revisions = [hub[n[2:]] if n.startswith("c:") else n for n in listed]
    done = analyze(
        test_analyze.REPO,
        "--revisions",
        ",".join(revisions),
        "--dataset",
        str(corpus),
        *SMALL,
        "--out",
        str(out),
    )
    assert done.exit_code == 0, done.output
    commits = list(dict.fromkeys(hub[n.removeprefix("c:")] for n in listed))
    records = ResultStore(out).records()
    assert [r["commit"] for r in records] == commits
    assert [r["revision"] for r in records] == [
        next(rev for rev, n in zip(revisions, listed, strict=True) if hub[n.removeprefix("c:")] == c)
        for c in commits
    ]
    assert f"{len(commits)} measured, 0 resumed, 0 failed" in done.output
    assert all(r["duplicate_of"] is None for r in records)
