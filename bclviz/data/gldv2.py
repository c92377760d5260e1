"""Google Landmarks Dataset v2 (GLDv2) from a local copy.

Expected layout under ``root`` (as published by the dataset authors)::

    train.csv                     id,url,landmark_id   (or id,landmark_id)
    train_clean.csv               landmark_id,images   (images: space-separated ids)
    train/a/b/c/abc....jpg        training image with id "abc..."
    index.csv                     id
    index/a/b/c/abc....jpg        retrieval index image
    retrieval_solution_v2.1.csv   id,images,Usage      (relevant index ids per query)
    test/a/b/c/abc....jpg         retrieval query image

Retrieval relevance is given per query (not by class), so retrieval images are
unlabeled (:class:`~bclviz.data.formats.ImageList` with label ``-1``) and
:class:`RetrievalSplit` carries the relevant index positions of every query; score
rankings with :func:`map_at_k_relevance`, the official mAP@100.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from csv import reader as csv_reader
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bclviz.data.formats import ImageList, check_images_exist

__all__ = [
    "RetrievalSplit",
    "load_gldv2_train",
    "load_gldv2_retrieval",
    "map_at_k_relevance",
    "gldv2_image_path",
]

TrainCSV = Literal["train_clean.csv", "train.csv"]
Usage = Literal["Public", "Private", "Ignored"]
USAGES = ("Public", "Private", "Ignored")
SOLUTION_CSV = "retrieval_solution_v2.1.csv"
INDEX_CSV = "index.csv"

# each train layout: the columns it needs (extra columns such as "url" are allowed)
_TRAIN_LAYOUTS = {"per-image": ("id", "landmark_id"), "per-class": ("landmark_id", "images")}
_ID = re.compile(r"[0-9A-Za-z_-]{3,}")


def gldv2_image_path(root: str | os.PathLike, folder: str, image_id: str) -> Path:
    """``root/folder/a/b/c/<image_id>.jpg`` for ``image_id = "abc..."``."""
    return Path(root) / folder / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


# ----------------------------------------------------------------------------- csv
def _csv_file(root: Path, name: str, what: str) -> Path:
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"GLDv2 {what} {path} not found; expected {name} in {root}")
    return path


def _columns(path: Path, header: list[str] | None, layouts: dict[str, tuple[str, ...]]):
    """Which layout ``header`` matches, and the position of each column it names."""
    found = [h.strip() for h in header or []]
    for layout, needed in layouts.items():
        if set(needed) <= set(found):
            return layout, {name: found.index(name) for name in found}, len(found)
    expected = " or ".join(repr(",".join(c)) for c in layouts.values())
    raise ValueError(f"{path}: header {','.join(found)!r} lacks the columns {expected}")


def _fields(path: Path, row: list[str], width: int, line: int) -> list[str]:
    if len(row) != width:
        raise ValueError(
            f"{path}, line {line}: expected {width} comma-separated fields, got {len(row)}"
        )
    return [f.strip() for f in row]


def _image_id(value: str, path: Path, line: int) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(
            f"{path}, line {line}: {value!r} is not an image id "
            "(3 or more letters, digits, '_' or '-')"
        )
    return value


# ----------------------------------------------------------------------------- train
def load_gldv2_train(
    root: str | os.PathLike,
    *,
    csv: TrainCSV | str = "train_clean.csv",
    min_images_per_class: int = 1,
    check_files: bool = True,
) -> ImageList:
    """The GLDv2 training images and their landmark labels.

    Parameters
    ----------
    root : folder holding the CSV and ``train/``.
    csv : "train_clean.csv" (default) or "train.csv", a file name inside ``root``.
        The layout is read from the header: ``landmark_id,images`` (one row per
        landmark, space-separated image ids) or ``id,landmark_id`` with optional extra
        columns such as ``url`` (one row per image).
    min_images_per_class : int, default 1
        Landmarks with fewer images are dropped.
    check_files : bool, default True
        Check up front that every image file exists (slow for millions of images).

    Returns
    -------
    ImageList
        Images in file order; labels ``0..C-1`` in ascending landmark id;
        ``class_ids`` are the landmark ids (int).

    Raises
    ------
    FileNotFoundError
        The CSV, or (``check_files``) an image it lists, is missing; the message names it.
    ValueError
        Wrong header, malformed row (file and line named) or no image left.
    """
    root = Path(root).expanduser()
    if isinstance(min_images_per_class, bool) or not isinstance(min_images_per_class, int) or (
        min_images_per_class < 1
    ):
        raise ValueError(
            f"min_images_per_class must be an integer >= 1, got {min_images_per_class!r}"
        )
    path = _csv_file(root, csv, "train list")
    ids: list[str] = []
    landmarks: list[int] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = csv_reader(fh)
        layout, col, width = _columns(path, next(rows, None), _TRAIN_LAYOUTS)
        for row in rows:
            if not row:
                continue
            fields = _fields(path, row, width, rows.line_num)
            try:
                landmark = int(fields[col["landmark_id"]])
            except ValueError:
                raise ValueError(
                    f"{path}, line {rows.line_num}: landmark_id "
                    f"{fields[col['landmark_id']]!r} is not an integer"
                ) from None
            found = fields[col["images"]].split() if layout == "per-class" else [fields[col["id"]]]
            ids += [_image_id(i, path, rows.line_num) for i in found]
            landmarks += [landmark] * len(found)
    landmarks_np = np.asarray(landmarks, dtype=np.int64)
    classes, counts = np.unique(landmarks_np, return_counts=True)
    classes = classes[counts >= min_images_per_class]
    keep = np.flatnonzero(np.isin(landmarks_np, classes))
    if len(keep) == 0:
        raise ValueError(
            f"{path}: no image left (it lists {len(ids)} images; "
            f"min_images_per_class={min_images_per_class})"
        )
    paths = tuple(gldv2_image_path(root, "train", ids[i]) for i in keep)
    if check_files:
        check_images_exist(paths, path)
    labels = np.searchsorted(classes, landmarks_np[keep])
    return ImageList(paths, labels, tuple(int(c) for c in classes), root)


# ----------------------------------------------------------------------------- retrieval
@dataclass(frozen=True, eq=False, repr=False)
class RetrievalSplit:
    """GLDv2 retrieval queries, index and ground truth.

    Attributes
    ----------
    query : ImageList, unlabeled, Q images from ``test/``.
    index : ImageList, unlabeled, N images from ``index/`` in ``index.csv`` order.
    relevant : list of Q sorted int64 arrays: positions in ``index`` relevant to
        each query (empty for ``Ignored`` queries).
    usage : tuple of Q strings, "Public", "Private" or "Ignored".
    """

    query: ImageList
    index: ImageList
    relevant: list[np.ndarray]
    usage: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.relevant) == len(self.usage) == len(self.query)):
            raise ValueError(
                f"relevant ({len(self.relevant)}) and usage ({len(self.usage)}) need one "
                f"entry per query ({len(self.query)})"
            )

    def __repr__(self) -> str:
        return f"RetrievalSplit(query={self.query!r}, index={self.index!r})"


def _unlabeled(paths: tuple[Path, ...], root: Path) -> ImageList:
    return ImageList(paths, np.full(len(paths), -1, dtype=np.int64), (), root)


def load_gldv2_retrieval(
    root: str | os.PathLike,
    *,
    usage: Sequence[Usage] = ("Private",),
    check_files: bool = True,
) -> RetrievalSplit:
    """The GLDv2 retrieval test split (queries, index and relevance).

    Parameters
    ----------
    root : folder holding ``retrieval_solution_v2.1.csv`` (``id,images,Usage``),
        ``index.csv`` (``id``), ``test/`` and ``index/``.
    usage : which queries to keep, default ("Private",), the usual report; values
        among "Public", "Private", "Ignored" (ignored queries have no relevant image).
    check_files : bool, default True
        Check up front that every query and index image exists.

    Returns
    -------
    RetrievalSplit
        Queries in file order; ``relevant[q]`` lists positions in ``index``.

    Raises
    ------
    FileNotFoundError
        A CSV, or (``check_files``) an image, is missing; the message names it.
    ValueError
        Wrong header, malformed row, an unknown Usage value, or a relevant id that is
        not in ``index.csv`` (file and line named).
    """
    root = Path(root).expanduser()
    usage = (usage,) if isinstance(usage, str) else tuple(usage)
    if not usage or any(u not in USAGES for u in usage):
        raise ValueError(f"usage must be a non-empty sequence of values in {USAGES}, got {usage!r}")
    index_path = _csv_file(root, INDEX_CSV, "index list")
    solution_path = _csv_file(root, SOLUTION_CSV, "retrieval solution")

    position: dict[str, int] = {}
    with open(index_path, newline="", encoding="utf-8-sig") as fh:
        rows = csv_reader(fh)
        _, col, width = _columns(index_path, next(rows, None), {"index": ("id",)})
        for row in rows:
            if row:
                image_id = _image_id(_fields(index_path, row, width, rows.line_num)[col["id"]],
                                     index_path, rows.line_num)
                if image_id in position:
                    raise ValueError(
                        f"{index_path}, line {rows.line_num}: duplicate id {image_id!r}"
                    )
                position[image_id] = len(position)

    query_ids, relevant, kept_usage = [], [], []
    with open(solution_path, newline="", encoding="utf-8-sig") as fh:
        rows = csv_reader(fh)
        needed = {"solution": ("id", "images", "Usage")}
        _, col, width = _columns(solution_path, next(rows, None), needed)
        for row in rows:
            if not row:
                continue
            fields = _fields(solution_path, row, width, rows.line_num)
            value = fields[col["Usage"]]
            if value not in USAGES:
                raise ValueError(
                    f"{solution_path}, line {rows.line_num}: Usage {value!r} is not one of {USAGES}"
                )
            if value not in usage:
                continue
            images = fields[col["images"]]
            wanted = [] if images in ("", "None") else images.split()
            unknown = [i for i in wanted if i not in position]
            if unknown:
                raise ValueError(
                    f"{solution_path}, line {rows.line_num}: relevant id {unknown[0]!r} is not "
                    f"listed in {index_path}"
                )
            query_ids.append(_image_id(fields[col["id"]], solution_path, rows.line_num))
            relevant.append(np.unique(np.asarray([position[i] for i in wanted], dtype=np.int64)))
            kept_usage.append(value)

    query_paths = tuple(gldv2_image_path(root, "test", i) for i in query_ids)
    index_paths = tuple(gldv2_image_path(root, "index", i) for i in position)
    if check_files:
        check_images_exist(query_paths, solution_path)
        check_images_exist(index_paths, index_path)
    return RetrievalSplit(
        _unlabeled(query_paths, root), _unlabeled(index_paths, root), relevant, tuple(kept_usage)
    )


# ----------------------------------------------------------------------------- metric
def map_at_k_relevance(ranked, relevant: Sequence, *, k: int = 100) -> float:
    """Mean average precision at ``k`` with per-query relevance (official GLDv2 mAP@100).

    For a query with relevant set ``R`` and ranking ``r_1, r_2, ...``:
    ``AP@k = sum_{i <= k} P(i) rel(i) / min(|R|, k)``, where ``rel(i)`` is 1 when ``r_i``
    is in ``R`` and was not already ranked higher (repeated predictions count as
    misses, as in the official code), and ``P(i)`` the precision of the first ``i``
    predictions. The result is the mean over all queries.

    Parameters
    ----------
    ranked : int array (numpy or CPU tensor), shape (Q, m)
        Index positions, best first; only the first ``k`` columns count. Padding with a
        position that is never relevant (e.g. -1) is allowed.
    relevant : sequence of Q int arrays
        Relevant index positions of each query (e.g. ``RetrievalSplit.relevant``).
    k : int, default 100

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        Shapes disagree, ``k < 1``, or a query has no relevant position (its AP is
        undefined; load without "Ignored" queries).
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked must be a 2-D integer array, got {ranked.dtype} {ranked.shape}")
    if len(relevant) != len(ranked) or len(ranked) == 0:
        raise ValueError(
            f"ranked has {len(ranked)} rows and relevant {len(relevant)} entries; "
            "expected the same number, at least 1"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    total = 0.0
    for q, (row, rel) in enumerate(zip(ranked[:, :k], relevant)):
        rel = np.unique(np.asarray(rel, dtype=np.int64))
        if rel.size == 0:
            raise ValueError(f"query {q} has no relevant index image; its AP@k is undefined")
        first = np.zeros(len(row), dtype=bool)
        first[np.unique(row, return_index=True)[1]] = True
        hit = first & np.isin(row, rel)
        ranks = np.flatnonzero(hit) + 1
        total += float(np.sum(np.arange(1, len(ranks) + 1) / ranks)) / min(rel.size, k)
    return total / len(ranked)
