"""Glyph fonts: finding TrueType fonts and drawing characters with them (Pillow).

The rendering half of :mod:`bclviz.data.glyphs` (which builds the dataset and caches
it); everything public here is re-exported there.

Fonts are looked for in ``font_dir`` if given, else in matplotlib's bundled font folder
(when matplotlib is installed: it comes with the ``lab`` extra,
``pip install 'bclviz[lab]'``), else in ``/usr/share/fonts/truetype/dejavu`` (Debian
package ``fonts-dejavu-core``); files are sorted by name. matplotlib is imported only
when fonts are looked up, never at import time. A glyph is missing when it renders empty
or exactly like a code point no font maps (``.notdef``).

Each image is one character drawn in one font, centred on a ``size x size`` grayscale
canvas (drawn at 4x and box-filtered down), with a random scale, shift and rotation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "GLYPH_CLASSES",
    "DEBIAN_FONTS",
    "font_search_paths",
    "find_fonts",
    "render_glyph_images",
]

_REQUIRED = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_GREEK = "".join(chr(c) for c in range(0x391, 0x3AA) if c != 0x3A2) + "".join(
    chr(c) for c in range(0x3B1, 0x3CA)
)
#: the classes of ``classes="all"``, in label-id order before the old/new split
GLYPH_CLASSES: str = _REQUIRED + _GREEK
DEBIAN_FONTS = "/usr/share/fonts/truetype/dejavu"
_UNMAPPED = "\U0010fffd"  # a private-use code point no font maps: renders as .notdef
_SUPERSAMPLE = 4  # images are drawn at 4x and box-filtered down (antialiasing)
_FILL = 0.8  # cap top ("H") to descender bottom ("p") spans this fraction of the canvas
_LAB_HINT = "pip install 'bclviz[lab]'"


# ----------------------------------------------------------------------------- fonts
def _matplotlib_fonts() -> Path | None:
    """matplotlib's bundled font folder, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_search_paths(font_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders :func:`find_fonts` looks in, in order (see the module docstring)."""
    if font_dir is not None:
        return [Path(font_dir).expanduser()]
    bundled = _matplotlib_fonts()
    return ([] if bundled is None else [bundled]) + [Path(DEBIAN_FONTS)]


#: fallback fonts that draw a placeholder for every character (not real glyphs)
_FALLBACK_FONTS = ("LastResort",)


def find_fonts(font_dir: str | os.PathLike | None = None) -> list[Path]:
    """The ``*.ttf`` files of the first search folder that has any, sorted by name.

    Fallback fonts that render a placeholder box for every code point (matplotlib ships
    ``LastResortHE``) are left out.

    Raises
    ------
    ImportError
        ``font_dir`` is None, matplotlib is not installed and the Debian folder has no
        font either; the message names matplotlib and ``pip install 'bclviz[lab]'``.
    FileNotFoundError
        No folder holds a ``.ttf`` file; the message names every folder searched.
    """
    places = font_search_paths(font_dir)
    for place in places:
        fonts = sorted((p for p in place.glob("*.ttf") if not p.name.startswith(_FALLBACK_FONTS)),
                       key=lambda p: p.name) if place.is_dir() else []
        if fonts:
            return fonts
    searched = ", ".join(str(p) for p in places)
    if font_dir is None and _matplotlib_fonts() is None:
        raise ImportError(
            f"glyphs looks up its fonts with matplotlib, which is not installed: "
            f"{_LAB_HINT} (matplotlib comes with the lab extra). No TrueType fonts (*.ttf) "
            f"found in: {searched} either; or install the Debian package fonts-dejavu-core, "
            f"or pass font_dir= a folder of .ttf files."
        )
    raise FileNotFoundError(
        f"no TrueType fonts (*.ttf) found in: {searched}. Install matplotlib "
        f"({_LAB_HINT}) or the Debian package fonts-dejavu-core, or pass font_dir= a "
        f"folder of .ttf files."
    )


class _Glyph(NamedTuple):
    """Ink of one character cropped from the master canvas; ``left, top`` locate it."""

    ink: np.ndarray  # uint8 (h, w)
    left: int
    top: int


def _master(font: ImageFont.FreeTypeFont, char: str) -> _Glyph | None:
    """``char`` drawn with its baseline-left point at (em, 2 em) on a 3 em canvas."""
    em = int(font.size)
    canvas = Image.new("L", (3 * em, 3 * em), 0)
    ImageDraw.Draw(canvas).text((em, 2 * em), char, font=font, fill=255, anchor="ls")
    box = canvas.getbbox()
    if box is None:
        return None
    left, top = box[0] - 1, box[1] - 1  # one blank pixel around the ink for the resampling
    return _Glyph(np.asarray(canvas.crop((left, top, box[2] + 1, box[3] + 1))), left, top)


