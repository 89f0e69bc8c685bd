"""Reading a recipe: locating it (a path or a bundled name), safe YAML without aliases,
``include`` merged key by key (the including file winning), ``variables`` substituted
(``${name}``, overridden by ``--set name=value``), then the schema's validation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from specprobe.config import upper
from specprobe.recipes.problems import RecipeError, did_you_mean
from specprobe.recipes.schema import Recipe, validate

MAX_INCLUDE_DEPTH = upper("include_depth")
"""Files an include chain may hold (the recipe given included): ``LIMITS["include_depth"]``."""
MAX_RECIPE_BYTES = upper("recipe_bytes")
"""A recipe file larger than this is refused unread: ``LIMITS["recipe_bytes"]``."""


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
        f"{did_you_mean(name, bundled)})",
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
                f"{source}: --set {key}: the recipe declares no variable {key!r}{did_you_mean(key, values)}",
                f"declared variables: {', '.join(values) or 'none'}",
            )
        values[key] = value
    raw = _substitute(raw, values, source, "")
    recipe = validate(raw, source, values)
    if path.resolve().parent == bundled_dir().resolve():
        return recipe  # a bundled recipe's paths (``${root}/…``) are the working directory's
    return relative_to_file(recipe, path.parent)


LOCAL_DATA_SUFFIXES = frozenset({".txt", ".jsonl", ".json", ".parquet"})
"""Suffixes of the local data files a recipe's ``data.dataset`` may name."""


def relative_to_file(recipe: Recipe, folder: Path) -> Recipe:
    """``recipe`` with its relative local paths taken relative to ``folder``, the recipe
    file's own (after variables are substituted): a model ``id`` that is a local path (one
    that exists there or is written as a path, :func:`~specprobe.models.hub.written_as_path`),
    a local ``data.dataset`` (likewise, or with a data file's suffix) and
    ``output.directory``. Hub ids, hub datasets and absolute paths stay as they are, so a
    recipe means the same files from whatever folder it is run."""
    from dataclasses import replace

    from specprobe.models.hub import written_as_path

    def local(name: str, data: bool = False) -> bool:
        if Path(name).expanduser().is_absolute():
            return False
        return (
            written_as_path(name)
            or (folder / name).exists()
            or (data and Path(name).suffix.lower() in LOCAL_DATA_SUFFIXES)
        )

    def under(name: str) -> str:
        return str(folder / name)

    models = tuple(replace(m, id=under(m.id)) if local(m.id) else m for m in recipe.models)
    data = (
        replace(recipe.data, dataset=under(recipe.data.dataset))
        if local(recipe.data.dataset, True)
        else recipe.data
    )
    output = recipe.output
    if output.directory is not None and not Path(output.directory).expanduser().is_absolute():
        output = replace(output, directory=under(output.directory))
    return replace(recipe, models=models, data=data, output=output)


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
                    f"{source}: {where or 'value'}: undefined variable ${{{name}}}{did_you_mean(name, variables)}",
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
