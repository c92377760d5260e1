"""Nearest-neighbour search among prototypes, without ever building a C x C matrix.

NDPP and ODPP only need, for each class, its ``k`` most similar classes in the old
space. At GLDv2 scale (C = 81,313) a dense similarity matrix would take 26 GB, so the
search runs in row blocks (torch) or through faiss, whose exact inner-product index
also works blockwise.

The exact search costs ``2 C^2 d`` flops (3.4 TFLOP at C = 81,313, d = 256: tens of
seconds on a laptop CPU). ``backend="ivf"`` is an approximate alternative for that
scale: a faiss inverted-file index (k-means cells, each query scans the ``nprobe``
nearest cells) with exact inner products inside the scanned cells. It is seeded, so
the same input gives the same lists; its recall is measured in ``bench/perturb_scale.py``
and reported in ``docs/performance.md``.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["class_neighbors", "ivf_cells", "BLOCK_ROWS", "BACKENDS"]

#: rows of the query block in the torch backend: BLOCK_ROWS x C similarities at a time.
BLOCK_ROWS = 1024
BACKENDS = ("auto", "faiss", "torch", "ivf")
#: default number of cells scanned per query by the ``ivf`` backend.
IVF_NPROBE = 8


def ivf_cells(n: int) -> int:
    """Number of k-means cells of the ``ivf`` backend for ``n`` rows: ``4 sqrt(n)``,
    capped so that every cell gets at least 39 training rows (faiss' minimum)."""
    return max(1, min(round(4 * n**0.5), n // 39))


def _float32_rows(x: torch.Tensor):
    """``x`` as a C-contiguous float32 numpy array (what faiss takes)."""
    import numpy as np

    return np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32, copy=False))


def _faiss_search(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss  # heavy optional import, kept local

    xs = _float32_rows(x)
    index = faiss.IndexFlatIP(xs.shape[1])
    index.add(xs)
    sims, idx = index.search(xs, k)
    return torch.from_numpy(sims), torch.from_numpy(idx).long()


def _ivf_search(x: torch.Tensor, k: int, nprobe: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss

    xs = _float32_rows(x)
    n, d = xs.shape
    nlist = ivf_cells(n)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    # a few k-means iterations on <= 32 rows per cell: the cells only need to be
    # reasonable, the search inside them is exact
    index.cp.niter = 4
    index.cp.max_points_per_centroid = 32
    index.cp.seed = seed
    index.train(xs)
    index.add(xs)
    index.nprobe = min(nprobe, nlist)
    sims, idx = index.search(xs, k)
    idx = torch.from_numpy(idx).long()
    if (idx < 0).any():  # fewer than k rows in the scanned cells
        raise RuntimeError(
            f"ivf search found fewer than {k} candidates for some rows (nprobe={nprobe} of {nlist} cells); "
            "raise nprobe or use the exact search"
        )
    return torch.from_numpy(sims), idx


def _torch_search(x: torch.Tensor, k: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    sims, idx = [], []
    for start in range(0, x.shape[0], block):
        s = x[start : start + block] @ x.T
        top = torch.topk(s, k, dim=1)
        sims.append(top.values)
        idx.append(top.indices)
    return torch.cat(sims), torch.cat(idx)


def class_neighbors(
    protos: torch.Tensor,
    k: int,
    *,
    backend: Literal["auto", "faiss", "torch", "ivf"] = "auto",
    block: int = BLOCK_ROWS,
    nprobe: int = IVF_NPROBE,
    seed: int = 0,
) -> torch.Tensor:
    """Indices of the ``k`` most similar other rows of each row, by inner product.

    Parameters
    ----------
    protos : (C, d) float tensor, rows L2-normalised.
    k : number of neighbours, ``1 <= k < C``.
    backend : ``"faiss"`` (exact flat index), ``"torch"`` (blockwise matmul + topk),
        ``"auto"`` (faiss for float32 input when C > 4096, torch otherwise; all three
        exact) or ``"ivf"`` (approximate, for C in the tens of thousands; see the module
        docstring; computed in float32).
    block : rows per block in the torch backend; memory is ``block * C`` floats.
    nprobe : cells scanned per row by the ``ivf`` backend (more: slower, higher recall).
    seed : k-means seed of the ``ivf`` backend.

    Returns
    -------
    (C, k) int64 tensor of neighbour indices, most similar first, never containing the
    row itself. The self match is removed by index, so identical rows are still
    each other's neighbours.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1:
        raise ValueError(f"nprobe must be an integer >= 1, got {nprobe!r}")
    C = protos.shape[0]
    if not 1 <= k < C:
        raise ValueError(f"k must satisfy 1 <= k < number of classes ({C}), got k={k}")
    kk = min(k + 1, C)
    if backend == "auto":
        backend = "faiss" if (C > 4096 and protos.dtype == torch.float32) else "torch"
    if backend == "faiss":
        _, idx = _faiss_search(protos, kk)
    elif backend == "ivf":
        _, idx = _ivf_search(protos, kk, nprobe, seed)
    else:
        _, idx = _torch_search(protos, kk, block)
    # Drop the self index where it appears; otherwise drop the last (k+1-th) column.
    rows = torch.arange(C).unsqueeze(1)
    is_self = idx == rows
    has_self = is_self.any(dim=1, keepdim=True)
    drop = torch.where(has_self, is_self, torch.zeros_like(is_self))
    drop[:, -1] |= ~has_self.squeeze(1)
    return idx[~drop].view(C, k)
