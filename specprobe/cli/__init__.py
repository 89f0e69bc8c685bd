"""The command line (Typer): one module per command.

``app`` is the ``specprobe`` console script's entry point (``specprobe.cli:app``).
"""

from specprobe.cli.app import app

__all__ = ["app"]
