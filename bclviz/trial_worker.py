"""A trial worker process: ``python -m bclviz.trial_worker ADDRESS`` (started by
:func:`bclviz.trials.run_trials`, not by hand).

It connects back to the parent at ``ADDRESS`` with the key in
``$BCLVIZ_TRIAL_AUTHKEY``, receives ``("setup", (cfg, data, old, modules))`` once (``modules``: where
the trials' methods are registered, imported first), then
answers each ``("trial", Trial)`` with ``("ok", (TrainResult or None, record))`` or
``("error", traceback)`` until ``("stop", None)`` or the connection closes. Messages are
pickles sent as byte frames. Its CPU threads come from its environment
(``$OMP_NUM_THREADS`` and ``$BCLVIZ_TRIAL_THREADS``, :func:`bclviz.trials.trial_threads`).
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import traceback
from multiprocessing.connection import Client


def main(address: str) -> int:
    from .scoring import Scorer
    from .trials import train_trial

    conn = Client(address, authkey=bytes.fromhex(os.environ["BCLVIZ_TRIAL_AUTHKEY"]))
    state, setup_error = None, None
    try:
        while True:
            try:
                kind, payload = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return 0
            if kind == "stop":
                return 0
            if kind == "setup":
                try:
                    cfg, data, old, modules = payload
                    for module in modules:
                        importlib.import_module(module)
                    state = (cfg, data, old, Scorer(data, k=cfg.k))
                except Exception:  # noqa: BLE001 - reported with the first trial
                    setup_error = traceback.format_exc()
                continue
            if setup_error is not None:
                reply = ("error", setup_error)
            else:
                try:
                    reply = ("ok", train_trial(*state, payload))
                except Exception:  # noqa: BLE001 - sent back to the parent, which raises
                    reply = ("error", traceback.format_exc())
            try:
                conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:  # the parent has gone (it stopped early)
                return 0
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
