"""Recipes: YAML files that describe a model-family sweep, validated by a strict schema.

A recipe is data: safe YAML without aliases, unknown keys rejected with "did you mean", a
``version`` field, every value range-checked (the command line's limits), errors that name
the file and the key path. A recipe may not set ``probe.trust_remote_code``: only the
command line flag allows a model's own code to run. A recipe may ``include``
another (a path relative to the including file, or a bundled recipe's name): mappings are
merged key by key, the including file winning; lists and scalars are replaced whole.
``variables`` declares names that string values use as ``${name}``; the command line
overrides them with ``--set name=value``.

    version: 1
    include: pythia            # optional base
    variables: {root: runs}    # optional
    family:    {name: pythia, description: "...", tokens_per_step: 2097152}
    models:
      - {id: EleutherAI/pythia-70m, label: pythia-70m, params: 70426624}
    revisions: {log: {points: 12, schedule: pythia}}
    data:      {dataset: NeelNanda/pile-10k, num_sequences: 32, seq_len: 128, batch_size: 8}
    probe:     {estimator: hutchinson_per_sample, probes: 32, params: null, dtype: float32, device: cpu}
    output:    {directory: "${root}/pythia", resume: true}
"""

from __future__ import annotations

from pathlib import Path

from specprobe.errors import SpecprobeError
from specprobe.recipes.loader import (
    LOCAL_DATA_SUFFIXES,
    MAX_INCLUDE_DEPTH,
    MAX_RECIPE_BYTES,
    bundled_dir,
    bundled_recipes,
    load_recipe,
    locate,
)
from specprobe.recipes.problems import RecipeError, did_you_mean
from specprobe.recipes.revisions import SCHEDULES, expand_revisions, log_spaced, pythia_schedule
from specprobe.recipes.schema import RECIPE_VERSION, Family, Recipe, RecipeModel, RecipeOutput, with_overrides


def check_recipe(recipe: Recipe) -> list[str]:
    """Checks beyond the schema that need no large download; returns the problems found.

    Local model paths (written as paths, :func:`~specprobe.models.hub.written_as_path`, or
    existing) must exist (and their checkpoint folders match the revisions);
    explicit revision names of hub models in a family with a known schedule must belong to
    it; a local dataset must exist and have the text column (an image dataset: the image and
    label columns); the output folder must be new,
    empty or a specprobe run folder.
    """
    from specprobe.choices import Task
    from specprobe.models.data import iter_rows, iter_texts
    from specprobe.models.hub import find_checkpoints, written_as_path
    from specprobe.store.folder import check_run_folder

    problems = []
    schedule_names = set(pythia_schedule()) if _uses_pythia(recipe) else None
    for i, model in enumerate(recipe.models):
        revisions = recipe.model_revisions(model)
        local = Path(model.id).expanduser()
        if local.exists() or written_as_path(model.id):
            try:
                find_checkpoints(model.id, revisions)
            except SpecprobeError as err:
                problems.append(f"{recipe.source}: models[{i}].id: {err.message}")
            continue
        if schedule_names is not None and revisions:
            for rev in revisions:
                if rev not in schedule_names and rev != "main":
                    problems.append(
                        f"{recipe.source}: models[{i}] ({model.label or model.id}): revision {rev!r} is not in "
                        f"the pythia schedule{did_you_mean(rev, schedule_names)}"
                    )
    if recipe.output.directory is not None:
        try:
            check_run_folder(recipe.output.directory)
        except SpecprobeError as err:
            problems.append(f"{recipe.source}: output.directory: {err.message}")
    dataset = Path(recipe.data.dataset).expanduser()
    if (
        dataset.exists()
        or written_as_path(recipe.data.dataset)
        or dataset.suffix.lower() in LOCAL_DATA_SUFFIXES
    ):
        spec = recipe.to_plan().data
        try:
            if spec.task is Task.IMAGE_CLASSIFICATION:
                next(iter_rows(spec, (spec.image_column, spec.label_column)), None)
            else:
                next(iter_texts(spec), None)
        except SpecprobeError as err:
            problems.append(f"{recipe.source}: data.dataset: {err.message}")
    return problems


def _uses_pythia(recipe: Recipe) -> bool:
    specs = [recipe.revisions, *[m.revisions for m in recipe.models]]
    text = repr(specs)
    return "pythia" in text or any(m.id.startswith("EleutherAI/pythia-") for m in recipe.models)


__all__ = [
    "MAX_INCLUDE_DEPTH",
    "MAX_RECIPE_BYTES",
    "RECIPE_VERSION",
    "SCHEDULES",
    "Family",
    "Recipe",
    "RecipeError",
    "RecipeModel",
    "RecipeOutput",
    "bundled_dir",
    "bundled_recipes",
    "check_recipe",
    "expand_revisions",
    "load_recipe",
    "locate",
    "log_spaced",
    "pythia_schedule",
    "with_overrides",
]
