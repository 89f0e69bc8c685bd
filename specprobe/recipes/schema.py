"""The recipe schema: its sections as frozen dataclasses, checked key by key.

Unknown keys are rejected with "did you mean", values are checked against their field's
type and against :data:`specprobe.config.LIMITS`, and errors name the file and the key
path. The ``data`` and ``probe`` sections are the settings classes themselves
(:class:`specprobe.config.DataSpec`, :class:`specprobe.config.ProbeSpec`); a recipe's probe
has no ``seed`` of its own (``data.seed`` seeds both) and may not set ``trust_remote_code``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from specprobe.choices import Device, DType, Estimator, Task
from specprobe.config import DataSpec, ProbeSpec, Settings, check_range
from specprobe.errors import SpecprobeError
from specprobe.recipes.problems import RecipeError, did_you_mean, only_keys
from specprobe.recipes.revisions import expand_revisions

if TYPE_CHECKING:
    from specprobe.pipeline.plan import SweepPlan

RECIPE_VERSION = 1
NOT_IN_RECIPES = {"probe": {"seed"}}
"""Fields of a settings class that a recipe section does not have (``data.seed`` seeds the probes)."""


@dataclass(frozen=True)
class Family:
    name: str
    description: str = ""
    tokens_per_step: int | None = None
    """Tokens per optimizer step, for tokens seen and compute C = 6·N·tokens."""
    train_batch_sequences: int | None = None
    """Sequences per optimizer step the models were trained with, for χ_pos at the
    training batch (``train_batch_position``); known to the registry of families without it."""
    stage_tokens: Any = None
    """Tokens seen before stages that restart their step counter: ``{stage2-ingredient1: 3896B}``."""


@dataclass(frozen=True)
class RecipeModel:
    id: str
    """Hub id or local path (a relative path is relative to the recipe file's folder; in a
    bundled recipe, to the working directory)."""
    label: str | None = None
    params: int | None = None
    """Parameter count, when known in advance (the loaded model's count is recorded too)."""
    revisions: Any = None
    """This model's own revisions (a list or a generator), instead of the recipe's."""
    run: str | None = None
    """The training run the model belongs to: models with the same run are one run (one
    repository per checkpoint); default: the registry's, else the id."""
    seed: int | None = None
    """The run's seed: runs of one size with different seeds are averaged, never fitted as sizes."""
    positions: Any = None
    """Stated training positions by revision: ``{ckpt_000100: 1000}`` or ``{rev: {step, tokens}}``."""


@dataclass(frozen=True)
class RecipeOutput:
    directory: str | None = None
    """The run folder, ``~`` expanded (as every path specprobe reads); relative to the
    recipe file's folder, as every relative path of a recipe."""
    resume: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.directory, str) and self.directory.startswith("~"):
            object.__setattr__(self, "directory", os.path.expanduser(self.directory))


@dataclass(frozen=True)
class Recipe:
    """A validated recipe, includes merged and variables substituted."""

    version: int
    family: Family
    models: tuple[RecipeModel, ...]
    revisions: Any = None
    data: DataSpec = field(default_factory=DataSpec)
    probe: ProbeSpec = field(default_factory=ProbeSpec)
    """The probe settings; its ``seed`` is ``data.seed`` (a recipe's probe has none of its own)."""
    output: RecipeOutput = field(default_factory=RecipeOutput)
    variables: dict[str, str] = field(default_factory=dict)
    source: str = ""
    """The file the recipe was read from."""

    def model_revisions(self, model: RecipeModel) -> tuple[str, ...] | None:
        """The revision names of ``model``: its own, else the recipe's, else all (None)."""
        spec = model.revisions if model.revisions is not None else self.revisions
        where = (
            f"models[{self.models.index(model)}].revisions" if model.revisions is not None else "revisions"
        )
        return expand_revisions(spec, self.source, where)

    def to_plan(self) -> SweepPlan:
        """The sweep this recipe describes."""
        from specprobe.models.positions import stated_positions, stated_stage_tokens
        from specprobe.pipeline.plan import ModelSpec, SweepPlan

        stages = stated_stage_tokens(self.family.stage_tokens) if self.family.stage_tokens else {}
        models = tuple(
            ModelSpec(
                id=m.id,
                revisions=self.model_revisions(m),
                label=m.label,
                tokens_per_step=self.family.tokens_per_step,
                train_batch_sequences=self.family.train_batch_sequences,
                run=m.run,
                seed=m.seed,
                stage_tokens=stages,
                positions=stated_positions(m.positions) if m.positions else {},
            )
            for m in self.models
        )
        return SweepPlan(models=models, data=self.data, probe=self.probe)

    @property
    def settings(self) -> Settings:
        """The settings every checkpoint is measured with."""
        return Settings(data=self.data, probe=self.probe)

    def to_dict(self) -> dict[str, Any]:
        """The effective recipe (after includes, variables and overrides), JSON-ready."""

        def plain(value: Any) -> Any:
            if isinstance(value, Enum):
                return value.value
            if hasattr(value, "__dataclass_fields__"):
                return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        out: dict[str, Any] = plain(self)
        for section, names in NOT_IN_RECIPES.items():
            for name in names:
                out[section].pop(name, None)
        return out


