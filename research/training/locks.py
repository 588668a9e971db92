"""Advisory file locks (POSIX `flock`) that a killed process can never leave stuck.

The kernel releases an flock when its holder dies, however it dies, so a lock file left behind by a
killed run is simply taken over by the next one. The file holds its owner (`pid@host since time`)
so that the one-line error can name the process in the way. Used for a workdir (one run at a time;
`WorkdirLock`) and for a dataset folder while it is generated (`BuildLock`: the second process
waits, then reads what the first built).

flock works on local disks and on NFS (v4, or v3 with lockd). Object stores have no flock, so a
`gs://` workdir is locked by `BucketLock`: a lock object created only if absent (a generation
precondition, atomic on the store), renewed by a heartbeat, and taken over once its lease has
expired (its holder died without releasing it).
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

from research.errors import UserError
from research.training.paths import check_writable, is_remote


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
            raise in_use_error(self.flag, self.workdir, self.owner() or "another process")
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


def in_use_error(flag: str, workdir: str, holder: str) -> UserError:
    """The one line for a second run in a busy workdir, local or on a bucket."""
    return UserError(
        f"{flag} {workdir} is in use by {holder}; wait for that run to end or "
        "stop it (it resumes from its checkpoint), or use another --workdir"
    )


class ObjectStore(Protocol):
    """The conditional operations of an object store that a lock needs. A `generation` identifies
    one version of an object; every write names the generation it expects, and the store refuses it
    atomically (returning None) if the object has changed since: Cloud Storage's
    `if_generation_match`, with 0 meaning "only if absent"."""

    def read(self, name: str) -> tuple[str, int] | None:
        """(contents, generation), or None if there is no such object."""

    def write(self, name: str, data: str, *, if_generation: int) -> int | None:
        """Writes `data` if the object's generation is `if_generation` (0: absent); returns the new
        generation, or None when the precondition failed."""

    def delete(self, name: str, *, if_generation: int) -> None:
        """Deletes the object if it still has `if_generation`; otherwise leaves it."""


class GcsStore:
    """ObjectStore over a google-cloud-storage bucket (the `tpu` extra)."""

    PRECONDITION_FAILED, NOT_FOUND = 412, 404

    def __init__(self, bucket: str, client=None):
        if client is None:
            from google.cloud import storage  # the tpu extra; only gs:// workdirs need it

            client = storage.Client()
        self.bucket = client.bucket(bucket)

    def _refused(self, error: Exception, *codes: int) -> bool:
        return getattr(error, "code", None) in codes

    def read(self, name):
        blob = self.bucket.blob(name)
        try:
            data = blob.download_as_text()
        except Exception as error:
            if self._refused(error, self.NOT_FOUND):
                return None
            raise
        return data, int(blob.generation)

    def write(self, name, data, *, if_generation):
        blob = self.bucket.blob(name)
        try:
            blob.upload_from_string(data, if_generation_match=if_generation)
        except Exception as error:
            if self._refused(error, self.PRECONDITION_FAILED):
                return None
            raise
        return int(blob.generation)

    def delete(self, name, *, if_generation):
        try:
            self.bucket.blob(name).delete(if_generation_match=if_generation)
        except Exception as error:
            if not self._refused(error, self.PRECONDITION_FAILED, self.NOT_FOUND):
                raise


@dataclasses.dataclass
class BucketLock:
    """One run per workdir on an object store: the lock object `<workdir>/.lock` holds its owner
    and the time of its last heartbeat. It is created only if absent, renewed every `lease / 4`
    seconds by a daemon thread while the run holds it, deleted on release, and taken over by the
    next run once `lease` seconds have passed without a heartbeat (a killed holder). Every write
    is conditional on the generation last seen, so two runs can never both hold it."""

    store: ObjectStore
    name: str  # the lock object's name in the store
    workdir: str
    flag: str = "--workdir"
    lease: float = 300.0
    clock: Callable[[], float] = time.time
    _generation: int | None = None
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def _record(self) -> str:
        owner = f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}"
        return json.dumps({"owner": owner, "heartbeat": self.clock()})

    def acquire(self) -> None:
        """Takes the lock or raises the in-use UserError naming the holder."""
        generation = self.store.write(self.name, self._record(), if_generation=0)
        if generation is None:
            generation = self._take_over_if_stale()
        self._generation = generation

    def _take_over_if_stale(self) -> int:
        found = self.store.read(self.name)
        if found is None:  # released in between: try once more from scratch
            generation = self.store.write(self.name, self._record(), if_generation=0)
            if generation is not None:
                return generation
            found = self.store.read(self.name) or ("{}", -1)
        data, generation = found
        try:
            record = json.loads(data)
            holder, heartbeat = str(record["owner"]), float(record["heartbeat"])
        except (ValueError, KeyError, TypeError):
            holder, heartbeat = "an unreadable lock object", float("-inf")
        silent = self.clock() - heartbeat
        if silent < self.lease:
            raise in_use_error(self.flag, self.workdir, f"{holder} (heartbeat {silent:.0f} s ago)")
        print(
            f"taking over the lock of {holder} on {self.workdir}: no heartbeat for "
            f"{silent:.0f} s (lease {self.lease:.0f} s)",
            file=sys.stderr,
        )
        taken = self.store.write(self.name, self._record(), if_generation=generation)
        if taken is None:  # another run took it over first
            raise in_use_error(self.flag, self.workdir, "another run that took over a stale lock")
        return taken

    def heartbeat(self) -> bool:
        """Renews the lease; False if the lock is no longer ours (then the run should stop)."""
        generation = self.store.write(self.name, self._record(), if_generation=self._generation)
        if generation is None:
            return False
        self._generation = generation
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            if not self.heartbeat():
                print(f"warning: lost the lock on {self.workdir} to another run", file=sys.stderr)
                return

    def release(self) -> None:
        self._stop.set()
        if self._generation is not None:
            self.store.delete(self.name, if_generation=self._generation)
            self._generation = None

    def __enter__(self) -> "BucketLock":
        self.acquire()
        threading.Thread(target=self._beat, daemon=True, name="workdir-lock-heartbeat").start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def bucket_lock(directory, store: ObjectStore | None = None) -> BucketLock:
    """The BucketLock of a `gs://bucket/path` workdir."""
    scheme, _, rest = str(directory).partition("://")
    if scheme != "gs":
        raise UserError(
            f"--workdir {directory}: only local folders and gs:// buckets are supported"
        )
    bucket, _, path = rest.partition("/")
    name = f"{path.rstrip('/')}/{WorkdirLock.NAME}".lstrip("/")
    return BucketLock(store or GcsStore(bucket), name, str(directory))


@contextlib.contextmanager
def claim_workdir(directory, store: ObjectStore | None = None):
    """The workdir (an epath.Path) checked writable and locked for this run: an flock on local
    disks, a BucketLock on `gs://` (`store` replaces the Cloud Storage client in tests).

    A local folder created here and still empty at the end (the run failed before writing
    anything) is removed again, so a refused command leaves no trace.
    """
    if is_remote(directory):
        with bucket_lock(directory, store):
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


def workdir_in_use(directory) -> bool:
    """Whether another process holds a local workdir's lock (gs:// workdirs: False)."""
    if is_remote(directory) or not (directory / WorkdirLock.NAME).exists():
        return False
    lock = FileLock(str(directory / WorkdirLock.NAME))
    if not lock.acquire(blocking=False):
        return True
    lock.release()
    return False
