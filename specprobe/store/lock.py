"""One writer at a time: the advisory lock on a run folder.

Writing happens under an advisory lock on the run folder (:class:`RunLock`: ``flock`` on
POSIX, which Linux maps to byte-range locks on NFS; the kernel releases it when the process
dies, ``kill -9`` included). A second writer is refused with a message naming the holder,
or waits its turn (``wait=True``).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from specprobe.errors import SpecprobeError
from specprobe.store.folder import LOCK_FILE

HOLDER_RECHECK_S = 1.0
"""How often a waiting writer reads the lock file again to name the holder of the moment."""


class RunLockedError(SpecprobeError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An advisory, exclusive lock on a run folder (the file ``.specprobe.lock`` in it).

    ``flock`` on POSIX (Linux maps it to byte-range locks on NFS, so it holds across
    machines there too), ``msvcrt.locking`` on Windows. The operating system releases the
    lock when the holder dies, so a killed sweep never leaves the folder locked. The lock
    file itself is never deleted (deleting it would let two processes lock two files).
    Not re-entrant: two RunLocks on one folder exclude each other even in one process.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """Who holds (or last held) the lock: pid, host, start time and command, as written."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return "another process"
        if not isinstance(info, dict) or "pid" not in info:
            return "another process"
        return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}" + (
            f" ({info['command']})" if info.get("command") else ""
        )

    def acquire(
        self,
        *,
        wait: bool = False,
        timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """Take the lock; if another process holds it, raise RunLockedError, or with ``wait``
        wait until it is released (``on_wait`` is told who holds it, and again whenever the
        lock passes to another process before this one gets it; after ``timeout`` seconds,
        if given, RunLockedError)."""
        if self._fd is not None:
            return
        fd = self._open()
        try:
            if not _try_lock(fd):
                self._wait(fd, wait=wait, timeout=timeout, on_wait=on_wait)
            _write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _open(self) -> int:
        """The lock file, opened for writing (the folder and the file made if need be)."""
        # Never through a link (O_NOFOLLOW: a link at the lock's path would have the lock
        # written into the file it points at) and never blocking on a FIFO (O_NONBLOCK).
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o644)
        except OSError as err:
            if self.path.is_symlink() or err.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise self._not_a_lock_file() from None
            raise SpecprobeError(
                f"cannot write into the run folder {self.directory}: {err.strerror}",
                "give --out a folder you can write to",
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._not_a_lock_file()
        return fd

    def _not_a_lock_file(self) -> SpecprobeError:
        return SpecprobeError(
            f"expected the lock file {self.path} to be a regular file, found "
            + ("a symbolic link" if self.path.is_symlink() else "another kind of file"),
            "specprobe does not write through links or into special files in its run folder; "
            "remove it (it holds only the last writer's pid) and rerun",
        )

    def _wait(
        self,
        fd: int,
        *,
        wait: bool,
        timeout: float | None,
        on_wait: Callable[[str], None] | None,
    ) -> None:
        """Another process holds the lock: RunLockedError, or with ``wait`` poll until this
        process holds it (RunLockedError after ``timeout`` seconds, if given)."""
        holder = self.holder()
        if not wait:
            raise RunLockedError(
                f"{self.directory} is being written by another specprobe process ({holder})",
                "wait for it to finish, pass --resume to wait for it and then continue the run, "
                "or choose another --out folder",
            )
        if on_wait is not None:
            on_wait(holder)
        deadline = None if timeout is None else time.monotonic() + timeout
        checked = time.monotonic()
        while not _try_lock(fd):
            if time.monotonic() - checked > HOLDER_RECHECK_S:
                # The lock may have passed to another waiter meanwhile: say who holds it
                # now, not who held it when this process started waiting.
                checked, now = time.monotonic(), self.holder()
                if now != holder:
                    holder = now
                    if on_wait is not None:
                        on_wait(holder)
            if deadline is not None and time.monotonic() > deadline:
                raise RunLockedError(
                    f"{self.directory} is still being written by another specprobe process "
                    f"({holder}) after {timeout:g} s",
                    "wait for it to finish, or write into another folder",
                )
            time.sleep(0.05)

    def release(self) -> None:
        """Release the lock (closing the file releases it too)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    """Write this process's pid, host, start time and command into the held lock file (what
    :meth:`RunLock.holder` shows the next writer)."""
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["specprobe", *sys.argv[1:]])[:200] if sys.argv else "",
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode())


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
