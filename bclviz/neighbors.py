"""Nearest-neighbour search among prototypes, without ever building a C x C matrix.

NDPP and ODPP only need, for each class, its ``k`` most similar classes in the old
space. At GLDv2 scale (C = 81,313) a dense similarity matrix would take 26 GB, so the
search runs in row blocks (torch) or through faiss, whose exact inner-product index
also works blockwise.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["class_neighbors", "BLOCK_ROWS"]

#: rows of the query block in the torch backend: BLOCK_ROWS x C similarities at a time.
BLOCK_ROWS = 1024


def _faiss_search(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss  # heavy optional import, kept local
    import numpy as np

    xs = np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32, copy=False))
    index = faiss.IndexFlatIP(xs.shape[1])
    index.add(xs)
    sims, idx = index.search(xs, k)
    return torch.from_numpy(sims), torch.from_numpy(idx).long()


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
    backend: Literal["auto", "faiss", "torch"] = "auto",
    block: int = BLOCK_ROWS,
) -> torch.Tensor:
    """Indices of the ``k`` most similar other rows of each row, by inner product.

    Parameters
    ----------
    protos : (C, d) float tensor, rows L2-normalised.
    k : number of neighbours, ``1 <= k < C``.
    backend : ``"faiss"`` (exact flat index), ``"torch"`` (blockwise matmul + topk) or
        ``"auto"`` (faiss for float32 input when C > 4096, torch otherwise).
    block : rows per block in the torch backend; memory is ``block * C`` floats.

    Returns
    -------
    (C, k) int64 tensor of neighbour indices, most similar first, never containing the
    row itself. The self match is removed by index, so identical rows are still
    each other's neighbours.
    """
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    C = protos.shape[0]
    if not 1 <= k < C:
        raise ValueError(f"k must satisfy 1 <= k < number of classes ({C}), got k={k}")
    kk = min(k + 1, C)
    if backend == "auto":
        backend = "faiss" if (C > 4096 and protos.dtype == torch.float32) else "torch"
    if backend == "faiss":
        _, idx = _faiss_search(protos, kk)
    else:
        _, idx = _torch_search(protos, kk, block)
    # Drop the self index where it appears; otherwise drop the last (k+1-th) column.
    rows = torch.arange(C).unsqueeze(1)
    is_self = idx == rows
    has_self = is_self.any(dim=1, keepdim=True)
    drop = torch.where(has_self, is_self, torch.zeros_like(is_self))
    drop[:, -1] |= ~has_self.squeeze(1)
    return idx[~drop].view(C, k)
