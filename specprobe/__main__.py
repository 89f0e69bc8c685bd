"""``python -m specprobe``: the command line, for launchers (``accelerate launch -m specprobe``,
``torchrun -m specprobe``) and environments without the ``specprobe`` script."""

from specprobe.cli import app

app(prog_name="specprobe")
