"""Fuzz: random recipes and command lines from the valid grammar, one field corrupted at a
time. Whatever the corruption, the exit code is 0 or 2 (never a traceback), and no file
outside the run folder changes.

Bounded: a fixed number of cases (``SPECPROBE_FUZZ_CASES``, default 48) within a time
budget (``SPECPROBE_FUZZ_SECONDS``, default 40), from ``SPECPROBE_FUZZ_SEED`` (default 0).
A failure prints the case, so it can be replayed.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.models.tiny import tiny_causal_lm
from tests.cli import test_analyze
from tests.cli.test_analyze import REPO

runner = CliRunner()
hub, corpus, tokenizer = test_analyze.hub, test_analyze.corpus, test_analyze.tokenizer

SEED = int(os.environ.get("SPECPROBE_FUZZ_SEED", "0"))
CASES = int(os.environ.get("SPECPROBE_FUZZ_CASES", "48"))
BUDGET_S = float(os.environ.get("SPECPROBE_FUZZ_SECONDS", "40"))

HOSTILE: list[Any] = [
    -1,
    0,
    1,
    -(10**12),
    10**20,
    1.5,
    float("nan"),
    True,
    None,
    "",
    " ",
    "x",
    "-3",
    "../victim",
    "/",
    "${nope}",
    "step1@x",
    "org/",
    "*",
    "a" * 300,
    [],
    [1, [2, [3]]],
    {},
    {"a": {"b": "c"}},
    "[bold]x[/",
    "[red]r[/red]",
    "$\\frac{a}{$",
    "a\u2028b",
    "x\ry\x85z",
    "=1+2",
    [""],
]
"""Values put in place of one field: wrong types, out of range, paths outside the run,
names that are Rich markup, TeX or hold line breaks, empty lists, and sizes that would run
for hours if they were not refused."""


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, hub: dict[str, str], corpus: Path, tokenizer: Any
) -> Path:
    """A working folder with a local training run (checkpoint-1, checkpoint-2), the corpus,
    and a 'victim' model folder that nothing may touch."""
    root = tmp_path_factory.mktemp("fuzz")
    for step in (1, 2):
        model = tiny_causal_lm(
            "gpt_neox", vocab_size=len(tokenizer), hidden_size=8, seed=step, max_positions=64
        )
        model.save_pretrained(root / "train" / f"checkpoint-{step}")
    tokenizer.save_pretrained(root / "train")
    tiny_causal_lm("gpt_neox", vocab_size=len(tokenizer), hidden_size=8, max_positions=64).save_pretrained(
        root / "victim"
    )
    (root / "corpus.txt").write_text(corpus.read_text())
    (root / "cwd").mkdir()
    return root


def _valid_recipe(rng: random.Random, root: Path, out: Path) -> dict[str, Any]:
    local = {"id": str(root / "train"), "label": "local"}
    remote = {"id": REPO, "label": "hub", "revisions": rng.choice([["step1"], ["step1", "step2"]])}
    recipe: dict[str, Any] = {
        "version": 1,
        "family": {"name": "fuzz", "description": "fuzzed", "tokens_per_step": rng.choice([None, 512])},
        "models": rng.choice([[local], [remote], [local, remote]]),
        "data": {
            "dataset": str(root / "corpus.txt"),
            "num_sequences": 2,
            "seq_len": rng.choice([6, 8]),
            "batch_size": rng.choice([1, 2]),
            "seed": rng.choice([0, 3]),
        },
        "probe": {
            "estimator": rng.choice(["hutchinson", "exact"]),
            "probes": rng.choice([2, 4]),
            "micro_batch_size": rng.choice([None, 1]),
            "groups": rng.choice([None, "auto"]),
            "dtype": "float32",
            "device": "cpu",
        },
        "output": {"directory": str(out), "resume": rng.choice([True, False])},
    }
    if rng.random() < 0.3:
        recipe["variables"] = {"root": str(root)}
        recipe["data"]["dataset"] = "${root}/corpus.txt"
    return recipe


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of a nested recipe (mappings and lists), inner and leaf."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


def _corrupt_recipe(rng: random.Random, recipe: dict[str, Any]) -> tuple[str, str]:
    """One field replaced, removed or added; or the YAML text itself damaged."""
    path = rng.choice(list(_paths(recipe)))
    *parents, last = path
    node = recipe
    for key in parents:
        node = node[key]
    action = rng.random()
    if action < 0.7:
        node[last] = copy.deepcopy(rng.choice(HOSTILE))
        what = f"{'.'.join(map(str, path))} = {node[last]!r}"
    elif action < 0.85 and isinstance(node, dict):
        del node[last]
        what = f"removed {'.'.join(map(str, path))}"
    elif isinstance(node, dict):
        node["unknwon"] = 1
        what = f"added {'.'.join(map(str, parents))}.unknwon"
    else:
        node.append(copy.deepcopy(rng.choice(HOSTILE)))
        what = f"appended to {'.'.join(map(str, parents))}"
    text = yaml.safe_dump(recipe, sort_keys=False)
    if rng.random() < 0.1:
        text = "x: &x [1, 2]\ny: *x\n" + text
        what += "; an alias"
    if rng.random() < 0.05:
        text = text[: rng.randrange(len(text))]
        what += "; truncated"
    return text, what


ANALYZE_OPTIONS = {
    "--revisions": ["step1", "step1,step2"],
    "--num-sequences": ["2"],
    "--seq-len": ["6", "8"],
    "--batch-size": ["1", "2"],
    "--seed": ["0", "5"],
    "--estimator": ["hutchinson", "exact"],
    "--probes": ["2", "3"],
    "--micro-batch-size": ["1", "2"],
    "--groups": ["auto", "attention=*.attention.*"],
    "--tokens-per-step": ["100"],
    "--params": ["*", "embed_out.*"],
}
HOSTILE_ARGS = [
    "-1",
    "0",
    "",
    " ",
    "abc",
    "1.5",
    "99999999999999999999",
    "../victim",
    "step1@x",
    ",,",
    ",,,",
    "=",
    "*",
    "[bold]",
    "$x^$",
    "a\u2028b",
]


def _corrupt_command(rng: random.Random, root: Path, out: Path) -> tuple[list[str], str]:
    chosen = rng.sample(sorted(ANALYZE_OPTIONS), k=rng.randint(2, 5))
    args = {"MODEL": rng.choice([REPO, str(root / "train")])}
    for name in chosen:
        args[name] = rng.choice(ANALYZE_OPTIONS[name])
    if args["MODEL"] != REPO:
        args.pop("--revisions", None)
    if args.get("--params") == "embed_out.*" or args.get("--groups", "").startswith("attention"):
        args.pop("--params", None)
    args["--dataset"] = str(root / "corpus.txt")
    args["--out"] = str(out)
    target = rng.choice([*args, "--resume"])
    value = rng.choice([*HOSTILE_ARGS, str(root / "victim"), str(root / "corpus.txt")])
    if target == "--resume":
        what = "--resume"
    else:
        args[target] = value
        what = f"{target} {value!r}"
    if rng.random() < 0.2:  # an output that points into the run folder, or at an input
        html = rng.choice(
            [out / "results.jsonl", out / "config.json", root / "corpus.txt", out / "report.html"]
        )
        args["--html"] = str(html)
        what += f"; --html {html}"
    command = ["analyze", args.pop("MODEL")]
    for name, item in args.items():
        command += [name, item]
    if target == "--resume":
        command.append("--resume")
    return command, what


def _overwrites(command: list[str], out: Path, root: Path) -> bool:
    """Whether the command's --html would replace the run's own files or the corpus."""
    if "--html" not in command:
        return False
    html = Path(command[command.index("--html") + 1])
    return html in (out / "results.jsonl", out / "config.json", root / "corpus.txt")


def _resume_with_other_settings(world: Path, command: list[str], out: Path, where: str) -> None:
    """After a run that wrote records: ``--resume`` with one setting that changes the
    numbers changed is refused, and the run folder is left as it was."""
    changed = []
    for i, arg in enumerate(command):  # the same command without --resume and --html
        if arg != "--resume" and arg != "--html" and (i == 0 or command[i - 1] != "--html"):
            changed.append(arg)
    if "--probes" in changed:
        i = changed.index("--probes") + 1
        changed[i] = "7" if changed[i] != "7" else "5"
    else:
        changed += ["--probes", "7"]
    before = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file() and ".lock" not in p.name}
    result = runner.invoke(app, [*changed, "--resume"])
    assert result.exit_code == 2 and "other settings" in result.output, f"{where} (resumed)\n{result.output}"
    after = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file() and ".lock" not in p.name}
    assert after == before, f"{where}: the resume with other settings changed the run folder"


def _is_new(path: Path) -> bool:
    try:
        return not path.exists()
    except OSError:  # a name too long to exist
        return False


def _snapshot(root: Path, out: Path) -> dict[str, tuple[int, int]]:
    cwd_runs = root / "cwd" / "specprobe-runs"
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and out not in p.parents and cwd_runs not in p.parents
    }


def test_fuzzed_recipes_and_command_lines(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(world / "cwd")  # a run without a folder goes to ./specprobe-runs here
    rng = random.Random(SEED)
    start = time.monotonic()
    seen: dict[int, int] = {}
    for case in range(CASES):
        if time.monotonic() - start > BUDGET_S:
            break
        out = world / "runs" / f"case{case}"
        given: Any = out
        if rng.random() < 0.5:
            valid = _valid_recipe(rng, world, out)
            text, what = _corrupt_recipe(rng, valid)
            recipe = world / "recipes" / f"case{case}.yaml"
            recipe.parent.mkdir(exist_ok=True)
            recipe.write_text(text)
            command = [rng.choice(["validate", "validate", "run"]), str(recipe)]
            output = valid.get("output")
            given = output.get("directory") if isinstance(output, dict) else None
        else:
            command, what = _corrupt_command(rng, world, out)
            given = command[command.index("--out") + 1] if "--out" in command else None
        if isinstance(given, int | float) and not isinstance(given, bool):
            given = str(given)  # recipes read names that look like numbers as names
        # The run folder is the one asked for, when it is new; an existing one must not change.
        if isinstance(given, str) and given and _is_new(world / "cwd" / given):
            out = (world / "cwd" / given).resolve()
        before = _snapshot(world, out)
        result = runner.invoke(app, command)
        where = f"case {case} (seed {SEED}): {what}: specprobe {' '.join(command)}"
        assert result.exit_code in (0, 2), f"{where}\nexit {result.exit_code}\n{result.output}"
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{where}\n{result.exception!r}"
        )
        assert "Traceback" not in result.output, f"{where}\n{result.output}"
        if result.exit_code == 2:
            assert "error" in result.output.lower(), f"{where}\n{result.output}"
        assert _snapshot(world, out) == before, f"{where}: a file outside the run folder changed"
        if command[0] == "analyze" and _overwrites(command, out, world):
            assert result.exit_code == 2 and "would overwrite" in result.output, f"{where}\n{result.output}"
        wrote = command[0] == "analyze" and result.exit_code == 0 and (out / "results.jsonl").is_file()
        if wrote and rng.random() < 0.5:
            _resume_with_other_settings(world, command, out, where)
            seen[-1] = seen.get(-1, 0) + 1  # -1: resumes with changed settings, tried
        seen[result.exit_code] = seen.get(result.exit_code, 0) + 1
    assert seen.get(2, 0) > 0, seen  # the corruptions are caught ...
    assert seen.get(0, 0) > 0, seen  # ... and harmless ones run
    assert seen.get(-1, 0) > 0, seen  # ... and resumed with other settings, refused
