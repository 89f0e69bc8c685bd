"""The run folder: the files specprobe writes into it, the check that a folder is (or can
be) specprobe's, and the atomic write every file of it goes through.

A run directory holds ``results.jsonl`` (one record a line, in the order measured),
``config.json`` (the full invocation), a marker file ``.specprobe-run`` saying that the
folder is specprobe's, and a lock file ``.specprobe.lock`` (:mod:`specprobe.store.lock`).

**The folder belongs to specprobe.** A folder that holds files specprobe did not write
(and no marker) is refused before anything is written: ``--out`` pointing at a model
folder must not overwrite its ``config.json``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from pathlib import Path

from specprobe.errors import SpecprobeError

RESULTS_FILE = "results.jsonl"


CONFIG_FILE = "config.json"


MARKER_FILE = ".specprobe-run"
"""Written into every run folder specprobe creates or adopts: the folder is specprobe's."""


LOCK_FILE = ".specprobe.lock"
"""The advisory lock of the run folder; holds the current writer's pid, host and start time."""


PARTIAL_FILE = "results.partial.jsonl"
"""Cut last lines of ``results.jsonl`` (an interrupted write), set aside before the next write."""


OWN_PATTERNS: tuple[str, ...] = (
    RESULTS_FILE,
    CONFIG_FILE,
    MARKER_FILE,
    LOCK_FILE,
    PARTIAL_FILE,
    "figures",
    f".{RESULTS_FILE}.*.tmp",
    f".{CONFIG_FILE}.*.tmp",
    f".{MARKER_FILE}.*.tmp",
)
"""Names that specprobe writes into a run folder (fnmatch patterns). A folder without the
marker counts as a run folder of an older specprobe only when it holds nothing else."""


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_marker(directory: Path) -> None:
    """Write the marker file into ``directory`` unless it is there: the folder is specprobe's."""
    marker = directory / MARKER_FILE
    if not marker.is_file():
        from specprobe.version import __version__

        atomic_write(
            marker,
            json.dumps({"specprobe_run": 1, "created_by": f"specprobe {__version__}"}) + "\n",
        )


def is_own_name(name: str) -> bool:
    """Whether specprobe writes files of this name into a run folder."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in OWN_PATTERNS)


def check_run_folder(directory: Path | str) -> None:
    """Raise SpecprobeError unless ``directory`` can be (or is) a specprobe run folder.

    Accepted: a path that does not exist yet, an empty folder, a folder with the marker
    file, or a folder holding only files specprobe writes (a run of an older specprobe,
    whose ``config.json`` must then be specprobe's). Writes nothing.
    """
    directory = Path(directory)
    try:
        if directory.exists() and not directory.is_dir():
            raise SpecprobeError(
                f"expected a run folder at {directory}, found a file",
                "give --out a new or empty folder (specprobe writes results.jsonl and config.json into it)",
            )
        if not directory.exists() or (directory / MARKER_FILE).is_file():
            return
        names = sorted(entry.name for entry in directory.iterdir())
    except OSError as err:
        raise SpecprobeError(
            f"cannot read the run folder {directory}: {err.strerror}", "check the path and its permissions"
        ) from None
    foreign = [name for name in names if not is_own_name(name)]
    if not foreign and CONFIG_FILE in names and not _is_own_config(directory / CONFIG_FILE):
        foreign = [f"{CONFIG_FILE} (not a specprobe config)"]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise SpecprobeError(
            f"{directory} is not a specprobe run folder: it holds files specprobe did not write ({shown})",
            "give --out a new or empty folder; specprobe refuses to write beside other files "
            "(a model folder's config.json would be overwritten)",
        )


def _is_own_config(path: Path) -> bool:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("invocations"), list)
