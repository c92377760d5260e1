"""Glyphs: a many-class image dataset rendered offline from TrueType fonts.

Every class is one character: digits ``0-9``, Latin ``A-Z`` and ``a-z``, Greek capital
and small letters (:data:`GLYPH_CLASSES`, 111 characters). Each image is one character
drawn in one font, centred on a ``size x size`` grayscale canvas, with a random scale,
shift and rotation per image.

Protocol, "open-set by font": the fonts are split into *training fonts* and *evaluation
fonts* that share no font. The old model trains on the training-font images of a subset
of the classes (extended-class, ``old_ratio``), the new model on the training-font
images of all classes, and retrieval is evaluated on images of **all** classes drawn
in the held-out fonts (query = gallery, leave-one-out). Classes are therefore shared
with training (evaluation labels use the training ids), but every evaluation image
comes from a font that no model has seen.

Crowding is realistic and deliberate: some classes look alike (``O o 0``, ``l I 1``,
``x X``), and most Greek capitals use the very outline of a Latin capital (``A`` and
``Α``, ``B`` and ``Β``, ...). Classes whose renderings are pixel-identical in every
font used are listed in ``info["identical_classes"]``; no model can tell them apart,
so they cap the attainable retrieval accuracy. They are label noise, not crowding that
a better model could undo: ``lookalikes="drop"`` (the scenarios other than
``default-v1``) leaves out the Greek member of every pair in :data:`GLYPH_LOOKALIKES`.

This module builds the dataset (:func:`make_glyphs`) and caches it; finding fonts and
drawing characters live in :mod:`bclviz.data.glyph_fonts` (its public names are
re-exported here). Fonts are looked for in ``font_dir`` if given, else in matplotlib's
bundled font folder (matplotlib comes with the ``lab`` extra,
``pip install 'bclviz[lab]'``), else in ``/usr/share/fonts/truetype/dejavu`` (Debian
package ``fonts-dejavu-core``); files are sorted by name. Fonts are drawn (by ``seed``)
from those that have every requested class; when too few do, from those that have every
digit and Latin letter, and classes missing from any font used are dropped. A glyph is
missing when it renders empty or exactly like a code point no font maps (``.notdef``).

The rendered images are cached as ``.npz`` files, by default in the ``glyphs/`` folder
of the cache root (:func:`bclviz.cache.cache_dir`: ``$BCLVIZ_CACHE/glyphs`` when that
variable is set, else ``$XDG_CACHE_HOME/bclviz/glyphs`` or ``~/.cache/bclviz/glyphs``;
never the working directory), keyed by a hash of every parameter that changes them,
the font files (names and sizes) and the Pillow/FreeType versions; a corrupt cache file
is regenerated.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import PIL
import torch
from PIL import features

from bclviz import cache
from bclviz.data import glyph_fonts, splits
from bclviz.data.base import BCLData, Labeled
from bclviz.data.glyph_fonts import (
    DEBIAN_FONTS,  # noqa: F401 - re-exported; lookups read glyph_fonts.DEBIAN_FONTS
    GLYPH_CLASSES,
    find_fonts,
    font_search_paths,
    render_glyph_images,
)
from bclviz.io import atomic_write

__all__ = [
    "GLYPH_CLASSES",
    "GLYPH_LOOKALIKES",
    "DEFAULT_CACHE",
    "font_search_paths",
    "find_fonts",
    "render_glyph_images",
    "glyph_cache_dir",
    "make_glyphs",
]

#: ``make_glyphs(cache_dir=DEFAULT_CACHE)`` (the default): the ``glyphs/`` folder of the
#: cache root, resolved at call time. A ``Path("default")`` is a folder of that name.
DEFAULT_CACHE = "default"
_CACHE_VERSION = 1
_FILES = ("x", "char_index", "font_index", "chars", "train_fonts", "eval_fonts",
          "skipped_fonts", "identical_classes", "key")

#: Greek letters drawn exactly like a Latin one (pixel-identical glyph outlines) in at
#: least 12 of the 16 bundled fonts that have every class (matplotlib 3.x: DejaVu and
#: STIX): capitals Alpha Beta Epsilon Zeta Eta Iota Kappa Mu Nu Omicron Rho Tau Upsilon
#: Chi (A B E Z H I K M N O P T Y X) and small omicron (o). ``lookalikes="drop"`` leaves
#: them out; the Latin letter stays.
GLYPH_LOOKALIKES = "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧο"
_LOOKALIKES = ("keep", "drop")


def glyph_cache_dir(cache_dir: str | os.PathLike | None = DEFAULT_CACHE) -> Path | None:
    """The folder :func:`make_glyphs` caches into: ``cache.cache_dir("glyphs")`` for
    :data:`DEFAULT_CACHE` (read from the environment now), None for None, else the path."""
    if cache_dir is None:
        return None
    if isinstance(cache_dir, str) and cache_dir == DEFAULT_CACHE:
        return cache.cache_dir("glyphs")
    return Path(cache_dir).expanduser()


# ----------------------------------------------------------------------------- checks
def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_float(value, name: str, low: float, high: float, *, high_open: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not (low <= value < high if high_open else low <= value <= high):
        interval = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def _check_classes(classes) -> str:
    if isinstance(classes, str) and classes == "all":
        return GLYPH_CLASSES
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not all(
        isinstance(c, str) and len(c) == 1 for c in classes
    ):
        raise ValueError(
            f"classes must be 'all' or a sequence of single characters, got {classes!r}"
        )
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must hold at least 2 distinct characters, got {classes!r}")
    return "".join(classes)


def _check_fonts(value, name: str) -> int | tuple[str, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return _check_int(value, name, 1)
    if isinstance(value, str) or not isinstance(value, Sequence) or not value or not all(
        isinstance(v, str) for v in value
    ):
        raise ValueError(f"{name} must be a positive integer or a list of font names, "
                         f"got {value!r}")
    return tuple(sorted(set(Path(v).stem for v in value)))


# ----------------------------------------------------------------------------- choosing
def _choose_fonts(usable: list[Path], *, train, evaluation, seed: int):
    """Named fonts first, then counts filled at random (by ``seed``) from the rest."""
    by_name = {p.stem: p for p in usable}
    chosen = {}
    for role, want in (("train_fonts", train), ("eval_fonts", evaluation)):
        if isinstance(want, tuple):
            unknown = [w for w in want if w not in by_name]
            if unknown:
                raise ValueError(f"{role} names fonts that are not usable here: {unknown}; "
                                 f"usable: {sorted(by_name)}")
            chosen[role] = list(want)
    if set(chosen.get("train_fonts", ())) & set(chosen.get("eval_fonts", ())):
        raise ValueError("train_fonts and eval_fonts must not share a font")
    rest = [s for s in sorted(by_name) if not any(s in v for v in chosen.values())]
    counts = {r: w for r, w in (("train_fonts", train), ("eval_fonts", evaluation))
              if isinstance(w, int)}
    if sum(counts.values()) > len(rest):
        raise ValueError(f"{counts} asks for more fonts than the {len(rest)} usable ones left: "
                         f"{rest}")
    order = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))]
    for role, count in counts.items():
        chosen[role], order = sorted(order[:count]), order[count:]
    return [by_name[s] for s in chosen["train_fonts"]], [by_name[s] for s in chosen["eval_fonts"]]


def _generate(fonts: list[Path], chars: str, key: str, opts: dict, seeds) -> dict:
    """Everything the cache file holds (the slow part: renders every glyph)."""
    em = opts["size"] * glyph_fonts._SUPERSAMPLE
    required = glyph_fonts._REQUIRED
    coverage = {p: set(glyph_fonts._font_masters(p, chars + required, em)) for p in fonts}
    latin = [p for p in fonts if set(required) <= coverage[p]]
    full = [p for p in latin if set(chars) <= coverage[p]]
    choose = functools.partial(_choose_fonts, train=opts["train_fonts"],
                               evaluation=opts["eval_fonts"], seed=seeds[0])
    try:  # fonts that have every class, if there are enough of them
        train, evaluation = choose(full)
    except ValueError:  # else fonts with digits and Latin letters; missing classes dropped
        train, evaluation = choose(latin)
    used = train + evaluation
    kept = "".join(c for c in chars if all(c in coverage[p] for p in used))
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} of the requested classes exist in every font used "
                         f"({[p.name for p in used]}); choose other classes")
    x, char_index, font_index, identical = render_glyph_images(
        used, kept, size=opts["size"], images_per_font=opts["images_per_font"], seed=seeds[1],
        max_rotation=opts["max_rotation"], max_shift=opts["max_shift"],
        scale_range=opts["scale_range"],
    )
    names = lambda ps: np.array([p.stem for p in ps], dtype=str)  # noqa: E731
    return {
        "x": x, "char_index": char_index, "font_index": font_index,
        "chars": np.array(list(kept), dtype=str), "train_fonts": names(train),
        "eval_fonts": names(evaluation), "skipped_fonts": names(p for p in fonts if p not in latin),
        "identical_classes": np.array(identical, dtype=str), "key": np.array(key),
    }  # fmt: skip


def _load(path: Path, key: str, size: int) -> dict | None:
    """The cache file's arrays, or None when it is missing, unreadable or stale."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {name: npz[name] for name in _FILES}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = out["x"].shape[0] if out["x"].ndim == 3 else -1
    if (str(out["key"]) != key or out["x"].dtype != np.uint8 or out["x"].shape[1:] != (size, size)
            or out["char_index"].shape != (n,) or out["font_index"].shape != (n,)):
        return None
    return out


