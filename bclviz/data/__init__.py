"""Datasets for backward-compatible updates: the toy crowded scenario and real images."""

from __future__ import annotations

from .base import BCLData, Labeled

__all__ = ["BCLData", "Labeled", "DATASETS", "load_dataset", "make_toy"]

#: dataset names accepted everywhere a dataset is named (CLI, demo, notebooks)
DATASETS = ("toy", "digits", "fashion-mnist")


def make_toy(**kwargs) -> BCLData:
    from .toy import make_toy as _make_toy

    return _make_toy(**kwargs)


def load_dataset(name: str, *, seed: int = 0, **options) -> BCLData:
    """Build the named dataset's :class:`BCLData`.

    ``options`` go to :func:`bclviz.data.toy.make_toy` (toy) or
    :func:`bclviz.data.images.image_bcl_data` (digits, fashion-mnist).
    """
    if name == "toy":
        return make_toy(seed=seed, **options)
    if name in ("digits", "fashion-mnist"):
        from .images import image_bcl_data

        return image_bcl_data(name, seed=seed, **options)
    raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
