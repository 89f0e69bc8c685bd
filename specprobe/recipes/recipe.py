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

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from difflib import get_close_matches
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from specprobe.choices import Device, DType, Estimator
from specprobe.errors import SpecprobeError
from specprobe.models.data import DataSpec
from specprobe.pipeline.sweep import ModelSpec, ProbeSpec, SweepPlan, check_groups, check_range

RECIPE_VERSION = 1

MAX_INCLUDE_DEPTH = 32
"""Files an include chain may hold (the recipe given included)."""
MAX_RECIPE_BYTES = 1_000_000
"""A recipe file larger than this is refused unread."""
MAX_REVISIONS = 10_000
"""Revisions one generator may produce (``every`` is bounded by it, ``log`` by its schedule)."""


class RecipeError(SpecprobeError):
    """A recipe file does not follow the schema: names the file, the key path and the fix."""


# ---- revision schedules ----------------------------------------------------------------------


def pythia_schedule() -> list[str]:
    """Pythia's 154 published revisions: step0, 1, 2, 4, …, 512, then 1000 to 143000 by 1000."""
    return ["step0", *[f"step{2**i}" for i in range(10)], *[f"step{s}" for s in range(1000, 143001, 1000)]]


SCHEDULES = {"pythia": pythia_schedule}
"""Named revision schedules that generators can draw from."""


def _step(name: str) -> int:
    digits = re.sub(r"\D", "", name)
    return int(digits) if digits else 0


def log_spaced(schedule: Sequence[str], points: int) -> list[str]:
    """``points`` revisions of ``schedule`` with log-spaced steps: the first and the last
    always, the others nearest to a geometric grid between the first non-zero step and the
    last (fewer when neighbours coincide)."""
    if points < 2:
        return list(schedule[-1:])
    steps = [_step(s) for s in schedule]
    positive = [s for s in steps if s > 0]
    lo, hi = positive[0], positive[-1]
    grid = [lo * (hi / lo) ** (i / (points - 2)) for i in range(points - 1)] if points > 2 else [hi]
    chosen = {schedule[0]}
    candidates = [i for i, s in enumerate(steps) if s > 0]
    for target in grid:
        best = min(candidates, key=lambda i: (abs(math.log(steps[i] / target)), i))
        chosen.add(schedule[best])
    return [s for s in schedule if s in chosen]


# ---- the schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    description: str = ""
    tokens_per_step: int | None = None
    """Tokens per optimizer step, for tokens seen and compute C = 6·N·tokens."""


@dataclass(frozen=True)
class RecipeModel:
    id: str
    """Hub id or local path (relative paths are relative to the working directory)."""
    label: str | None = None
    params: int | None = None
    """Parameter count, when known in advance (the loaded model's count is recorded too)."""
    revisions: Any = None
    """This model's own revisions (a list or a generator), instead of the recipe's."""


@dataclass(frozen=True)
class RecipeProbe:
    estimator: Estimator = Estimator.HUTCHINSON_PER_SAMPLE
    probes: int = 32
    params: list[str] | None = None
    """Parameter-name globs; null for all trainable parameters."""
    dtype: DType = DType.float32
    device: Device = Device.cpu
    micro_batch_size: int | None = None
    trust_remote_code: bool = False
    groups: Any = None
    """Layer decomposition: "auto" or {name: [globs]}; null for none."""
    eigen: int = 0
    """Top eigenpairs per checkpoint (0: none)."""
    density: bool = False
    exact: bool = False


@dataclass(frozen=True)
class RecipeOutput:
    directory: str | None = None
    resume: bool = True


@dataclass(frozen=True)
class Recipe:
    """A validated recipe, includes merged and variables substituted."""

    version: int
    family: Family
    models: tuple[RecipeModel, ...]
    revisions: Any = None
    data: DataSpec = field(default_factory=DataSpec)
    probe: RecipeProbe = field(default_factory=RecipeProbe)
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
        models = tuple(
            ModelSpec(
                id=m.id,
                revisions=self.model_revisions(m),
                label=m.label,
                tokens_per_step=self.family.tokens_per_step,
            )
            for m in self.models
        )
        d, p = self.data, self.probe
        return SweepPlan(
            models=models,
            data=d,
            probe=ProbeSpec(
                estimator=p.estimator,
                probes=p.probes,
                seed=d.seed,
                params=tuple(p.params) if p.params else None,
                micro_batch_size=p.micro_batch_size,
                device=p.device,
                dtype=p.dtype,
                trust_remote_code=p.trust_remote_code,
                groups=p.groups,
                eigen=p.eigen,
                density=p.density,
                exact=p.exact,
            ),
        )

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
        return out


