"""Where in training a checkpoint is: its run, its step, the tokens it has seen, and where
each came from.

A *run* is one training run: its checkpoints in training order. A checkpoint's *training
position* is its step (optimizer steps from the start of the run), the tokens seen and, for
families that checkpoint per data chunk (LLM360), the chunk. Positions come from, in order
of trust (:class:`Source`):

1. what the user states (:class:`Stated`: a map of revision → step/tokens, tokens per step,
   the tokens before a stage, the run's name and seed);
2. the bundled registry of published families, ``families.yaml`` (data: tokens per step,
   runs whose checkpoints are separate repositories, seeds);
3. the revision-name conventions (:data:`CONVENTIONS`);
4. a local Trainer checkpoint's ``trainer_state.json`` (``global_step``,
   ``num_input_tokens_seen``).

Never from the order revisions were typed: a checkpoint with no known position has none,
and :func:`specprobe.analysis.position.run_order` leaves its run unordered.

No torch here; the registry is read once per process (``yaml.safe_load``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from specprobe.errors import SpecprobeError


class Source(str, Enum):
    """Where a training position came from, most trusted first."""

    STATED = "stated"
    """Given by the user (``--position``, ``--tokens-per-step``, ``--stage-tokens``, a recipe)."""
    REGISTRY = "registry"
    """The bundled registry of published families (``specprobe/models/families.yaml``)."""
    REVISION = "revision name"
    """A revision-name (or repository-name) convention (:data:`CONVENTIONS`)."""
    METADATA = "specprobe.json"
    """A local training folder's ``specprobe.json`` (``tokens_per_step``; the demo writes it)."""
    TRAINER_STATE = "trainer_state.json"
    """A local Trainer checkpoint's ``trainer_state.json``."""


# ---- revision-name conventions ------------------------------------------------------------


@dataclass(frozen=True)
class Convention:
    """One published way of naming checkpoints: a regular expression over the revision name
    (fullmatch) with named groups ``step``, ``tokens`` + ``unit`` (B or T), ``chunk``,
    ``stage``, ``branch``; ``global_steps`` False when the step counter restarts at each
    stage after the first (such stages are sibling runs unless their start is stated)."""

    name: str
    pattern: str
    example: str
    family: str
    global_steps: bool = True

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


CONVENTIONS: tuple[Convention, ...] = (
    Convention(
        "stage-step-tokens",
        r"stage(?P<stage>\d+)(?:-(?P<branch>ingredient\d+))?-step(?P<step>\d+)-tokens(?P<tokens>\d+)(?P<unit>[BT])",
        "stage1-step1000-tokens5B, stage2-ingredient1-step1000-tokens5B",
        "OLMo-2",
        global_steps=False,
    ),
    Convention("stage-step-dash", r"stage(?P<stage>\d+)-step-(?P<step>\d+)", "stage1-step-40000", "SmolLM3"),
    Convention(
        "stage-step",
        r"stage(?P<stage>\d+)-step(?P<step>\d+)",
        "stage1-step1000",
        "OLMo-3",
        global_steps=False,
    ),
    Convention(
        "step-tokens", r"step(?P<step>\d+)-tokens(?P<tokens>\d+)(?P<unit>[BT])", "step20000-tokens84B", "OLMo"
    ),
    Convention("chunk", r"ckpt_(?P<chunk>\d+)", "ckpt_000100", "LLM360 Amber, K2"),
    Convention("global-step", r"global_step(?P<step>\d+)", "global_step1000", "BLOOM intermediate"),
    Convention("step-dash", r"step-(?P<step>\d+)", "step-125000", "SmolLM2"),
    Convention("step", r"step(?P<step>\d+)", "step143000", "Pythia, PolyPythias"),
    Convention(
        "checkpoint", r"checkpoint-(?P<step>\d+)", "checkpoint-1000", "Stanford CRFM, Trainer folders"
    ),
    Convention(
        "step-suffix",
        r"(?:.*?[-_])?(?:step|checkpoint)[-_]?(?P<step>\d+)",
        "run_step100, final-checkpoint_7",
        "other names ending in a step",
    ),
)
"""The revision-name conventions, tried in this order (the first that matches)."""


