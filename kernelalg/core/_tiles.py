"""The one tiling mechanism: tile offsets of an N x M kernel, the symmetric half, host-side mirroring.

``kernel(batch_size=)``, ``ka.gram``, the command line's ``kernel`` and the empirical NTK all walk the
tiles given by :func:`tile_offsets` (row-major; only tiles j >= i of a symmetric kernel) and mirror the lower
triangle with :func:`transpose_into` / :func:`mirror_tile`, so a symmetric Gram matrix is symmetric bit for
bit whichever of them built it.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 128  # cache-friendly block edge for host-side transposes


def transpose_into(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src.T`` block by block (a plain strided transpose of a large matrix thrashes the cache)."""
    h, w = src.shape[:2]
    for r in range(0, h, _BLOCK):
        for c in range(0, w, _BLOCK):
            dst[c:c + _BLOCK, r:r + _BLOCK] = src[r:r + _BLOCK, c:c + _BLOCK].T


def symmetrize_upper(b: np.ndarray) -> np.ndarray:
    """A copy of square ``b`` whose strictly lower triangle is the mirror of its upper triangle."""
    b = np.array(b)
    for r in range(0, b.shape[0], _BLOCK):
        d = b[r:r + _BLOCK, r:r + _BLOCK]
        d[...] = np.triu(d) + np.triu(d, 1).T
        transpose_into(b[r + _BLOCK:, r:r + _BLOCK], b[r:r + _BLOCK, r + _BLOCK:])
    return b


def tile_offsets(n: int, m: int, tile: int, symmetric: bool) -> list[tuple[int, int]]:
    """Row/column offsets of the tiles to compute, row-major (upper block triangle only when symmetric)."""
    return [(i, j) for i in range(0, n, tile) for j in range(i if symmetric else 0, m, tile)]
