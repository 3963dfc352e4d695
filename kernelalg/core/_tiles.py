"""The one tiling mechanism: tile offsets of an N x M kernel, the symmetric half, host-side mirroring.

``kernel(batch_size=)``, ``ka.gram``, the command line's ``kernel`` and the empirical NTK all walk the
tiles given by :func:`tile_offsets` (row-major; only tiles j >= i of a symmetric kernel) and mirror the lower
triangle with :func:`mirror_block` / :func:`transpose_into`, so a symmetric Gram matrix is symmetric bit for
bit whichever of them built it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from kernelalg.core._errors import KernelalgError

BAD_TILE = "{what} must be a positive integer, got {tile!r}. Fix: e.g. {what}=512, or None for one block."

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


def mirror_block(blk: Any, pair_axes: bool = False) -> np.ndarray:
    """The (j, i) block of a symmetric kernel from its (i, j) block: the two sample axes swapped, and with
    ``pair_axes`` (blocks of shape (h, w, *A, *A)) the two groups of trailing axes swapped as well."""
    b = np.swapaxes(np.asarray(blk), 0, 1)
    if pair_axes and b.ndim > 2:
        h = (b.ndim - 2) // 2
        b = np.moveaxis(b, tuple(range(2 + h, b.ndim)), tuple(range(2, 2 + h)))
    return b


def run_tiles(compute: Callable[[int, int], Mapping[str, Any]], n: int, m: int, tile: int, symmetric: bool,
              write: Callable[[str, int, int, np.ndarray], None], pair_axes: bool = False,
              advance: Callable[[int], None] | None = None) -> None:
    """Walk the tiles of an n x m kernel: ``compute(i, j)`` gives the blocks {name: (h, w, ...)} of tile (i, j);
    ``write(name, i, j, block)`` stores one. When ``symmetric`` only tiles j >= i are computed and every
    off-diagonal tile is also written, mirrored (:func:`mirror_block`), at (j, i)."""
    for i, j in tile_offsets(n, m, tile, symmetric):
        for name, blk in compute(i, j).items():
            blk = np.asarray(blk)
            write(name, i, j, blk)
            if symmetric and j > i:
                write(name, j, i, mirror_block(blk, pair_axes))
        if advance is not None:
            advance(1)


def check_tile(tile: Any, what: str = "batch_size") -> int:
    """A tile edge: a positive integer (bools and non-integral numbers are refused)."""
    ok = isinstance(tile, (int, np.integer)) and not isinstance(tile, bool) and tile >= 1
    if not ok and isinstance(tile, float) and tile.is_integer() and tile >= 1:
        ok, tile = True, int(tile)
    if not ok:
        raise KernelalgError(BAD_TILE.format(what=what, tile=tile))
    return int(tile)