_UNITS = {"B": 10**9, "T": 10**12}


@dataclass(frozen=True)
class Parsed:
    """What a revision name (or a repository name) says of its checkpoint."""

    convention: str
    step: int | None = None
    tokens: int | None = None
    """Tokens as labelled (often rounded: OLMo-2's are rounded up to the billion)."""
    chunk: int | None = None
    stage: int | None = None
    branch: str | None = None
    global_steps: bool = True


def parse_revision(revision: str) -> Parsed | None:
    """The first of :data:`CONVENTIONS` that ``revision`` matches, read; None when none does.
    ``step1000`` → step 1000; ``stage1-step2000-tokens9B`` → step 2000, 9·10⁹ tokens, stage 1;
    ``ckpt_000100`` → chunk 100 (no step)."""
    for convention in CONVENTIONS:
        match = convention.regex.fullmatch(revision)
        if match is None:
            continue
        groups = match.groupdict()
        stage = _int(groups.get("stage"))
        return Parsed(
            convention=convention.name,
            step=_int(groups.get("step")),
            tokens=_tokens(groups.get("tokens"), groups.get("unit")),
            chunk=_int(groups.get("chunk")),
            stage=stage,
            branch=groups.get("branch"),
            global_steps=convention.global_steps or stage in (None, 1),
        )
    return None


def parse_step(revision: str) -> int | None:
    """The training step a revision name states (``step1000``, ``checkpoint-1000``,
    ``stage1-step1000-tokens5B``), or None (``main``, ``ckpt_000100``: a chunk)."""
    parsed = parse_revision(revision)
    return None if parsed is None else parsed.step


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _tokens(number: str | None, unit: str | None) -> int | None:
    if number is None or unit is None:
        return None
    return round(float(number) * _UNITS[unit.upper()])


# ---- the registry of published families ---------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One entry of the registry (``families.yaml``; its keys are documented there)."""

    name: str
    repos: str
    revisions: str
    run: str | None = None
    step_unit: int = 1
    final_step: int | None = None
    tokens_per_step: int | None = None
    train_batch_sequences: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Known:
    """A hub id found in the registry: its family, and what its name says."""

    family: Family
    run: str
    size: str | None
    seed: int | None
    step: int | None
    """For a family with one repository per checkpoint: the step its name states."""
    tokens: int | None


