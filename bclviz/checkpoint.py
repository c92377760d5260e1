"""Checkpoints: tensors in a ``.pt`` file (state_dicts only) plus JSON metadata.

Loading uses ``torch.load(..., weights_only=True)``: no pickled code is ever executed.
The metadata records the configuration that produced the weights; a checkpoint whose
configuration differs from the one asked for is refused with the differing keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .io import atomic_write, write_json

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointMismatch"]

FORMAT = "bclviz-checkpoint-1"
_TENSORS, _META = "bclviz_tensors", "bclviz_meta"


class CheckpointMismatch(ValueError):
    """The checkpoint was written for another configuration."""


def _meta_path(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".json")


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, dict], meta: dict) -> Path:
    """Write ``tensors`` (name -> state_dict) to ``path`` and ``meta`` to ``path + '.json'``.

    Both writes are atomic. The metadata is stored inside the ``.pt`` as well, so the
    ``.pt`` alone is a whole checkpoint (what :func:`load_checkpoint` reads); the
    ``.json`` beside it is a readable copy.
    """
    path = Path(path)
    payload = {"format": FORMAT, **meta}
    # A kill between the two writes leaves a whole .pt and a stale readable copy: harmless.
    atomic_write(path, lambda tmp: torch.save({_TENSORS: tensors, _META: json.dumps(payload)}, tmp))
    write_json(_meta_path(path), payload)
    return path


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_checkpoint(path: str | os.PathLike, *, expect: dict | None = None) -> tuple[dict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    expect : metadata entries that must match (compared after flattening nested dicts,
        e.g. ``{"config": {...}}``). A difference raises :class:`CheckpointMismatch`.

    Returns
    -------
    (tensors, meta)

    Raises
    ------
    FileNotFoundError when the weights or the metadata file is missing; ValueError for a
    truncated or corrupt file.
    """
    path = Path(path)
    meta_file = _meta_path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad magic, pickled code, ...
        raise ValueError(f"checkpoint {path} is truncated or corrupt: {err}") from err
    if isinstance(tensors, dict) and set(tensors) == {_TENSORS, _META}:
        meta, tensors, meta_file = json.loads(tensors[_META]), tensors[_TENSORS], path
    else:  # written before the metadata moved into the .pt
        if not meta_file.exists():
            raise FileNotFoundError(f"checkpoint file {meta_file} does not exist")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"checkpoint metadata {meta_file} is not valid JSON: {err}") from err
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT:
        raise ValueError(f"{meta_file} is not a bclviz checkpoint (format {fmt!r}, expected {FORMAT!r})")
    if expect is not None:
        want, got = _flatten(json.loads(json.dumps(expect))), _flatten(meta)
        diff = sorted(k for k in want if got.get(k, "<missing>") != want[k])
        if diff:
            details = "; ".join(f"{k}: checkpoint {got.get(k, '<missing>')!r} vs expected {want[k]!r}" for k in diff[:8])
            raise CheckpointMismatch(f"checkpoint {path} was written for another configuration ({details})")
    return tensors, meta
