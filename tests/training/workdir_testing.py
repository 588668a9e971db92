"""Helpers for tests that check a workdir is left as it was."""

import hashlib
import os


def digest(folder) -> str:
    """One hash over every file's relative path and contents."""
    total = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(root, name)
            total.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as file:
                total.update(file.read())
    return total.hexdigest()
