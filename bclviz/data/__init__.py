"""Datasets for backward-compatible updates: the toy crowded scenario and real images."""

from __future__ import annotations

import functools
import inspect

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
        from .toy import make_toy as builder
    elif name in ("digits", "fashion-mnist"):
        from .images import image_bcl_data

        builder = functools.partial(image_bcl_data, name)
    elif name == "glyphs":
        from .glyphs import make_glyphs as builder
    if name in ("toy", "digits", "fashion-mnist", "glyphs"):
        allowed = [p for p in inspect.signature(builder).parameters if p not in ("name", "seed")]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"unknown data_options {unknown} for dataset {name!r}; allowed: {allowed}")
        return builder(seed=seed, **options)
    if name in BENCHMARK_NAMES:
        from .registry import load_benchmark

        return load_benchmark(name, seed=seed, **options)
    raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
