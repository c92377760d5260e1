"""Views of trained results: embed with the models, project, then call a plot builder.

The adapters between the pipeline (:class:`~bclviz.experiment.ExperimentResult`,
trained models) and the pure plot builders of :mod:`bclviz.plots`, which take arrays
and return figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "preferred_method", "result_blocks", "three_spaces_from_result", "embedding_blocks",
    "three_spaces_from_embeddings", "warm_up_umap", "block_labels",
]


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
    and ``labels`` holds the classes of the feature rows. When the query classes are
    held out from training (``heldout_classes``, open-set by class), the rows come from
    ``result.data.new_train`` instead, so that every point has its class's prototypes.
    """
    from .train import embed

    if method not in result.new:
        raise ValueError(f"method {method!r} was not trained; available: {sorted(result.new)}")
    shown = result.data.new_train if "heldout_labels" in result.data.info else result.data.query
    x, y = shown.x, np.asarray(shown.y)
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
    method = preferred_method(list(result.new)) if method is None else method
    blocks, labels = result_blocks(result, method, max_points=max_points, seed=random_state)
    return _three_spaces(blocks, labels, projection, n_components, random_state,
                         title=f"{method}: old | pseudo-old | new")


def _three_spaces(blocks, labels, projection, n_components: int, random_state: int, *, title: str,
                  class_names=None):
    """Project ``blocks`` (a method name fits or reuses a projection; a ``SpaceProjection``
    is fitted, or used with ``transform`` when fitted) and build the three-space figure."""
    from .projection import FIT_ROWS, SpaceProjection, project_spaces

    strata = block_labels(blocks, labels)
    if isinstance(projection, SpaceProjection):
        if hasattr(projection, "embedding_"):
            coords = {b: projection.transform(v) for b, v in blocks.items()}
        else:
            coords = projection.fit(blocks, strata).embedding_
    else:
        proj = project_spaces(blocks, method=projection, n_components=n_components,
                              random_state=random_state, max_fit_rows=FIT_ROWS, labels=strata)
        projection, coords = proj, proj.embedding_
    from .plots import three_spaces_figure

    fig = three_spaces_figure(coords, labels, class_names=class_names)
    fig.update_layout(title=f"{title} ({projection.method_})")
    return fig


def block_labels(blocks, labels) -> dict[str, np.ndarray]:
    """Class of every row of :data:`bclviz.plots.SPACE_BLOCKS` ``blocks``: ``labels`` for the
    two feature blocks, ``0 .. C-1`` for the prototype blocks; the strata of the
    projection's stratified fit sample (:func:`bclviz.projection.stratified_rows`)."""
    labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    out = {}
    for name, x in blocks.items():
        out[name] = labels if name.endswith("_features") else np.arange(len(x))
    return out


def embedding_blocks(emb, inspection, *, max_points: int | None = 2000, seed: int = 0):
    """Arrays to project for loaded embeddings (:func:`bclviz.features.load`) and their
    :class:`~bclviz.inspection.Inspection`.

    Returns ``(blocks, labels)``: ``blocks`` maps :data:`bclviz.plots.SPACE_BLOCKS` to numpy
    arrays (old and new embeddings of at most ``max_points`` items drawn with ``seed``,
    all items when ``None``; the inspection's ``old_protos``, ``pseudo_old`` and
    ``new_protos``); ``labels`` holds the class indices of the drawn items.
    """
    rows = np.arange(emb.n)
    if max_points is not None and emb.n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(emb.n, max_points, replace=False))
    blocks = {  # keys: bclviz.plots.SPACE_BLOCKS
        "old_features": np.asarray(emb.old[rows], dtype=np.float32),
        "new_features": np.asarray(emb.new[rows], dtype=np.float32),
        "old_protos": inspection.old_protos.numpy(),
        "pseudo_old_protos": inspection.pseudo_old.numpy(),
        "new_protos": inspection.new_protos.numpy(),
    }
    return blocks, emb.labels[rows]


def three_spaces_from_embeddings(
    emb, inspection, *, projection="auto", n_components: int = 2, random_state: int = 0,
    max_points: int | None = 2000,
):
    """:func:`bclviz.plots.three_spaces_figure` of loaded embeddings (a plotly Figure).

    Parameters
    ----------
    emb : Embeddings
        From :func:`bclviz.features.load`.
    inspection : Inspection
        From :func:`bclviz.inspection.inspect_embeddings` of ``emb``: the prototypes and
        the pseudo-old prototypes of its NDPP/ODPP setting.
    projection, n_components, random_state, max_points
        As in :func:`three_spaces_from_result` (``"pca"`` is fastest; ``"auto"`` is UMAP
        for ``d > 3``, whose first fit in a process compiles for about 11 s).
    """
    blocks, labels = embedding_blocks(emb, inspection, max_points=max_points, seed=random_state)
    m = inspection.method
    return _three_spaces(blocks, labels, projection, n_components, random_state, class_names=emb.class_names,
                         title=f"{m.name} eps={m.eps:g} k={m.k}: old | pseudo-old | new")


def warm_up_umap():
    """Compile UMAP in a background thread now (:func:`bclviz.projection.warm_up_umap`),
    so that the first three-space view after training does not wait for it; ``None``
    (nothing to do) without the lab extra (scikit-learn, umap-learn)."""
    try:
        from .projection import warm_up_umap as start
    except ImportError:
        return None
    return start()
