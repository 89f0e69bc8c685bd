"""Recipes: schema, includes, generators, validation, and a local recipe run end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.recipes.recipe import (
    RecipeError,
    bundled_recipes,
    check_recipe,
    expand_revisions,
    load_recipe,
    log_spaced,
    pythia_schedule,
)
from specprobe.store.results import ResultStore
from tests.hubcache import corpus_lines, make_tokenizer

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MINIMAL = """\
version: 1
family: {name: tiny}
models: [{id: org/model}]
"""


@pytest.mark.parametrize("name", sorted(bundled_recipes()))
def test_bundled_recipes_validate_offline(name: str, tmp_path: Path, tiny_family: Path) -> None:
    variables = {"root": str(tiny_family)} if name == "tiny-local" else None
    recipe = load_recipe(name, variables=variables)
    assert recipe.family.description, "each bundled recipe says what it costs"
    assert check_recipe(recipe) == []
    assert recipe.to_plan().models


def test_pythia_schedule_and_log_spacing() -> None:
    schedule = pythia_schedule()
    assert len(schedule) == 154
    assert schedule[:12] == [
        "step0",
        "step1",
        "step2",
        "step4",
        "step8",
        "step16",
        "step32",
        "step64",
        "step128",
        "step256",
        "step512",
        "step1000",
    ]
    assert schedule[-1] == "step143000"
    picks = log_spaced(schedule, 12)
    assert len(picks) == 12 and picks[0] == "step0" and picks[-1] == "step143000"
    assert picks == sorted(picks, key=schedule.index)
    steps = [int(p[4:]) for p in picks[1:]]
    ratios = [b / a for a, b in itertools.pairwise(steps)]
    assert max(ratios) / min(ratios) < 4  # roughly geometric


def test_revision_generators() -> None:
    assert expand_revisions({"every": {"n": 10, "start": 0, "stop": 30}}, "f", "r") == (
        "step0",
        "step10",
        "step20",
        "step30",
    )
    assert expand_revisions({"every": {"n": 5, "stop": 10, "prefix": "checkpoint-"}}, "f", "r") == (
        "checkpoint-5",
        "checkpoint-10",
    )
    assert expand_revisions(["a", 3], "f", "r") == ("a", "3")
    assert expand_revisions({"schedule": "pythia"}, "f", "r") == tuple(pythia_schedule())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "dtaa: {}\n", "top level: unknown key 'dtaa'; did you mean 'data'?"),
        (MINIMAL + "data: {seq_len: long}\n", "data.seq_len: expected int, found str 'long'"),
        (
            MINIMAL + "probe: {estimator: hutchinsn}\n",
            "probe.estimator: unknown value 'hutchinsn'; did you mean 'hutchinson'?",
        ),
        (MINIMAL + "probe: {probs: 3}\n", "probe: unknown key 'probs'; did you mean 'probes'?"),
        ("version: 1\nfamily: {name: x}\nmodels: []\n", "models: expected a non-empty list of models"),
        (
            MINIMAL + "revisions: {lgo: {points: 3}}\n",
            "revisions: unknown revision generator 'lgo'; did you mean 'log'?",
        ),
        (MINIMAL + "revisions: {log: {points: 1}}\n", "revisions.log.points: expected an integer >= 2"),
        (
            MINIMAL + "revisions: {log: {points: 5, schedule: pythai}}\n",
            "unknown schedule 'pythai'; did you mean 'pythia'?",
        ),
        ("version: 2\nfamily: {name: x}\nmodels: [{id: a}]\n", "version: expected 1, found 2"),
        ("family: {name: x}\nmodels: [{id: a}]\n", "version: expected 1, found None"),
        ("version: 1\nmodels: [{id: a}]\n", "family: expected a mapping, found None"),
        ("version: 1\nfamily: {description: x}\nmodels: [{id: a}]\n", "family: missing required key 'name'"),
        (
            MINIMAL + "output: {directory: '${rot}/x'}\nvariables: {root: r}\n",
            "undefined variable ${rot}; did you mean 'root'?",
        ),
        ("version: 1\nfamily: {name: x}\nmodels: [{id: a}, {id: a}]\n", "label 'a' appears twice"),
        ("version: 1\n  bad: [indent\n", "not valid YAML"),
    ],
)
def test_bad_recipes(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert message in str(err.value)
    assert str(path) in err.value.message  # the error names the file
    assert err.value.hint


def test_include_merges_and_detects_cycles(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", MINIMAL + "data: {seq_len: 64, batch_size: 4, num_sequences: 8}\n")
    child = write(
        tmp_path / "child.yaml",
        "version: 1\ninclude: base.yaml\nfamily: {name: child}\ndata: {seq_len: 32}\n",
    )
    recipe = load_recipe(child)
    assert recipe.family.name == "child"
    assert (recipe.data.seq_len, recipe.data.batch_size) == (32, 4)
    assert recipe.models[0].id == "org/model"
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(RecipeError, match=r"include cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_recipe(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "include: missing.yaml\n")
    with pytest.raises(RecipeError, match=r"recipe 'missing\.yaml' not found"):
        load_recipe(tmp_path / "c.yaml")


def test_bundled_include_by_name(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mine.yaml",
        "version: 1\ninclude: pythia\nmodels: [{id: EleutherAI/pythia-70m}]\n"
        "revisions: [step1000, step143000]\n",
    )
    recipe = load_recipe(path)
    assert recipe.family.tokens_per_step == 2097152
    assert recipe.model_revisions(recipe.models[0]) == ("step1000", "step143000")


def test_validate_reports_revision_names_and_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml",
        "version: 1\ninclude: pythia\nmodels: [{id: EleutherAI/pythia-70m},"
        f" {{id: {tmp_path}/nowhere}}]\nrevisions: [step1001]\n",
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "revision 'step1001' is not in the pythia schedule; did you mean 'step1000'?" in result.output
    assert "models[1].id" in result.output and "does not exist" in result.output


def test_unknown_recipe_name() -> None:
    result = runner.invoke(app, ["run", "pythai"])
    assert result.exit_code == 2
    assert "did you mean 'pythia'?" in result.output


def test_recipes_command_lists_bundled() -> None:
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0
    for name in bundled_recipes():
        assert name in result.output


# ---- a local recipe, end to end -------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo-like folder: family/<name>/checkpoint-<step>/ and corpora, with the folder
    names of the demo (so the bundled tiny-local recipe validates on it) and two more."""
    from specprobe.models.tiny import tiny_causal_lm

    root = tmp_path_factory.mktemp("tiny-family")
    tokenizer: Any = make_tokenizer()
    names = [("small", 8), ("large", 16)] + [(f"neox-w{w}", 8) for w in (16, 32, 64, 128)]
    for name, width in names:
        run = root / "family" / name
        for step in (1, 10):
            model = tiny_causal_lm(
                "gpt_neox", vocab_size=len(tokenizer), hidden_size=width, seed=step, max_positions=64
            )
            model.save_pretrained(run / f"checkpoint-{step}")
        tokenizer.save_pretrained(run)
        (run / "specprobe.json").write_text('{"tokens_per_step": 512}')
    (root / "corpus.txt").write_text("\n".join(corpus_lines(200)))
    (root / "data").mkdir()
    (root / "data" / "eval.txt").write_text("\n".join(corpus_lines(200)))
    return root


