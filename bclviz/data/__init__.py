"""Datasets for backward-compatible updates: the toy crowded scenario and real images."""

from __future__ import annotations

from .base import BCLData, Labeled

__all__ = ["BCLData", "Labeled", "DATASETS", "BENCHMARK_NAMES", "load_dataset", "make_toy"]

#: real benchmarks read from a local copy (builders in :mod:`bclviz.data.registry`)
BENCHMARK_NAMES = ("gldv2", "inshop", "cifar100", "imagefolder")
#: dataset names accepted everywhere a dataset is named (CLI, demo, notebooks)
DATASETS = ("toy", "digits", "fashion-mnist", "glyphs", *BENCHMARK_NAMES)


def make_toy(**kwargs) -> BCLData:
    from .toy import make_toy as _make_toy

    return _make_toy(**kwargs)


def load_dataset(name: str, *, seed: int = 0, **options) -> BCLData:
    """Build the named dataset's :class:`BCLData`.

    ``options`` go to :func:`bclviz.data.toy.make_toy` (toy),
    :func:`bclviz.data.images.image_bcl_data` (digits, fashion-mnist),
    :func:`bclviz.data.glyphs.make_glyphs` (glyphs) or the builder
    in :data:`bclviz.data.registry.BENCHMARKS` (gldv2, inshop, cifar100, imagefolder;
    these need ``root=``).
    """
    if name == "toy":
        return make_toy(seed=seed, **options)
    if name in ("digits", "fashion-mnist"):
        from .images import image_bcl_data

        return image_bcl_data(name, seed=seed, **options)
    if name == "glyphs":
        from .glyphs import make_glyphs

        return make_glyphs(seed=seed, **options)
    if name in BENCHMARK_NAMES:
        from .registry import load_benchmark

        return load_benchmark(name, seed=seed, **options)
    raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
