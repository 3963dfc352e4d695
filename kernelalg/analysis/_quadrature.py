"""Funk-Hecke quadrature of the Mercer eigenvalues: float64 and high-precision routes, and exact zeros by parity.

mu_k = c_d int_0^pi k(cos th) P_k(d; cos th) sin(th)^{d-2} dth by Gauss-Legendre in the angle th.

* float64 (:func:`gauss_float`): also returns S_k = c_d sum_i |w_i k(t_i) P_k(t_i)|, the size of the terms
  summed; mu_k is resolved only above the rounding floor ~ FLOAT_FLOOR sqrt(n) eps S_k.
* mpmath (:func:`gauss_mp`, :func:`mp_route`): nodes refined by Newton steps and the Gegenbauer recurrence run
  in fixed-point integer arithmetic (numpy object arrays of Python ints; the sums are exact), the kernel in
  mpmath; the working precision grows with the cancellation until every mu_k holds the digits asked for.
* :func:`vanishing_degrees`: degrees whose mu_k is exactly 0 because the even or odd part of k(t) is a
  polynomial (bias-free ReLU kernels: odd k >= 3).
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Any

import mpmath
import numpy as np
import sympy as sp
from scipy.special import roots_legendre

from kernelalg.core import _errors as E
from ._sphere import T, DotProductKernel, gegenbauer_table, sphere_constant

NOT_FINITE = ("{label}: k(t) is not finite at some t in (-1, 1). Fix: check the kernel (the sphere spectrum needs "
              "a kernel that is finite on the whole sphere).")

#: Rounding floor of the float64 sum, in units of sqrt(nodes) eps S_k (measured: <= 5.4 for ReLU, erf and deep
#: ReLU kernels at d = 3, 10, 30; 16 leaves a factor 3).
FLOAT_FLOOR = 16.0
#: Rounds of the mpmath route (precision and nodes grow each round).
MP_ROUNDS = 4
#: Closed forms larger than this (sympy count_ops) are not expanded for the parity analysis.
MAX_PARITY_OPS = 3000


@lru_cache(maxsize=16)
def _legendre_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    return roots_legendre(n)


@lru_cache(maxsize=8)
def _legendre_nodes_mp(n: int, dps: int) -> tuple[tuple, tuple]:
    """Gauss-Legendre nodes/weights on [-1, 1] at ``dps`` digits (kept at dps + 10).

    The float64 roots are refined by Newton steps on P_n, run in fixed-point integer arithmetic over all nodes
    at once (numpy object arrays of Python ints: ~30x faster than a loop of mpmath numbers); the weights
    2 / ((1 - x^2) P_n'(x)^2) are formed in mpmath.
    """
    x0, _ = _legendre_nodes(n)
    half = (n + 1) // 2
    bits = _fixed_bits(dps + 10)
    one = 1 << bits
    x = np.array([int(Fraction(float(a)) * one) for a in x0[:half]], dtype=object)
    steps = max(1, int(np.ceil(np.log2((dps + 10) / 15.0))) + 1)
    for _ in range(steps):
        p0, p1 = np.full(half, one, dtype=object), x.copy()
        for k in range(1, n):
            p0, p1 = p1, ((2 * k + 1) * ((x * p1) >> bits) - k * p0) // (k + 1)
        dp = ((n * (((x * p1) >> bits) - p0)) << bits) // (((x * x) >> bits) - one)  # P_n'(x), fixed point
        x = x - (p1 << bits) // dp
    with mpmath.workdps(dps + 10):
        xs = [mpmath.ldexp(mpmath.mpf(int(v)), -bits) for v in x]
        ws = [2 / ((1 - a * a) * mpmath.ldexp(mpmath.mpf(int(b)), -bits) ** 2) for a, b in zip(xs, dp)]
        mirror = n // 2  # mirror inside workdps: mpf negation rounds to the working precision
        xs_all = xs + [-v for v in reversed(xs[:mirror])]
    ws_all = ws + list(reversed(ws[:mirror]))
    return tuple(xs_all), tuple(ws_all)


def _fixed_bits(dps: int) -> int:
    """Fraction bits of the fixed-point arithmetic that carries ``dps`` digits (+ 64 guard bits)."""
    return int(math.ceil(dps * math.log2(10))) + 64


def gauss_float(kern: DotProductKernel, dim: int, kmax: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu_k, S_k) in float64; S_k = c_d sum_i |w_i k(t_i) P_k(t_i)| is the size of the terms summed, which
    sets the rounding floor of mu_k."""
    x, w = _legendre_nodes(n)
    th = 0.5 * np.pi * (x + 1.0)
    w = 0.5 * np.pi * w * np.sin(th) ** (dim - 2)
    t = np.cos(th)
    kt = kern(t)
    if not np.all(np.isfinite(kt)):
        raise E.KernelalgError(NOT_FINITE.format(label=kern.label))
    table = gegenbauer_table(kmax, dim, t)
    wk = w * kt
    cd = sphere_constant(dim)
    return (cd * np.array([np.sum(wk * p) for p in table]), cd * np.array([np.sum(np.abs(wk * p)) for p in table]))


def gauss_mp(kern: DotProductKernel, dim: int, kmax: int, n: int, dps: int) -> tuple[list, np.ndarray]:
    """(mu_k as mpmath numbers, S_k in float64) by n-node Gauss-Legendre in the angle at ``dps`` digits.

    The kernel, cosines and weights are evaluated in mpmath; the Gegenbauer recurrence and the sums run in
    fixed-point integers with :func:`_fixed_bits` fraction bits (the sums are exact), so the absolute error of
    every mu_k is ~ 10^-dps S_k whatever the degree.
    """
    xs, ws = _legendre_nodes_mp(n, dps)
    bits = _fixed_bits(dps)
    with mpmath.workdps(dps + 10):
        half_pi = mpmath.pi / 2
        th = [half_pi * (a + 1) for a in xs]
        t = [mpmath.cos(a) for a in th]
        w = [half_pi * b * mpmath.sin(a) ** (dim - 2) * kern.mp(c) for a, b, c in zip(th, ws, t)]
        if not all(mpmath.isfinite(v) for v in w):
            raise E.KernelalgError(NOT_FINITE.format(label=kern.label))
        tf = np.array([int(mpmath.nint(mpmath.ldexp(v, bits))) for v in t], dtype=object)
        wf = np.array([int(mpmath.nint(mpmath.ldexp(v, bits))) for v in w], dtype=object)
        cd = mpmath.gamma(mpmath.mpf(dim) / 2) / (mpmath.sqrt(mpmath.pi) * mpmath.gamma(mpmath.mpf(dim - 1) / 2))
        p0, p1 = np.full(n, 1 << bits, dtype=object), tf.copy()
        sums = [int(np.sum(wf * p0)), int(np.sum(wf * p1))]
        for k in range(1, kmax):
            p0, p1 = p1, ((2 * k + dim - 2) * ((tf * p1) >> bits) - k * p0) // (k + dim - 2)
            sums.append(int(np.sum(wf * p1)))
        mu = [cd * mpmath.ldexp(mpmath.mpf(s), -2 * bits) for s in sums[: kmax + 1]]
        wfl = np.array([float(v) for v in w])
    table = gegenbauer_table(kmax, dim, np.array([float(v) for v in t]))
    return mu, float(cd) * np.array([np.sum(np.abs(wfl * p)) for p in table])


def vanishing_degrees(kern: DotProductKernel, kmax: int) -> np.ndarray:
    """Degrees whose mu_k is exactly 0 by parity: if the even (odd) part of k(t) is a polynomial of degree p
    (or zero), every even (odd) degree above p vanishes (Funk-Hecke: P_k is orthogonal to lower degrees and
    to the other parity). Needs the closed form; without one (or when it is too large to expand) none is known."""
    out = np.zeros(kmax + 1, dtype=bool)
    if kern.expr is None or sp.count_ops(kern.expr) > MAX_PARITY_OPS:
        return out
    k = np.arange(kmax + 1)
    for p in (0, 1):
        part = sp.expand(_odd_functions((kern.expr + (-1) ** p * kern.expr.subs(T, -T)) / 2))
        if part == 0:
            out |= k % 2 == p
        elif part.is_polynomial(T):
            out |= (k % 2 == p) & (k > sp.degree(part, T))
    return out


def _odd_functions(expr: sp.Expr) -> sp.Expr:
    """acos(-u) = pi - acos(u), asin(-u) = -asin(u), atan(-u) = -atan(u), erf(-u) = -erf(u) (sympy leaves
    acos(-t) alone), so that the parts of k(+-t) cancel under expand."""
    def flip(fn: Any, odd: bool) -> Any:
        def rule(a: sp.Expr) -> sp.Expr:
            if not a.could_extract_minus_sign():
                return fn(a)
            return -fn(-a) if odd else sp.pi - fn(-a)
        return rule
    for fn in (sp.asin, sp.atan, sp.erf):
        expr = expr.replace(fn, flip(fn, True))
    return expr.replace(sp.acos, flip(sp.acos, False))


def mp_route(kern: DotProductKernel, dim: int, kmax: int, digits: int, n: int, vanish: np.ndarray,
              start: int) -> tuple[list, np.ndarray, int, int, bool]:
    """mu_k to ``digits`` significant digits for every degree that does not vanish by parity.

    Two evaluations, (n nodes, w digits) and (n + 32 nodes, w + 10 digits); their difference bounds the error
    of the second (more nodes converge geometrically, 10 more digits shrink the rounding 1e10-fold). Where it
    exceeds 10^-digits |mu_k| the working precision grows by the shortfall (the cancellation of the sum: mu_k
    can be 1e-30 of the terms summed), and the nodes by a third where the change is more than rounding, up to
    MP_ROUNDS times. A degree whose value shrinks with the working precision (by at least half the added
    digits, to below 10^-(w-10) of its terms) is rounding noise around an exact zero (e.g. t^3 - 3t/5 has
    mu_1 = 0 without a parity reason): it is held to 10^-digits of the largest mu instead.

    Returns:
        (mu as mpmath numbers, error bound per degree, working digits, nodes, converged).
    """
    w = max(start, digits + 10)
    zero = vanish.copy()
    prev = None
    for _ in range(MP_ROUNDS):
        lo, _ = gauss_mp(kern, dim, kmax, n, w)
        hi, size = gauss_mp(kern, dim, kmax, n + 32, w + 10)
        with mpmath.workdps(w + 10):
            err = np.array([float(abs(a - b)) for a, b in zip(lo, hi)])
            mag = np.array([float(abs(b)) for b in hi])
        if prev is not None:  # a value that shrank with the working precision was rounding noise: mu_k = 0
            zero |= (mag < 10.0 ** (-(w - prev[1]) / 2) * prev[0]) & (mag <= 10.0 ** -(w - 10) * size)
        scale = float(np.max(mag[~zero])) if np.any(~zero) else float(np.max(mag))
        need = np.where(zero, 10.0 ** -digits * scale, 10.0 ** -digits * mag)
        if np.all(err <= need):
            return hi, err, w, n + 32, True
        live = ~zero & (err > need)
        short = float(np.max(np.log10(err[live] / np.maximum(mag[live], 1e-300)))) + digits if live.any() else 0.0
        cancel = float(np.max(np.log10(np.maximum(size[~zero], 1e-300) / np.maximum(mag[~zero], 1e-300)),
                              initial=0.0))
        if np.any(live & (err > 1e3 * 10.0 ** -w * math.sqrt(n) * size)):  # not explained by rounding: nodes
            n = int(n * 4 / 3) + 16
        prev = (mag, w)
        w = max(w + int(math.ceil(min(short, 3 * digits))) + 5, digits + int(math.ceil(min(cancel, 300))) + 15)
    return hi, err, w, n + 32, False
