"""JAX engine of the gated recurrent kernels (GRU and LSTM whose gates read the input).

The memory gate of unit alpha (GRU update gate z, LSTM forget gate f) has the pre-activation
a_t = xi . y_t with xi = (that unit's gate input weights, its gate bias) ~ N(0, I_d) and y_t =
(gate_U_std x_t / sqrt(m), gate_b_std): the gate path of a unit is a deterministic function of d = m + 1
Gaussian numbers. Conditioning on xi (a quadrature node) makes every other expectation a time-pair
recursion; the kernel is the weighted sum over the nodes. Per node j, with the "keep" factor F_t (1 - z_t
for the GRU, f_t for the LSTM) and the "write" factor G_t (z_t; 1 for the LSTM, whose input gate is
averaged in closed form inside ``Pm``):

    M(t,t')  = F_t  M(t-1,t')  + G_t  Pm(t,t')          (state at t x written value at t')
    M'(t,t') = F'_t' M'(t,t'-1) + G'_t' Pm(t,t')         (written value at t x state at t')
    L(t,t')  = F F' L(t-1,t'-1) + F G' M(t-1,t') + G F' M'(t,t'-1) + G G' Pm(t,t')
    A, A', N: the same recursions for the NTK with the per-step tangent term V in place of G G' Pm.

Row t of the cross grid needs row t-1 and, along the row, the previous column of M' and A' (a first-order
linear recurrence, solved by ``lax.associative_scan``); the scan runs over rows (T sequential steps, T T'
work per node and pair). The pre-activation variances C(t,t) of each sequence need its own time-pair grid,
which is causal only column by column: each sequence's own grid is built first by a scan over columns
(symmetric, NNGP only). See :mod:`kernelalg.layers.recurrent._gated` for the model and docs/recurrent.md
for the derivation.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.layers.recurrent import _scan

# the Elman scan's helpers, bound to jnp (the gated op runs on JAX only)
_pair_take, _shift, _take, reverse_index = (partial(f, jnp) for f in (_scan._pair_take, _scan._shift, _scan._take,
                                                                         _scan.reverse_index))

_HI = jax.lax.Precision.HIGHEST


def gate(a: jax.Array) -> jax.Array:
    """The erf gate g(a) = (1 + erf(a)) / 2 = erfc(-a) / 2 (a probit gate; the logistic sigmoid is close to
    g(a sqrt(pi) / 4)); through erfc, 1 - g(a) = g(-a) keeps its relative accuracy where g is near 1."""
    return 0.5 * jax.scipy.special.erfc(-a)


def gate_grad(a: jax.Array) -> jax.Array:
    """g'(a) = exp(-a^2) / sqrt(pi)."""
    return jnp.exp(-a * a) / math.sqrt(math.pi)


#: Half-width of the quadrature box: the Gaussian mass outside [-L, L] is 2.6e-12 per dimension.
RULE_HALF_WIDTH = 7.0


