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
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


def is_store_file(name: str) -> bool:
    """Whether a file of this name in a run folder is the store's alone: one of
    :data:`PROTECTED_FILES`, or a name of :data:`TEMPORARY_PATTERNS` (removed as a killed
    writer's leftover when the folder is next opened). No output may take such a name."""
    return name in PROTECTED_FILES or any(fnmatch.fnmatchcase(name, p) for p in TEMPORARY_PATTERNS)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write(
    path: str | Path,
    text: str | bytes,
    *,
    what: str = "the output",
    run_file: bool = False,
    inputs: Iterable[str | Path] = (),
    stdout: bool = False,
) -> Path | None:
    """Write ``text`` to ``path``: the one way specprobe writes a file.

    The file is written as a temporary file beside the target and renamed into place, so
    readers see the old file or the new one, never a part. Before anything is written,
    :func:`writable_target` refuses (SpecprobeError naming ``what``, e.g. ``--html``) a
    target that exists and is not a regular file (a directory, device, FIFO or socket), a
    symbolic link inside a run folder (specprobe never follows one there: a lock, results,
    config or figure path that is a link is refused, not written through), a file of a run
    folder that only the store writes (unless ``run_file``: the store's own write), and
    any input: the files and folders of ``inputs``, a model folder, anything under the
    Hugging Face cache. A symbolic link outside a run folder is followed: the file it
    points at is replaced, the link stays. ``-`` is standard output when ``stdout`` (the
    format allows it); then nothing is renamed and None is returned, else the path
    written.

    The file gets the permissions a plain ``open`` would give it (0644 under the usual
    umask 022), not the 0600 of the temporary file it is written as. A full disk is a
    SpecprobeError naming the path (the old file is left as it was)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if str(path) == "-":
        if not stdout:
            raise SpecprobeError(
                f"{what} cannot be written to standard output (-)", f"give {what} a file name"
            )
        out = standard_output(what)
        out.flush()
        out.buffer.write(data)
        out.buffer.flush()
        return None
    target = writable_target(path, what=what, run_file=run_file, inputs=inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        writable_target(target, what=what, run_file=run_file, inputs=inputs)  # unchanged since
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno not in _FULL:
            raise
        raise SpecprobeError(
            f"cannot write {target}: {err.strerror} (the disk or quota is full?); the file is as it was",
            "free some space, then rerun the same command with --resume: every finished record is kept",
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def standard_output(what: str) -> Any:
    """The standard output ``-`` means for ``what``; SpecprobeError when it is closed (a
    command started with ``>&-`` has none: Python's ``sys.stdout`` is None)."""
    import sys

    stream = sys.stdout
    if stream is None or getattr(stream, "closed", False) or not hasattr(stream, "buffer"):
        raise SpecprobeError(
            f"cannot write {what} to standard output (-): standard output is closed",
            f"give {what} a file name, or run the command with standard output open",
        )
    return stream


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link that does not resolve (a loop?)"),
)


def _kind(mode: int) -> str | None:
    """What a file of this mode is, when it is not a regular file (None when it is)."""
    return next(
        (name for test, name in _KINDS if test(mode)), None if stat.S_ISREG(mode) else "not a regular file"
    )


def _absolute(path: Path) -> Path:
    """``path`` made absolute without following links (``..`` folded as written)."""
    return Path(os.path.abspath(path))


def owning_run_folder(path: str | Path) -> Path | None:
    """The nearest folder above ``path`` (as written, links not followed) that is a run
    folder, or None: the folder whose files specprobe owns."""
    for folder in _absolute(output_path(path)).parents:
        if is_run_folder(folder):
            return folder
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def huggingface_cache_roots() -> list[Path]:
    """The Hugging Face folders (resolved): ``HF_HOME`` (default ``~/.cache/huggingface``)
    and the hub, transformers and datasets caches when set elsewhere. Nothing under them is
    specprobe's to write (a hub snapshot's files are links into its blobs)."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    names = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE")
    roots = [home, *(os.environ[n] for n in names if os.environ.get(n))]
    return [Path(os.path.realpath(os.path.expanduser(root))) for root in roots]


MODEL_FILES: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "tf_model.h5",
    "flax_model.msgpack",
    "*.onnx",
    "*.gguf",
)
"""Files that make a folder holding ``config.json`` a model folder (an input, never an output)."""


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a saved model: ``config.json`` beside weights (:data:`MODEL_FILES`)."""
    try:
        if not (folder / "config.json").is_file():
            return False
        return any(fnmatch.fnmatchcase(entry.name, p) for entry in folder.iterdir() for p in MODEL_FILES)
    except OSError:
        return False


