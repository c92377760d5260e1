"""Tests for bclviz.data.splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bclviz.data.splits import (
    closed_set,
    extended_class,
    extended_data,
    open_set,
    relabel,
    sequential,
    stratified_subsample,
)


@pytest.fixture(scope="module")
def y() -> np.ndarray:
    """10 classes with 3..12 samples each, shuffled."""
    labels = np.repeat(np.arange(10), np.arange(3, 13))
    return np.random.default_rng(0).permutation(labels)


def _is_sorted_int64(index: np.ndarray) -> bool:
    return index.dtype == np.int64 and np.all(np.diff(index) > 0)


# ----------------------------------------------------------------------------- relabel
def test_relabel_maps_class_order_to_positions():
    y = np.array([5, 2, 9, 2, 5])
    np.testing.assert_array_equal(relabel(y, [9, 5, 2]), [1, 2, 0, 2, 1])


def test_relabel_rejects_unknown_and_duplicate_classes():
    with pytest.raises(ValueError, match="not in class_order: \\[7\\]"):
        relabel(np.array([1, 7]), [1, 2])
    with pytest.raises(ValueError, match="distinct"):
        relabel(np.array([1]), [1, 1])


# ----------------------------------------------------------------------------- extended_class
def test_extended_class_default_takes_smallest_ids(y):
    old, order = extended_class(y, ratio=0.3)
    assert _is_sorted_int64(old)
    np.testing.assert_array_equal(np.unique(y[old]), [0, 1, 2])  # ceil(0.3 * 10) == 3
    np.testing.assert_array_equal(old, np.flatnonzero(y < 3))
    np.testing.assert_array_equal(order, np.arange(10))


def test_extended_class_seeded_order_puts_old_classes_first(y):
    old, order = extended_class(y, ratio=0.45, seed=3)
    old_classes = np.unique(y[old])
    assert len(old_classes) == 5
    assert sorted(order.tolist()) == list(range(10))
    mapped = relabel(y, order)
    np.testing.assert_array_equal(np.unique(mapped[old]), np.arange(5))
    assert set(mapped[np.setdiff1d(np.arange(len(y)), old)]) == set(range(5, 10))
    again, order_again = extended_class(y, ratio=0.45, seed=3)
    np.testing.assert_array_equal(old, again)
    np.testing.assert_array_equal(order, order_again)
    others = [tuple(np.unique(y[extended_class(y, ratio=0.45, seed=s)[0]])) for s in range(4, 9)]
    assert any(o != tuple(old_classes) for o in others)


def test_extended_class_count_limits():
    y = np.repeat(np.arange(4), 2)
    assert len(np.unique(y[extended_class(y, ratio=0.01)[0]])) == 1
    assert len(np.unique(y[extended_class(y, ratio=0.99)[0]])) == 3  # at most C - 1
    old, order = extended_class(np.zeros(3, dtype=int), ratio=0.5)
    np.testing.assert_array_equal(old, [0, 1, 2])
    np.testing.assert_array_equal(order, [0])


# ----------------------------------------------------------------------------- extended_data
def test_extended_data_takes_fraction_of_each_class(y):
    old = extended_data(y, ratio=0.5, seed=0)
    assert _is_sorted_int64(old)
    counts = np.bincount(y[old], minlength=10)
    np.testing.assert_array_equal(counts, [math.ceil(0.5 * n) for n in range(3, 13)])
    np.testing.assert_array_equal(old, extended_data(y, ratio=0.5, seed=0))
    assert not np.array_equal(old, extended_data(y, ratio=0.5, seed=1))
    np.testing.assert_array_equal(extended_data(y, ratio=1.0, seed=0), np.arange(len(y)))
    assert np.all(np.bincount(y[extended_data(y, ratio=0.01, seed=0)]) == 1)


# ----------------------------------------------------------------------------- open_set
def test_open_set_is_class_disjoint_and_covers_everything(y):
    train, test = open_set(y, train_ratio=0.7, seed=0)
    assert _is_sorted_int64(train) and _is_sorted_int64(test)
    assert len(np.unique(y[train])) == 7 and len(np.unique(y[test])) == 3
    assert not set(y[train]) & set(y[test])
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
    again = open_set(y, train_ratio=0.7, seed=0)
    np.testing.assert_array_equal(train, again[0])
    splits = {tuple(np.unique(y[open_set(y, train_ratio=0.7, seed=s)[1]])) for s in range(6)}
    assert len(splits) > 1


def test_open_set_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        open_set(np.zeros(5, dtype=int), train_ratio=0.5, seed=0)


# ----------------------------------------------------------------------------- closed_set
def test_closed_set_per_class_guarantees(y):
    y = np.concatenate([y, [10]])  # a singleton class stays in training
    train, test = closed_set(y, test_ratio=0.3, seed=0)
    assert _is_sorted_int64(train) and _is_sorted_int64(test)
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(y)
    test_counts = np.bincount(y[test], minlength=11)
    expected = [min(max(math.ceil(0.3 * n), 1), n - 1) for n in range(3, 13)] + [0]
    np.testing.assert_array_equal(test_counts, expected)
    assert np.all(np.bincount(y[train], minlength=11) >= 1)
    assert not np.array_equal(test, closed_set(y, test_ratio=0.3, seed=1)[1])


labels_strategy = st.lists(st.integers(0, 6), min_size=1, max_size=60).map(
    lambda v: np.array(v, dtype=np.int64)
)


@settings(max_examples=60, deadline=None)
@given(y=labels_strategy, ratio=st.floats(0.01, 0.99), seed=st.integers(0, 2**32 - 1))
def test_extended_data_and_closed_set_invariants(y, ratio, seed):
    classes, counts = np.unique(y, return_counts=True)
    old = extended_data(y, ratio=ratio, seed=seed)
    assert _is_sorted_int64(old)
    old_counts = np.bincount(y[old], minlength=7)[classes]
    assert np.all(old_counts >= 1) and np.all(old_counts <= counts)
    assert np.all(old_counts >= ratio * counts - 1e-6)

    train, test = closed_set(y, test_ratio=ratio, seed=seed)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
    train_counts = np.bincount(y[train], minlength=7)[classes]
    test_counts = np.bincount(y[test], minlength=7)[classes]
    assert np.all(train_counts >= 1)
    assert np.all(test_counts[counts >= 2] >= 1)
    np.testing.assert_array_equal(test, closed_set(y, test_ratio=ratio, seed=seed)[1])


# ----------------------------------------------------------------------------- sequential
@pytest.mark.parametrize("mode", ["class", "data"])
def test_sequential_sets_are_nested_and_grow(y, mode):
    steps = sequential(y, fractions=(0.3, 0.6, 1.0), mode=mode, seed=0)
    assert len(steps) == 3
    for before, after in zip(steps, steps[1:]):
        assert _is_sorted_int64(after)
        assert set(before) < set(after)
    np.testing.assert_array_equal(steps[-1], np.arange(len(y)))
    again = sequential(y, fractions=(0.3, 0.6, 1.0), mode=mode, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(steps, again))
    other = sequential(y, fractions=(0.3, 0.6, 1.0), mode=mode, seed=1)
    assert not np.array_equal(steps[0], other[0])


def test_sequential_class_mode_adds_whole_classes(y):
    steps = sequential(y, fractions=(0.3, 0.6, 1.0), mode="class", seed=0)
    assert [len(np.unique(y[s])) for s in steps] == [3, 6, 10]
    for s in steps:  # every class present is present with all its samples
        np.testing.assert_array_equal(s, np.flatnonzero(np.isin(y, y[s])))


def test_sequential_data_mode_keeps_all_classes(y):
    steps = sequential(y, fractions=(0.5, 1.0), mode="data", seed=0)
    counts = np.bincount(y[steps[0]], minlength=10)
    np.testing.assert_array_equal(counts, [math.ceil(0.5 * n) for n in range(3, 13)])


# ----------------------------------------------------------------------------- subsample
def test_stratified_subsample_keeps_proportions(y):
    big = np.repeat(np.arange(4), [100, 200, 300, 400])
    keep = stratified_subsample(big, size=100, seed=0)
    assert _is_sorted_int64(keep) and len(keep) == 100
    np.testing.assert_allclose(np.bincount(big[keep]), [10, 20, 30, 40], atol=1)
    np.testing.assert_array_equal(keep, stratified_subsample(big, size=100, seed=0))
    assert not np.array_equal(keep, stratified_subsample(big, size=100, seed=1))
    np.testing.assert_array_equal(stratified_subsample(y, size=None, seed=0), np.arange(len(y)))
    np.testing.assert_array_equal(stratified_subsample(y, size=10**6, seed=0), np.arange(len(y)))


# ----------------------------------------------------------------------------- bad input
def test_accepts_torch_labels(y):
    np.testing.assert_array_equal(
        extended_data(torch.from_numpy(y), ratio=0.5, seed=0), extended_data(y, ratio=0.5, seed=0)
    )


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda y: extended_class(y, ratio=1.0), ValueError, r"ratio must be in \(0, 1\), got 1.0"),
        (lambda y: extended_class(y, ratio=0), ValueError, r"ratio must be in \(0, 1\)"),
        (lambda y: extended_data(y, ratio=1.5, seed=0), ValueError, r"ratio must be in \(0, 1\]"),
        (lambda y: extended_data(y, ratio=float("nan"), seed=0), ValueError, "ratio"),
        (lambda y: extended_data(y, ratio="0.5", seed=0), TypeError, "ratio must be a number"),
        (lambda y: extended_data(y, ratio=0.5, seed=-1), ValueError, "seed"),
        (lambda y: open_set(y, train_ratio=1.0, seed=0), ValueError, "train_ratio"),
        (lambda y: closed_set(y, test_ratio=-0.1, seed=0), ValueError, "test_ratio"),
        (lambda y: extended_data(y.astype(float), ratio=0.5, seed=0), TypeError, "integer"),
        (lambda y: extended_data(y[:74].reshape(2, -1), ratio=0.5, seed=0), ValueError, "1-D"),
        (lambda y: extended_data(y[:0], ratio=0.5, seed=0), ValueError, "empty"),
        (lambda y: sequential(y, fractions=(0.6, 0.3), mode="class", seed=0), ValueError,
         "strictly increasing"),
        (lambda y: sequential(y, fractions=(), mode="class", seed=0), ValueError, "at least one"),
        (lambda y: sequential(y, fractions=(0.5, 1.2), mode="data", seed=0), ValueError,
         r"fractions\[1\]"),
        (lambda y: sequential(y, fractions=(1.0,), mode="classes", seed=0), ValueError,
         r"mode must be one of \('class', 'data'\), got 'classes'"),
        (lambda y: stratified_subsample(y, size=0, seed=0), ValueError, "size"),
    ],
)
def test_bad_input_raises_clear_errors(y, call, error, match):
    with pytest.raises(error, match=match):
        call(y)