def test_local_recipe_runs_and_resumes(tiny_family: Path, tmp_path: Path) -> None:
    recipe = write(
        tmp_path / "local.yaml",
        f"""version: 1
variables: {{root: {tiny_family}}}
family: {{name: tiny, description: two tiny sizes}}
models:
  - {{id: "${{root}}/family/small", label: small}}
  - {{id: "${{root}}/family/large", label: large}}
data: {{dataset: "${{root}}/corpus.txt", num_sequences: 4, seq_len: 16, batch_size: 2}}
probe: {{probes: 4}}
output: {{directory: {tmp_path / "out"}}}
""",
    )
    assert runner.invoke(app, ["validate", str(recipe)]).exit_code == 0
    first = runner.invoke(app, ["run", str(recipe), "--only", "small"])
    assert first.exit_code == 0, first.output
    assert "2 measured, 0 resumed" in first.output
    second = runner.invoke(app, ["run", str(recipe)])
    assert second.exit_code == 0, second.output
    assert "2 measured, 2 resumed, 0 failed" in second.output
    records = ResultStore(tmp_path / "out").records()
    assert [(r["label"], r["revision"]) for r in records] == [
        ("small", "checkpoint-1"),
        ("small", "checkpoint-10"),
        ("large", "checkpoint-1"),
        ("large", "checkpoint-10"),
    ]
    assert records[1]["tokens_seen"] == 5120
    invocations = json.loads((tmp_path / "out" / "config.json").read_text())["invocations"]
    effective = invocations[0]["invocation"]["recipe"]
    assert [m["label"] for m in effective["models"]] == ["small"]
    assert effective["data"]["seq_len"] == 16
    overridden = runner.invoke(
        app,
        [
            "run",
            str(recipe),
            "--only",
            "large",
            "--revisions",
            "checkpoint-10",
            "--num-sequences",
            "2",
            "--out",
            str(tmp_path / "out2"),
        ],
    )
    assert overridden.exit_code == 0, overridden.output
    (only,) = ResultStore(tmp_path / "out2").records()
    assert (only["label"], only["revision"], only["settings"]["data"]["num_sequences"]) == (
        "large",
        "checkpoint-10",
        2,
    )