_SECTIONS = {"version", "family", "models", "revisions", "data", "probe", "output"}


def validate(raw: dict[str, Any], source: str, variables: dict[str, str]) -> Recipe:
    only_keys(raw, _SECTIONS, source, "top level")
    if raw.get("version") != RECIPE_VERSION:
        raise RecipeError(
            f"{source}: version: expected {RECIPE_VERSION}, found {raw.get('version')!r}",
            f"put 'version: {RECIPE_VERSION}' at the top",
        )
    family = _section(Family, raw.get("family"), source, "family", required=True)
    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise RecipeError(
            f"{source}: models: expected a non-empty list of models, found {models_raw!r}",
            "models: [{id: EleutherAI/pythia-70m}]",
        )
    models = tuple(
        _section(RecipeModel, m, source, f"models[{i}]", required=True) for i, m in enumerate(models_raw)
    )
    labels = [m.label or m.id for m in models]
    for label in labels:
        if labels.count(label) > 1:
            raise RecipeError(
                f"{source}: models: label {label!r} appears twice", "give each model a unique label"
            )
    data = _section(DataSpec, raw.get("data"), source, "data")
    recipe = Recipe(
        version=RECIPE_VERSION,
        family=family,
        models=models,
        revisions=raw.get("revisions"),
        data=data,
        probe=replace(_section(ProbeSpec, raw.get("probe"), source, "probe"), seed=data.seed),
        output=_section(RecipeOutput, raw.get("output"), source, "output"),
        variables=variables,
        source=source,
    )
    _check_ranges(recipe)
    for model in models:
        recipe.model_revisions(model)  # generators are checked here
    _check_positions(recipe)
    return recipe


def _check_positions(recipe: Recipe) -> None:
    """Stated positions and stage tokens read as :mod:`specprobe.models.positions` reads
    them; errors name the file and the key."""
    from specprobe.models.positions import stated_positions, stated_stage_tokens

    try:
        if recipe.family.stage_tokens is not None:
            stated_stage_tokens(recipe.family.stage_tokens, "family.stage_tokens")
        for i, model in enumerate(recipe.models):
            if model.positions is not None:
                stated_positions(model.positions, f"models[{i}].positions")
    except SpecprobeError as err:
        raise RecipeError(f"{recipe.source}: {err.message}", err.hint) from None


def _check_ranges(recipe: Recipe) -> None:
    """Every value within :data:`specprobe.config.LIMITS`, by key path; and no
    ``trust_remote_code``: only the command line may allow a model's own code."""
    source = recipe.source
    if recipe.probe.trust_remote_code:
        raise RecipeError(
            f"{source}: probe.trust_remote_code: a recipe may not allow a model's own Python code to run",
            "remove the key; pass --trust-remote-code to specprobe run when you trust the models' code",
        )
    try:
        check_range("tokens_per_step", recipe.family.tokens_per_step, "family.tokens_per_step")
        check_range(
            "train_batch_sequences", recipe.family.train_batch_sequences, "family.train_batch_sequences"
        )
        recipe.data.validate("data")
        recipe.probe.validate("probe")
        for i, model in enumerate(recipe.models):
            check_range("params", model.params, f"models[{i}].params")
    except SpecprobeError as err:
        keyed = err.message.startswith(("family.", "data.", "probe.", "models["))  # else data's own check
        raise RecipeError(
            f"{source}: {'' if keyed else 'data: '}{err.message}", err.hint.replace("give", "set", 1)
        ) from None