def _save(path: Path, arrays: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: savez would append ".npz" to a name
            np.savez_compressed(fh, **arrays)

    atomic_write(path, write)


# ----------------------------------------------------------------------------- dataset
def make_glyphs(
    *,
    seed: int = 0,
    size: int = 28,
    images_per_font: int = 8,
    classes: Literal["all"] | Sequence[str] = "all",
    train_fonts: int | Sequence[str] = 8,
    eval_fonts: int | Sequence[str] = 4,
    old_ratio: float = 0.5,
    cache_dir: str | os.PathLike | None = DEFAULT_CACHE,
    font_dir: str | os.PathLike | None = None,
    max_rotation: float = 10.0,
    max_shift: float = 0.08,
    scale_range: tuple[float, float] = (0.8, 1.1),
    lookalikes: Literal["keep", "drop"] = "keep",
) -> BCLData:
    """Characters in many fonts, evaluated open-set by font (see the module docstring).

    Parameters
    ----------
    seed : which fonts train and evaluate (when given as counts), the per-image scale,
        shift and rotation, and the old classes all derive from it.
    size : side of the square images in pixels (>= 8).
    images_per_font : images of each character in each font (>= 1).
    classes : "all" (:data:`GLYPH_CLASSES`) or the characters to use. Characters missing
        from any font used are dropped (listed in ``info["dropped_classes"]``).
    train_fonts, eval_fonts : a number of fonts, drawn at random by ``seed`` from the
        usable fonts, or font names (file names without ``.ttf``). Never overlap.
    old_ratio : in (0, 1); the old model trains on ``ceil(old_ratio * C)`` classes chosen
        at random by ``seed`` (extended-class), relabelled ``0..C_old-1``.
    cache_dir : folder of the ``.npz`` cache. Default (:data:`DEFAULT_CACHE`): the
        ``glyphs/`` folder of the cache root, ``bclviz.cache.cache_dir("glyphs")``
        (``$BCLVIZ_CACHE/glyphs`` when that variable is set), looked up at each call;
        never the working directory. None renders every time.
    font_dir : folder of ``.ttf`` files; default: see :func:`font_search_paths`.
    max_rotation : degrees, in [0, 180]; rotation uniform in ``[-max_rotation, max_rotation]``.
    max_shift : fraction of ``size`` in [0, 0.5); each axis uniform in ``[-max_shift, max_shift]``.
    scale_range : ``(low, high)`` with ``0 < low <= high``; size factor drawn uniformly.
    lookalikes : "keep" every class, or "drop" the Greek letters of
        :data:`GLYPH_LOOKALIKES` (listed in ``info["dropped_lookalikes"]``). Dropping
        happens after rendering, so both share one cache file.

    Returns
    -------
    BCLData
        ``name="glyphs"``; inputs float32 ``(n, 1, size, size)`` in [0, 1]. ``new_train``
        holds the training-font images of every class (labels ``0..C-1``, old classes
        first), ``query`` = ``gallery`` the evaluation-font images of every class with
        the same label ids (``query_is_gallery=True``). Label ``i`` is the character
        ``info["class_chars"][i]``.

    Raises
    ------
    ImportError
        ``font_dir`` is None, matplotlib is not installed and no Debian font is found;
        the message says ``pip install 'bclviz[lab]'``.
    FileNotFoundError
        No ``.ttf`` font found; the message names the folders searched.
    ValueError
        A parameter is invalid, or the fonts cannot satisfy it (too few usable fonts,
        unknown font names); the message names the parameter and the value.
    """
    seed = splits._check_seed(seed)
    size = _check_int(size, "size", 8)
    images_per_font = _check_int(images_per_font, "images_per_font", 1)
    chars = _check_classes(classes)
    train = _check_fonts(train_fonts, "train_fonts")
    evaluation = _check_fonts(eval_fonts, "eval_fonts")
    n_eval_fonts = evaluation if isinstance(evaluation, int) else len(evaluation)
    if n_eval_fonts * images_per_font < 2:
        raise ValueError(f"eval_fonts * images_per_font must be >= 2 (leave-one-out needs two "
                         f"images per class), got {n_eval_fonts} * {images_per_font}")
    splits._check_ratio(old_ratio, "old_ratio", allow_one=False)
    max_rotation = _check_float(max_rotation, "max_rotation", 0.0, 180.0, high_open=False)
    max_shift = _check_float(max_shift, "max_shift", 0.0, 0.5, high_open=True)
    if (isinstance(scale_range, str) or not isinstance(scale_range, Sequence)
            or len(scale_range) != 2):
        raise ValueError(f"scale_range must be a pair (low, high), got {scale_range!r}")
    low = _check_float(scale_range[0], "scale_range[0]", 1e-3, 10.0, high_open=False)
    high = _check_float(scale_range[1], "scale_range[1]", low, 10.0, high_open=False)
    if lookalikes not in _LOOKALIKES:
        raise ValueError(f"lookalikes must be one of {list(_LOOKALIKES)}, got {lookalikes!r}")

    fonts = find_fonts(font_dir)
    s_fonts, s_draw, s_old = (
        int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(3)
    )
    opts = {"size": size, "images_per_font": images_per_font, "train_fonts": train,
            "eval_fonts": evaluation, "max_rotation": max_rotation, "max_shift": max_shift,
            "scale_range": (low, high)}
    key = hashlib.sha256(json.dumps({
        "version": _CACHE_VERSION, "seed": seed, "classes": chars, **opts,
        "fonts": [(p.name, p.stat().st_size) for p in fonts],
        "pillow": PIL.__version__, "freetype": features.version("freetype2"),
    }, sort_keys=True).encode()).hexdigest()
    folder = glyph_cache_dir(cache_dir)
    path = None if folder is None else folder / f"glyphs-{key[:20]}.npz"
    arrays = None if path is None else _load(path, key, size)
    if arrays is None:
        arrays = _generate(fonts, chars, key, opts, (s_fonts, s_draw))
        if path is not None:
            _save(path, arrays)
    dropped = ""
    if lookalikes == "drop":
        dropped = "".join(c for c in arrays["chars"].tolist() if c in GLYPH_LOOKALIKES)
        arrays = _drop_classes(arrays, dropped)
    return _assemble(arrays, chars, old_ratio=old_ratio, seed=seed, s_old=s_old,
                     opts=opts, fonts=fonts, cache_file=path, lookalikes=lookalikes, dropped_lookalikes=dropped)


def _drop_classes(arrays: dict, drop: str) -> dict:
    """``arrays`` without the images of the characters in ``drop`` (kept ones renumbered)."""
    chars = arrays["chars"].tolist()
    keep = np.array([c not in drop for c in chars])
    if keep.sum() < 2:
        raise ValueError(f"dropping the lookalikes {drop!r} leaves {int(keep.sum())} class(es); keep them")
    rows = keep[arrays["char_index"]]
    renumber = np.cumsum(keep) - 1
    return {**arrays, "x": arrays["x"][rows], "char_index": renumber[arrays["char_index"][rows]],
            "font_index": arrays["font_index"][rows], "chars": arrays["chars"][keep],
            "identical_classes": np.array([g for g in ("".join(c for c in group if c not in drop)
                                                       for group in arrays["identical_classes"].tolist())
                                           if len(g) > 1], dtype=str)}


def _assemble(arrays: dict, requested: str, *, old_ratio: float, seed: int, s_old: int,
              opts: dict, fonts: list[Path], cache_file: Path | None, lookalikes: str = "keep",
              dropped_lookalikes: str = "") -> BCLData:
    kept = "".join(arrays["chars"].tolist())
    n_train_fonts = len(arrays["train_fonts"])
    is_train = arrays["font_index"] < n_train_fonts
    x = torch.from_numpy(arrays["x"][:, None] / np.float32(255))
    y = arrays["char_index"]
    old_index, class_order = splits.extended_class(y[is_train], ratio=old_ratio, seed=s_old)
    labels = torch.from_numpy(splits.relabel(y, class_order))
    train_rows, eval_rows = (torch.from_numpy(np.flatnonzero(m)) for m in (is_train, ~is_train))
    new_train = Labeled(x[train_rows], labels[train_rows])
    old_train = new_train.subset(torch.from_numpy(old_index))
    evaluation = Labeled(x[eval_rows], labels[eval_rows])
    info = {
        "seed": seed, "setting": "extended-class", "protocol": "open-set-by-font",
        "old_ratio": float(old_ratio), **{k: v for k, v in opts.items() if "fonts" not in k},
        "font_folder": str(fonts[0].parent),
        "train_fonts": arrays["train_fonts"].tolist(), "eval_fonts": arrays["eval_fonts"].tolist(),
        "skipped_fonts": arrays["skipped_fonts"].tolist(),
        "dropped_classes": "".join(c for c in requested if c not in kept and c not in dropped_lookalikes),
        "lookalikes": lookalikes, "dropped_lookalikes": dropped_lookalikes,
        "identical_classes": arrays["identical_classes"].tolist(),
        "class_chars": [kept[i] for i in class_order], "class_ids": class_order.tolist(),
        "eval_class_ids": class_order.tolist(), "n_old_train": len(old_train),
        "n_new_train": len(new_train), "n_eval": len(evaluation),
        "cache_file": None if cache_file is None else str(cache_file),
    }  # fmt: skip
    return BCLData(
        name="glyphs",
        old_train=old_train,
        new_train=new_train,
        query=evaluation,
        gallery=evaluation,
        num_classes=len(class_order),
        num_old_classes=len(np.unique(y[is_train][old_index])),
        input_shape=(1, opts["size"], opts["size"]),
        query_is_gallery=True,
        info=info,
    )
