import numpy as np
import pytest
import torch

from bclviz.config import MethodConfig, TrainConfig
from bclviz.evaluation import evaluate
from bclviz.experiment import default_experiment
from bclviz.sequential import run_sequence, step_sets
from bclviz.train import embed


def test_step_sets_class_mode_nested_and_contiguous():
    y = torch.arange(10).repeat_interleave(3)
    steps = step_sets(y, (0.3, 0.6, 1.0), mode="class", seed=0)
    assert [n for _, n in steps] == [3, 6, 10]
    for (a, _), (b, _) in zip(steps, steps[1:]):
        assert set(a.tolist()) < set(b.tolist())
    assert int(y[steps[0][0]].max()) == 2


def test_step_sets_bad_fractions():
    with pytest.raises(ValueError, match="strictly increasing"):
        step_sets(torch.arange(4), (0.6, 0.3), mode="class", seed=0)
    with pytest.raises(ValueError, match="mode must be"):
        step_sets(torch.arange(4), (0.3, 1.0), mode="tasks", seed=0)


def test_sequence_matrix(tiny_toy):
    cfg = default_experiment("toy", old_train=TrainConfig(epochs=2, batch_size=32),
                             new_train=TrainConfig(epochs=2, batch_size=32))
    cfg = cfg.__class__(**{**cfg.__dict__, "old_model": cfg.old_model.__class__(dim=8, options={"hidden": 16}),
                           "new_model": cfg.new_model.__class__(dim=8, options={"hidden": 16})})
    seq = run_sequence(tiny_toy, cfg, MethodConfig(name="ndpp", k=1), fractions=(0.34, 0.67, 1.0), progress=False)
    assert seq.num_classes == [3, 5, 6]
    assert seq.matrix.shape == (3, 3) and np.isnan(seq.matrix[0, 1]) and np.isnan(seq.matrix[1, 2])
    q = embed(seq.models[1].model, tiny_toy.query.x)
    g = embed(seq.models[0].model, tiny_toy.query.x)
    m10 = evaluate(q, tiny_toy.query.y, g, tiny_toy.query.y, exclude_self=True)["mAP@100"]
    assert seq.matrix[1, 0] == pytest.approx(m10)
    pairs = [(1, 0), (2, 0), (2, 1)]
    assert seq.ac == pytest.approx(np.mean([seq.matrix[i, j] > seq.matrix[j, j] for i, j in pairs]))
