"""Revision lists and generators of a recipe: named schedules (Pythia's), log-spaced picks
from a schedule, every N steps.

    revisions: [step1000, step143000]
    revisions: {log: {points: 12, schedule: pythia}}
    revisions: {every: {n: 1000, start: 1000, stop: 143000, prefix: step}}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from specprobe.config import upper
from specprobe.recipes.problems import RecipeError, did_you_mean, only_keys, whole_number


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


def expand_revisions(spec: Any, source: str, where: str) -> tuple[str, ...] | None:
    """Revision names from a list or a generator mapping (see the module docstring)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, list):
        if not spec or not all(isinstance(r, int) or (isinstance(r, str) and r.strip()) for r in spec):
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
            f"{source}: {where}: unknown revision generator {kind!r}{did_you_mean(kind, generators)}",
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
        return _log(args, source, where)
    return _every(args, source, where)


def _log(args: Mapping[str, Any], source: str, where: str) -> tuple[str, ...]:
    """``log: {points, schedule}``: log-spaced revisions of a named schedule."""
    only_keys(args, {"points", "schedule"}, source, f"{where}.log")
    points = whole_number(args.get("points"), source, f"{where}.log.points", "log_points")
    schedule_name = args.get("schedule", "pythia")
    schedule = _schedule(schedule_name, source, f"{where}.log.schedule")
    if points > len(schedule):
        raise RecipeError(
            f"{source}: {where}.log.points: expected at most {len(schedule)} (the revisions of the "
            f"{schedule_name} schedule), found {points}",
            f"use points: {len(schedule)} or fewer, or schedule: {schedule_name} for all of them",
        )
    return tuple(log_spaced(schedule, points))


def _every(args: Mapping[str, Any], source: str, where: str) -> tuple[str, ...]:
    """``every: {n, start, stop, prefix}``: every ``n`` steps from ``start`` to ``stop``."""
    only_keys(args, {"n", "start", "stop", "prefix"}, source, f"{where}.every")
    n = whole_number(args.get("n"), source, f"{where}.every.n", "every_n")
    start = whole_number(args.get("start", n), source, f"{where}.every.start", "every_start")
    stop = whole_number(args.get("stop"), source, f"{where}.every.stop", "every_start", minimum=start)
    count = (stop - start) // n + 1
    most = upper("revisions")
    if count > most:
        raise RecipeError(
            f"{source}: {where}.every: expected at most {most} revisions, found {count} "
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
            f"{source}: {where}: unknown schedule {name!r}{did_you_mean(str(name), SCHEDULES)}",
            f"known schedules: {', '.join(SCHEDULES)}",
        )
    return SCHEDULES[name]()
