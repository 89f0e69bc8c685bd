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

import errno
import fnmatch
import json
import os
import tempfile
from collections.abc import Iterable
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


PROTECTED_FILES: tuple[str, ...] = (RESULTS_FILE, CONFIG_FILE, MARKER_FILE, LOCK_FILE, PARTIAL_FILE)
"""The files of a run folder that only the store writes: no report, CSV or figure may
replace them (:func:`check_output`)."""


TEMPORARY_PATTERNS: tuple[str, ...] = tuple(p for p in OWN_PATTERNS if p.endswith(".tmp"))
"""The half-written files :func:`atomic_write` leaves behind when the process is killed
(``kill -9``) between creating and renaming them; removed on the next open (under the lock)."""


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
"""Write errors that say the disk (or the quota) is full, not that the path is wrong."""


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a part.

    The file gets the permissions a plain ``open`` would give it (0644 under the usual
    umask 022), not the 0600 of the temporary file it is written as. A full disk is a
    SpecprobeError naming the path (the old file is left as it was)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno not in _FULL:
            raise
        raise SpecprobeError(
            f"cannot write {path}: {err.strerror} (the disk or quota is full?); the file is as it was",
            "free some space, then rerun the same command with --resume: every finished record is kept",
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporary_files(directory: Path) -> list[Path]:
    """Remove the temporary files a killed writer left in the run folder (call it with the
    folder's lock held: then no other writer has one open); returns those removed."""
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    for entry in entries:
        if any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in TEMPORARY_PATTERNS):
            try:
                entry.unlink()
            except OSError:  # best effort: a leftover does no harm but clutter
                continue
            removed.append(entry)
    return removed


def output_path(path: str | Path) -> Path:
    """A path as the user typed it, ``~`` expanded: how every path option is read."""
    return Path(path).expanduser()


def is_run_folder(directory: Path) -> bool:
    """Whether ``directory`` is (or was) a run folder: it holds the marker or results."""
    return (directory / MARKER_FILE).is_file() or (directory / RESULTS_FILE).is_file()


def check_output(
    path: str | Path,
    option: str,
    *,
    folder: bool = False,
    runs: Iterable[str | Path] = (),
    inputs: Iterable[str | Path] = (),
) -> Path:
    """The output path ``path`` (given as ``option``, e.g. ``--html``; a ``folder`` of
    files, e.g. figures, or else one file), ``~`` expanded; SpecprobeError when writing it
    would replace what it must not: a file of a run folder that only the store writes
    (:data:`PROTECTED_FILES`, in a folder that is a run folder or is one of ``runs``, the
    run folders of this command, which may not exist yet), an input (a file of ``inputs``,
    or anything inside an input folder). Writes nothing: every
    command calls it for each of its outputs before any work."""
    out = output_path(path)
    target = out.resolve()
    example = out.parent / (
        "figures" if folder else f"report{out.suffix if out.suffix in ('.html', '.csv') else '.html'}"
    )
    runs_here = {output_path(r).resolve() for r in runs}
    if target.name in PROTECTED_FILES and (target.parent in runs_here or is_run_folder(target.parent)):
        raise SpecprobeError(
            f"{option} {path} would overwrite {target.name} of the run folder {out.parent}",
            f"write it under another name, e.g. {option} {example}",
        )
    for given in inputs:
        source = output_path(given).resolve()
        if target == source or (source.is_dir() and source in target.parents):
            raise SpecprobeError(
                f"{option} {path} would overwrite an input of this command ({given})",
                f"write it outside the inputs, e.g. {option} {Path.cwd() / example.name}",
            )
    return out


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
    directory = output_path(directory)
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