def test_set_unknown_variable(tiny_family: Path, tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", MINIMAL + "variables: {root: x}\n")
    result = runner.invoke(app, ["validate", str(recipe), "--set", "rot=y"])
    assert result.exit_code == 2
    assert "declares no variable 'rot'; did you mean 'root'?" in result.output


def test_probe_fields_reach_the_plan(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml", MINIMAL + "probe: {eigen: 5, density: true, exact: false, groups: auto}\n"
    )
    probe = load_recipe(path).to_plan().probe
    assert (probe.eigen, probe.density, probe.exact, probe.groups) == (5, True, False, "auto")
    bad = write(tmp_path / "b.yaml", MINIMAL + "probe: {eigen: many}\n")
    with pytest.raises(RecipeError, match=r"probe\.eigen: expected int"):
        load_recipe(bad)


def test_tiny_local_reproduces_the_demo_analysis() -> None:
    from specprobe.demo.config import DemoConfig

    recipe, config = load_recipe("tiny-local"), DemoConfig()
    assert [m.label for m in recipe.models] == list(config.model_names())
    assert set(DemoConfig.fast().model_names()) <= {m.label for m in recipe.models}
    data = recipe.data
    assert (data.num_sequences, data.seq_len, data.batch_size, data.seed, recipe.probe.probes) == (
        config.eval_sequences,
        config.eval_seq_len,
        config.eval_batch_size,
        config.seed,
        config.probes,
    )


# ---- paths relative to the recipe file, validate as run would fail ----------------------------


def test_relative_paths_are_the_recipe_files(
    tiny_family: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe means the same files from whatever folder it is run: its relative local
    paths (models, data, output) are relative to its own folder; hub ids stay hub ids."""
    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "small").symlink_to(tiny_family / "family" / "small")
    (folder / "eval.txt").write_text((tiny_family / "corpus.txt").read_text())
    recipe = write(
        folder / "r.yaml",
        "version: 1\nfamily: {name: x}\n"
        "models: [{id: models/small, label: small}, {id: ./models/small, label: dotted}, "
        "{id: EleutherAI/pythia-1.4b, label: hub}]\n"
        "data: {dataset: eval.txt, num_sequences: 4, seq_len: 16}\noutput: {directory: runs/here}\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_recipe(recipe)
    assert [m.id for m in loaded.models] == [
        str(folder / "models/small"),
        str(folder / "./models/small"),
        "EleutherAI/pythia-1.4b",
    ]
    assert loaded.data.dataset == str(folder / "eval.txt")
    assert loaded.output.directory == str(folder / "runs/here")
    assert check_recipe(loaded) == []
    # a bundled recipe's ${root} stays the working directory's (the demo's --out)
    assert load_recipe("tiny-local").models[0].id == "specprobe-demo/family/neox-w16"


def test_validate_fails_where_run_would_on_a_missing_local_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`validate tiny-local` before `specprobe demo` has trained the family (its default
    root, ./specprobe-demo, is missing): not ok (run would fail on the first model), naming
    each missing folder and the data file."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "tiny-local"])
    assert result.exit_code == 2, result.output
    text = result.output.replace("\n", "")
    for width in (16, 32, 64, 128):
        assert f"models[{[16, 32, 64, 128].index(width)}].id" in text
    assert "does not exist" in text and "data.dataset" in text


def test_run_overrides_the_dataset(tiny_family: Path, tmp_path: Path) -> None:
    recipe = write(
        tmp_path / "r.yaml",
        f"version: 1\nfamily: {{name: x}}\nmodels: [{{id: {tiny_family}/family/small, label: small}}]\n"
        f"data: {{dataset: {tmp_path}/missing.txt, num_sequences: 4, seq_len: 16}}\n"
        f"probe: {{probes: 2}}\noutput: {{directory: {tmp_path / 'out'}}}\n",
    )
    result = runner.invoke(
        app,
        ["run", str(recipe), "--dataset", str(tiny_family / "corpus.txt"), "--text-column", "text", "--json"],
    )
    assert result.exit_code == 0, result.output
    records = ResultStore(tmp_path / "out").records()
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert records[0]["settings"]["data"]["dataset"] == str(tiny_family / "corpus.txt")