def writable_target(
    path: str | Path,
    *,
    what: str = "the output",
    run_file: bool = False,
    inputs: Iterable[str | Path] = (),
) -> Path:
    """The file that writing ``path`` would replace, ``~`` expanded; SpecprobeError when
    :func:`atomic_write` must not write it (see there for the rules). Writes nothing."""
    typed = output_path(path)
    out = _absolute(typed)
    run = out.parent if run_file else owning_run_folder(out)
    if run is not None:  # specprobe's own folder: no link below it is followed
        for part in [out, *out.parents]:
            if part == run:
                break
            if part.is_symlink():
                raise SpecprobeError(
                    f"{what} {path}: {part} is a symbolic link inside the run folder {run}",
                    "specprobe does not write through links inside its run folder; remove the link, "
                    "or write elsewhere",
                )
        target = out
    else:  # the user's own link is followed: its file is replaced, the link stays
        target = Path(os.path.realpath(out)) if out.is_symlink() else out
    try:
        mode: int | None = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as err:
        raise SpecprobeError(f"cannot write {what} {path}: {err.strerror}", "check the path") from None
    kind = None if mode is None else _kind(mode)
    if kind is not None:
        hint = (
            f"give {what} a file name, e.g. {typed / ('report' + ('.csv' if 'CSV' in what else '.html'))}"
            if kind == "a directory"
            else f"give {what} the name of a regular file, or - for standard output where the format allows it"
        )
        raise SpecprobeError(f"expected a file name for {what}, found {kind}: {path}", hint)
    real = Path(os.path.realpath(target))
    if not run_file and is_store_file(real.name) and is_run_folder(real.parent):
        raise SpecprobeError(
            f"{what} {path} would overwrite {real.name} of the run folder {real.parent}",
            f"write it under another name, e.g. {what} {real.parent / 'report.html'}",
        )
    refuse_input_place(real, what=what, shown=path, inputs=inputs)
    return target


def refuse_input_place(
    real: Path, *, what: str, shown: str | Path, inputs: Iterable[str | Path] = (), example: str | None = None
) -> None:
    """SpecprobeError when the resolved path ``real`` (shown as ``shown``) lies where
    specprobe reads and never writes: one of ``inputs`` (the command's dataset and local
    models) or inside one of them, under the Hugging Face cache, or inside a model folder.
    Every file write (:func:`writable_target`), every run folder (:func:`check_run_folder`,
    before its lock is made) and every command's ``--out`` (with its inputs, before any
    work) is checked by it; ``example`` is the hint's example of a place outside them."""
    for given in inputs:
        source = Path(os.path.realpath(output_path(given)))
        if real == source or (source.is_dir() and source in real.parents):
            elsewhere = example or f"{what} {Path.cwd() / ('report' + (real.suffix or '.html'))}"
            raise SpecprobeError(
                f"{what} {shown} would overwrite an input of this command ({given})",
                f"write it outside the inputs, e.g. {elsewhere}",
            )
    for root in huggingface_cache_roots():
        if _inside(real, root):
            raise SpecprobeError(
                f"{what} {shown} is inside the Hugging Face cache ({root})",
                "specprobe never writes into the cache it reads models from; write it elsewhere",
            )
    model = next((folder for folder in real.parents if is_model_folder(folder)), None)
    if model is not None:
        raise SpecprobeError(
            f"{what} {shown} is inside the model folder {model}",
            "specprobe never writes into a model's folder; write it elsewhere",
        )


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


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file itself, not a link to one (a run folder's own
    files are read as what they are: a link there is never followed)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_run_folder(directory: Path) -> bool:
    """Whether ``directory`` is (or was) a run folder: it holds the marker or results."""
    return is_regular_file(directory / MARKER_FILE) or is_regular_file(directory / RESULTS_FILE)


