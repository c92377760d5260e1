"""The flow from `bclviz demo` to results.json: each orchestration module is entered from
at most two other modules (README, "The flow"). Measured with a profiler on a tiny demo."""

import collections
import dataclasses
import functools
import json
import sys

import bclviz.config as config
import bclviz.report as report
from bclviz.cli import main
from bclviz.config import TrainConfig

ORCHESTRATION = ("bclviz.config", "bclviz.experiment", "bclviz.pipeline", "bclviz.scoring", "bclviz.stats",
                 "bclviz.report", "bclviz.views")


def _module(frame):
    name = frame.f_globals.get("__name__", "")
    return name if name.startswith("bclviz") else None


def test_demo_enters_each_orchestration_module_from_at_most_two_modules(tmp_path, monkeypatch):
    default = config.default_experiment

    def tiny(dataset, **kw):
        short = TrainConfig(epochs=1, max_steps=2)
        return dataclasses.replace(default(dataset, **kw), old_train=short, new_train=short,
                                   data_options=dict(num_superclasses=3, siblings=2, train_per_class=20, eval_per_class=5))

    monkeypatch.setattr(config, "default_experiment", tiny)
    # the same report, projected with PCA (a UMAP fit under a profiler takes minutes)
    monkeypatch.setattr(report, "write_report", functools.partial(report.write_report, projection_method="pca"))
    callers = collections.defaultdict(set)

    def profile(frame, event, arg):
        if event != "call" or frame.f_code.co_name.startswith(("<", "__")):  # constructors, dunders: values, not flow
            return
        callee = _module(frame)
        caller_frame = frame.f_back
        while caller_frame is not None and _module(caller_frame) is None:
            caller_frame = caller_frame.f_back
        caller = None if caller_frame is None else _module(caller_frame)
        if callee and caller and caller != callee:
            callers[callee].add(caller)

    sys.setprofile(profile)
    try:
        assert main(["demo", "--dataset", "toy", "--out", str(tmp_path), "--seeds", "1", "--quiet"]) == 0
    finally:
        sys.setprofile(None)
    assert json.loads((tmp_path / "results.json").read_text())["headline"] == "mAP@100"
    entered = {m: sorted(callers[m]) for m in ORCHESTRATION}
    assert entered["bclviz.experiment"] == ["bclviz.cli"]
    assert all(len(c) <= 2 for c in entered.values()), entered
