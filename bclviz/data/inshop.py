"""DeepFashion In-shop Clothes Retrieval from a local copy.

Expected layout under ``root``::

    list_eval_partition.txt
    img/WOMEN/Dresses/id_00000002/02_1_front.jpg
    ...

``list_eval_partition.txt`` holds the number of images on line 1, the header
``image_name item_id evaluation_status`` on line 2, then one whitespace-separated row
per image, e.g. ``img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train``.
"""

from __future__ import annotations

import os
from pathlib import Path
import numpy as np

from bclviz.data.formats import ImageList, check_images_exist

__all__ = ["load_inshop", "PARTITION_FILE"]

PARTITION_FILE = "list_eval_partition.txt"
_STATUSES = ("train", "query", "gallery")
_HEADER = ("image_name", "item_id", "evaluation_status")


def _parse_partition(path: Path) -> list[tuple[str, str, str]]:
    """Rows ``(image_name, item_id, status)`` of the partition file, checked."""
    with open(path, encoding="utf-8-sig") as fh:
        lines = fh.read().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count on line 1 and the header on line 2")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(
            f"{path}, line 1: expected the number of images, got {lines[0]!r}"
        ) from None
    if tuple(lines[1].split()) != _HEADER:
        raise ValueError(
            f"{path}, line 2: expected the header {' '.join(_HEADER)!r}, got {lines[1]!r}"
        )
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        fields = tuple(line.split())
        if not fields:
            continue
        if len(fields) != 3 or fields[2] not in _STATUSES:
            raise ValueError(
                f"{path}, line {number}: expected 'image_name item_id evaluation_status' with "
                f"a status in {_STATUSES}, got {line!r}"
            )
        rows.append(fields)
    if len(rows) != count:
        raise ValueError(f"{path}: line 1 says {count} images but the file lists {len(rows)}")
    return rows


def _image_list(root: Path, rows: list[tuple[str, str, str]], classes: list[str]) -> ImageList:
    items = np.asarray([r[1] for r in rows], dtype=str)
    labels = np.searchsorted(np.asarray(classes, dtype=str), items)
    return ImageList(tuple(root / r[0] for r in rows), labels, tuple(classes), root)


def load_inshop(root: str | os.PathLike, *, check_files: bool = True) -> dict[str, ImageList]:
    """The In-shop train, query and gallery images, labelled by item id.

    Parameters
    ----------
    root : folder holding ``list_eval_partition.txt`` and the ``img/`` tree.
    check_files : bool, default True
        Check up front that every listed image exists.

    Returns
    -------
    dict with keys "train", "query", "gallery" (ImageList each, rows in file order)
        Labels are item ids sorted ascending: "train" has its own id space, "query" and
        "gallery" share one (a query and a gallery image match when their labels are
        equal). ``class_ids`` are the item id strings.

    Raises
    ------
    FileNotFoundError
        The partition file, or (``check_files``) an image it lists, is missing.
    ValueError
        Malformed partition file (the message names the file and line).
    """
    root = Path(root).expanduser()
    path = root / PARTITION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"In-shop partition file {path} not found; expected {PARTITION_FILE} in {root}"
        )
    rows = _parse_partition(path)
    if check_files:
        check_images_exist((root / r[0] for r in rows), path)
    parts = {s: [r for r in rows if r[2] == s] for s in _STATUSES}
    train_classes = sorted({r[1] for r in parts["train"]})
    test_classes = sorted({r[1] for s in ("query", "gallery") for r in parts[s]})
    return {
        "train": _image_list(root, parts["train"], train_classes),
        "query": _image_list(root, parts["query"], test_classes),
        "gallery": _image_list(root, parts["gallery"], test_classes),
    }
