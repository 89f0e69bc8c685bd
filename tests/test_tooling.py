"""The pre-commit hooks run the same ruff and mypy as the dev extra, in their own environments."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def dev_pins() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["optional-dependencies"]["dev"]:
        name, sep, version = requirement.partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


def test_hooks_pin_the_dev_extras_tools() -> None:
    pins = dev_pins()
    assert {"ruff", "mypy", "import-linter"} <= set(pins), (
        "the dev extra pins ruff, mypy and import-linter with =="
    )
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert {h["id"] for h in hooks} == {"ruff-check", "ruff-format", "mypy", "lint-imports"}
    for hook in hooks:
        # language: system would look for the tools on PATH, which fails without an
        # activated environment; language: python installs them for the hook.
        assert hook["language"] == "python", hook["id"]
        tool = {"lint-imports": "import-linter"}.get(hook["entry"].split()[0], hook["entry"].split()[0])
        wanted = [d for d in hook["additional_dependencies"] if re.match(rf"{tool}\b", d)]
        assert wanted == [f"{tool}=={pins[tool]}"], hook["id"]


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # The script beside this interpreter (a venv used without activating it), else on PATH.
    beside = Path(sys.executable).parent / "lint-imports"
    exe = str(beside) if beside.is_file() else shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return subprocess.run([exe, "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120)


def test_layer_contract_holds_and_refuses_an_upward_import(tmp_path: Path) -> None:
    # The contract as CI runs it, on a copy of the package: it holds for the tree as it
    # is, and breaks when a bottom layer imports the command line.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "specprobe", tree / "specprobe", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    kept = _lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    probes = tree / "specprobe" / "core" / "probes.py"
    probes.write_text(
        probes.read_text() + "\n\ndef _upward() -> None:\n    from specprobe.cli import app  # noqa: F401\n"
    )
    broken = _lint_imports(tree)
    assert broken.returncode != 0
    assert "specprobe.core.probes -> specprobe.cli" in broken.stdout
