"""Tests for bclviz.data.glyphs (characters rendered offline from the local fonts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bclviz.data import glyph_fonts, glyphs
from bclviz.data.glyphs import GLYPH_CLASSES, find_fonts, make_glyphs

try:
    FONTS = find_fonts()
except (FileNotFoundError, ImportError) as err:  # pragma: no cover - depends on the machine
    pytest.skip(str(err), allow_module_level=True)

#: a small configuration that renders in well under a second
SMALL = dict(size=12, images_per_font=2, classes=list("0Oo1lIAB"), train_fonts=2,
             eval_fonts=1, max_rotation=5.0)  # fmt: skip


def arrays(data):
    return [data.new_train.x, data.new_train.y, data.old_train.x, data.old_train.y,
            data.query.x, data.query.y]  # fmt: skip


def same(a, b) -> bool:
    return all(torch.equal(u, v) for u, v in zip(arrays(a), arrays(b), strict=True))


@pytest.fixture(scope="session")
def default_glyphs(tmp_path_factory):
    return make_glyphs(cache_dir=tmp_path_factory.mktemp("glyphs"))


# ----------------------------------------------------------------------------- defaults
def test_defaults_shapes_and_ranges(default_glyphs):
    d = default_glyphs
    assert d.name == "glyphs" and d.input_shape == (1, 28, 28) and d.query_is_gallery
    for part in (d.new_train, d.old_train, d.query):
        assert part.x.dtype == torch.float32 and part.x.shape[1:] == (1, 28, 28)
        assert part.y.dtype == torch.int64
        assert float(part.x.min()) == 0.0 and float(part.x.max()) == 1.0
    assert d.query is d.gallery
    n_train, n_eval = len(d.info["train_fonts"]), len(d.info["eval_fonts"])
    assert (n_train, n_eval) == (8, 4)
    assert len(d.new_train) == d.num_classes * n_train * 8
    assert len(d.query) == d.num_classes * n_eval * 8
    assert d.info["protocol"] == "open-set-by-font" and d.info["n_eval"] == len(d.query)


def test_defaults_have_many_classes_all_present_everywhere(default_glyphs):
    d = default_glyphs
    assert d.num_classes >= 100
    assert d.num_classes == len(GLYPH_CLASSES) - len(d.info["dropped_classes"])
    everything = list(range(d.num_classes))
    assert sorted(d.new_train.y.unique().tolist()) == everything
    assert sorted(d.query.y.unique().tolist()) == everything  # same ids as training
    counts = torch.bincount(d.query.y)
    assert counts.min() == counts.max() == 4 * 8
    assert len(set(d.info["class_chars"])) == len(d.info["class_chars"]) == d.num_classes


def test_train_and_eval_fonts_are_disjoint(default_glyphs):
    info = default_glyphs.info
    assert not set(info["train_fonts"]) & set(info["eval_fonts"])
    assert set(info["train_fonts"]) | set(info["eval_fonts"]) <= {p.stem for p in FONTS}


def test_old_classes_are_the_first_labels(default_glyphs):
    d = default_glyphs
    assert d.num_old_classes == int(np.ceil(0.5 * d.num_classes))
    assert sorted(d.old_train.y.unique().tolist()) == list(range(d.num_old_classes))
    old = d.new_train.y < d.num_old_classes
    assert torch.equal(d.old_train.x, d.new_train.x[old])  # every old-class image, in order


def test_lookalikes_are_reported():
    d = make_glyphs(**{**SMALL, "classes": ["A", "Α", "o", "ο", "0", "O"],
                       "train_fonts": ["DejaVuSans", "DejaVuSerif"],
                       "eval_fonts": ["DejaVuSansMono"]}, cache_dir=None)  # fmt: skip
    assert d.info["identical_classes"] == ["AΑ", "oο"]  # Latin and Greek share outlines


def test_dropping_lookalikes_keeps_the_latin_letter(tmp_path):
    fonts = {"train_fonts": ["DejaVuSans", "DejaVuSerif"], "eval_fonts": ["DejaVuSansMono"]}
    classes = ["A", "Α", "o", "ο", "0", "O", "Γ"]
    kept = make_glyphs(**{**SMALL, "classes": classes, **fonts}, cache_dir=tmp_path)
    dropped = make_glyphs(**{**SMALL, "classes": classes, **fonts}, cache_dir=tmp_path, lookalikes="drop")
    assert kept.info["lookalikes"] == "keep" and kept.info["dropped_lookalikes"] == ""
    assert dropped.info["dropped_lookalikes"] == "Αο" and set("Αο") <= set(glyphs.GLYPH_LOOKALIKES)
    assert sorted(dropped.info["class_chars"]) == sorted("Ao0OΓ") and dropped.num_classes == 5
    assert dropped.info["identical_classes"] == [] and dropped.info["dropped_classes"] == ""
    # the same rendered images (one cache file), less the dropped classes' ones
    chars_kept = np.array(kept.info["class_chars"])[kept.new_train.y.numpy()]
    rows = torch.from_numpy(np.flatnonzero(~np.isin(chars_kept, list("Αο"))))
    assert torch.equal(kept.new_train.x[rows], dropped.new_train.x)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    with pytest.raises(ValueError, match=r"lookalikes must be one of \['keep', 'drop'\], got 'merge'"):
        make_glyphs(**SMALL, cache_dir=None, lookalikes="merge")


def test_glyph_scenarios(tmp_path):
    from bclviz.data import load_dataset
    from bclviz.data.scenarios import GLYPH_SUPERCLASSES

    small = {**SMALL, "classes": list("0O1AaΓγ"), "cache_dir": tmp_path}
    coarse = load_dataset("glyphs", scenario="coarse-old", **small)
    assert coarse.info["scenario"] == "coarse-old" and coarse.info["lookalikes"] == "drop"
    expected = {"0": "digits", "1": "digits", "O": "Latin capitals", "A": "Latin capitals",
                "a": "Latin small letters", "Γ": "Greek capitals", "γ": "Greek small letters"}
    # like weak-old, the update scenarios retrieve held-out characters: 30% of 7 = 3 leave training
    trained, held = coarse.info["class_chars"], coarse.info["heldout_class_chars"]
    assert coarse.info["protocol"] == "open-set-by-class" and len(held) == 3
    assert sorted(trained + held) == sorted(expected) and coarse.num_classes == 4
    family = dict(zip(trained, (coarse.info["superclasses"][g] for g in coarse.old_class_of.tolist())))
    assert family == {c: expected[c] for c in trained}
    assert coarse.info["superclasses"] == [g for g in GLYPH_SUPERCLASSES if g in family.values()]
    assert coarse.num_old_classes == len(set(family.values())) and len(coarse.old_train) == len(coarse.new_train)
    assert set(coarse.query.y.tolist()) == {4, 5, 6}  # no query is a training class
    lowres = load_dataset("glyphs", scenario="lowres-old", **small)
    assert lowres.old_view.factor == 4 and lowres.input_shape == (1, 12, 12)
    assert lowres.info["heldout_class_chars"] == held  # the same characters held out (same seed)
    # every update scenario shares weak-old's split: the same new model data, only the old side differs
    weak = load_dataset("glyphs", scenario="weak-old", **small)
    assert weak.info["heldout_class_chars"] == held and weak.info["class_chars"] == trained
    for other in (coarse, lowres):
        for part in ("new_train", "query", "gallery"):
            assert torch.equal(getattr(other, part).x, getattr(weak, part).x)
            assert torch.equal(getattr(other, part).y, getattr(weak, part).y)
    assert torch.equal(lowres.old_train.y, weak.old_train.y)  # the same 30% of the characters, seen pooled
    v1 = load_dataset("glyphs", scenario="default-v1", **small)
    direct = make_glyphs(**small)
    assert torch.equal(v1.new_train.x, direct.new_train.x) and torch.equal(v1.old_train.y, direct.old_train.y)


# ----------------------------------------------------------------------------- rendering
def test_plain_rendering_is_centred_and_keeps_case():
    d = make_glyphs(size=28, images_per_font=2, classes=["O", "o", "H"], train_fonts=["DejaVuSans"],
                    eval_fonts=["DejaVuSerif"], max_rotation=0, max_shift=0,
                    scale_range=(1, 1), cache_dir=None)  # fmt: skip
    chars = d.info["class_chars"]
    image = {chars[int(y)]: x[0].numpy() for x, y in zip(d.new_train.x, d.new_train.y)}
    for char in ("O", "H"):  # symmetric glyphs sit in the middle
        cols = image[char].sum(0)
        assert abs((cols * np.arange(28)).sum() / cols.sum() - 13.5) < 0.5
    rows = {c: np.flatnonzero(image[c].sum(1) > 0.5) for c in ("O", "o")}
    assert len(rows["o"]) < 0.85 * len(rows["O"])  # lower case stays smaller
    assert abs(rows["o"][-1] - rows["O"][-1]) <= 1  # on the same baseline


def test_missing_glyphs_are_dropped():
    d = make_glyphs(**{**SMALL, "classes": ["A", "B", "中"]}, cache_dir=None)
    assert d.info["dropped_classes"] == "中"
    assert d.num_classes == 2 and sorted(d.info["class_chars"]) == ["A", "B"]


def test_named_fonts_are_used():
    d = make_glyphs(**{**SMALL, "train_fonts": ["DejaVuSans", "DejaVuSerif.ttf"],
                       "eval_fonts": ["DejaVuSansMono"]}, cache_dir=None)  # fmt: skip
    assert d.info["train_fonts"] == ["DejaVuSans", "DejaVuSerif"]
    assert d.info["eval_fonts"] == ["DejaVuSansMono"]


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_data_other_seed_differs():
    a = make_glyphs(**SMALL, seed=3, cache_dir=None)
    b = make_glyphs(**SMALL, seed=3, cache_dir=None)
    c = make_glyphs(**SMALL, seed=4, cache_dir=None)
    assert same(a, b) and a.info == b.info
    assert not torch.equal(a.query.x, c.query.x)


def test_cache_hit_does_not_render(tmp_path, monkeypatch):
    first = make_glyphs(**SMALL, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("glyphs-*.npz"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("rendered although the cache holds these images")

    monkeypatch.setattr(glyphs, "render_glyph_images", fail)
    second = make_glyphs(**SMALL, cache_dir=tmp_path)
    assert same(first, second) and first.info == second.info
    other_ratio = make_glyphs(**{**SMALL, "old_ratio": 0.25}, cache_dir=tmp_path)  # same images
    assert torch.equal(other_ratio.query.x, first.query.x)
    with pytest.raises(AssertionError, match="rendered"):
        make_glyphs(**SMALL, seed=1, cache_dir=tmp_path)


def test_corrupt_cache_is_regenerated(tmp_path):
    first = make_glyphs(**SMALL, cache_dir=tmp_path)
    (path,) = tmp_path.glob("glyphs-*.npz")
    path.write_bytes(b"not a zip file")
    again = make_glyphs(**SMALL, cache_dir=tmp_path)
    assert same(first, again)
    with np.load(path, allow_pickle=False) as npz:  # rewritten as a valid file
        assert npz["x"].shape[1:] == (12, 12)


def _no_render(*args, **kwargs):
    raise AssertionError("rendered although the cache holds these images")


def test_default_cache_is_under_the_cache_root_not_the_working_directory(tmp_path, monkeypatch):
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("BCLVIZ_CACHE", str(root))
    monkeypatch.chdir(work)
    first = make_glyphs(**SMALL)
    (path,) = (root / "glyphs").glob("glyphs-*.npz")
    assert first.info["cache_file"] == str(path)
    assert list(work.iterdir()) == []  # nothing written where the caller happens to be
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(glyphs, "render_glyph_images", _no_render)
    second = make_glyphs(**SMALL)  # read back from the cache root
    assert same(first, second) and first.info == second.info
    assert path.stat().st_mtime_ns == stamp and list(work.iterdir()) == []


def test_default_cache_folder_is_resolved_at_each_call(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        monkeypatch.setenv("BCLVIZ_CACHE", str(tmp_path / name))
        assert glyphs.glyph_cache_dir() == tmp_path / name / "glyphs"
    assert glyphs.glyph_cache_dir(None) is None
    assert glyphs.glyph_cache_dir(Path("default")) == Path("default")  # a Path is a folder
    d = make_glyphs(**SMALL, cache_dir="mine")  # an explicit relative path still works
    assert len(list((tmp_path / "mine").glob("glyphs-*.npz"))) == 1
    assert not (tmp_path / "b").exists() and d.info["cache_file"].startswith("mine")


# ----------------------------------------------------------------------------- errors
def test_no_fonts_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        make_glyphs(font_dir=tmp_path, cache_dir=None)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"size": 4}, "size"),
        ({"images_per_font": 0}, "images_per_font"),
        ({"classes": "abc"}, "classes"),
        ({"classes": ["A"]}, "classes"),
        ({"classes": ["A", "AB"]}, "classes"),
        ({"old_ratio": 1.0}, "old_ratio"),
        ({"max_shift": 0.5}, "max_shift"),
        ({"max_rotation": -1}, "max_rotation"),
        ({"scale_range": (1.2, 1.0)}, "scale_range"),
        ({"scale_range": 1.0}, "scale_range"),
        ({"train_fonts": 0}, "train_fonts"),
        ({"eval_fonts": 1, "images_per_font": 1}, "eval_fonts"),
        ({"train_fonts": 100}, "more fonts"),
        ({"train_fonts": ["NoSuchFont"]}, "NoSuchFont"),
        ({"train_fonts": ["DejaVuSans"], "eval_fonts": ["DejaVuSans"]}, "share"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_parameters_raise(change, message):
    with pytest.raises(ValueError, match=message):
        make_glyphs(**{**SMALL, **change}, cache_dir=None)


def test_fonts_lacking_a_class_are_avoided_or_the_class_dropped(tmp_path, monkeypatch):
    """DejaVuSerif pretends to lack Greek Alpha, DejaVuSans-Bold the digit 7."""
    real = glyph_fonts._font_masters

    def patched(path, chars, em):
        found = real(path, chars, em)
        lacking = {"DejaVuSerif": "Α", "DejaVuSans-Bold": "7"}.get(path.stem)
        return {c: g for c, g in found.items() if c != lacking}

    monkeypatch.setattr(glyph_fonts, "_font_masters", patched)
    folder = tmp_path / "fonts"
    folder.mkdir()
    for name in ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono", "DejaVuSerif"):
        (folder / f"{name}.ttf").symlink_to(next(p for p in FONTS if p.stem == name))
    counts = {**SMALL, "classes": ["A", "B", "Α"], "train_fonts": 1, "eval_fonts": 1,
              "font_dir": folder}  # fmt: skip
    d = make_glyphs(**counts, cache_dir=None)  # 2 of the 3 fonts with Latin have Alpha
    assert "DejaVuSerif" not in d.info["train_fonts"] + d.info["eval_fonts"]
    assert d.info["dropped_classes"] == "" and d.info["skipped_fonts"] == ["DejaVuSans-Bold"]
    named = make_glyphs(**{**counts, "train_fonts": ["DejaVuSerif"]}, cache_dir=None)
    assert named.info["dropped_classes"] == "Α" and named.num_classes == 2
    with pytest.raises(ValueError, match="DejaVuSans-Bold"):
        make_glyphs(**{**counts, "train_fonts": ["DejaVuSans-Bold"]}, cache_dir=None)


# ----------------------------------------------------------------------------- optional deps
def test_missing_matplotlib_names_the_lab_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # "not installed"
    monkeypatch.setattr(glyph_fonts, "DEBIAN_FONTS", str(tmp_path / "no-debian-fonts"))
    with pytest.raises(ImportError, match=r"matplotlib.*pip install 'bclviz\[lab\]'"):
        make_glyphs(**SMALL, cache_dir=None)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):  # font_dir given: as before
        make_glyphs(**SMALL, font_dir=tmp_path, cache_dir=None)


@pytest.mark.skipif(not Path(glyph_fonts.DEBIAN_FONTS).is_dir(), reason="no Debian DejaVu fonts")
def test_without_matplotlib_the_debian_fonts_are_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert glyphs.font_search_paths() == [Path(glyph_fonts.DEBIAN_FONTS)]
    assert {p.parent for p in find_fonts()} == {Path(glyph_fonts.DEBIAN_FONTS)}


def test_module_imports_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None; import bclviz.data.glyphs as g; "
            "assert callable(g.make_glyphs) and 'PIL' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
