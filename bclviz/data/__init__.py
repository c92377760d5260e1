"""Datasets for backward-compatible updates: the toy crowded scenario and real images.

Every dataset is a :class:`~bclviz.data.registry.DatasetSpec` in
:mod:`bclviz.data.registry`: :func:`load_dataset` builds one by name, and
:data:`DATASETS` / :data:`BENCHMARK_NAMES` list the registered names. Builders are
imported on first use, so importing this package stays light.
"""

from __future__ import annotations

from .base import BCLData, Labeled
from .registry import DatasetSpec, get_dataset, list_datasets, load_dataset, register_dataset

__all__ = [
    "BCLData", "Labeled", "DATASETS", "BENCHMARK_NAMES", "load_dataset", "make_toy",
    "DatasetSpec", "get_dataset", "list_datasets", "register_dataset",
]  # fmt: skip


def __getattr__(name: str):
    # DATASETS: every name accepted where a dataset is named (CLI, demo, notebooks);
    # BENCHMARK_NAMES: the real benchmarks read from a local copy. Both are tuples read
    # from the registry when asked for, so they include datasets registered later.
    if name == "DATASETS":
        return tuple(list_datasets())
    if name == "BENCHMARK_NAMES":
        return tuple(list_datasets("benchmark"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_toy(**kwargs) -> BCLData:
    """:func:`bclviz.data.toy.make_toy` (imported on first use)."""
    from .toy import make_toy as _make_toy

    return _make_toy(**kwargs)
