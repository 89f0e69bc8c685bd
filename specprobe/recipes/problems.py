"""What every part of a recipe's checks shares: the error that names the file and the key
path, and the helpers that check keys and suggest the fix ("did you mean")."""

from __future__ import annotations

from collections.abc import Mapping
from difflib import get_close_matches
from typing import Any

from specprobe.config import LIMITS
from specprobe.errors import SpecprobeError


class RecipeError(SpecprobeError):
    """A recipe file does not follow the schema: names the file, the key path and the fix."""


def whole_number(value: Any, source: str, where: str, limit: str, minimum: int | None = None) -> int:
    """``value`` if it is an integer of at least ``LIMITS[limit].low`` (or ``minimum``,
    when the bound depends on another value), else a RecipeError naming ``where``."""
    low = LIMITS[limit].low if minimum is None else minimum
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RecipeError(
            f"{source}: {where}: expected an integer >= {low}, found {value!r}",
            f"set {where.split('.')[-1]}",
        )
    return value


def only_keys(args: Mapping[str, Any], allowed: set[str], source: str, where: str) -> None:
    """Raise RecipeError at the first key of ``args`` not in ``allowed``."""
    for key in args:
        if key not in allowed:
            raise RecipeError(
                f"{source}: {where}: unknown key {key!r}{did_you_mean(key, allowed)}",
                f"allowed keys: {', '.join(sorted(allowed))}",
            )


def did_you_mean(word: str, choices: Any) -> str:
    """``; did you mean 'x'?`` for the closest of ``choices``, or nothing."""
    close = get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
