"""Chunked, pair-by-pair evaluation of everything before an image network's readout.

Every image pair (x_i, x'_j) goes through the spatial layers independently of all other pairs; only the
readout (GlobalAvgPool, GlobalSumPool, Flatten) turns its pixel-pair grid into one number. So when a
network has exactly one readout, the readout layer takes the program built so far (the spatial
"segment": Conv Ops, activation Assigns, pooling Ops) out of the builder and wraps it into a single Op
that runs it on chunks of image pairs inside ``jax.lax.map`` (a plain loop in the NumPy reference):

* memory is bounded by the chunk (a few MB of pixel-pair grids), whatever N and M; the loop reuses its
  buffers, and a chunk of grids stays in cache through all layers;
* with x2 None only the pairs i < j are evaluated (plus the N pairs (i, i)), i.e. the symmetric half;
* each layer's linear map runs as a computation of its own (``Arrays.isolated``), and so does every shared
  transcendental of the activations (theta = arccos(rho), read by both T and Tdot): XLA would otherwise
  inline it into each consumer and evaluate it twice per grid entry;
* phase 1 runs the self pairs (x, x) -- they give the readout's K(x, x) and, when AvgPool/SumPool or
  attention mix pixels, each image's record of every such layer (its per-pixel variances after the layer, the
  diagonal of its self grid; attention adds its weights); phase 2 runs the pairs of different images and
  reads those records (``Ctx.rec``: {op tag: (record of the row image, record of the column image)}).

Pairs of the symmetric half are enumerated in cyclic order (:func:`half_pairs`): pair k = (i, (i + o) mod N)
with o = k // N + 1 and i = k mod N, which covers every unordered pair exactly once, so indices are computed
on the fly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import sympy as sp
from jax import tree_util

from kernelalg.backends import Arrays, find_runs, run_program, run_program_scanned, structural
from kernelalg.backends._walker import evaluate as walk
from kernelalg.core._program import Q1, Q2, Builder, C, Op, KernelState
from kernelalg.layers.spatial import _grid as S
from kernelalg.layers.spatial._inputs import pair_inputs

#: Pixel-pair entries per chunk (per array): 2^18 entries = 2 MB in float64 (stays in cache).
CHUNK_ELEMS = 2**18


def _free_symbols(seg: tuple) -> list[sp.Symbol]:
    defined: set = set()
    free: set = set()
    for ins in seg:
        used, targets = (set(ins.sources), ins.targets) if isinstance(ins, Op) else (ins.expr.free_symbols, (ins.target,))
        free |= {s for s in used if s not in defined}
        defined |= set(targets)
    return sorted(free - {Q1, Q2, C, S.CTX, S.SAME_GRID}, key=str)


def wrap_readout(b: Builder, st: KernelState, lay: S.SpatialState, reduce: Callable[[Arrays, Any], Any],
                 name: str, npix: bool = False) -> list:
    """Replace the program built so far by one chunked Op that ends in ``reduce`` (per-pair readout).

    The Op runs the segment on the backend it is evaluated on (JAX: ``lax.map`` over chunks; NumPy: a loop).

    Args:
        b: The builder; its whole program is the spatial segment (there is one readout).
        st: The spatial state reaching the readout.
        lay: Its layout.
        reduce: (arrays, (B, 1, <pixel axes>) grid) -> (B,) readout of one chunk of pair grids (backend-neutral).
        name: Op name.
        npix: Also return the number of pixels (the factor of the width after Flatten).

    Returns:
        [var1 (N, 1), var2 (1, M), cov (N, M), ntk (N, M) or 0] (+ [npix]).
    """
    seg, blocks = b.take_program()  # the segment now lives inside the chunked Op
    free = _free_symbols(seg)
    pools = [(ins.tag, ins.targets[-1]) for ins in seg if isinstance(ins, Op) and ins.tag is not None]
    has_ntk = not (st.ntk.is_Number and st.ntk == 0)
    # runs of identical layers (e.g. [Conv, Relu] x depth) become one loop each (JAX: lax.scan)
    runs = tuple(find_runs(seg, blocks, [st.nngp, st.ntk] + [sym for _, sym in pools]))
    fn = partial(_run, seg, runs, lay, st, reduce, free, pools, b.asymmetric, has_ntk, npix)
    outs = list(b.emit(name, structural(fn), [S.IMG1, S.IMG2] + free, 3 + has_ntk + npix, stem="r"))
    if not has_ntk:
        outs.insert(3, sp.Integer(0))
    return outs


#: Elementwise functions worth evaluating once per grid entry (vectorised polynomials, several ops each).
_EXPENSIVE = (sp.acos, sp.asin, sp.atan, sp.atan2, sp.erf, sp.exp)


def _shared_transcendentals(seg: tuple) -> dict:
    """Assigns of the segment that contain an expensive function and feed two or more later instructions
    (e.g. theta = arccos(rho) of the arc-cosine duals, read by both T and Tdot), mapped to (their expression
    with its cheap producers substituted, the free symbols of that expression).

    XLA's CPU fusion recomputes such a value inside each consumer's loop; materialising it once (a chunk of
    the pixel-pair grid, in cache) halves the transcendental work of the duals. Its cheap producers (e.g.
    rho = corr(...)) are recomputed inside it instead of being read: otherwise they would be materialised too,
    one more pass over the grid per layer each.
    """
    uses: dict = {}
    for ins in seg:
        for sym in (ins.sources if isinstance(ins, Op) else ins.expr.free_symbols):
            uses[sym] = uses.get(sym, 0) + 1
    cheap = {ins.target: ins.expr for ins in seg if not isinstance(ins, Op) and not ins.expr.has(*_EXPENSIVE)}
    out = {}
    for ins in seg:
        if not isinstance(ins, Op) and uses.get(ins.target, 0) >= 2 and ins.expr.has(*_EXPENSIVE):
            expr, prev = ins.expr, None
            while expr != prev:  # back to the last structural op's outputs (e.g. rho <- W^2 conv(K) + b^2)
                expr, prev = expr.xreplace(cheap), expr
            out[ins] = (expr, tuple(sorted(expr.free_symbols, key=str)))
    return out


def chunk_size(lay: S.SpatialState, shape: tuple, total: int) -> int:
    """Pairs per chunk: about CHUNK_ELEMS pixel-pair entries per array."""
    p = math.prod(shape)
    per = p * p if lay.mode == "full" else p
    return max(1, min(total, CHUNK_ELEMS // per))


def _map_pairs(ops: Arrays, body: Callable, total: int, size: int) -> Any:
    """Map ``body(ks)`` over chunks of the pair indices 0..total-1 (``lax.map`` in JAX, a loop in NumPy);
    results concatenated."""
    xp = ops.xp
    n_chunks = -(-total // size)

    def step(c: Any) -> Any:
        ks = c * size + xp.arange(size)
        return body(xp.where(ks < total, ks, 0))

    out = ops.map(step, xp.arange(n_chunks))
    return tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[:total], out)


def half_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n (n - 1) / 2 unordered pairs {i, j}, i != j, of n images in cyclic order: pair k is
    (i, (i + o) mod n) with i = k mod n, o = k // n + 1 (for even n the last offset, n / 2, takes i < n / 2
    only, so that no pair comes twice)."""
    k = np.arange(n * (n - 1) // 2)
    i = k % n
    return i, (i + k // n + 1) % n


def _run(seg: tuple, runs: tuple, lay: S.SpatialState, st: KernelState, reduce: Callable, free: list, pools: list,
         asym: bool, has_ntk: bool, npix: bool, ops: Arrays, img1: Any, img2: Any, *free_vals: Any) -> tuple:
    xp, table = ops.xp, ops.table
    shared = _shared_transcendentals(seg)
    runs = runs if ops.scans else ()
    base = dict(zip(free, free_vals))
    sym = img2 is None
    z = img1 if sym else xp.concatenate([img1, img2.astype(img1.dtype)])
    n = len(img1)
    m = n if sym else len(img2)
    shape = img1.shape[1:-1]
    live = ops.live(z.reshape(-1)[0])  # runtime-true and not foldable (a loop counter's bound is, see Arrays.isolated)
    pixels: list[int] = []  # pixel count at the readout (static; recorded while tracing)

    # an image with itself: a self pair, or (x1_i, x2_i) when x2 equals x1 (neural-tangents' x1_is_x2)
    same_batches = (not sym and img1.shape == img2.shape) and xp.all(img1 == img2)

    def step(ins: Any, env: dict) -> None:
        if ins in shared:  # evaluated once and materialised (XLA would inline it into each consumer)
            expr, syms = shared[ins]
            env[ins.target] = ops.isolated(env[S.CTX].live, lambda *vals: walk(
                expr, {**env, **dict(zip(syms, vals))}, table), *[env[v] for v in syms])
        else:
            run_program((ins,), env, table)

    def evaluate(ia: Any, ib: Any, ctx: S.Ctx) -> tuple:
        env = dict(base)
        env.update(pair_inputs(ops, lay, z[ia], z[ib]))
        env[S.CTX] = ctx
        env[S.SAME_GRID] = xp.where((ia == ib) | (same_batches & (ib == ia + n)), 1.0, 0.0).astype(z.dtype)[:, None]
        run_program_scanned(seg, env, table, runs, step)
        grid = env[st.nngp]
        pixels.append(math.prod(grid.shape[2:2 + lay.ndim]))
        if has_ntk:
            cov, ntk = ops.isolated(ctx.live, lambda a, b: (reduce(ops, a), reduce(ops, b)), grid, env[st.ntk])
        else:
            cov = ops.isolated(ctx.live, partial(reduce, ops), grid)
            ntk = xp.zeros_like(cov)
        return cov, ntk, ({key: env[sym_][:, 0] for key, sym_ in pools} if ctx.phase == 1 else {})

    # pairs of different images: k -> (row image, column image) indices into z
    nz = len(z)
    if sym and not asym:  # cyclic enumeration of the symmetric half
        rows, cols = half_pairs(n)
        n_cross = len(rows)
        cross_index = (lambda k: (k % n, (k % n + k // n + 1) % n))
    else:
        offset = 0 if sym else n
        n_cross = n * m
        cross_index = (lambda k: (k // m, offset + k % m))

    if pools:  # phase 1 (self pairs) records the pooled variances that phase 2 (cross pairs) reads
        self_cov, self_ntk, rec = _map_pairs(
            ops, lambda ks: evaluate(ks, ks, S.Ctx(phase=1, live=live)), nz, chunk_size(lay, shape, nz))

        def gathered(ia: Any, ib: Any) -> dict:
            return {key: (r[ia], r[ib]) for key, r in rec.items()}

        def cross(ks: Any) -> tuple:
            ia, ib = cross_index(ks)
            return evaluate(ia, ib, S.Ctx(phase=2, rec=gathered(ia, ib), live=live))[:2]

        kc, kt = (_map_pairs(ops, cross, n_cross, chunk_size(lay, shape, n_cross)) if n_cross
                  else (xp.zeros((0,), z.dtype),) * 2)
    else:  # one loop: the nz self pairs, then the cross pairs
        def both(ks: Any) -> tuple:
            ia, ib = cross_index(xp.maximum(ks - nz, 0))
            ia, ib = xp.where(ks < nz, ks, ia), xp.where(ks < nz, ks, ib)
            return evaluate(ia, ib, S.Ctx(phase=2, live=live))[:2]

        total = nz + n_cross
        vc, vt = _map_pairs(ops, both, total, chunk_size(lay, shape, total))
        self_cov, self_ntk, kc, kt = vc[:nz], vt[:nz], vc[nz:], vt[nz:]

    d1 = self_cov[:n]
    d2 = d1 if sym else self_cov[n:]
    if sym and not asym:
        def mirrored(diag: Any, vals: Any) -> Any:
            return ops.set_at(ops.set_at(xp.diag(diag), (rows, cols), vals), (cols, rows), vals)

        cov, ntk = mirrored(self_cov, kc), mirrored(self_ntk, kt)
    else:
        cov, ntk = kc.reshape(n, m), kt.reshape(n, m)
    outs = [d1[:, None], d2[None, :], cov] + ([ntk] if has_ntk else [])
    if npix:
        outs.append(xp.asarray(pixels[0], img1.dtype))
    return tuple(outs)
