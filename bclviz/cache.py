"""Where bclviz keeps what it can regenerate: one cache root for every cache.

The root is ``$BCLVIZ_CACHE`` when set, else ``$XDG_CACHE_HOME/bclviz``, else
``~/.cache/bclviz`` (the platform's per-user cache on Linux; the same path is used on
other systems). It never depends on the working directory, so notebooks, the CLI and
``bclviz findings`` find the same caches from any folder and never write into the
repository. Folders below the root:

- ``glyphs/``: rendered glyph images (``.npz``), keyed by every rendering option;
- ``fashion-mnist/``: Fashion-MNIST downloaded by torchvision (when asked to download);
- ``sweeps/<name>/``: sweep studies, one Optuna journal file per dataset and experiment
  (notebook 02, the training lab; :func:`bclviz.sweep.run_sweep`);
- ``findings/<dataset>/``: the studies behind ``docs/findings.md``;
- ``studies/``: the journal files of ``bclviz tune`` (without ``--storage``);
- ``features/<dataset>-<hash>/``: old-model features written by ``bclviz extract``.

Nothing is created at import time; callers create the folder they write into.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_root", "cache_dir"]

#: environment variable that overrides the cache root
CACHE_ENV = "BCLVIZ_CACHE"


def cache_root() -> Path:
    """The cache root (absolute; not created)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "bclviz").resolve()


def cache_dir(*parts: str) -> Path:
    """``cache_root() / part / ...`` (absolute; not created), e.g. ``cache_dir("sweeps", "nb02")``."""
    for part in parts:
        if not isinstance(part, str) or not part or part in (".", "..") or "/" in part or os.sep in part:
            raise ValueError(f"cache folder names must be plain non-empty names, got {part!r}")
    return cache_root().joinpath(*parts)
