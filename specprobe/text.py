"""How specprobe writes numbers: a value rounded to the precision of its error, and counts.

``2.92 ± 0.05`` and ``1.32e6 ± 3.9e4`` (the value to the place of its error's leading
digits), counts as ``16.4k`` or ``1.02M``, fractions as ``43.2%``, and the plain
4-significant-digit form of the self-check (``2.918 ± 0.013``). One set of rules for the terminal, the HTML
report, the figures and the verdict's sentences.
"""

from __future__ import annotations

import math

FIXED_RANGE = (1e-2, 1e5)
"""Magnitudes written in fixed point; smaller and larger ones in compact scientific notation."""

MAX_DIGITS = 5
"""Most significant digits a value shows, however small its error."""


# ---- numbers ---------------------------------------------------------------------------------


def _exponent(x: float) -> int:
    return math.floor(math.log10(abs(x)))


def _sci(x: float, digits: int) -> str:
    """``x`` with ``digits`` significant digits in compact scientific form: 8.06e5, 1.2e-6."""
    mantissa, _, exp = f"{x:.{max(digits, 1) - 1}e}".partition("e")
    return f"{mantissa}e{int(exp)}"


def _at_place(x: float, place: int) -> str:
    """``x`` rounded to the decimal place ``10**place``, fixed or scientific by magnitude."""
    if x == 0:
        return "0" if place >= 0 else f"{0:.{-place}f}"
    rounded = round(x, -place)
    exp = _exponent(rounded) if rounded else _exponent(x)
    digits = min(MAX_DIGITS, max(1, exp - place + 1))
    if FIXED_RANGE[0] <= abs(rounded) < FIXED_RANGE[1]:
        decimals = max(0, -(exp - digits + 1))
        return f"{rounded:.0f}" if decimals == 0 else f"{round(x, decimals):.{decimals}f}"
    return _sci(x, digits)


def _error_place(stderr: float) -> int:
    """The decimal place of an error's last shown digit: two digits when it starts with 1
    (0.013, not 0.01), else one (0.05)."""
    exp = _exponent(stderr)
    lead = round(stderr / 10.0**exp, 1)
    return exp - 1 if lead < 2 else exp


def number(value: float | None, digits: int = 4) -> str:
    """A value with ``digits`` significant digits, trailing zeros dropped: 2.918, 1.32e6."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if FIXED_RANGE[0] <= abs(value) < FIXED_RANGE[1]:
        text = _at_place(value, _exponent(value) - digits + 1)
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, _, exp = _sci(value, digits).partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exp}"


def value_error(value: float | None, stderr: float | None = None, digits: int = 4) -> str:
    """Value and standard error in one compact cell, the value rounded to the error's
    precision: ``5.638 ± 0.013``, ``7.35e-5 ± 1.2e-6``. Without an error: :func:`number`."""
    if value is None:
        return ""
    if not stderr or not math.isfinite(stderr) or not math.isfinite(value) or stderr < 0:
        return number(value, digits)
    place = _error_place(stderr)
    shown = _at_place(value, place)
    fixed = "e" not in shown
    if fixed and stderr >= 1e-4:
        error = f"{stderr:.{-place}f}" if place < 0 else f"{round(stderr, -place):.0f}"
    else:
        error = _sci(stderr, _exponent(stderr) - place + 1)
    return f"{shown} ± {error}"


def significant(value: float, stderr: float | None = None) -> str:
    """A number in 4 significant digits, with ``± stderr`` (2 digits) when one is given and
    non-zero: the self-check's and the examples' plain form (not rounded to the error)."""
    text = f"{value:.4g}"
    return f"{text} ± {stderr:.2g}" if stderr else text


def percent(value: float) -> str:
    """A fraction as a percentage with one decimal: 0.4321 → 43.2%."""
    return f"{value:.1%}"


def count(value: float | None, missing: str = "") -> str:
    """A count in k/M/B/T, three significant digits: 16.4k, 1.02M, 160 (a fractional count
    too: 76.1); ``missing`` for None."""
    if value is None:
        return missing
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"
