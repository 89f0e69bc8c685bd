"""The pre-commit hooks run the same ruff and mypy as the dev extra, in their own environments."""

from __future__ import annotations

import re
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


def test_hooks_pin_the_dev_extras_ruff_and_mypy() -> None:
    pins = dev_pins()
    assert {"ruff", "mypy"} <= set(pins), "the dev extra pins ruff and mypy with =="
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert {h["id"] for h in hooks} == {"ruff-check", "ruff-format", "mypy"}
    for hook in hooks:
        # language: system would look for the tools on PATH, which fails without an
        # activated environment; language: python installs them for the hook.
        assert hook["language"] == "python", hook["id"]
        tool = hook["entry"].split()[0]
        wanted = [d for d in hook["additional_dependencies"] if re.match(rf"{tool}\b", d)]
        assert wanted == [f"{tool}=={pins[tool]}"], hook["id"]
