"""Errors that specprobe raises on bad input.

Every error carries a ``hint``: what the user can do about it. The CLI prints
``error: <message>`` and ``hint: <hint>`` on one line each and exits non-zero; a
traceback appears only with ``--debug``.
"""

from __future__ import annotations


class SpecprobeError(Exception):
    """Base class: something about the input or the setting is not what specprobe expects.

    The message says what was expected and what was found; ``hint`` says what to do.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class BatchError(SpecprobeError):
    """The batch cannot be turned into outputs, targets and a mask (empty, mis-shaped, all masked)."""


class NonFiniteError(SpecprobeError):
    """The model produced NaN or infinite outputs or gradients on the counted outputs."""


class TooLargeError(SpecprobeError):
    """An exact computation was asked for on more outputs than it can afford."""


class ParameterSelectionError(SpecprobeError):
    """Parameter name patterns matched nothing, or the model has no trainable parameters."""