@cache
def registry() -> tuple[Family, ...]:
    """The bundled families, read once from ``families.yaml`` (checked: unknown keys and
    bad patterns raise SpecprobeError naming the entry)."""
    import yaml

    text = resources.files("specprobe.models").joinpath("families.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    names = {f for f in Family.__dataclass_fields__}
    conventions = {c.name for c in CONVENTIONS} | {"repo"}
    out = []
    for i, entry in enumerate(raw["families"]):
        unknown = set(entry) - names
        if unknown or entry.get("revisions") not in conventions:
            raise SpecprobeError(
                f"families.yaml: entry {i} ({entry.get('name')}): expected keys {', '.join(sorted(names))} "
                f"and revisions one of {', '.join(sorted(conventions))}, found {sorted(entry)}",
                "fix the registry entry",
            )
        re.compile(entry["repos"])
        out.append(Family(**entry))
    return tuple(out)


def known(model: str) -> Known | None:
    """The registry entry whose ``repos`` pattern matches the hub id ``model`` in full, with
    the run, size, seed (and, for one repository per checkpoint, step and tokens) its name
    states; None for an id the registry does not know."""
    for family in registry():
        match = re.fullmatch(family.repos, model)
        if match is None:
            continue
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        step = _int(groups.get("step"))
        return Known(
            family=family,
            run=family.run.format(**groups) if family.run else model,
            size=groups.get("size"),
            seed=_int(groups.get("seed")),
            step=None if step is None else step * family.step_unit,
            tokens=_tokens(groups.get("tokens"), groups.get("unit")),
        )
    return None


# ---- what the user states -----------------------------------------------------------------


@dataclass(frozen=True)
class StatedPosition:
    """One checkpoint's position as the user states it."""

    step: int | None = None
    tokens: int | None = None


@dataclass(frozen=True)
class Stated:
    """What the user states about a model's checkpoints (CLI or recipe)."""

    tokens_per_step: int | None = None
    stage_tokens: Mapping[str, int] = field(default_factory=dict)
    """Tokens seen before a stage whose step counter restarts (``stage2`` or
    ``stage2-ingredient1``): its checkpoints then join the main run at that offset."""
    positions: Mapping[str, StatedPosition] = field(default_factory=dict)
    """Positions by revision name (or by hub id for one-repository-per-checkpoint runs)."""
    run: str | None = None
    """The run this model's checkpoints belong to: models with the same run are one run
    (separate repositories, one per checkpoint)."""
    seed: int | None = None


# ---- a checkpoint's position ----------------------------------------------------------------


@dataclass(frozen=True)
class TrainingPosition:
    """Where in training a checkpoint is, and where each part came from.

    ``step``, ``tokens`` and ``chunk`` are None where unknown; ``source`` is where the step
    (or the chunk) came from, ``tokens_source`` where the tokens did; ``run`` names the
    training run (the hub id unless the checkpoint is part of a run declared or known to
    span repositories, or a sibling run of a stage); ``seed`` the run's seed where known.
    """

    run: str
    step: int | None = None
    tokens: int | None = None
    chunk: int | None = None
    source: Source | None = None
    tokens_source: Source | None = None
    convention: str | None = None
    family: str | None = None
    seed: int | None = None
    size: str | None = None
    note: str | None = None

    @property
    def known(self) -> bool:
        """Whether the checkpoint has a place in its run (a step, tokens or a chunk)."""
        return self.step is not None or self.tokens is not None or self.chunk is not None

    def record_fields(self) -> dict[str, Any]:
        """The record's fields: ``run``, ``step``, ``tokens_seen``, ``chunk``,
        ``position_source``, ``tokens_source``, ``seed``, ``family``."""
        return {
            "run": self.run,
            "step": self.step,
            "tokens_seen": self.tokens,
            "chunk": self.chunk,
            "position_source": None if self.source is None else self.source.value,
            "tokens_source": None if self.tokens_source is None else self.tokens_source.value,
            "run_seed": self.seed,
            "family": self.family,
        }


def locate(
    model: str,
    revision: str,
    stated: Stated | None = None,
    path: Path | None = None,
    metadata_tokens_per_step: int | None = None,
) -> TrainingPosition:
    """The training position of ``model`` at ``revision`` (``path``: a local checkpoint's
    folder, for ``trainer_state.json``; ``metadata_tokens_per_step``: from its training
    folder's ``specprobe.json``), from the sources in order of trust (module docstring).

    Tokens: the stated map, else step × tokens per step (stated, then registry, then
    ``specprobe.json``) plus the tokens before a restarting stage, else the tokens the name
    states (rounded), else ``num_input_tokens_seen``.

    Raises SpecprobeError when a stated tokens per step cannot apply (the checkpoint has no
    step, or a stage whose start is not known), rather than ignoring it.
    """
    stated = stated or Stated()
    entry = known(model) if path is None else None
    parsed = parse_revision(revision)
    if entry is not None and entry.family.revisions == "repo":
        parsed = None  # the position is in the repository's name; a revision is a branch
    trainer = _trainer_state(path)
    run = stated.run or (entry.run if entry else model)
    note = entry.family.note if entry else None

    step: int | None = None
    chunk: int | None = None
    source: Source | None = None
    mine = stated.positions.get(revision) or stated.positions.get(model)
    if mine is not None and mine.step is not None:
        step, source = mine.step, Source.STATED
    elif entry is not None and entry.step is not None:
        step, source = entry.step, Source.REGISTRY
    elif entry is not None and entry.family.final_step is not None and revision == "main":
        step, source = entry.family.final_step, Source.REGISTRY
    elif parsed is not None and (parsed.step is not None or parsed.chunk is not None):
        step, chunk, source = parsed.step, parsed.chunk, Source.REVISION
    elif trainer.get("global_step") is not None:
        step, source = int(trainer["global_step"]), Source.TRAINER_STATE

    # A stage whose step counter restarts is a sibling run, unless its start is stated.
    offset, sibling = 0, None
    if parsed is not None and not parsed.global_steps and source is Source.REVISION:
        stage = f"stage{parsed.stage}"
        branch = f"{stage}-{parsed.branch}" if parsed.branch else stage
        start = stated.stage_tokens.get(branch, stated.stage_tokens.get(stage))
        if start is None:
            sibling, run = branch, f"{run} {branch}"
        else:
            offset = start

    per_step, per_step_source = _tokens_per_step(stated, entry, metadata_tokens_per_step)
    if offset and per_step is None and (mine is None or mine.tokens is None):
        raise SpecprobeError(
            f"--stage-tokens places {model} @ {revision} on the main run by its tokens, but its tokens per "
            "step are not known (its step counter restarts, so steps alone cannot order the run)",
            "state them with --tokens-per-step N (or family.tokens_per_step in a recipe)",
        )
    tokens: int | None = None
    tokens_source: Source | None = None
    if mine is not None and mine.tokens is not None:
        tokens, tokens_source = mine.tokens, Source.STATED
    elif sibling is not None:
        pass  # tokens before the stage unknown: the run's own axis is its steps
    elif step is not None and per_step is not None:
        tokens, tokens_source = offset + step * per_step, per_step_source
    elif entry is not None and entry.tokens is not None:
        tokens, tokens_source = entry.tokens, Source.REGISTRY
    elif parsed is not None and parsed.tokens is not None:
        tokens, tokens_source = parsed.tokens, Source.REVISION
    elif trainer.get("num_input_tokens_seen"):
        tokens, tokens_source = int(trainer["num_input_tokens_seen"]), Source.TRAINER_STATE

    if stated.tokens_per_step is not None and tokens_source is not Source.STATED:
        _check_stated_applies(model, revision, step, chunk, sibling, stated)
    return TrainingPosition(
        run=run,
        step=step,
        tokens=tokens,
        chunk=chunk,
        source=source,
        tokens_source=tokens_source,
        convention=None if parsed is None else parsed.convention,
        family=entry.family.name if entry else None,
        seed=stated.seed if stated.seed is not None else (entry.seed if entry else None),
        size=entry.size if entry else None,
        note=note,
    )


def _tokens_per_step(
    stated: Stated, entry: Known | None, metadata: int | None
) -> tuple[int | None, Source | None]:
    if stated.tokens_per_step is not None:
        return stated.tokens_per_step, Source.STATED
    if entry is not None and entry.family.tokens_per_step is not None:
        return entry.family.tokens_per_step, Source.REGISTRY
    if metadata is not None:
        return metadata, Source.METADATA
    return None, None


def _check_stated_applies(
    model: str, revision: str, step: int | None, chunk: int | None, sibling: str | None, stated: Stated
) -> None:
    """Raise when a stated tokens per step cannot give this checkpoint's tokens."""
    name = f"{model} @ {revision}"
    if step is None:
        what = f"a data chunk ({chunk}), not a step" if chunk is not None else "no known step"
        raise SpecprobeError(
            f"--tokens-per-step {stated.tokens_per_step:,} needs each checkpoint's step, found {what} for {name}",
            f"state its position instead (--position {revision}=STEP or =STEP:TOKENS), or drop --tokens-per-step",
        )
    if sibling is not None:
        raise SpecprobeError(
            f"--tokens-per-step {stated.tokens_per_step:,} cannot give the tokens of {name}: its stage restarts "
            "the step counter and the tokens seen before it are not known",
            f"state them with --stage-tokens {sibling}=TOKENS (the tokens seen when it began)",
        )


def _trainer_state(path: Path | None) -> dict[str, Any]:
    """``global_step`` and ``num_input_tokens_seen`` of a local Trainer checkpoint ({} if none)."""
    if path is None:
        return {}
    state = path / "trainer_state.json"
    if not state.is_file():
        return {}
    try:
        loaded = json.loads(state.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    out = {}
    for key in ("global_step", "num_input_tokens_seen"):
        value = loaded.get(key)
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        ):
            out[key] = int(value)
    return out


def parse_tokens(text: str) -> int:
    """A token count as written: ``4096``, ``3896B`` (10⁹), ``4T`` (10¹²), ``1.5e9``."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([BT]?)\s*", text, re.IGNORECASE)
    if match is None:
        raise SpecprobeError(
            f"expected a token count (4096, 3896B, 4T), found {text!r}",
            "write tokens as digits, with B or T for 10⁹/10¹²",
        )
    value = float(match.group(1)) * (_UNITS[match.group(2).upper()] if match.group(2) else 1)
    return round(value)


def stated_positions(value: Any, where: str = "--position") -> dict[str, StatedPosition]:
    """Stated positions from ``REV=STEP`` / ``REV=STEP:TOKENS`` strings (the command line) or
    a mapping ``{REV: STEP}`` / ``{REV: {step: STEP, tokens: TOKENS}}`` (a recipe); tokens as
    :func:`parse_tokens` reads them. SpecprobeError naming ``where`` on anything else."""
    items: list[tuple[str, Any]]
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple) and all(isinstance(v, str) and "=" in v for v in value):
        items = [(k.strip(), v.strip()) for k, _, v in (t.partition("=") for t in value)]
    else:
        raise SpecprobeError(
            f"{where}: expected REVISION=STEP or REVISION=STEP:TOKENS, found {value!r}",
            "e.g. --position ckpt_000100=1000:4B, or in a recipe positions: {ckpt_000100: {step: 1000}}",
        )
    out = {}
    for name, spec in items:
        step: Any
        tokens: Any = None
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"step", "tokens"}
            if unknown:
                raise SpecprobeError(
                    f"{where}.{name}: expected keys step and tokens, found {', '.join(sorted(map(str, unknown)))}",
                    "write {step: 1000, tokens: 4B}",
                )
            step, tokens = spec.get("step"), spec.get("tokens")
        elif isinstance(spec, str):
            step, _, tokens = spec.partition(":")
            step, tokens = step.strip() or None, tokens.strip() or None
        else:
            step = spec
        try:
            parsed_step = None if step is None else int(str(step))
        except ValueError:
            parsed_step = -1
        if (parsed_step is not None and parsed_step < 0) or isinstance(step, bool):
            raise SpecprobeError(
                f"{where}: expected a step ≥ 0 for {name}, found {step!r}",
                f"write {name}=STEP, e.g. {name}=1000",
            )
        parsed_tokens = None if tokens is None else parse_tokens(str(tokens))
        if parsed_step is None and parsed_tokens is None:
            raise SpecprobeError(
                f"{where}: expected a step or tokens for {name}, found neither", f"write {name}=1000"
            )
        out[name] = StatedPosition(parsed_step, parsed_tokens)
    return out


def stated_stage_tokens(value: Any, where: str = "--stage-tokens") -> dict[str, int]:
    """Tokens before restarting stages from ``STAGE=TOKENS`` strings or a mapping
    (``stage2-ingredient1: 3896B``)."""
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, list | tuple) and all(isinstance(v, str) and "=" in v for v in value):
        items = [(k.strip(), v.strip()) for k, _, v in (t.partition("=") for t in value)]
    else:
        raise SpecprobeError(
            f"{where}: expected STAGE=TOKENS, found {value!r}", "e.g. --stage-tokens stage2-ingredient1=3896B"
        )
    out = {}
    for name, tokens in items:
        if not re.fullmatch(r"stage\d+(?:-ingredient\d+)?", name):
            raise SpecprobeError(
                f"{where}: expected a stage name (stage2, stage2-ingredient1), found {name!r}",
                "name the stage as its revisions do",
            )
        out[name] = parse_tokens(tokens)
    return out