def _font_masters(path: Path, chars: str, em: int) -> dict[str, _Glyph]:
    """Masters of the characters of ``chars`` that the font has (missing ones left out)."""
    font = ImageFont.truetype(str(path), em, layout_engine=ImageFont.Layout.BASIC)
    notdef = _master(font, _UNMAPPED)
    found = {}
    for char in dict.fromkeys(chars + "Hp"):
        glyph = _master(font, char)
        if glyph is not None and not (notdef is not None and _same(glyph, notdef)):
            found[char] = glyph
    return found


def _same(a: _Glyph, b: _Glyph) -> bool:
    return (a.left, a.top) == (b.left, b.top) and np.array_equal(a.ink, b.ink)


# ----------------------------------------------------------------------------- drawing
def _draw(glyph: _Glyph, anchor: tuple[float, float], unit: float, params: np.ndarray,
          size: int) -> np.ndarray:
    """One ``size x size`` uint8 image of ``glyph``.

    ``anchor`` (master pixels) lands on the canvas centre before the shift; ``unit`` is
    output pixels (supersampled) per master pixel at scale 1; ``params`` is
    ``(scale, shift_x, shift_y, rotation_degrees)`` with shifts as fractions of ``size``.
    """
    scale, dx, dy, degrees = params
    big = size * _SUPERSAMPLE
    m = 1.0 / (unit * scale)
    cos, sin = math.cos(math.radians(degrees)) * m, math.sin(math.radians(degrees)) * m
    tx, ty = big / 2 + dx * big, big / 2 + dy * big
    ax, ay = anchor[0] - glyph.left, anchor[1] - glyph.top
    data = (cos, sin, ax - cos * tx - sin * ty, -sin, cos, ay + sin * tx - cos * ty)
    image = Image.fromarray(glyph.ink).transform(
        (big, big), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR,
        fillcolor=0,
    )
    return np.asarray(image.reduce(_SUPERSAMPLE))


def render_glyph_images(
    fonts: Sequence[Path], chars: str, *, size: int, images_per_font: int, seed: int,
    max_rotation: float, max_shift: float, scale_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Draw ``images_per_font`` images of every character of ``chars`` in every font.

    Every font must have every character of ``chars`` and the reference letters
    ``H`` and ``p`` (use :func:`_font_masters` to check).

    Returns
    -------
    x : uint8 (n, size, size), n = len(fonts) * len(chars) * images_per_font,
        ordered by font, then character, then image.
    char_index, font_index : int64 (n,), positions in ``chars`` and ``fonts``.
    identical : groups (strings) of characters drawn pixel-identically in every font.
    """
    em = size * _SUPERSAMPLE
    n_per_font = len(chars) * images_per_font
    rng = np.random.default_rng(seed)
    n = len(fonts) * n_per_font
    params = np.column_stack([
        rng.uniform(*scale_range, n),
        rng.uniform(-max_shift, max_shift, (n, 2)),
        rng.uniform(-max_rotation, max_rotation, n),
    ])
    x = np.empty((n, size, size), dtype=np.uint8)
    signatures: dict[str, list] = {c: [] for c in chars}
    for f, path in enumerate(fonts):
        masters = _font_masters(path, chars, em)
        top, bottom = masters["H"].top + 1, masters["p"].top + masters["p"].ink.shape[0] - 1
        unit = _FILL * size * _SUPERSAMPLE / (bottom - top)
        for c, char in enumerate(chars):
            glyph = masters[char]
            signatures[char].append((glyph.left, glyph.top, glyph.ink.shape, glyph.ink.tobytes()))
            anchor = (glyph.left + glyph.ink.shape[1] / 2, (top + bottom) / 2)
            for k in range(images_per_font):
                i = f * n_per_font + c * images_per_font + k
                x[i] = _draw(glyph, anchor, unit, params[i], size)
    groups: dict[tuple, str] = {}
    for char in chars:
        key = tuple(signatures[char])
        groups[key] = groups.get(key, "") + char
    index = np.arange(n, dtype=np.int64)
    char_index = (index // images_per_font) % len(chars)
    return x, char_index, index // n_per_font, [g for g in groups.values() if len(g) > 1]


