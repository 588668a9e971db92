"""Workdir paths that may be local or on a bucket (`gs://...`), through etils.epath.

Reading and writing a bucket needs the `tpu` extra (gcsfs, google-cloud-storage); local paths need
nothing more. Local paths are made absolute because orbax requires it.
"""

import os

from etils import epath


def workdir_path(path: str) -> epath.Path:
    if "://" in str(path):
        return epath.Path(path)
    return epath.Path(os.path.abspath(os.path.expanduser(str(path))))


def is_remote(path: epath.Path) -> bool:
    return "://" in str(path)
