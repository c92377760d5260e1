"""Scoring a (query model, gallery model) pair on a dataset: the one place that decides how.

Every caller (experiments, ``bclviz train``/``evaluate``, sweeps, the training lab,
sequential updates, findings) goes through :class:`Scorer`:

- queries and gallery are embedded once per model (the old model's gallery is reused
  by every new model scored against it);
- labels or per-query relevance: a dataset with ``BCLData.relevance`` (GLDv2) is scored
  with :func:`~bclviz.evaluation.evaluate_relevance`, every other one with
  :func:`~bclviz.evaluation.evaluate` (self-match excluded by index when the query set
  is the gallery);
- the headline metric is the dataset's (``BCLData.headline``, e.g. In-shop's ``R@1``)
  or ``mAP@k``, and the compatibility criterion ``M(new, old) > M(old, old)`` is judged
  on it.
"""

from __future__ import annotations

import torch
from torch import nn

from .data.base import BCLData
from .evaluation import evaluate, evaluate_relevance, is_compatible

__all__ = ["Scorer", "score_features", "headline_metric"]


def headline_metric(data: BCLData, k: int) -> str:
    """The metric a run reports first and judges compatibility on (``mAP@k`` unless the dataset says)."""
    return data.headline or f"mAP@{k}"


def score_features(data: BCLData, query: torch.Tensor, gallery: torch.Tensor, *, k: int) -> dict[str, float]:
    """Scores of query features (n_q, d) against gallery features (n_g, d) of ``data``'s sets."""
    if data.relevance is not None:
        return evaluate_relevance(query, gallery, data.relevance, k=k)
    return evaluate(query, data.query.y, gallery, data.gallery.y, k=k, exclude_self=data.query_is_gallery)


class Scorer:
    """Scores model pairs on one dataset, embedding each model's query and gallery sets once.

    Parameters
    ----------
    data : the dataset (its ``query``/``gallery`` sets, ``relevance`` and ``headline``).
    k : the mAP@k cut-off.

    Attributes
    ----------
    key : the headline metric name (:func:`headline_metric`).
    """

    def __init__(self, data: BCLData, *, k: int = 100) -> None:
        self.data, self.k = data, k
        self.key = headline_metric(data, k)
        self._features: dict[int, tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}

    def features(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """``(query, gallery)`` embeddings of ``model``, computed on first use."""
        from .train import embed

        entry = self._features.get(id(model))
        if entry is None or entry[0] is not model:
            q = embed(model, self.data.query.x)
            g = q if self.data.query_is_gallery else embed(model, self.data.gallery.x)
            entry = self._features[id(model)] = (model, q, g)
        return entry[1], entry[2]

    def forget(self, model: nn.Module) -> None:
        """Drop ``model``'s cached embeddings (e.g. a new model that was scored once)."""
        self._features.pop(id(model), None)

    def score(self, query_model: nn.Module, gallery_model: nn.Module) -> dict[str, float]:
        """``M(query_model, gallery_model)``: every metric, the headline among them."""
        q, _ = self.features(query_model)
        _, g = self.features(gallery_model)
        return score_features(self.data, q, g, k=self.k)

    def compatible(self, cross: dict, old_old: dict) -> bool:
        """BCT criterion on the headline: ``M(new, old) > M(old, old)`` (strict)."""
        return is_compatible(cross[self.key], old_old[self.key])
