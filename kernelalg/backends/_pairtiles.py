"""Tiled evaluation of elementwise pair programs on CPU, and the symmetric (upper-triangle) Gram matrix.

A dense kernel program is elementwise over the N x M input pairs: per-sample arrays (N, 1) and (1, M), per-pair
arrays (N, M), scalars. On CPU it runs on tiles (``lax.map``), all layers per tile, so the per-layer state
stays in cache. For the kernel of x with itself only the square tiles on and above the diagonal are computed
(about half the work); the matrix is assembled from them with the lower triangle mirrored, so it is
symmetric bit for bit (as the host-side tiling of :mod:`kernelalg.core._tiles`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Run = Callable[[dict], list]


def row_tiled(run: Run, env: dict, elements: int, flag: bool = False) -> list:
    """``run(env)`` evaluated on row tiles of about ``elements`` pair entries of the (N, ...) arrays of ``env``.

    Arrays whose leading axis is N are cut into tiles (the last one padded by repeating the last row), arrays
    with leading axis 1 and scalars are shared by all tiles. With ``flag`` the last output of ``run`` is a
    boolean per tile, and-reduced over the tiles.
    """
    arrays = [v for v in env.values() if jnp.ndim(v) >= 1]
    n = max((jnp.shape(v)[0] for v in arrays), default=1)
    per_row = max((jnp.size(v) // n for v in arrays if jnp.shape(v)[0] == n), default=1)
    tile = max(2, elements // per_row)
    if n < 2 * tile:
        return run(env)
    # prefer a tile that divides n (no padded copy of the inputs)
    tile = next((t for t in range(tile, max(1, tile // 2), -1) if n % t == 0), tile)
    count = -(-n // tile)
    split = [k for k, v in env.items() if jnp.ndim(v) >= 1 and jnp.shape(v)[0] == n]

    def cut(v: jax.Array) -> jax.Array:
        if count * tile > n:
            v = jnp.pad(v, [(0, count * tile - n)] + [(0, 0)] * (v.ndim - 1), mode="edge")
        return v.reshape((count, tile) + v.shape[1:])

    def body(tiles: list) -> list:
        return [jnp.asarray(o) for o in run({**env, **dict(zip(split, tiles))})]

    outs = jax.lax.map(body, [cut(env[k]) for k in split])
    result = [o.reshape((count * tile,) + o.shape[2:])[:n] if o.ndim >= 2 and o.shape[1] == tile else o[0]
              for o in outs]
    return result[:-1] + [jnp.all(outs[-1])] if flag else result


def mirror_upper(arr: jax.Array) -> jax.Array:
    """The symmetric matrix whose upper triangle (diagonal included) is that of square ``arr``.

    Exact when ``arr`` is a materialised buffer (an argument, a loop output). XLA fuses a cheap producer into
    the select and computes it twice, once per triangle, and its vectorised and scalar code may round
    differently (seen: 1 ulp in float32); optimisation barriers do not prevent that on CPU. The mask is built
    from a 1-D index behind a barrier: XLA would otherwise fold the N x N comparison into a constant, which
    takes minutes to compile at N = 2000.
    """
    i = jax.lax.optimization_barrier(jnp.arange(arr.shape[0]))
    return jnp.where(i[:, None] <= i[None, :], arr, arr.T)


@jax.jit
def mirror_square(tree: Any) -> Any:
    """Every square matrix in ``tree`` through :func:`mirror_upper`, as a program of its own: its inputs are
    materialised buffers, so the mirror is exact."""
    return jax.tree_util.tree_map(lambda a: mirror_upper(a) if a.ndim == 2 and a.shape[0] == a.shape[1] else a, tree)


def symmetric(run: Run, env: dict, n: int, elements: int, tiles: bool, flag: bool = False) -> list:
    """``run(env)`` for the kernel of x with itself (env's per-pair arrays (n, n), per-sample (n, 1) / (1, n)),
    with every (n, n) output symmetric.

    With ``tiles`` (a dense program on CPU) only the square tiles on and above the diagonal are computed, in a
    loop (at least two tiles per side, so that it stays a loop), and the matrix is assembled from the loop's
    output buffer: exactly symmetric. Otherwise the full evaluation with its upper triangle mirrored in the
    program (see :func:`mirror_upper` for when that is exact). ``flag`` as in :func:`row_tiled`.
    """
    kinds = {k: _kind(v, n) for k, v in env.items()}
    if not tiles or n < 2 or None in kinds.values():
        outs = row_tiled(run, env, elements, flag) if tiles else run(env)
        return [mirror_upper(o) if jnp.shape(o) == (n, n) else o for o in outs]
    # edges of at least 2 (per-sample (edge, 1) and per-pair (edge, edge) tile outputs must differ in shape),
    # preferably dividing n (no padded copy of the inputs)
    edge = max(2, min(math.isqrt(elements), -(-n // 2)))
    edge = next((t for t in range(edge, max(1, edge // 2), -1) if n % t == 0), edge)
    count = max(2, -(-n // edge))
    rows, cols = np.triu_indices(count)  # the computed tiles (I, J), I <= J, row-major
    padded = {k: _pad(v, kinds[k], count * edge) for k, v in env.items()}

    def body(ij: tuple) -> list:
        i, j = ij[0] * edge, ij[1] * edge
        local = {}
        for k, v in padded.items():
            kind = kinds[k]
            if kind == "pair":
                v = jax.lax.dynamic_slice(v, (i, j), (edge, edge))
            elif kind == "row":
                v = jax.lax.dynamic_slice(v, (i, 0), (edge, 1))
            elif kind == "col":
                v = jax.lax.dynamic_slice(v, (0, j), (1, edge))
            local[k] = v
        return [jnp.asarray(o) for o in run(local)]

    outs = jax.lax.map(body, (jnp.asarray(rows), jnp.asarray(cols)))
    diag = np.flatnonzero(rows == cols)  # tile index of (I, I)
    result = []
    for o in outs:
        shape = o.shape[1:]
        if shape == (edge, edge):
            result.append(_assemble(o, count, edge)[:n, :n])
        elif shape == (edge, 1):  # per-sample of x: from the diagonal tiles
            result.append(o[diag].reshape(count * edge, 1)[:n])
        elif shape == (1, edge):
            result.append(o[diag].reshape(1, count * edge)[:, :n])
        else:  # scalars and constants: the same in every tile
            result.append(o[0])
    return result[:-1] + [jnp.all(outs[-1])] if flag else result


def _kind(v: jax.Array, n: int) -> str | None:
    if not hasattr(v, "shape") and not isinstance(v, (int, float)):
        return "shared"  # a static value (e.g. the spatial Ctx): the same in every tile
    shape = jnp.shape(v)
    if shape == (n, n):
        return "pair"
    if shape == (n, 1):
        return "row"
    if shape == (1, n):
        return "col"
    return "shared" if jnp.size(v) == 1 else None


def _pad(v: jax.Array, kind: str, size: int) -> jax.Array:
    """Pad per-sample and per-pair arrays to ``size`` samples by repeating the last one (finite values)."""
    if kind == "shared":
        return v
    extra = size - max(jnp.shape(v))
    if extra == 0:
        return v
    widths = {"pair": [(0, extra), (0, extra)], "row": [(0, extra), (0, 0)], "col": [(0, 0), (0, extra)]}[kind]
    return jnp.pad(v, widths, mode="edge")


def _assemble(tiles: jax.Array, count: int, edge: int) -> jax.Array:
    """The (count edge)^2 symmetric matrix from its upper tiles (row-major (I, J), I <= J), each (edge, edge):
    tile (I, J) above the diagonal, its transpose below, and on diagonal tiles the upper triangle mirrored."""
    big_i, big_j = np.meshgrid(np.arange(count), np.arange(count), indexing="ij")
    lo, hi = np.minimum(big_i, big_j), np.maximum(big_i, big_j)
    index = lo * count - lo * (lo - 1) // 2 + (hi - lo)  # position of (lo, hi) in triu_indices order
    grid = tiles[jnp.asarray(index)]  # (count, count, edge, edge)
    blocks = jax.lax.optimization_barrier(jnp.arange(count))
    cells = jax.lax.optimization_barrier(jnp.arange(edge))
    below = blocks[:, None, None, None] > blocks[None, :, None, None]
    on = (blocks[:, None, None, None] == blocks[None, :, None, None]) & (cells[:, None] > cells[None, :])
    grid = jnp.where(below | on, grid.swapaxes(2, 3), grid)
    return grid.transpose(0, 2, 1, 3).reshape(count * edge, count * edge)
