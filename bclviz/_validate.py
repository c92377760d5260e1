"""Input checks shared by the public functions.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong type) whose message
names the argument, the value received and what is allowed.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_features", "as_labels", "check_positive_int", "check_non_negative"]


def as_features(x, name: str, *, dim: int | None = None, min_rows: int = 1) -> torch.Tensor:
    """Return ``x`` as a 2-D finite float32 tensor ``(n, d)``.

    Accepts a torch tensor or a numpy array. Raises ``TypeError`` for other types,
    ``ValueError`` for a wrong rank, an empty array, a mismatched ``dim`` or
    non-finite values.
    """
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s), got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]}, expected {dim}")
    if not x.is_floating_point():
        x = x.float()
    elif x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    # x.sum() is finite only when every entry is (NaN and Inf propagate); it reads the
    # data once without the n x d bool temporary, which costs seconds on a 1 GiB gallery.
    # Only a non-finite sum (or an overflow) pays for the exact check.
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or Inf values in {bad} row(s)")
    return x


def as_labels(y, name: str, *, n: int, num_classes: int | None = None) -> torch.Tensor:
    """Return ``y`` as a 1-D int64 tensor of length ``n`` with values in ``[0, num_classes)``."""
    if isinstance(y, np.ndarray):
        if y.dtype != bool and not np.issubdtype(y.dtype, np.number):
            raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
        y = torch.from_numpy(np.ascontiguousarray(y))
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but the features have {n} rows")
    y = y.long()
    if n and int(y.min()) < 0:
        raise ValueError(f"{name} contains negative labels (min {int(y.min())})")
    if num_classes is not None and n and int(y.max()) >= num_classes:
        raise ValueError(
            f"{name} contains label {int(y.max())}, out of range for {num_classes} classes"
        )
    return y


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_non_negative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
