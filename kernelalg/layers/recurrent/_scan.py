"""Engine of the recurrent NTK: a scan over the rows of the time-pair grid, and the finite RNN.

Row t of the (A, B, T') grid needs row t-1 shifted by one column (the (t-1, t'-1) dependency), so one scan
step updates a whole row for all pairs at once: T sequential steps, T T' work per pair, memory O(A B T')
unless the whole grid is requested (readout "sequence"). The kernel maths is backend-neutral: it runs on a
backend's :class:`~kernelalg.backends.Arrays` (JAX: ``lax.scan``, the sympy step maps (see
:mod:`kernelalg.layers.recurrent._recurrent`) traced once inside the scan body, so compile time is independent
of T; NumPy: a loop over t, for the reference). The finite-width twin (:func:`rnn_apply`) is JAX.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from kernelalg.backends import Arrays
from kernelalg.layers.recurrent._symbols import D_PREV, K_IN, K_PREV, KD_IN, KD_PREV, S1, S2, TH_IN, TH_PREV
from kernelalg.layers.recurrent._sequences import Sequences

_HI = jax.lax.Precision.HIGHEST


def _shift(xp: Any, v: Any) -> Any:
    """v[..., t'-1] at column t' (zero at t' = 0): the (t-1, t'-1) neighbour of the next row."""
    return xp.concatenate([xp.zeros_like(v[..., :1]), v[..., :-1]], axis=-1)


def _diag(ops: Arrays, run: Callable, env: dict, kin: Any, mask: Any) -> tuple[Any, Any]:
    """Each sequence's own diagonal S(t, t), K(t, t): kin, mask (A, T) -> (A, T), (A, T)."""
    xp, dtype = ops.xp, mask.dtype

    def body(kd: Any, inp: tuple) -> tuple:
        k_t, m_t = inp
        s, kn = (xp.broadcast_to(v, kd.shape).astype(dtype) for v in run(ops, {**env, KD_PREV: kd, KD_IN: k_t}))
        kn = xp.where(m_t > 0, kn, 0)
        return kn, (s, kn)

    _, (s, k) = ops.scan(body, xp.zeros(mask.shape[:1], dtype), (kin.T.astype(dtype), mask.T))
    return s.T, k.T


def _grid(ops: Arrays, run: Callable, env: dict, xs: Any, row: Callable, s1: Any, m1: Any, s2: Any, m2: Any,
          shape: tuple, ntk: bool, collect: bool) -> dict:
    """Scan over rows t. s1, m1: (A, T) of the first argument; s2, m2 broadcast to ``shape`` = (A, B, T').

    Returns the last row's (T-1, T'-1) entries, the sums over the grid and (``collect``) the whole grid.
    """
    xp, dtype = ops.xp, m1.dtype
    zero = xp.zeros(shape, dtype)

    def body(carry: tuple, inp: tuple) -> tuple:
        x_t, s1_t, m1_t = inp
        kin, thin = row(x_t)
        valid = (m1_t[:, None, None] * m2) > 0
        e = {**env, K_PREV: _shift(xp, carry[0]), K_IN: kin, S1: s1_t[:, None, None], S2: s2}
        if not ntk:
            (kn,) = (xp.broadcast_to(v, shape).astype(dtype) for v in run(ops, e))
            kn = xp.where(valid, kn, 0)
            return (kn, carry[1] + kn.sum(-1)), (kn if collect else None)
        e.update({D_PREV: _shift(xp, carry[1]), TH_PREV: _shift(xp, carry[2]), TH_IN: 0.0 if thin is None else thin})
        kn, dn, thn = (xp.where(valid, xp.broadcast_to(v, shape).astype(dtype), 0) for v in run(ops, e))
        nn = dn * thn
        new = (kn, dn, thn, carry[3] + kn.sum(-1), carry[4] + nn.sum(-1))
        return new, ((kn, nn) if collect else None)

    init = (zero, zero.sum(-1)) if not ntk else (zero, zero, zero, zero.sum(-1), zero.sum(-1))
    carry, ys = ops.scan(body, init, (xs, s1.T, m1.T))
    if not ntk:
        return {"sum_k": carry[1], "grid_k": None if ys is None else xp.moveaxis(ys, 0, 2)}
    out = {"k_last": carry[0][..., -1], "n_last": (carry[1] * carry[2])[..., -1],
           "sum_k": carry[3], "sum_n": carry[4]}
    if collect:
        out["grid_k"], out["grid_n"] = (xp.moveaxis(y, 0, 2) for y in ys)
    return out


def reverse_index(xp: Any, mask: Any) -> Any:
    """Per-sequence time reversal of the valid (last L) steps, padding fixed: (A, T) int indices."""
    t = mask.shape[1]
    steps = xp.arange(t)[None, :]
    start = t - xp.round(mask.sum(1)).astype(xp.int32)[:, None]
    return xp.where(steps >= start, start + (t - 1 - steps), steps)


def _take(xp: Any, x: Any, idx: Any, axis: int) -> Any:
    """x gathered along ``axis`` with per-row indices idx of shape (x.shape[0], T)."""
    shape = [1] * x.ndim
    shape[0], shape[axis] = idx.shape
    return xp.take_along_axis(x, idx.reshape(shape), axis=axis)


def _pair_take(xp: Any, g: Any, i1: Any, i2: Any) -> Any:
    """(A, B, T, T') grid permuted by i1 (A, T) on axis 2 and i2 (B, T') on axis 3."""
    g = xp.take_along_axis(g, i1[:, None, :, None], axis=2)
    return xp.take_along_axis(g, i2[None, :, None, :], axis=3)


def _direction(ops: Arrays, runners: dict, env: dict, a: dict, m1: Any, m2: Any, readout: str,
               need_self: bool) -> dict:
    """One direction: diagonal chains, the cross grid and (if needed) each sequence's own grid."""
    xp = ops.xp
    n, m, t2 = m1.shape[0], m2.shape[0], m2.shape[1]
    s1, kd1 = _diag(ops, runners["diag"], env, a["kd1"], m1)
    s2, kd2 = _diag(ops, runners["diag"], env, a["kd2"], m2)
    collect = readout == "sequence"
    if "x1" in a:
        x1, x2 = a["x1"], a["x2"]
        d = x1.shape[-1]
        xs = xp.swapaxes(x1, 0, 1)
        cross_row = lambda xt: (ops.einsum("ad,bsd->abs", xt, x2) / d, None)  # noqa: E731
        self_rows = [(xs, lambda xt: (ops.einsum("ad,asd->as", xt, x1)[:, None] / d, None)),
                     (xp.swapaxes(x2, 0, 1), lambda xt: (ops.einsum("ad,asd->as", xt, x2)[:, None] / d, None))]
    else:
        xs = (xp.moveaxis(a["nngp"], 2, 0), None if a["ntk"] is None else xp.moveaxis(a["ntk"], 2, 0))
        cross_row = lambda xt: xt  # noqa: E731
        self_rows = [(xp.moveaxis(a[k], 1, 0)[:, :, None], lambda xt: (xt, None)) for k in ("self1", "self2")
                     ] if need_self else []
    out = _grid(ops, runners["cross"], env, xs, cross_row, s1, m1, s2[None], m2[None], (n, m, t2), True, collect)
    out.update(kd1=kd1, kd2=kd2)
    if need_self:
        for name, (rows, fn), s, mk in zip(("self1", "self2"), self_rows, (s1, s2), (m1, m2)):
            g = _grid(ops, runners["self"], env, rows, fn, s, mk, s[:, None], mk[:, None], (len(s), 1, s.shape[1]),
                      False, collect)
            out[name + "_sum"] = g["sum_k"][:, 0]
            if collect:
                out[name] = g["grid_k"][:, 0]
    return out


def _assemble(o: dict, m1: Any, m2: Any, readout: str, need_self: bool) -> dict:
    if readout == "last":
        return {"cov1": o["kd1"][:, -1:], "cov2": o["kd2"][None, :, -1], "nngp": o["k_last"], "ntk": o["n_last"]}
    if readout == "mean":
        l1, l2 = m1.sum(1), m2.sum(1)
        norm = l1[:, None] * l2[None, :]
        return {"cov1": (o["self1_sum"] / l1**2)[:, None], "cov2": (o["self2_sum"] / l2**2)[None, :],
                "nngp": o["sum_k"] / norm, "ntk": o["sum_n"] / norm}
    res = {"cov1": o["kd1"][:, None, :, None], "cov2": o["kd2"][None, :, None, :],
           "nngp": o["grid_k"], "ntk": o["grid_n"]}
    if need_self:
        res.update(self1=o["self1"][:, None], self2=o["self2"][None])
    return res


def run_recurrent(ops: Arrays, runners: dict, env: dict, a: dict, readout: str, bidirectional: bool) -> dict:
    """The whole layer: inputs ``a`` (masks; raw x1/x2 or var1/var2/cov/ntk grids; optional self grids)."""
    xp = ops.xp
    m1, m2 = a["mask1"][:, 0, :, 0], a["mask2"][0, :, 0, :]
    n, t1 = m1.shape
    m, t2 = m2.shape
    need_self = "self1" in a
    b = {}
    if "x1" in a:
        d = a["x1"].shape[-1]
        b.update(x1=a["x1"], x2=a["x2"], kd1=xp.sum(a["x1"] ** 2, -1) / d, kd2=xp.sum(a["x2"] ** 2, -1) / d)
    else:
        b["kd1"] = xp.broadcast_to(a["cov1"], (n, 1, t1, 1))[:, 0, :, 0]
        b["kd2"] = xp.broadcast_to(a["cov2"], (1, m, 1, t2))[0, :, 0, :]
        b["nngp"] = xp.broadcast_to(a["nngp"], (n, m, t1, t2))
        b["ntk"] = None if isinstance(a["ntk"], float) and a["ntk"] == 0 else xp.broadcast_to(a["ntk"], (n, m, t1, t2))
        if need_self:
            b["self1"] = xp.broadcast_to(a["self1"], (n, 1, t1, t1))[:, 0]
            b["self2"] = xp.broadcast_to(a["self2"], (1, m, t2, t2))[0]
    outs = [_assemble(_direction(ops, runners, env, b, m1, m2, readout, need_self), m1, m2, readout, need_self)]
    if bidirectional:
        i1, i2 = reverse_index(xp, m1), reverse_index(xp, m2)
        r = {}
        for k, v in b.items():
            if v is None or k in ("x1", "kd1"):
                r[k] = None if v is None else _take(xp, v, i1, 1)
            elif k in ("x2", "kd2"):
                r[k] = _take(xp, v, i2, 1)
            elif k in ("nngp", "ntk"):
                r[k] = _pair_take(xp, v, i1, i2)
            else:  # own grids (A, T, T)
                i = i1 if k == "self1" else i2
                r[k] = _take(xp, _take(xp, v, i, 1), i, 2)
        o = _direction(ops, runners, env, r, m1, m2, readout, need_self)
        if readout == "sequence":  # back to forward time
            o["kd1"], o["kd2"] = _take(xp, o["kd1"], i1, 1), _take(xp, o["kd2"], i2, 1)
            o["grid_k"], o["grid_n"] = _pair_take(xp, o["grid_k"], i1, i2), _pair_take(xp, o["grid_n"], i1, i2)
            for k, i in (("self1", i1), ("self2", i2)):
                if k in o:
                    o[k] = _take(xp, _take(xp, o[k], i, 1), i, 2)
        outs.append(_assemble(o, m1, m2, readout, need_self))
    return {k: sum(o[k] for o in outs) / len(outs) for k in outs[0]}


def make_op(runners: dict, extra: list, inputs: dict, readout: str, bidirectional: bool):
    """The backend-neutral Op function: (arrays, input arrays in ``names`` order, then the ``extra`` symbols'
    values) -> outputs. ``runners`` map (arrays, env) to the step maps' values."""
    names = list(inputs)
    out_names = ["cov1", "cov2", "nngp", "ntk"]
    if readout == "sequence" and "self1" in inputs:
        out_names += ["self1", "self2"]

    def fn(ops: Arrays, *arrays: Any) -> tuple:
        a = dict(zip(names, arrays[:len(names)]))
        env = dict(zip(extra, arrays[len(names):]))
        res = run_recurrent(ops, runners, env, a, readout, bidirectional)
        return tuple(res[k] for k in out_names)

    return fn, names, out_names


def rnn_apply(params: dict, x: Any, phi: Callable, scales: tuple, readout: str, dirs: tuple) -> Any:
    """Finite-width Elman RNN forward pass (front-padded sequences; h = 0 on padding)."""
    if isinstance(x, Sequences):
        xa, mask = jnp.asarray(x.x), jnp.asarray(x.mask, dtype=jnp.asarray(x.x).dtype)
    else:
        xa = jnp.asarray(x)
        mask = jnp.ones(xa.shape[:2], xa.dtype)
    sw, su, sb = scales
    idx = reverse_index(jnp, mask) if "bwd" in dirs else None
    outs = []
    for d in dirs:
        pr = params[d]
        xin = _take(jnp, xa, idx, 1) if d == "bwd" else xa

        def step(h: jax.Array, inp: tuple, pr: dict = pr) -> tuple:
            x_t, m_t = inp
            g = sw * jnp.matmul(h, pr["W"].astype(h.dtype), precision=_HI) + su * jnp.matmul(
                x_t, pr["U"].astype(h.dtype), precision=_HI)
            if "b" in pr:
                g = g + sb * pr["b"].astype(h.dtype)
            hn = jnp.where(m_t[:, None] > 0, phi(g), 0).astype(h.dtype)
            return hn, hn

        h0 = jnp.zeros((xa.shape[0], pr["W"].shape[0]), xa.dtype)
        _, hs = jax.lax.scan(step, h0, (jnp.swapaxes(xin, 0, 1), mask.T))
        hs = jnp.swapaxes(hs, 0, 1)
        if readout == "last":
            outs.append(hs[:, -1])
        elif readout == "mean":
            outs.append(hs.sum(1) / mask.sum(1)[:, None])
        else:
            outs.append(_take(jnp, hs, idx, 1) if d == "bwd" else hs)
    out = jnp.concatenate(outs, axis=-1)
    return Sequences._raw(out, mask) if (readout == "sequence" and isinstance(x, Sequences)) else out