def gate_rule(dim: int, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Product trapezoid rule for E[f(xi)], xi ~ N(0, I_dim): nodes (points^dim, dim), weights summing to 1.

    Per dimension, ``points`` equally spaced nodes on [-L, L] with weights proportional to the normal density
    (normalised, so constants are exact). For integrands analytic in a strip around the real axis the error
    decays like exp(-2 pi delta / h) in the spacing h (Trefethen & Weideman 2014); the rules nest (points -> 2
    points - 1 halves h), which :func:`kernelalg.gate_quadrature_error` uses to estimate the error. On the gate
    paths of long sequences it converges markedly faster than Gauss-Hermite (docs/recurrent.md).
    """
    x = np.linspace(-RULE_HALF_WIDTH, RULE_HALF_WIDTH, points)
    w = np.exp(-x * x / 2)
    w = w / w.sum()
    nodes = np.array(list(itertools.product(x, repeat=dim)), dtype=np.float64).reshape(-1, dim)
    weights = np.array([np.prod(c) for c in itertools.product(w, repeat=dim)], dtype=np.float64)
    return nodes, weights


def _linrec(a: jax.Array, b: jax.Array) -> jax.Array:
    """y_k = a_k y_(k-1) + b_k along the last axis, y_(-1) = 0, by a sequential scan.

    (An associative scan would form products of many gate factors, which pass through subnormal numbers;
    the sequential state y stays in the normal range.)"""
    shape = jnp.broadcast_shapes(a.shape, b.shape)
    a, b = (jnp.moveaxis(jnp.broadcast_to(v, shape), -1, 0) for v in (a, b))

    def step(y: jax.Array, ab: tuple) -> tuple:
        y = ab[0] * y + ab[1]
        return y, y

    return jnp.moveaxis(jax.lax.scan(step, jnp.zeros(shape[:-1], b.dtype), (a, b))[1], 0, -1)


def node_factors(x: jax.Array, nodes: jax.Array, scales: tuple, lstm: bool) -> tuple:
    """Keep, write and gate-derivative factors (J, A, T) of the memory gate at every node."""
    su, sb = (jnp.asarray(v, x.dtype) for v in scales)  # float32 sequences stay float32 with x64 switched on
    m = x.shape[-1]
    a = jnp.einsum("jd,atd->jat", nodes[:, :m], x, precision=_HI) * (su / math.sqrt(m))
    if nodes.shape[1] > m:
        a = a + sb * nodes[:, m][:, None, None]
    return (_flush(gate(a)), None, _flush(gate_grad(a))) if lstm else (
        _flush(gate(-a)), _flush(gate(a)), _flush(gate_grad(a)))


def _flush(v: jax.Array) -> jax.Array:
    """Gate factors below tiny^(1/5) of the float type (1.5e-62 in float64, 2.6e-8 in float32) set to 0: a
    product of up to five factors stays out of the subnormal range, whose arithmetic is 10-100 times slower on
    CPUs. The gates are dimensionless in [0, 1], so the change is below rounding."""
    return jnp.where(jnp.abs(v) < jnp.finfo(v.dtype).tiny ** 0.2, 0.0, v)


def _mul(g: Any, v: jax.Array) -> jax.Array:
    return v if g is None else g * v


def _output(lstm: bool, ks: jax.Array, ts: Any, ig: Any, igd: Any, cg: Any) -> tuple:
    """Kernels of h from those of the state (LSTM: h = o * s with the output gate averaged in closed form)."""
    if not lstm:
        return ks, ts
    return ig * ks, (None if ts is None else ig * ts + igd * cg * ks)


def self_grid(run: dict, x: jax.Array, mask: jax.Array, nd: tuple, w: jax.Array, lstm: bool) -> tuple:
    """One sequence set's own grid: (C(t,t) (A, T), K_h(s, t) (A, T, T)), scanning over columns t.

    Column t (rows s <= t) needs column t-1 and the previous row of M (M(t-1, s) = M'(s, t-1) by symmetry).
    """
    n_seq, t_len, m = x.shape
    dtype = mask.dtype
    q = jnp.sum(x * x, -1) / m
    gram = jnp.einsum("atd,asd->ats", x, x, precision=_HI) / m
    f, g, _ = nd
    idx = jnp.arange(t_len)
    zero = jnp.zeros((len(w), n_seq, t_len), dtype)

    def body(carry: tuple, tau: jax.Array) -> tuple:
        lc, mr, kc, sd = carry
        mt = mask[:, tau]
        kd = jnp.where(tau > 0, kc[:, jnp.maximum(tau - 1, 0)], 0.0)
        s_tt = jnp.broadcast_to(run["diag"](KD=kd, QD=q[:, tau])[0], (n_seq,)).astype(dtype)
        sd = sd.at[:, tau].set(s_tt)
        valid = (mask * mt[:, None] > 0) & (idx[None] <= tau)
        outs = run["pair_k"](KP=_shift(kc), KIN=gram[:, :, tau], Q11=q, Q22=q[:, tau][:, None], S11=sd,
                             S22=s_tt[:, None])
        vals = [jnp.where(valid, jnp.broadcast_to(v, valid.shape).astype(dtype), 0) for v in outs]
        p, ig = (vals + [None])[:2]
        pm = p if ig is None else ig * p
        ft = f[:, :, tau][..., None]
        gt = None if g is None else g[:, :, tau][..., None]
        mc = _linrec(f, _mul(g, pm[None]))                       # M(s, tau), s <= tau
        mv = jnp.where(idx < tau, mr, jnp.where(idx == tau, _shift(mc), 0.0))  # M(tau-1, s), s <= tau
        ln = f * ft * _shift(lc) + f * _mul(gt, _shift(mc)) + _mul(g, ft * mv) + _mul(g, _mul(gt, pm[None]))
        mrn = ft * mv + _mul(gt, pm[None])
        ln, mrn = (jnp.where(valid[None], v, 0.0) for v in (ln, mrn))
        kh = _output(lstm, jnp.tensordot(w, ln, 1), None, ig, None, None)[0]
        return (ln, mrn, kh, sd), kh

    # C(s, s) of rows not reached yet is 1 (never used: masked), so that no dual sees a zero variance
    init = (zero, zero, jnp.zeros((n_seq, t_len), dtype), jnp.ones((n_seq, t_len), dtype))
    (_, _, _, sd), cols = jax.lax.scan(body, init, jnp.arange(t_len))
    upper = jnp.moveaxis(cols, 0, 2)                               # [a, s, tau], s <= tau
    diag = jnp.diagonal(upper, axis1=1, axis2=2)
    full = upper + jnp.swapaxes(upper, 1, 2) - jax.vmap(jnp.diag)(diag)
    return sd, full


def cross_grid(run: dict, x1: jax.Array, m1: jax.Array, sd1: jax.Array, nd1: tuple, x2: jax.Array,
               m2: jax.Array, sd2: jax.Array, nd2: tuple, w: jax.Array, lstm: bool, collect: bool) -> dict:
    """The (N, M) cross grid, scanning over rows t: last entries, grid sums and (``collect``) whole grids."""
    n, _, m = x1.shape
    mm, t2 = m2.shape
    dtype = m1.dtype
    q2 = jnp.sum(x2 * x2, -1) / m
    f2, g2, d2 = (None if v is None else v[:, None] for v in nd2)    # (J, 1, M, T')
    shape = (n, mm, t2)
    zero_j, zero = jnp.zeros((len(w),) + shape, dtype), jnp.zeros(shape, dtype)

    def body(carry: tuple, inp: tuple) -> tuple:
        lg, mg, ng, ag, kh, th, sk, sn = carry
        xt, mt, st, f1, g1, d1 = inp
        f1, g1, d1 = (None if v is None else v[:, :, None, None] for v in (f1, g1, d1))
        valid = (mt[:, None, None] * m2[None]) > 0
        outs = run["pair"](KP=_shift(kh), TP=_shift(th), Q11=(jnp.sum(xt * xt, -1) / m)[:, None, None],
                           KIN=jnp.einsum("ad,bsd->abs", xt, x2, precision=_HI) / m, Q22=q2[None],
                           S11=st[:, None, None], S22=sd2[None])
        p, dd, tc, cg, ig, igd = (jnp.where(valid, jnp.broadcast_to(v, shape).astype(dtype), 0) for v in outs)
        pm = ig * p if lstm else p
        lp = _shift(lg)
        mq = _linrec(f2, _mul(g2, pm[None]))                      # M'(t, t')
        mqs = _shift(mq)
        if lstm:
            v = (ig * dd * tc + p * igd * cg)[None] + d1 * d2 * lp * cg[None]
        else:
            v = g1 * g2 * (dd * tc)[None] + d1 * d2 * (p[None] - mg - mqs + lp) * cg[None]
        aq = _linrec(f2, v)                                       # A'(t, t')
        new = (f1 * f2 * lp + f1 * _mul(g2, mg) + _mul(g1, f2 * mqs) + _mul(g1, _mul(g2, pm[None])),
               f1 * mg + _mul(g1, pm[None]), f1 * f2 * _shift(ng) + f1 * ag + f2 * _shift(aq) + v, f1 * ag + v)
        lg, mg, ng, ag = (jnp.where(valid[None], u, 0.0) for u in new)
        kh, th = _output(lstm, jnp.tensordot(w, lg, 1), jnp.tensordot(w, ng, 1), ig, igd, cg)
        carry = (lg, mg, ng, ag, kh, th, sk + kh.sum(-1), sn + th.sum(-1))
        return carry, ((kh, th) if collect else None)

    init = (zero_j, zero_j, zero_j, zero_j, zero, zero, zero.sum(-1), zero.sum(-1))
    xs = (jnp.swapaxes(x1, 0, 1), m1.T, sd1.T) + tuple(None if v is None else jnp.moveaxis(v, 2, 0) for v in nd1)
    carry, ys = jax.lax.scan(body, init, xs)
    out = {"k_last": carry[4][..., -1], "n_last": carry[5][..., -1], "sum_k": carry[6], "sum_n": carry[7]}
    if collect:
        out["grid_k"], out["grid_n"] = (jnp.moveaxis(y, 0, 2) for y in ys)
    return out


def _direction(run: dict, x1: jax.Array, m1: jax.Array, x2: jax.Array, m2: jax.Array, nodes: jax.Array,
               w: jax.Array, scales: tuple, lstm: bool, readout: str) -> dict:
    nd1, nd2 = (node_factors(x, nodes, scales, lstm) for x in (x1, x2))
    sd1, self1 = self_grid(run, x1, m1, nd1, w, lstm)
    sd2, self2 = self_grid(run, x2, m2, nd2, w, lstm)
    out = cross_grid(run, x1, m1, sd1, nd1, x2, m2, sd2, nd2, w, lstm, readout == "sequence")
    out.update(self1=self1, self2=self2)
    return out


def _assemble(o: dict, m1: jax.Array, m2: jax.Array, readout: str) -> dict:
    d1, d2 = (jnp.diagonal(o[k], axis1=1, axis2=2) for k in ("self1", "self2"))
    if readout == "last":
        return {"cov1": d1[:, -1:], "cov2": d2[None, :, -1], "nngp": o["k_last"], "ntk": o["n_last"]}
    if readout == "mean":
        l1, l2 = m1.sum(1), m2.sum(1)
        return {"cov1": (o["self1"].sum((1, 2)) / l1**2)[:, None], "cov2": (o["self2"].sum((1, 2)) / l2**2)[None],
                "nngp": o["sum_k"] / (l1[:, None] * l2[None]), "ntk": o["sum_n"] / (l1[:, None] * l2[None])}
    return {"cov1": d1[:, None, :, None], "cov2": d2[None, :, None, :], "nngp": o["grid_k"], "ntk": o["grid_n"],
            "self1": o["self1"][:, None], "self2": o["self2"][None]}


def run_gated(run: dict, x1: jax.Array, x2: jax.Array, mask1: jax.Array, mask2: jax.Array, rule: tuple,
              scales: tuple, lstm: bool, readout: str, bidirectional: bool) -> dict:
    """The whole layer on raw (front-padded, zeroed) sequences x1 (N, T, m), x2 (M, T', m); ``rule`` = (nodes,
    weights) of the quadrature rule over one unit's memory-gate weights."""
    m1, m2 = mask1[:, 0, :, 0], mask2[0, :, 0, :]
    dtype = m1.dtype
    nodes, w = jnp.asarray(rule[0], dtype), jnp.asarray(rule[1], dtype)
    x1, x2 = x1.astype(dtype), x2.astype(dtype)
    outs = [_assemble(_direction(run, x1, m1, x2, m2, nodes, w, scales, lstm, readout), m1, m2, readout)]
    if bidirectional:
        i1, i2 = reverse_index(m1), reverse_index(m2)
        o = _assemble(_direction(run, _take(x1, i1, 1), m1, _take(x2, i2, 1), m2, nodes, w, scales, lstm, readout),
                      m1, m2, readout)
        if readout == "sequence":  # back to forward time
            o["cov1"] = _take(o["cov1"][:, 0, :, 0], i1, 1)[:, None, :, None]
            o["cov2"] = _take(o["cov2"][0, :, 0, :], i2, 1)[None, :, None, :]
            o["nngp"], o["ntk"] = _pair_take(o["nngp"], i1, i2), _pair_take(o["ntk"], i1, i2)
            o["self1"] = _take(_take(o["self1"][:, 0], i1, 1), i1, 2)[:, None]
            o["self2"] = _take(_take(o["self2"][0], i2, 1), i2, 2)[None]
        outs.append(o)
    return {k: sum(o[k] for o in outs) / len(outs) for k in outs[0]}


def gated_op(run: dict, rule: Callable[[int], tuple], lstm: bool, readout: str, bidirectional: bool,
             scales: Callable[[dict], tuple], extra: list) -> tuple[Callable[..., tuple], list[str]]:
    """The Op function: (x1, x2, mask1, mask2, then the ``extra`` symbols' values) -> output arrays.

    ``run`` maps names to lowered step maps (env, **arrays) -> list; ``rule(m)`` gives the quadrature rule for
    m input features; ``scales(env)`` the gate weight and bias standard deviations.
    """
    names = ["cov1", "cov2", "nngp", "ntk"] + (["self1", "self2"] if readout == "sequence" else [])

    def fn(x1: Any, x2: Any, mask1: Any, mask2: Any, *values: Any) -> tuple:
        env = dict(zip(extra, values))
        bound = {k: (lambda r: (lambda **kw: r(env, **kw)))(r) for k, r in run.items()}
        res = run_gated(bound, x1, x2, mask1, mask2, rule(x1.shape[-1]), scales(env), lstm, readout, bidirectional)
        return tuple(res[k] for k in names)

    return fn, names
