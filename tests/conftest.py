"""Session-scoped tiny fixtures shared by the trainer tests."""

import os
import tempfile

import pytest
import torch

from bclviz.config import MethodConfig, TrainConfig
from bclviz.data.toy import make_toy
from bclviz.experiment import ModelSpec, build_old_model, default_experiment, run_experiment
from bclviz.train import train_old


def pytest_configure(config):
    """Tests (and the notebook kernels they start) write caches to a fresh folder, never to
    the user's cache, unless BCLVIZ_CACHE is set already."""
    os.environ.setdefault("BCLVIZ_CACHE", tempfile.mkdtemp(prefix="bclviz-test-cache-"))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models train faster on one thread than on two (possibly shared) cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def trials_in_this_process():
    """Tiny experiments train faster here than in worker processes that must start up
    first: in the test process the default is one (tests of the workers, test_trials
    and the demo, ask for them explicitly). Notebook kernels keep the real default."""
    import bclviz.trials

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bclviz.trials, "default_trial_workers", lambda: 1)
        yield


@pytest.fixture(scope="session")
def tiny_experiment():
    """(config, ExperimentResult) of a small toy update with proto and NDPP."""
    cfg = default_experiment(
        "toy", data_options=dict(num_superclasses=3, siblings=2, train_per_class=40, eval_per_class=8),
        old_train=TrainConfig(epochs=2), new_train=TrainConfig(epochs=2),
        methods=(MethodConfig(name="proto"), MethodConfig(name="ndpp")),
    )
    return cfg, run_experiment(cfg, progress=False)


@pytest.fixture(scope="session")
def tiny_toy():
    return make_toy(num_superclasses=3, siblings=2, coarse_dim=4, fine_dim=4, train_per_class=30, eval_per_class=6, seed=3)


@pytest.fixture(scope="session")
def tiny_old(tiny_toy):
    torch.manual_seed(0)
    model = build_old_model(tiny_toy, ModelSpec(dim=8, options={"hidden": 16}))
    return train_old(model, tiny_toy.old_train, num_classes=tiny_toy.num_old_classes,
                     cfg=TrainConfig(epochs=2, batch_size=32), progress=False)
