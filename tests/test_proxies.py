import numpy as np
import pytest
import torch

from bclviz.proxies import crowding, drift, recognisability


def test_crowding_hand_computed():
    P = torch.tensor([[1.0, 0.0], [np.cos(0.5), np.sin(0.5)], [-1.0, 0.0]])
    # row 0: max(cos .5, -1) ; row 1: max(cos .5, cos(pi-.5)) ; row 2: max(-1, -cos .5)
    expected = (np.cos(0.5) + np.cos(0.5) - np.cos(0.5)) / 3
    assert crowding(P) == pytest.approx(expected, abs=1e-6)


def test_drift_hand_computed():
    P = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    Q = torch.tensor([[np.cos(0.3), np.sin(0.3)], [0.0, 1.0]])
    assert drift(Q, P) == pytest.approx(0.15, abs=1e-6)
    with pytest.raises(ValueError, match="differ in size"):
        drift(Q[:1], P)


def test_recognisability_hand_computed():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1, 0])
    assert recognisability(feats, labels, protos) == pytest.approx(0.75)
    assert recognisability(feats, labels, protos, block=1) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="out of range"):
        recognisability(feats, torch.tensor([0, 1, 2, 0]), protos)
