"""Advisory file locks (POSIX `flock`) that a killed process can never leave stuck.

The kernel releases an flock when its holder dies, however it dies, so a lock file left behind by a
killed run is simply taken over by the next one. The file holds its owner (`pid@host since time`)
so that the one-line error can name the process in the way. Used for a workdir (one run at a time;
`WorkdirLock`) and for a dataset folder while it is generated (`BuildLock`: the second process
waits, then reads what the first built).

flock works on local disks and on NFS (v4, or v3 with lockd); a `gs://` workdir is not locked.
"""

import contextlib
import fcntl
import os
import socket
import sys
import time

from research.errors import UserError
from research.paths import check_writable, is_remote


class FileLock:
    """An exclusive flock on `path` (created if missing), recording its owner in the file.

    The file is removed on release. A lock taken on a file that another process removed in the
    meantime would lock nothing, so `acquire` checks that `path` is still the file it locked.
    """

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def owner(self) -> str:
        """Who holds (or last held) the lock, as written in the file; '' if unknown."""
        try:
            with open(self.path) as file:
                return file.read().strip()
        except OSError:
            return ""

    def acquire(self, *, blocking: bool) -> bool:
        """Takes the lock; with blocking=False returns False at once if another process holds it."""
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                os.close(fd)
                return False
            if self._still_at_path(fd):
                break
            os.close(fd)  # the holder before us removed the file: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode())
        self._fd = fd
        return True

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        os.close(self._fd)
        self._fd = None

    def __exit__(self, *exc) -> None:
        self.release()


class WorkdirLock(FileLock):
    """One run per workdir: a second run stops at once, naming the process that holds it."""

    NAME = ".lock"

    def __init__(self, workdir: str, flag: str = "--workdir"):
        super().__init__(os.path.join(workdir, self.NAME))
        self.workdir, self.flag = workdir, flag

    def __enter__(self) -> "WorkdirLock":
        if not self.acquire(blocking=False):
            holder = self.owner() or "another process"
            raise UserError(
                f"{self.flag} {self.workdir} is in use by {holder}; wait for that run to end or "
                "stop it (it resumes from its checkpoint), or use another --workdir"
            )
        return self


class BuildLock(FileLock):
    """Serialises generating one dataset folder: a process that finds it taken says so and waits."""

    def __init__(self, folder: str):
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        super().__init__(folder.rstrip("/") + ".lock")
        self.folder = folder

    def __enter__(self) -> "BuildLock":
        if not self.acquire(blocking=False):
            holder = self.owner() or "another process"
            print(f"waiting for {holder} to finish generating {self.folder}", file=sys.stderr)
            self.acquire(blocking=True)
        return self


@contextlib.contextmanager
def claim_workdir(directory):
    """The workdir (an epath.Path) checked writable and locked for this run (unless remote).

    A folder created here and still empty at the end (the run failed before writing anything) is
    removed again, so a refused command leaves no trace.
    """
    if is_remote(directory):
        yield
        return
    created = not directory.exists()
    check_writable(directory)
    try:
        with WorkdirLock(str(directory)):
            yield
    finally:
        if created and not any(directory.iterdir()):
            directory.rmdir()
