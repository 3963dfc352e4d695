"""The maths of global self-attention on the pixel-pair grid (backend-neutral, see :mod:`._attention`).

Positions p, q (flattened: P = prod(spatial shape)); K = K(x, x'), Theta = Theta(x, x') the input kernels on
position pairs; K_int = kw K + pw R, Theta_int = kw Theta + pw R the kernels of the keys' inputs (inputs
with positional embeddings of covariance R, see :func:`positional_covariance`); V, V_T the kernels of the
values' inputs (K, Theta; or K_int, Theta_int with ``val_pos_emb``). Everything is returned *before* the
output layer's affine map (``W_out_std W_value_std`` and ``b_std``, applied elementwise by the layer):

* linear logit scaling (Hron et al. 2020, Sec. 3; neural-tangents): the logits converge to the
  deterministic QK K_int(x, x)(p, q), so the attention weights G(x) = phi(QK K_int(x, x)) (softmax over q)
  are fixed by each input's own self grid:  A = G(x) V G(x')^T,  A_T = G(x) V_T G(x')^T + 2 A.
* 1/sqrt scaling: the logits are Gaussian with Cov(Z(p, q), Z'(p', q')) = S12 = QK^2 K_int(p, p') K_int(q, q')
  (variances S11(p, q) = QK^2 K_int(x, x)(p, p) K_int(x, x)(q, q), S22 likewise), so with the mechanism's dual
  (T, Tdot) of (S11, S12, S22) -- the same expectations over the Gaussian logits as an activation's:
  A(p, p') = sum_{q,q'} T V(q, q'),
  A_T(p, p') = sum_{q,q'} [T (V_T + 2 V) + Tdot Theta_Z V](q, q'),
  Theta_Z = QK^2 [2 K_int(p, p') K_int(q, q') + Theta_int(p, p') K_int(q, q') + K_int(p, p') Theta_int(q, q')]
  (the query and key weights' gradients and those of their inputs). Identity weights (T = S12, Tdot = 1)
  factor: with dot = sum K_int V, A = QK^2 dot K_int, A_T = QK^2 [(sum K_int V_T + sum Theta_int V) K_int +
  dot (Theta_int + 4 K_int)] (neural-tangents' closed form). Abs and relu use the arc-cosine duals (beyond
  neural-tangents, which refuses them) on the (p, q, p', q') grid, one p at a time. Softmax has no such form:
  its weights depend on a whole row of logits.

References:
    Hron, Bahri, Sohl-Dickstein, Novak (2020), Infinite attention: NNGP and NTK for deep attention networks,
    ICML; Novak et al. (2020), Neural Tangents (stax.GlobalSelfAttention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import sympy as sp

from kernelalg.backends import Arrays, evaluate_program
from kernelalg.core import _duals
from kernelalg.core._program import Assign
from kernelalg.layers.spatial import _grid as S

S11, S12, S22 = sp.Symbol("s11", positive=True), sp.Symbol("s12", real=True), sp.Symbol("s22", positive=True)

MECHANISMS = ("SOFTMAX", "IDENTITY", "ABS", "RELU")
#: The logit of a masked key before a softmax (neural-tangents' ``_NEG_INF``: -inf would give NaN rows).
NEG_INF = -1e20
POS_EMB_TYPES = ("NONE", "SUM", "CONCAT")


@dataclass(frozen=True)
class Setting:
    """Static settings of one attention layer (see :func:`kernelalg.GlobalSelfAttention`)."""

    linear_scaling: bool
    mechanism: str
    pos_emb: bool
    p_norm: float
    decay_fn: Callable[[Any], Any] | None
    val_pos_emb: bool


def positional_covariance(shape: tuple[int, ...], p_norm: float, decay_fn: Callable | None) -> np.ndarray:
    """(P, P) covariance R of the positional embeddings: the identity (one-hot, ``decay_fn`` None), else
    ``decay_fn(sum_axes |i - j|^p_norm)`` over the position coordinates (neural-tangents' ``_pos_emb_pdist``)."""
    size = math.prod(shape)
    if decay_fn is None:
        return np.eye(size)
    coords = np.indices(shape).reshape(len(shape), -1).T.astype(float)
    dist = (np.abs(coords[:, None, :] - coords[None, :, :]) ** p_norm).sum(-1)
    return np.asarray(decay_fn(dist), dtype=float).reshape(size, size)


def _weights(ops: Arrays, mech: str, logits: Any) -> Any:
    xp = ops.xp
    if mech == "SOFTMAX":
        e = xp.exp(logits - xp.max(logits, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)
    if mech == "ABS":
        return xp.abs(logits)
    if mech == "RELU":
        return xp.maximum(logits, 0)
    return logits


def _gaussian_dual(mech: str) -> Callable[[Arrays, Any, Any, Any], list]:
    """(arrays, s11, s12, s22) -> [T, Tdot] of abs / relu (the library's closed forms, CSE'd once)."""
    d = _duals.relu(S11, S12, S22) if mech == "RELU" else _duals.abrelu(S11, S12, S22, -1, 1)
    reps, reduced = sp.cse([d.T, d.Tdot], symbols=sp.numbered_symbols("att_"), optimizations=None)
    program = [Assign(sym, e) for sym, e in reps]
    return lambda ops, s11, s12, s22: evaluate_program(program, reduced, {S11: s11, S12: s12, S22: s22}, ops.table)


def _sqrt_dual(ops: Arrays, dual: Callable, qk: Any, v1: Any, v2: Any, ki: Any, ti: Any, vk: Any, vt: Any) -> tuple:
    """A, A_T of 1/sqrt scaling with a nonlinear mechanism on (B1, B2, P, P) grids (v1, v2: (B1|1, B2|1, P)
    variances of the keys' inputs), one query position p of x at a time: (B1, B2, q, p', q') per step."""
    xp = ops.xp
    s11, s22 = qk**2 * v1[..., :, None] * v1[..., None, :], qk**2 * v2[..., :, None] * v2[..., None, :]
    kqq = ki[..., :, None, :]  # K_int(q, q') at [q, p', q']

    def at_p(xs: tuple) -> tuple:
        s11p, kp, tp = xs  # S11(p, q) (B1, B2|1, q); K_int(p, p'), Theta_int(p, p') (B1, B2, p')
        kpp, tpp = kp[..., None, :, None], tp[..., None, :, None]
        t, tdot = (xp.broadcast_to(v, kqq.shape[:-3] + (kqq.shape[-3], kp.shape[-1], kqq.shape[-1]))
                   for v in dual(ops, s11p[..., :, None, None], qk**2 * kpp * kqq, s22[..., None, :, :]))
        theta_z = qk**2 * (2 * kpp * kqq + tpp * kqq + kpp * ti[..., :, None, :])
        vkk, vtt = vk[..., :, None, :], vt[..., :, None, :]
        return (xp.sum(t * vkk, axis=(-3, -1)), xp.sum(t * (vtt + 2 * vkk) + tdot * theta_z * vkk, axis=(-3, -1)))

    s11 = xp.broadcast_to(s11, ki.shape[:2] + s11.shape[2:])
    rows = (xp.moveaxis(s11, 2, 0), xp.moveaxis(ki, 2, 0), xp.moveaxis(ti, 2, 0))
    a, at = ops.map(lambda p: at_p(tuple(r[p] for r in rows)), xp.arange(ki.shape[2]))
    return xp.moveaxis(a, 0, 2), xp.moveaxis(at, 0, 2)


def attention_map(lay: S.SpatialState, st: Setting, key: Any) -> Callable[..., tuple]:
    """The op ``fn(arrays, v1, v2, cov, ntk, ctx, qk, kw, pw, masks=None) -> (a1, a2, A, A_T, record)`` on the
    pixel-pair grid (full mode, batch axes as in :mod:`._grid`); ``ntk`` None stands for a zero input NTK;
    ``record`` is the phase-1 record (chunked self pairs: [G | diag A] with linear scaling, diag A otherwise),
    else None; ``key`` is the op's tag, under which phase 2 finds the records (``ctx.rec``).

    ``masks``: masked inputs (batch mode), the validities (m1, m2) of the positions shaped like v1, v2; cov and
    ntk must then be zero on every pair with a masked position (see :mod:`._masks`). As neural-tangents 0.6.5,
    R is zeroed on such pairs too and masked keys are excluded: their logits are -1e20 before a softmax
    (neural-tangents' ``_NEG_INF``) and 0 for the other mechanisms. The outputs at masked positions are
    meaningless (the caller puts placeholders there)."""
    k = lay.ndim
    dual = _gaussian_dual(st.mechanism) if not st.linear_scaling and st.mechanism != "IDENTITY" else None

    def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx, qk: Any, kw: Any, pw: Any,
           masks: Any = None) -> tuple:
        xp = ops.xp
        shape = cov.shape[2:2 + k]
        size = math.prod(shape)
        flat = (lambda a: a.reshape(a.shape[:2] + (size, size)))
        unflat = (lambda a: a.reshape(a.shape[:2] + shape + shape))
        r = xp.asarray(positional_covariance(shape, st.p_norm, st.decay_fn), cov.dtype) if st.pos_emb else None
        keys_valid, rk = None, r
        if masks is not None:
            m1f = masks[0].reshape(masks[0].shape[:2] + (size, 1))
            m2f = masks[1].reshape(masks[1].shape[:2] + (1, size))
            keys_valid = m2f > 0  # the keys q of each grid entry (p, q); on the self grids those of the image itself
            rk = None if r is None else r * m1f * m2f
        kint = (lambda a: a if r is None else kw * a + pw * rk)
        kk = flat(cov)
        tt = xp.zeros_like(kk) if ntk is None else flat(ntk)
        vk, vt = (kint(kk), kint(tt)) if st.val_pos_emb else (kk, tt)
        recs = ctx.rec[key] if ctx.phase == 2 else None
        if st.linear_scaling:
            logits = kint(kk)  # times qk: the logits of every grid entry; the weights read the self grids
            if keys_valid is not None:
                logits = xp.where(keys_valid, logits, xp.asarray(NEG_INF if st.mechanism == "SOFTMAX" else 0.0,
                                                                 logits.dtype))
            weights = (lambda g: _weights(ops, st.mechanism, qk * g))
            a, at, record = _linear(ops, logits, vk, vt, ctx, weights, recs)
        elif st.mechanism == "IDENTITY":
            ki, ti = kint(kk), kint(tt)
            dot = xp.sum(ki * vk, axis=(-2, -1), keepdims=True)
            cross = xp.sum(ki * vt, axis=(-2, -1), keepdims=True) + xp.sum(ti * vk, axis=(-2, -1), keepdims=True)
            a = qk**2 * dot * ki
            at = qk**2 * (cross * ki + dot * (ti + 4 * ki))
            record = None
        else:
            v1i, v2i = v1.reshape(v1.shape[:2] + (size,)), v2.reshape(v2.shape[:2] + (size,))  # per position
            if r is not None:
                v1i, v2i = kw * v1i + pw * xp.diagonal(r), kw * v2i + pw * xp.diagonal(r)
            a, at = _sqrt_dual(ops, dual, qk, v1i, v2i, kint(kk), kint(tt), vk, vt)
            record = None
        a, at = unflat(a), unflat(at)
        if ctx.phase == 0:
            n1, n2 = S.self_pixel_vars(ops, a, ctx.ext, k)
            return n1.astype(a.dtype), n2.astype(a.dtype), a, at, None
        if ctx.phase == 1:
            d = S.pixel_diag(ops, a, k)  # (B, 1, *S)
            n1, n2 = S.own_vars(d, k)
            flat_d = d.reshape(d.shape[:2] + (size,))
            rec = flat_d if record is None else xp.concatenate([record[:, None], flat_d[..., None]], axis=-1)
            return n1, n2, a, at, rec
        d1, d2 = (rr[..., size] if st.linear_scaling else rr for rr in recs)
        n1, n2 = S.recorded_vars((d1.reshape((-1,) + shape), d2.reshape((-1,) + shape)), k)
        return n1.astype(a.dtype), n2.astype(a.dtype), a, at, None

    return fn


def _sandwich(ops: Arrays, g1: Any, x: Any, g2: Any) -> Any:
    """g1 @ x @ g2^T with broadcasting over the leading (batch) axes."""
    return ops.matmul(ops.matmul(g1, x), ops.xp.swapaxes(g2, -1, -2))


def _linear(ops: Arrays, kk: Any, vk: Any, vt: Any, ctx: S.Ctx, weights: Callable, recs: Any) -> tuple:
    """A, A_T and the phase-1 weights G of linear scaling; kk (B1, B2, P, P) is the keys' input kernel K_int
    (masked keys excluded), whose self grids ``weights`` turns into G; vk, vt the values' kernels, ``recs`` the
    phase-1 records of the two images (phase 2)."""
    xp = ops.xp

    def both(g1: Any, g2: Any, sl: Any) -> tuple:
        a = _sandwich(ops, g1, vk[sl], g2)
        return a, _sandwich(ops, g1, vt[sl], g2) + 2 * a

    if ctx.phase == 1:  # self pairs: the grid is the image's own
        g = weights(kk[:, 0])
        a, at = both(g[:, None], g[:, None], slice(None))
        return a, at, g
    if ctx.phase == 2:
        size = kk.shape[-1]
        g1, g2 = recs[0][..., :size], recs[1][..., :size]
        a, at = both(g1[:, None], g2[:, None], slice(None))
        return a, at, g1
    if not ctx.ext:  # batch mode, x2 None: the self grids are on the batch diagonal
        g = weights(xp.moveaxis(xp.diagonal(kk, axis1=0, axis2=1), -1, 0))
        a, at = both(g[:, None], g[None], slice(None))
        return a, at, None
    n, m = kk.shape[0] - 1, kk.shape[1] - 1  # batch mode with the self-grid extension
    g1, g2 = weights(kk[:n, m]), weights(kk[n, :m])
    main = both(g1[:, None], g2[None], (slice(0, n), slice(0, m)))
    col = both(g1, g1, (slice(0, n), m))
    row = both(g2, g2, (n, slice(0, m)))
    zero = xp.zeros((1, 1) + kk.shape[2:], kk.dtype)
    out = tuple(xp.concatenate([xp.concatenate([mm, c[:, None]], axis=1), xp.concatenate([rr[None], zero], axis=1)],
                               axis=0) for mm, c, rr in zip(main, col, row))
    return out[0], out[1], None