def expand_revisions(spec: Any, source: str, where: str) -> tuple[str, ...] | None:
    """Revision names from a list or a generator mapping (see the module docstring)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, list):
        if not all(isinstance(r, str | int) for r in spec) or not spec:
            raise RecipeError(
                f"{source}: {where}: expected a non-empty list of revision names, found {spec!r}",
                "write revisions: [step1000, step143000]",
            )
        return tuple(str(r) for r in spec)
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise RecipeError(
            f"{source}: {where}: expected a list or one generator (list, schedule, log, every), found {spec!r}",
            "e.g. revisions: {log: {points: 12, schedule: pythia}}",
        )
    ((kind, args),) = spec.items()
    generators = {"list", "schedule", "log", "every"}
    if kind not in generators:
        raise RecipeError(
            f"{source}: {where}: unknown revision generator {kind!r}{_did_you_mean(kind, generators)}",
            f"use one of: {', '.join(sorted(generators))}",
        )
    if kind == "list":
        return expand_revisions(args, source, f"{where}.list")
    if kind == "schedule":
        return tuple(_schedule(args, source, f"{where}.schedule"))
    if not isinstance(args, Mapping):
        raise RecipeError(
            f"{source}: {where}.{kind}: expected a mapping, found {args!r}",
            "e.g. log: {points: 12, schedule: pythia}",
        )
    if kind == "log":
        _only(args, {"points", "schedule"}, source, f"{where}.log")
        points = _int(args.get("points"), source, f"{where}.log.points", minimum=2)
        schedule_name = args.get("schedule", "pythia")
        schedule = _schedule(schedule_name, source, f"{where}.log.schedule")
        if points > len(schedule):
            raise RecipeError(
                f"{source}: {where}.log.points: expected at most {len(schedule)} (the revisions of the "
                f"{schedule_name} schedule), found {points}",
                f"use points: {len(schedule)} or fewer, or schedule: {schedule_name} for all of them",
            )
        return tuple(log_spaced(schedule, points))
    _only(args, {"n", "start", "stop", "prefix"}, source, f"{where}.every")
    n = _int(args.get("n"), source, f"{where}.every.n", minimum=1)
    start = _int(args.get("start", n), source, f"{where}.every.start", minimum=0)
    stop = _int(args.get("stop"), source, f"{where}.every.stop", minimum=start)
    count = (stop - start) // n + 1
    if count > MAX_REVISIONS:
        raise RecipeError(
            f"{source}: {where}.every: expected at most {MAX_REVISIONS} revisions, found {count} "
            f"(every {n} from {start} to {stop})",
            "use a larger n or a smaller range",
        )
    prefix = args.get("prefix", "step")
    if not isinstance(prefix, str):
        raise RecipeError(
            f"{source}: {where}.every.prefix: expected a string, found {prefix!r}", "e.g. prefix: checkpoint-"
        )
    return tuple(f"{prefix}{s}" for s in range(start, stop + 1, n))


def _schedule(name: Any, source: str, where: str) -> list[str]:
    if not isinstance(name, str) or name not in SCHEDULES:
        raise RecipeError(
            f"{source}: {where}: unknown schedule {name!r}{_did_you_mean(str(name), SCHEDULES)}",
            f"known schedules: {', '.join(SCHEDULES)}",
        )
    return SCHEDULES[name]()


def _int(value: Any, source: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecipeError(
            f"{source}: {where}: expected an integer >= {minimum}, found {value!r}",
            f"set {where.split('.')[-1]}",
        )
    return value


def _only(args: Mapping[str, Any], allowed: set[str], source: str, where: str) -> None:
    for key in args:
        if key not in allowed:
            raise RecipeError(
                f"{source}: {where}: unknown key {key!r}{_did_you_mean(key, allowed)}",
                f"allowed keys: {', '.join(sorted(allowed))}",
            )


def _did_you_mean(word: str, choices: Any) -> str:
    close = get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---- loading ---------------------------------------------------------------------------------


def bundled_dir() -> Path:
    """The folder of the recipes shipped with specprobe."""
    return Path(str(resources.files("specprobe.recipes") / "bundled"))


def bundled_recipes() -> dict[str, Path]:
    """Bundled recipe names and files."""
    return {p.stem: p for p in sorted(bundled_dir().glob("*.yaml"))}


def locate(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A recipe file: an existing path (relative to ``relative_to`` for includes), or a bundled name."""
    path = Path(name_or_path).expanduser()
    candidates = [relative_to / path] if relative_to is not None and not path.is_absolute() else []
    candidates.append(path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    bundled = bundled_recipes()
    name = path.stem if path.suffix in (".yaml", ".yml") else str(name_or_path)
    if name in bundled and (path.parent == Path(".") or path.parent.name == "recipes"):
        return bundled[name]
    raise RecipeError(
        f"recipe {str(name_or_path)!r} not found (no such file, and no bundled recipe of that name"
        f"{_did_you_mean(name, bundled)})",
        f"give a path to a .yaml file, or a bundled recipe: {', '.join(bundled)}",
    )


def load_recipe(
    name_or_path: str | Path,
    *,
    variables: Mapping[str, str] | None = None,
) -> Recipe:
    """Read, merge includes, substitute variables and validate a recipe.

    Raises RecipeError naming the file and key path on any schema violation.
    """
    path = locate(name_or_path)
    try:
        raw = _read_with_includes(path, [])
    except RecursionError:
        raise RecipeError(
            f"{path}: nested too deeply to read", "a recipe needs a few levels of nesting, not hundreds"
        ) from None
    source = str(path)
    declared = raw.pop("variables", None) or {}
    if not isinstance(declared, Mapping):
        raise RecipeError(
            f"{source}: variables: expected a mapping, found {declared!r}", "variables: {root: runs}"
        )
    values = {str(k): str(v) for k, v in declared.items()}
    for key, value in (variables or {}).items():
        if key not in values:
            raise RecipeError(
                f"{source}: --set {key}: the recipe declares no variable {key!r}{_did_you_mean(key, values)}",
                f"declared variables: {', '.join(values) or 'none'}",
            )
        values[key] = value
    raw = _substitute(raw, values, source, "")
    return _validate(raw, source, values)


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases: ``*name`` (and ``<<: *name``) are refused, so a
    hostile file cannot expand exponentially ("billion laughs"); anchors alone are harmless."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"found the alias *{event.anchor}; recipes may not use aliases", event.start_mark
            )
        return super().compose_node(parent, index)


