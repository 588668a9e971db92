"""Workdir paths that may be local or on a bucket (`gs://...`), through etils.epath.

Reading and writing a bucket needs the `tpu` extra (gcsfs, google-cloud-storage); local paths need
nothing more. Local paths are made absolute because orbax requires it.
"""

import os
import tempfile

from etils import epath

from research.errors import UserError


def workdir_path(path: str) -> epath.Path:
    if "://" in str(path):
        return epath.Path(path)
    return epath.Path(os.path.abspath(os.path.expanduser(str(path))))


def is_remote(path: epath.Path) -> bool:
    return "://" in str(path)


def check_writable(directory: epath.Path, flag: str = "--workdir") -> None:
    """Creates a local `directory` if missing and checks that files can be written in it; raises
    a one-line UserError otherwise (a file in the way, a read-only disk, no permission)."""
    if is_remote(directory):
        return
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{flag} {directory} is a file, not a folder; give a folder path")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise UserError(
            f"{flag} {directory} is not writable ({error.strerror}); give a folder you can write"
        ) from None
