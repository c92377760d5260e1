import dataclasses
"""Full-run CLI (train / evaluate / extract), resumption, and torchrun with 2 processes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from bclviz.cli import main
from bclviz.config import MethodConfig, TrainConfig
from bclviz.experiment import ModelSpec
from bclviz.runconfig import RunConfig, save_run_config

TINY = dict(num_superclasses=3, siblings=2, coarse_dim=4, fine_dim=4, train_per_class=32, eval_per_class=6)


def tiny_run(tmp_path, **method):
    return RunConfig(
        dataset="toy", seed=1, data_options=TINY,
        old_model=ModelSpec(dim=8, options={"hidden": 16}), new_model=ModelSpec(dim=8, options={"hidden": 16}),
        old_train=TrainConfig(epochs=2, batch_size=32), new_train=TrainConfig(epochs=3, batch_size=32),
        method=MethodConfig(name="ndpp", eps=0.3, k=2, **method), output_dir=str(tmp_path / "run"),
    )


def test_train_evaluate_extract(tmp_path, capsys):
    cfg_path = save_run_config(tmp_path / "run.yaml", tiny_run(tmp_path))
    assert main(["train", "--config", str(cfg_path), "--quiet"]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"old_old", "new_new", "new_old", "compatible"}
    assert metrics["compatible"] == (metrics["new_old"]["mAP@100"] > metrics["old_old"]["mAP@100"])
    history = json.loads((run / "history.json").read_text())
    assert len(history["old"]) == 2 and len(history["new"]) == 3
    capsys.readouterr()
    assert main(["evaluate", "--config", str(cfg_path)]) == 0
    assert json.loads(capsys.readouterr().out) == metrics
    assert main(["extract", "--config", str(cfg_path)]) == 0
    folder = Path(json.loads(capsys.readouterr().out)["features"])
    feats = np.load(folder / "old_features.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    assert feats.shape == (6 * 32, 8) and labels.shape == (6 * 32,)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)


def test_set_overrides_and_config_mismatch(tmp_path, capsys):
    cfg_path = save_run_config(tmp_path / "run.yaml", tiny_run(tmp_path))
    assert main(["train", "--config", str(cfg_path), "--quiet", "--set", "new_train.epochs=1"]) == 0
    capsys.readouterr()
    # the finished new checkpoint was written for epochs=1; asking for another eps is refused
    assert main(["evaluate", "--config", str(cfg_path), "--set", "new_train.epochs=1", "--set", "method.eps=0.5"]) == 2
    assert "another configuration" in capsys.readouterr().err


def test_evaluate_without_checkpoints_names_the_file(tmp_path, capsys):
    cfg_path = save_run_config(tmp_path / "run.yaml", tiny_run(tmp_path))
    assert main(["evaluate", "--config", str(cfg_path)]) == 2
    assert "old.pt does not exist" in capsys.readouterr().err


def test_interrupted_training_resumes_to_the_same_model(tmp_path):
    from bclviz.data import load_dataset
    from bclviz.experiment import build_new_model, build_old_model
    from bclviz.train import train_new, train_old

    data = load_dataset("toy", seed=1, **TINY)
    torch.manual_seed(0)
    old = train_old(build_old_model(data, ModelSpec(dim=8, options={"hidden": 16})), data.old_train,
                    num_classes=data.num_old_classes, cfg=TrainConfig(epochs=2, batch_size=32), progress=False)
    cfg = TrainConfig(epochs=4, batch_size=32, seed=3)
    method = MethodConfig(name="odpp", eps=0.3, k=2)

    def run(checkpoint, callback=None):
        torch.manual_seed(1)
        return train_new(build_new_model(data, ModelSpec(dim=8, options={"hidden": 16})), data.new_train, old,
                         num_classes=data.num_classes, cfg=cfg, method=method, progress=False,
                         checkpoint=checkpoint, callback=callback)

    full = run(None)

    def crash(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "new.pt", crash)
    assert json.loads((tmp_path / "new.pt.json").read_text())["epoch"] == 1
    resumed = run(tmp_path / "new.pt")
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    torch.testing.assert_close(full.state["delta"], resumed.state["delta"], rtol=0, atol=0)


@pytest.mark.distributed
def test_torchrun_two_processes_matches_single_process(tmp_path):
    base = tiny_run(tmp_path)
    single = save_run_config(tmp_path / "single.yaml", base)
    ddp_cfg = dataclasses.replace(base, output_dir=str(tmp_path / "ddp"))
    ddp = save_run_config(tmp_path / "ddp.yaml", ddp_cfg)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(
        """
        import sys, torch
        import torch.distributed as dist
        from bclviz.distributed import init_from_env
        from bclviz.runconfig import load_run_config
        from bclviz.runner import run_training, load_trained
        info = init_from_env()
        cfg = load_run_config(sys.argv[1])
        run_training(cfg, progress=False)
        _, new = load_trained(cfg)
        params = [p.detach() for p in new.model.parameters()]
        torch.save({"world_size": info.world_size, "params": params}, f"{sys.argv[2]}/rank{info.rank}.pt")
        if info.enabled:
            dist.destroy_process_group()
        """
    ))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(single), str(tmp_path)], check=True, env=env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    os.rename(tmp_path / "rank0.pt", tmp_path / "single.pt")
    subprocess.run([*torchrun, str(script), str(ddp), str(tmp_path)], check=True, env=env, timeout=300)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    s = torch.load(tmp_path / "single.pt", weights_only=True)
    assert s["world_size"] == 1 and r0["world_size"] == r1["world_size"] == 2
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b), "ranks ended with different parameters"
    # Same global batches; only the order of floating-point sums differs.
    for a, b in zip(r0["params"], s["params"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    m_single = json.loads((tmp_path / "run" / "metrics.json").read_text())
    m_ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    for key in ("new_new", "new_old", "old_old"):
        assert abs(m_single[key]["mAP@100"] - m_ddp[key]["mAP@100"]) <= 0.01
