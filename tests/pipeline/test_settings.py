"""The settings hash: pinned to the values the previous version wrote, so ``--resume`` on an
old run folder finds its finished records."""

from __future__ import annotations

from specprobe.pipeline.sweep import ModelSpec, SweepPlan
from specprobe.recipes.recipe import load_recipe
from specprobe.store.results import settings_hash

DEFAULT_CLI_HASH = "b601e52b22973e34"
"""``specprobe analyze MODEL`` with every default (specprobe 0.x before issue 17)."""
TINY_LOCAL_HASH = "802b0ecb53febf2f"
"""``specprobe run tiny-local --set root=/tmp/x`` (before issue 17)."""


def test_default_plan_hash_is_pinned() -> None:
    assert settings_hash(SweepPlan(models=(ModelSpec("x"),)).settings()) == DEFAULT_CLI_HASH


def test_recipe_plan_hash_is_pinned() -> None:
    plan = load_recipe("tiny-local", variables={"root": "/tmp/x"}).to_plan()
    assert settings_hash(plan.settings()) == TINY_LOCAL_HASH
