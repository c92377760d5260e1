"""Views of trained results: embed with the models, project, then call a plot builder.

The adapters between the pipeline (:class:`~bclviz.experiment.ExperimentResult`,
trained models) and the pure plot builders of :mod:`bclviz.plots`, which take arrays
and return figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["preferred_method", "result_blocks", "three_spaces_from_result", "warm_up_umap"]


def preferred_method(methods: Sequence[str]) -> str:
    """The method to show: the first perturbing method (``ndpp``, else ``odpp``,
    :func:`bclviz.methods.perturbing_methods`), else the first non-independent one."""
    from .methods import perturbing_methods

    methods = list(methods)
    for name in (*perturbing_methods(), *(m for m in methods if m != "independent"), "independent"):
        if name in methods:
            return name
    raise ValueError("no trained new model to show; the experiment has no methods")


def result_blocks(result, method: str, *, max_points: int | None = 2000, seed: int = 0):
    """Embeddings to project for one method of an :class:`~bclviz.experiment.ExperimentResult`.

    Returns ``(blocks, labels)``: ``blocks`` maps :data:`SPACE_BLOCKS` to numpy arrays
    (old/new model features of ``result.data.query.x``, at most ``max_points`` rows drawn
    with ``seed``; the method's ``old_protos``, ``pseudo_old_protos``, ``new_protos``)
    and ``labels`` holds the classes of the feature rows.
    """
    from .train import embed

    if method not in result.new:
        raise ValueError(f"method {method!r} was not trained; available: {sorted(result.new)}")
    x, y = result.data.query.x, np.asarray(result.data.query.y)
    if max_points is not None and x.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False))
        x, y = x[keep], y[keep]
    state = result.new[method].state
    blocks = {  # keys: bclviz.plots.SPACE_BLOCKS
        "old_features": embed(result.old.model, x).numpy(),
        "new_features": embed(result.new[method].model, x).numpy(),
        "old_protos": state["old_protos"].numpy(),
        "pseudo_old_protos": state["pseudo_old"].numpy(),
        "new_protos": state["new_protos"].numpy(),
    }
    return blocks, y


def three_spaces_from_result(
    result, method: str | None = None, *, projection="auto", n_components: int = 2,
    random_state: int = 0, max_points: int | None = 2000,
):
    """:func:`bclviz.plots.three_spaces_figure` of a trained experiment (a plotly Figure).

    Parameters
    ----------
    result : ExperimentResult
    method : str, optional
        Key of ``result.new``; default :func:`preferred_method`.
    projection : {"auto", "umap", "pca", "raw"} or SpaceProjection
        A method name fits (or reuses, via :func:`bclviz.projection.project_spaces`)
        one joint projection; an unfitted ``SpaceProjection`` is fitted to the blocks;
        a fitted one places them with ``transform``.
    n_components : int, default 2
        2 or 3 (3-D panels) when ``projection`` is a method name.
    random_state : int, default 0
        Seed of the projection and of the feature subsample.
    max_points : int or None, default 2000
        At most this many query items are drawn (``None``: all).
    """
    from .projection import SpaceProjection, project_spaces

    method = preferred_method(list(result.new)) if method is None else method
    blocks, labels = result_blocks(result, method, max_points=max_points, seed=random_state)
    if isinstance(projection, SpaceProjection):
        if hasattr(projection, "embedding_"):
            coords = {b: projection.transform(v) for b, v in blocks.items()}
        else:
            coords = projection.fit(blocks).embedding_
    else:
        proj = project_spaces(blocks, method=projection, n_components=n_components,
                              random_state=random_state)
        projection, coords = proj, proj.embedding_
    from .plots import three_spaces_figure

    fig = three_spaces_figure(coords, labels)
    fig.update_layout(title=f"{method}: old | pseudo-old | new ({projection.method_})")
    return fig


def warm_up_umap():
    """Compile UMAP in a background thread now (:func:`bclviz.projection.warm_up_umap`),
    so that the first three-space view after training does not wait for it; ``None``
    (nothing to do) without the lab extra (scikit-learn, umap-learn)."""
    try:
        from .projection import warm_up_umap as start
    except ImportError:
        return None
    return start()
