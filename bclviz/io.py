"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A reader never sees a half-written file, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["atomic_write", "write_json", "write_npy", "write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path``.

    Raises ``OSError`` naming ``path`` when the folder cannot be written; the
    temporary file is removed on any failure.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise OSError(f"cannot write {path}: {err.strerror or err}") from err
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and str(path) not in str(err):
            raise OSError(f"cannot write {path}: {err.strerror or err}") from err
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write)


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_npy(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """Write ``arr`` as a ``.npy`` file (``allow_pickle=False``: numeric and string arrays only)."""
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(arr), allow_pickle=False)

    return atomic_write(path, write)
