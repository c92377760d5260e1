"""One background thread that computes the latest request and drops the ones it overtook.

A slider that moves faster than a computation finishes queues one request per move;
only the last position matters. :class:`LatestWorker` keeps a single pending slot: a
new request replaces the one not yet started, a result that a newer request has made
stale is discarded, and :meth:`LatestWorker.wait` blocks until nothing is pending
(tests, benchmarks, scripts). ipywidgets and plotly's ``FigureWidget`` may be updated
from such a thread (the ipywidgets "asynchronous widgets" pattern): their messages go
through the kernel's thread-safe IOPub channel.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class LatestWorker:
    """Run ``compute(request)`` in a daemon thread and hand fresh results to ``deliver``.

    ``deliver(generation, result)`` is called in the worker thread, only while
    ``generation`` is still the latest submitted; an exception in ``compute`` is handed
    to ``fail(generation, error)`` the same way.
    """

    def __init__(self, compute: Callable[[Any], Any], deliver: Callable[[int, Any], None],
                 fail: Callable[[int, BaseException], None]) -> None:
        self._compute, self._deliver, self._fail = compute, deliver, fail
        self._cond = threading.Condition()
        self._pending: tuple[int, Any] | None = None
        self._busy = False
        self.generation = 0
        self._thread: threading.Thread | None = None

    def submit(self, request: Any) -> int:
        """Queue ``request`` in place of any not yet started; returns its generation."""
        with self._cond:
            self.generation += 1
            self._pending = (self.generation, request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bclviz-explorer", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self.generation

    def cancel(self) -> int:
        """Make every submitted request stale (a synchronous result superseded them)."""
        with self._cond:
            self.generation += 1
            self._pending = None
            self._cond.notify_all()
            return self.generation

    def is_current(self, generation: int) -> bool:
        with self._cond:
            return generation == self.generation

    @property
    def busy(self) -> bool:
        """Whether a request is pending or being computed."""
        with self._cond:
            return self._busy or self._pending is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending; False when ``timeout`` (seconds) ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and self._pending is None, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._pending is not None, timeout=30.0):
                    self._thread = None  # idle: let the thread end; submit starts another
                    return
                generation, request = self._pending
                self._pending, self._busy = None, True
            try:
                result = self._compute(request)
            except BaseException as err:  # noqa: BLE001 - reported to the widget, not lost in a thread
                if self.is_current(generation):
                    self._fail(generation, err)
            else:
                if self.is_current(generation):
                    self._deliver(generation, result)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