def check_output(
    path: str | Path,
    option: str,
    *,
    folder: bool = False,
    runs: Iterable[str | Path] = (),
    inputs: Iterable[str | Path] = (),
) -> Path:
    """The output path ``path`` (given as ``option``, e.g. ``--html``; a ``folder`` of
    files, e.g. figures, or else one file), ``~`` expanded; SpecprobeError when
    :func:`atomic_write` would refuse it (:func:`writable_target`), or when it would
    replace a file that only the store writes (:data:`PROTECTED_FILES`) of one of ``runs``,
    the run folders of this command, which may not exist yet. ``-`` (standard output) is
    returned as it is. Writes nothing: every command calls it for each of its outputs
    before any work."""
    if str(path) == "-":
        if folder:
            raise SpecprobeError(
                f"{option} is a folder of files: it cannot be standard output (-)", f"give {option} a folder"
            )
        standard_output(option)
        return Path("-")
    out = output_path(path)
    runs_here = {Path(os.path.realpath(output_path(r))) for r in runs}
    real = Path(os.path.realpath(out))
    if is_store_file(real.name) and (real.parent in runs_here or is_run_folder(real.parent)):
        example = out.parent / f"report{out.suffix if out.suffix in ('.html', '.csv') else '.html'}"
        raise SpecprobeError(
            f"{option} {path} would overwrite {out.name} of the run folder {out.parent}",
            f"write it under another name, e.g. {option} {example}",
        )
    if not folder:
        writable_target(out, what=option, inputs=inputs)
        return out
    if out.exists() and not out.is_dir():
        raise SpecprobeError(
            f"expected a folder for {option}, found a file: {path}", f"give {option} a folder"
        )
    writable_target(out / "figure.png", what=option, inputs=inputs)  # the folder's place
    return out


def write_marker(directory: Path) -> None:
    """Write the marker file into ``directory`` unless it is there: the folder is specprobe's."""
    marker = directory / MARKER_FILE
    if not is_regular_file(marker):
        from specprobe.version import __version__

        atomic_write(
            marker,
            json.dumps({"specprobe_run": 1, "created_by": f"specprobe {__version__}"}) + "\n",
            run_file=True,
        )


def is_own_name(name: str) -> bool:
    """Whether specprobe writes files of this name into a run folder."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in OWN_PATTERNS)


def check_run_folder(directory: Path | str) -> None:
    """Raise SpecprobeError unless ``directory`` can be (or is) a specprobe run folder.

    Accepted: a path that does not exist yet, an empty folder, a folder with the marker
    file, or a folder holding only files specprobe writes (a run of an older specprobe,
    whose ``config.json`` must then be specprobe's). Refused: a folder inside an input
    (the Hugging Face cache, a model folder: :func:`refuse_input_place`) and a folder
    whose own files (:data:`PROTECTED_FILES`) are not regular files. Writes nothing.
    """
    directory = output_path(directory)
    # before its lock and marker are made (a model folder itself is refused below, naming its files)
    refuse_input_place(Path(os.path.realpath(directory)), what="the run folder", shown=directory)
    try:
        if directory.exists() and not directory.is_dir():
            raise SpecprobeError(
                f"expected a run folder at {directory}, found a file",
                "give --out a new or empty folder (specprobe writes results.jsonl and config.json into it)",
            )
        if not directory.exists():
            return
        _check_own_files(directory)
        if is_regular_file(directory / MARKER_FILE):
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


_ROLES = {
    RESULTS_FILE: "results file",
    CONFIG_FILE: "config file",
    MARKER_FILE: "marker file",
    LOCK_FILE: "lock file",
    PARTIAL_FILE: "set-aside file",
}


def _check_own_files(directory: Path) -> None:
    """Refuse a run folder where a file only the store writes (:data:`PROTECTED_FILES`) is
    there but is not a regular file (a link, a FIFO, a socket, a folder): specprobe reads
    and writes them only as what they are, and says so before any work, not when the
    first record is written."""
    for name in PROTECTED_FILES:
        path = directory / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISREG(mode):
            continue
        kind = f"a symbolic link (to {os.readlink(path)})" if stat.S_ISLNK(mode) else _kind(mode)
        raise SpecprobeError(
            f"the {_ROLES[name]} {path} of the run folder is {kind}, not a regular file",
            "specprobe never reads or writes its run folder's files through a link or a special file; "
            "move it away (or put the regular file back) and rerun",
        )


def _is_own_config(path: Path) -> bool:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("invocations"), list)
