import os

import pytest
import torch

from bclviz.checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from bclviz.io import write_text


def test_round_trip_and_mismatch(tmp_path):
    model = torch.nn.Linear(3, 2)
    meta = {"config": {"method": "ndpp", "eps": 0.4}, "epoch": 3}
    path = save_checkpoint(tmp_path / "ck.pt", {"model": model.state_dict()}, meta)
    tensors, got = load_checkpoint(path, expect={"config": {"method": "ndpp", "eps": 0.4}})
    assert got["epoch"] == 3
    torch.testing.assert_close(tensors["model"]["weight"], model.weight.detach())
    with pytest.raises(CheckpointMismatch, match=r"config.eps: checkpoint 0.4 vs expected 0.3"):
        load_checkpoint(path, expect={"config": {"method": "ndpp", "eps": 0.3}})
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_truncated_and_missing(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", {"w": {"a": torch.ones(1000)}}, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"fn": print}, path)  # a pickled callable: weights_only loading must refuse it
    write_text(str(path) + ".json", '{"format": "bclviz-checkpoint-1"}')
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_failed_write_leaves_nothing(tmp_path):
    def boom(tmp):
        open(tmp, "w").write("partial")
        raise RuntimeError("disk full")

    from bclviz.io import atomic_write

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "out.json", boom)
    assert os.listdir(tmp_path) == []