def _section(cls: Any, value: Any, source: str, where: str, required: bool = False) -> Any:
    if value is None and not required:
        return cls()
    if not isinstance(value, Mapping):
        raise RecipeError(
            f"{source}: {where}: expected a mapping, found {value!r}",
            f"see the recipe format in docs/recipes.md for '{where.split('[')[0]}'",
        )
    known = {f.name: f for f in fields(cls) if f.name not in NOT_IN_RECIPES.get(where, ())}
    only_keys(value, set(known), source, where)
    kwargs = {}
    for name, f in known.items():
        if name in value:
            kwargs[name] = _coerce(value[name], f.type, source, f"{where}.{name}")
    missing = [name for name, f in known.items() if name not in kwargs and _is_required(f)]
    if missing:
        raise RecipeError(f"{source}: {where}: missing required key {missing[0]!r}", f"add {missing[0]}: ...")
    return cls(**kwargs)


def _is_required(f: Any) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


_ENUMS: dict[str, type[Enum]] = {"Estimator": Estimator, "DType": DType, "Device": Device, "Task": Task}


def _coerce(value: Any, annotation: Any, source: str, where: str) -> Any:
    """Check ``value`` against a field annotation written as a string (from __future__)."""
    text = str(annotation)
    optional = "None" in text
    if value is None:
        if optional:
            return None
        raise RecipeError(
            f"{source}: {where}: expected a value, found null", "remove the key or give a value"
        )
    base = text.replace(" | None", "").strip()
    if base in _ENUMS:
        enum = _ENUMS[base]
        try:
            return enum(value)
        except ValueError:
            choices = [str(m.value) for m in enum]
            raise RecipeError(
                f"{source}: {where}: unknown value {value!r}{did_you_mean(str(value), choices)}",
                f"use one of: {', '.join(choices)}",
            ) from None
    if base in ("float", "tuple[float, float, float]"):
        return _numbers(value, base, where, source)
    expected = {"str": str, "int": int, "bool": bool, "tuple[str, ...]": list}.get(base)
    if base == "Any" or expected is None:
        return value
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is list and ok:
        ok = all(isinstance(v, str) for v in value)
        if ok:
            return tuple(value) or None  # a list of globs; an empty one: all trainable parameters
    if expected is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads 2024 or 1.0 as numbers; names may look like that
    if not ok:
        raise RecipeError(
            f"{source}: {where}: expected {'list[str]' if expected is list else base}, found {type(value).__name__} {value!r}",
            f"give {where.split('.')[-1]} as {base}",
        )
    return value


def _numbers(value: Any, base: str, where: str, source: str) -> Any:
    """A float, or a list of three as a tuple (``data.mask_split``), checked."""

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if base == "float" and number(value):
        return float(value)
    if base != "float" and isinstance(value, list) and len(value) == 3 and all(number(v) for v in value):
        return tuple(float(v) for v in value)
    raise RecipeError(
        f"{source}: {where}: expected {'a number' if base == 'float' else 'a list of three numbers'}, "
        f"found {type(value).__name__} {value!r}",
        f"give {where.split('.')[-1]} as {'0.15' if base == 'float' else '[0.8, 0.1, 0.1]'}",
    )


def with_overrides(recipe: Recipe, **overrides: Any) -> Recipe:
    """A copy with CLI overrides applied: keys ``only`` (labels or ids), ``revisions``,
    and any field of ``data``, ``probe`` or ``output`` (None means: keep the recipe's)."""
    only = overrides.pop("only", None)
    revisions = overrides.pop("revisions", None)
    models = recipe.models
    if only:
        wanted = set(only)
        known = {m.label or m.id for m in models} | {m.id for m in models}
        for name in wanted - known:
            raise RecipeError(
                f"{recipe.source}: --only {name}: no such model{did_you_mean(name, known)}",
                f"models: {', '.join(sorted(m.label or m.id for m in models))}",
            )
        models = tuple(m for m in models if (m.label or m.id) in wanted or m.id in wanted)
    if revisions:
        models = tuple(replace(m, revisions=list(revisions)) for m in models)
    sections: dict[str, Any] = {"data": recipe.data, "probe": recipe.probe, "output": recipe.output}
    for key, value in overrides.items():
        if value is None:
            continue
        for name, section in sections.items():
            if key in {f.name for f in fields(section)}:
                sections[name] = replace(section, **{key: value})
                break
        else:
            raise RecipeError(f"unknown override {key!r}", "this is a bug in the CLI")
    sections["probe"] = replace(sections["probe"], seed=sections["data"].seed)  # data.seed seeds both
    return replace(recipe, models=models, **sections)
