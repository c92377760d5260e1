"""Run logs: what ``bclviz train`` records, written where people already read training logs.

A run log receives every epoch's history record of both models (the records of
``history.json``) and the run's evaluation (``metrics.json``). :class:`RunLog` drops them
(logging off); :class:`TensorBoardLog` writes them as TensorBoard scalars to
``<run dir>/tensorboard/`` (``tensorboard --logdir runs/``), the convention of the BCL
training code people come from:

- ``old/<key>``, ``new/<key>`` at step ``epoch``: every number of the epoch's record but
  ``epoch`` and ``steps``: ``loss`` (both models), ``loss_cls``, ``loss_comp``,
  ``delta_norm_mean``, ``delta_norm_max`` (the perturbation norm), ``crowding_old``,
  ``crowding_pseudo_old``, ``crowding_new`` (of the old / pseudo-old / new prototypes)
  and ``seconds``;
- ``eval/self/<metric>`` (``M(new, new)``), ``eval/cross/<metric>`` (``M(new, old)``),
  ``eval/old/<metric>`` (``M(old, old)``) and ``eval/compatibility_gain`` at the new
  model's last epoch, for every evaluation the run makes (one, after training).

The training lab (:class:`bclviz.widgets.TrainingLab`, ``log="tensorboard"``) writes the
same ``new/<key>`` records and ``eval/self``, ``eval/cross`` for every (setting, seed)
it trains, one run folder each.

Logging reads the records and changes no number. Under ``torchrun`` only rank 0 writes;
the others get a :class:`RunLog`. TensorBoard is optional: ``pip install
'bclviz[tensorboard]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from .distributed import dist_info

__all__ = ["LogTarget", "LOG_TARGETS", "RunLog", "TensorBoardLog", "open_run_log", "check_log_target", "require_log"]

LogTarget = Literal["tensorboard"]
#: the values of ``bclviz train --log`` and of a run config's ``log`` key (besides none)
LOG_TARGETS: tuple[str, ...] = ("tensorboard",)
INSTALL = "pip install 'bclviz[tensorboard]'"
_NOT_SCALARS = ("epoch", "steps")
_PAIRS = {"new_new": "self", "new_old": "cross", "old_old": "old"}


def check_log_target(log, where: str = "log") -> LogTarget | None:
    """``log`` as a target name, or None for no log (``None``, ``"none"``); ``ValueError`` otherwise."""
    if log is None or log == "none":
        return None
    if log not in LOG_TARGETS:
        raise ValueError(f"{where} must be one of {list(LOG_TARGETS)} or none, got {log!r}")
    return log


class RunLog:
    """A run log that records nothing (logging off, or a rank other than 0)."""

    def epoch(self, model: Literal["old", "new"], record: dict) -> None:
        """One epoch's history record of the old or the new model."""

    def evaluation(self, metrics: dict, step: int) -> None:
        """The run's metrics (as in ``metrics.json``) after training, at ``step``."""

    def scores(self, pairs: dict[str, dict], step: int) -> None:
        """Retrieval metrics by side (``{"self": M(new, new), "cross": M(new, old), ...}``) at ``step``."""

    def close(self) -> None:
        """Flush and close what was opened."""

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # torch raises ImportError when tensorboard is missing
        raise ImportError(f"TensorBoard logging needs the tensorboard package: {INSTALL} ({err})") from None
    return SummaryWriter


class TensorBoardLog(RunLog):
    """Scalars in a TensorBoard event file under ``log_dir`` (see the module docstring).

    Events are flushed after every epoch, so ``tensorboard --logdir`` shows a run while it trains.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = Path(log_dir)
        self._writer = _summary_writer()(log_dir=str(self.log_dir))

    def epoch(self, model: Literal["old", "new"], record: dict) -> None:
        step = int(record["epoch"])
        for key, value in record.items():
            if key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{model}/{key}", value, step)
        self._writer.flush()

    def evaluation(self, metrics: dict, step: int) -> None:
        self._write_scores({side: metrics[pair] for pair, side in _PAIRS.items()}, step)
        self._writer.add_scalar("eval/compatibility_gain", metrics["compatibility_gain"], step)
        self._writer.flush()

    def scores(self, pairs: dict[str, dict], step: int) -> None:
        self._write_scores(pairs, step)
        self._writer.flush()

    def _write_scores(self, pairs: dict[str, dict], step: int) -> None:
        for side, values in pairs.items():
            for key, value in values.items():
                if key != "n_queries":
                    self._writer.add_scalar(f"eval/{side}/{key}", value, step)

    def close(self) -> None:
        self._writer.close()


def require_log(log) -> LogTarget | None:
    """:func:`check_log_target`, and for ``"tensorboard"`` an ``ImportError`` naming the
    extra to install when the tensorboard package is missing."""
    log = check_log_target(log)
    if log is not None:
        _summary_writer()
    return log


def open_run_log(log: LogTarget | str | None, run_dir: str | os.PathLike, *,
                 subdir: str | None = "tensorboard") -> RunLog:
    """The run log ``log`` asks for: a :class:`TensorBoardLog` in ``run_dir/tensorboard``
    (``run_dir`` itself with ``subdir=None``) on rank 0 for ``"tensorboard"``, else a
    :class:`RunLog` that records nothing.

    Every rank checks that TensorBoard is installed (``ImportError`` naming the extra to
    install), so a missing package stops all of them before training.
    """
    log = check_log_target(log)
    if log is None:
        return RunLog()
    _summary_writer()  # on every rank: a missing package stops them all
    if dist_info().rank != 0:
        return RunLog()
    return TensorBoardLog(Path(run_dir) / subdir if subdir else Path(run_dir))