def _read_with_includes(path: Path, chain: list[Path]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in [*chain, resolved])
        raise RecipeError(f"include cycle: {cycle}", "remove one of the includes")
    if len(chain) >= MAX_INCLUDE_DEPTH:
        raise RecipeError(
            f"{chain[0]}: include chain longer than {MAX_INCLUDE_DEPTH} files (reached {path})",
            "include a base recipe directly instead of through a long chain",
        )
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(
                f"{path}: {path.stat().st_size:,} bytes, larger than a recipe can be ({MAX_RECIPE_BYTES:,})",
                "check that this is the recipe you meant",
            )
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader)  # a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(err, "problem", None) or err)
        raise RecipeError(
            f"{path}{where}: not valid YAML ({problem})",
            "write the values out (share a base with include:)"
            if "alias" in problem
            else "check the indentation and quoting",
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise RecipeError(f"cannot read recipe {path}: {reason}", "check the path") from None
    if not isinstance(data, dict):
        raise RecipeError(
            f"{path}: expected a mapping at the top level, found {type(data).__name__}",
            "start the file with 'version: 1'",
        )
    include = data.pop("include", None)
    if include is None:
        return data
    if not isinstance(include, str):
        raise RecipeError(
            f"{path}: include: expected a file path or bundled recipe name, found {include!r}",
            "include: base.yaml",
        )
    base = _read_with_includes(locate(include, relative_to=path.parent), [*chain, resolved])
    return _merge(base, data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(value: Any, variables: Mapping[str, str], source: str, where: str) -> Any:
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise RecipeError(
                    f"{source}: {where or 'value'}: undefined variable ${{{name}}}{_did_you_mean(name, variables)}",
                    "declare it under variables:",
                )
            return variables[name]

        return _VAR.sub(lookup, value)
    if isinstance(value, dict):
        return {
            k: _substitute(v, variables, source, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, variables, source, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


_SECTIONS = {"version", "family", "models", "revisions", "data", "probe", "output"}


def _validate(raw: dict[str, Any], source: str, variables: dict[str, str]) -> Recipe:
    _only(raw, _SECTIONS, source, "top level")
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
    recipe = Recipe(
        version=RECIPE_VERSION,
        family=family,
        models=models,
        revisions=raw.get("revisions"),
        data=_section(DataSpec, raw.get("data"), source, "data"),
        probe=_section(RecipeProbe, raw.get("probe"), source, "probe"),
        output=_section(RecipeOutput, raw.get("output"), source, "output"),
        variables=variables,
        source=source,
    )
    _check_ranges(recipe)
    for model in models:
        recipe.model_revisions(model)  # generators are checked here
    return recipe


_RANGED = {
    "family": ("tokens_per_step",),
    "data": ("num_sequences", "seq_len", "batch_size", "seed"),
    "probe": ("probes", "micro_batch_size", "eigen"),
}


def _check_ranges(recipe: Recipe) -> None:
    """Every value within the command line's limits (``sweep.MINIMUMS``, ``MAXIMUMS``), by key path;
    and no ``trust_remote_code``: only the command line may allow a model's own code."""
    source = recipe.source
    if recipe.probe.trust_remote_code:
        raise RecipeError(
            f"{source}: probe.trust_remote_code: a recipe may not allow a model's own Python code to run",
            "remove the key; pass --trust-remote-code to specprobe run when you trust the models' code",
        )
    checks = [
        (f"{section}.{name}", name, getattr(getattr(recipe, section), name))
        for section, names in _RANGED.items()
        for name in names
    ]
    checks += [(f"models[{i}].params", "params", m.params) for i, m in enumerate(recipe.models)]
    for where, name, value in checks:
        try:
            check_range(name, value, where)
        except SpecprobeError as err:
            raise RecipeError(f"{source}: {err.message}", err.hint.replace("give", "set", 1)) from None
    try:
        check_groups(recipe.probe.groups, "probe.groups")
        recipe.data.validate()
    except SpecprobeError as err:
        where = "" if err.message.startswith("probe.") else "data: "
        raise RecipeError(f"{source}: {where}{err.message}", err.hint) from None


def _section(cls: Any, value: Any, source: str, where: str, required: bool = False) -> Any:
    if value is None and not required:
        return cls()
    if not isinstance(value, Mapping):
        raise RecipeError(
            f"{source}: {where}: expected a mapping, found {value!r}",
            f"see the recipe format in the README for '{where.split('[')[0]}'",
        )
    known = {f.name: f for f in fields(cls)}
    _only(value, set(known), source, where)
    kwargs = {}
    for name, f in known.items():
        if name in value:
            kwargs[name] = _coerce(value[name], f.type, source, f"{where}.{name}")
    missing = [name for name, f in known.items() if name not in kwargs and _is_required(f)]
    if missing:
        raise RecipeError(f"{source}: {where}: missing required key {missing[0]!r}", f"add {missing[0]}: ...")
    return cls(**kwargs)


def _is_required(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


_ENUMS: dict[str, type[Enum]] = {"Estimator": Estimator, "DType": DType, "Device": Device}


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
                f"{source}: {where}: unknown value {value!r}{_did_you_mean(str(value), choices)}",
                f"use one of: {', '.join(choices)}",
            ) from None
    expected = {"str": str, "int": int, "bool": bool, "list[str]": list}.get(base)
    if base == "Any" or expected is None:
        return value
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is list and ok:
        ok = all(isinstance(v, str) for v in value)
    if expected is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads 2024 or 1.0 as numbers; names may look like that
    if not ok:
        raise RecipeError(
            f"{source}: {where}: expected {base}, found {type(value).__name__} {value!r}",
            f"give {where.split('.')[-1]} as {base}",
        )
    return value


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
                f"{recipe.source}: --only {name}: no such model{_did_you_mean(name, known)}",
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
    return replace(recipe, models=models, **sections)


def check_recipe(recipe: Recipe) -> list[str]:
    """Checks beyond the schema that need no large download; returns the problems found.

    Local model paths must exist (and their checkpoint folders match the revisions);
    explicit revision names of hub models in a family with a known schedule must belong to
    it; a local dataset must exist and have the text column; the output folder must be new,
    empty or a specprobe run folder.
    """
    from specprobe.models.data import iter_texts
    from specprobe.models.hub import find_checkpoints
    from specprobe.store.folder import check_run_folder

    problems = []
    schedule_names = set(pythia_schedule()) if _uses_pythia(recipe) else None
    for i, model in enumerate(recipe.models):
        revisions = recipe.model_revisions(model)
        local = Path(model.id).expanduser()
        if local.exists() or model.id.startswith((".", "/", "~")):
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
                        f"the pythia schedule{_did_you_mean(rev, schedule_names)}"
                    )
    if recipe.output.directory is not None:
        try:
            check_run_folder(recipe.output.directory)
        except SpecprobeError as err:
            problems.append(f"{recipe.source}: output.directory: {err.message}")
    dataset = Path(recipe.data.dataset).expanduser()
    if dataset.exists() or recipe.data.dataset.startswith((".", "/", "~")):
        spec = recipe.to_plan().data
        try:
            next(iter_texts(spec), None)
        except SpecprobeError as err:
            problems.append(f"{recipe.source}: data.dataset: {err.message}")
    return problems


def _uses_pythia(recipe: Recipe) -> bool:
    specs = [recipe.revisions, *[m.revisions for m in recipe.models]]
    text = repr(specs)
    return "pythia" in text or any(m.id.startswith("EleutherAI/pythia-") for m in recipe.models)
