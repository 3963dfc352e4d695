"""Shared machinery of the proofs: symbols, Gaussian integrals, and an equality checker that records
how each identity was established.

Conventions
-----------
(u, v) ~ N(0, [[s11, s12], [s12, s22]]). Every strictly positive-definite covariance is written
uniquely as

    s12 = k s11,   s22 = c + k^2 s11,   s11 > 0, c > 0, k real          ("PD parametrisation")

so that s11 s22 - s12^2 = c s11 > 0. Identities are proven for symbolic s11, k, c (and symbolic
activation parameters): sympy then knows the sign of every radicand. On the boundary |rho| = 1 the
closed forms are continuous, so the diagonal map Tdiag is checked against T at s12 = s11 = s22.

Gaussian integrals
------------------
``gauss_line`` integrates sum_j p_j(x) exp(-A_j x^2 + B_j x + C_j) over the real line. The integral
I_0(A, B) = int exp(-A x^2 + B x) dx is computed ONCE by ``sympy.integrate`` with fresh symbols A > 0,
B real; the monomial integrals I_n = int x^n exp(-A x^2 + B x) dx = d^n I_0 / dB^n (differentiation under
the integral sign) are then substituted (after checking that A is positive under the assumptions).
``gauss2d`` computes E[g(u, v)] by conditioning: v | u ~ N(k u, c), u ~ N(0, s11) -- two such line
integrals. Nothing in it uses the closed forms being proven.

Equality checker
----------------
``Proof.equal(lhs, rhs, claim)`` establishes lhs == rhs by, in this order,
  1. exact radical elimination (``_algebra.radical_zero``: square roots of positive polynomials become
     symbols r with r^2 = f, the difference is reduced to 0 in Q(symbols)[r]), in the original symbols,
     then in the PD parametrisation ("algebraic, radicals eliminated" / "... , PD param");
  2. ``sympy.simplify(lhs - rhs) == 0`` in the original symbols ("symbolic");
  3. the same after the PD parametrisation ("symbolic, PD param");
  4. the same after ``sympy.radsimp``/``sympy.factor`` of the PD form ("symbolic, rationalised");
  5. only if the caller allows it: |lhs - rhs| < 1e-40 (relative) with mpmath at 50 significant digits
     at ``NUMERIC_POINTS`` random rational points of the PD parametrisation ("numeric 50 digits").
Routes 2-4 run under a time limit (``SIMPLIFY_SECONDS``, main thread only) so that a slow ``simplify``
moves on to the next route instead of hanging. Each step's route and time are recorded; ``run_all``
prints them. A claim that fails every route raises AssertionError.
"""

from __future__ import annotations

import contextlib
import functools
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import sympy as sp

from kernelalg.core._duals import Dual, plain

from ._algebra import radical_zero

S11 = sp.Symbol("s11", positive=True)
S22 = sp.Symbol("s22", positive=True)
S12 = sp.Symbol("s12", real=True)
K = sp.Symbol("k", real=True)
C = sp.Symbol("c", positive=True)
PD = {S12: K * S11, S22: C + K**2 * S11}

U = sp.Symbol("u", real=True)
V = sp.Symbol("v", real=True)
X = sp.Symbol("x", real=True)
XP = sp.Symbol("xp", positive=True)
XN = sp.Symbol("xn", negative=True)

NUMERIC_POINTS = 24
NUMERIC_DIGITS = 50

# ------------------------------------------------------------------------------------------------
# Gaussian integrals


_A = sp.Symbol("A", positive=True)
_B = sp.Symbol("B", real=True)
_T = sp.Symbol("t", real=True)


@functools.lru_cache(maxsize=None)
def _gauss_integral0() -> sp.Expr:
    """I_0(A, B) = int_R exp(-A t^2 + B t) dt for A > 0, B real, by sympy.integrate."""
    r = sp.integrate(sp.exp(-_A * _T**2 + _B * _T), (_T, -sp.oo, sp.oo), conds="none")
    if r.has(sp.Integral) or r.has(sp.Piecewise):
        raise AssertionError("sympy could not integrate exp(-A t^2 + B t)")
    return r


@functools.lru_cache(maxsize=None)
def _monomial_integral(n: int) -> sp.Expr:
    """J_n(A, B) = exp(-B^2/(4A)) int_R t^n exp(-A t^2 + B t) dt for A > 0, B real.

    int t^n exp(-A t^2 + B t) dt = d^n/dB^n I_0(A, B) (differentiation under the integral sign: the
    B-derivatives of the integrand are dominated by |t|^n exp(-A t^2 + (|B| + 1)|t|), integrable)."""
    r = sp.diff(_gauss_integral0(), _B, n)
    j = sp.simplify(sp.powsimp(sp.expand(r * sp.exp(-_B**2 / (4 * _A)))))
    if j.has(sp.exp):
        raise AssertionError(f"unexpected form of the Gaussian integral: {r}")
    return j


def _positive(expr: sp.Expr) -> bool:
    for cand in (expr, sp.together(expr), sp.factor(sp.together(expr)), sp.simplify(expr)):
        if cand.is_positive:
            return True
    return False


Terms = list[tuple[sp.Expr, sp.Expr]]


def gauss_terms(expr: sp.Expr) -> Terms:
    """Split a sum of products into (amplitude, exponent) pairs: expr = sum amplitude * exp(exponent)."""
    out: Terms = []
    for term in sp.Add.make_args(sp.expand(expr)):
        exponent, amp = sp.Integer(0), sp.Integer(1)
        for f in sp.Mul.make_args(term):
            if isinstance(f, sp.exp):
                exponent += f.args[0]
            elif f.is_Pow and isinstance(f.base, sp.exp):
                exponent += f.base.args[0] * f.exp
            else:
                amp *= f
        out.append((amp, exponent))
    return out


def integrate_terms(terms: Terms, x: sp.Symbol, *, complex_b: bool = False) -> Terms:
    """int_R dx of sum amplitude * exp(exponent), each amplitude polynomial and each exponent quadratic
    in x with negative leading coefficient. ``complex_b`` allows a non-real linear coefficient B (J_n is
    entire in B, so the real-B formula continues analytically)."""
    out: Terms = []
    for amp, exponent in terms:
        if amp.has(sp.exp) and any(e.has(x) for e in amp.atoms(sp.exp)):
            raise AssertionError(f"exponential left in the amplitude: {amp}")
        if not amp.has(x) and not exponent.has(x):
            raise AssertionError(f"integrand constant in {x}: integral diverges")
        q = sp.Poly(sp.expand(exponent), x)
        if q.degree() > 2:
            raise AssertionError(f"exponent not quadratic in {x}: {exponent}")
        a = -q.coeff_monomial(x**2)
        b = q.coeff_monomial(x)
        c0 = q.coeff_monomial(1)
        if not _positive(a):
            raise AssertionError(f"cannot show the Gaussian coefficient {a} is positive")
        if not complex_b and b.is_real is False:
            raise AssertionError(f"non-real linear coefficient {b}")
        p = sp.Poly(sp.expand(amp), x)
        new_amp = sp.Integer(0)
        for (n,), coef in p.terms():
            new_amp += coef * _monomial_integral(n).subs({_A: a, _B: b}, simultaneous=True)
        out.append((new_amp, c0 + b**2 / (4 * a)))
    return out


def gauss_line(expr: sp.Expr, x: sp.Symbol, *, complex_b: bool = False) -> sp.Expr:
    """int_R expr dx for expr = sum polynomial(x) * exp(quadratic(x)) (see ``integrate_terms``)."""
    return sum((a * sp.exp(e) for a, e in integrate_terms(gauss_terms(expr), x, complex_b=complex_b)),
               sp.Integer(0))


def normal_pdf(x: sp.Expr, var: sp.Expr) -> sp.Expr:
    return sp.exp(-x**2 / (2 * var)) / sp.sqrt(2 * sp.pi * var)


def gauss2d(g: sp.Expr, *, complex_b: bool = False) -> sp.Expr:
    """E[g(u, v)] with g a sum of polynomial * exp(quadratic) in (u, v), in the PD parametrisation
    (symbols s11, k, c): v | u ~ N(k u, c), u ~ N(0, s11)."""
    terms = integrate_terms(gauss_terms(g * normal_pdf(V - K * U, C)), V, complex_b=complex_b)
    # the outer density N(u; 0, s11) joins the exponent; exponentials of u in the amplitudes (from g)
    # are split off as well
    terms = [(a2 / sp.sqrt(2 * sp.pi * S11), e + e2 - U**2 / (2 * S11))
             for a, e in terms for a2, e2 in gauss_terms(a)]
    terms = integrate_terms(terms, U, complex_b=complex_b)
    return sum((a * sp.exp(sp.simplify(e)) for a, e in terms), sp.Integer(0))


def expect1d(f: sp.Expr, x: sp.Symbol, var: sp.Expr, *, split: bool = False) -> sp.Expr:
    """E[f(x)], x ~ N(0, var), by sympy.integrate. With ``split`` the line is cut at 0 and x is
    replaced by a positive / negative symbol on each half, which evaluates Max, Min, Heaviside, sign.
    Where ``integrate`` fails (sin/cos with symbolic frequency and phase), f is rewritten through
    complex exponentials and integrated by ``gauss_line``."""
    if not split and f.has(sp.sin, sp.cos):
        r = sp.Integral(f, x)  # sympy's integrate is slow and fails here: use the route below
    elif not split:
        r = sp.integrate(f * normal_pdf(x, var), (x, -sp.oo, sp.oo), conds="none")
    else:
        r = sp.integrate((f * normal_pdf(x, var)).subs(x, XP), (XP, 0, sp.oo), conds="none")
        r += sp.integrate((f * normal_pdf(x, var)).subs(x, XN), (XN, -sp.oo, 0), conds="none")
    if r.has(sp.Integral) and not split:
        # sin/cos/exp: through complex exponentials and the Gaussian line integral
        r = gauss_line(sp.expand((f * normal_pdf(x, var)).rewrite(sp.exp)), x, complex_b=True)
    if r.has(sp.Integral):
        raise AssertionError(f"sympy could not evaluate E[{f}]")
    return sp.simplify(r)


def density_at_origin() -> sp.Expr:
    """p(0, 0) = 1 / (2 pi sqrt(det Sigma)) = E[delta(u) delta(v)], from the bivariate normal density."""
    sigma = sp.Matrix([[S11, S12], [S12, S22]])
    z = sp.Matrix([0, 0])
    return sp.exp(-(z.T * sigma.inv() * z)[0] / 2) / (2 * sp.pi * sp.sqrt(sigma.det()))


def at_zero(expr: sp.Expr) -> sp.Expr:
    return plain(expr).subs(S12, 0)


def diagonal(expr: sp.Expr) -> sp.Expr:
    """expr at s12 = s22 = s11 (continuous extension; |rho| = 1)."""
    return plain(expr).subs({S12: S11, S22: S11}, simultaneous=True)


def d12(expr: sp.Expr) -> sp.Expr:
    return sp.diff(plain(expr), S12)


# ------------------------------------------------------------------------------------------------
# Equality checker


ROUTES = ("algebraic, radicals eliminated", "algebraic, radicals eliminated, PD param", "symbolic",
          "symbolic, PD param", "symbolic, rationalised", "numeric 50 digits")
SIMPLIFY_SECONDS = 60


@dataclass
class Proof:
    """Log of the identities established by one proof: (claim, route, seconds) per step."""

    name: str
    steps: list[tuple[str, str, float]] = field(default_factory=list)
    sampler: dict[sp.Symbol, Callable[[random.Random], sp.Rational]] = field(default_factory=dict)
    covers: tuple[str, ...] = ()

    def equal(self, lhs: sp.Expr, rhs: sp.Expr, claim: str, *, numeric_ok: bool = True) -> str:
        t0 = time.perf_counter()
        diff = plain(sp.sympify(lhs)) - plain(sp.sympify(rhs))
        route = _zero_route(diff, self.sampler if numeric_ok else None, plain(sp.sympify(lhs)))
        if route is None:
            raise AssertionError(f"[{self.name}] not proven: {claim}")
        self.steps.append((claim, route, time.perf_counter() - t0))
        return route

    def check(self, ok: bool, claim: str, route: str = "exact (direct sympy)") -> None:
        """Record a fact established directly by the caller (e.g. an exact value computed by sympy)."""
        if not ok:
            raise AssertionError(f"[{self.name}] not proven: {claim}")
        self.steps.append((claim, route, 0.0))

    def close_to(self, value: sp.Expr, reference: str, claim: str) -> None:
        """value (exact) agrees with a published decimal to all of its digits (half a unit in the last)."""
        ref = sp.Float(reference, 30)
        digits = len(reference.split(".")[1]) if "." in reference else 0
        got = sp.N(plain(value), 30)
        self.check(abs(got - ref) <= sp.Rational(1, 2) * sp.Rational(1, 10**digits),
                   f"{claim}: {sp.N(got, digits + 3)} == {reference}", "reference number")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, r, _ in self.steps:
            out[r] = out.get(r, 0) + 1
        return out

    def summary(self) -> str:
        return ", ".join(f"{n} {r}" for r, n in self.counts().items())


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Timeout

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _is_zero_symbolic(e: sp.Expr) -> bool:
    if e == 0:
        return True
    try:
        with _time_limit(SIMPLIFY_SECONDS):
            return sp.simplify(e) == 0
    except Exception:  # pragma: no cover - sympy internals, time limit
        return False


def _zero_route(diff: sp.Expr, sampler: dict | None, scale: sp.Expr) -> str | None:
    if diff == 0 or radical_zero(diff):
        return ROUTES[0]
    pd = diff.subs(PD, simultaneous=True)
    if radical_zero(pd):
        return ROUTES[1]
    if _is_zero_symbolic(diff):
        return ROUTES[2]
    if _is_zero_symbolic(pd):
        return ROUTES[3]
    for tr in (sp.radsimp, lambda e: sp.factor(sp.together(e))):
        try:
            if _is_zero_symbolic(tr(pd)):
                return ROUTES[4]
        except Exception:  # pragma: no cover - sympy internals
            pass
    if sampler is None:
        return None
    if _numeric_zero(pd, scale.subs(PD, simultaneous=True), sampler):
        return ROUTES[5]
    return None


def _default_value(sym: sp.Symbol, rng: random.Random) -> sp.Rational:
    if sym.is_positive:
        return sp.Rational(rng.randint(1, 400), 100)
    if sym.is_negative:
        return -sp.Rational(rng.randint(1, 400), 100)
    return sp.Rational(rng.randint(-300, 300), 100)


def _numeric_zero(pd: sp.Expr, scale: sp.Expr, sampler: dict, points: int = NUMERIC_POINTS) -> bool:
    rng = random.Random(20240601)
    syms = sorted(pd.free_symbols | scale.free_symbols, key=str)
    for _ in range(points):
        vals = {s: (sampler[s](rng) if s in sampler else _default_value(s, rng)) for s in syms}
        d = sp.N(pd.subs(vals), NUMERIC_DIGITS)
        m = sp.N(scale.subs(vals), NUMERIC_DIGITS)
        if not (d.is_number and m.is_number):
            return False
        if abs(complex(d)) > sp.Float("1e-40") * max(1, abs(complex(m))):
            return False
    return True


# ------------------------------------------------------------------------------------------------
# Generic Price chains


def price_chain(proof: Proof, kernels: list[sp.Expr], means: list[sp.Expr], base: sp.Expr, label: str) -> None:
    """Prove kernels[j] = E[phi^(j)(u) phi^(j)(v)] for all j, given

    * means[j] = E[phi^(j)(u)] E[phi^(j)(v)] (computed independently by 1-D integration), and
    * base = E[phi^(n)(u) phi^(n)(v)] with n = len(kernels) (computed independently).

    Price's theorem: d/ds12 E[f(u) g(v)] = E[f'(u) g'(v)]; with the value at s12 = 0 the kernel is
    determined by its derivative (integrate from 0 along s12; the segment stays in the PD cone).
    Proven here: d kernels[j]/ds12 == kernels[j+1] (base for the last) and kernels[j](s12=0) == means[j].
    """
    chain = list(kernels) + [base]
    for j, kj in enumerate(kernels):
        proof.equal(d12(kj), chain[j + 1], f"{label}: d K{j}/ds12 == K{j + 1}")
        proof.equal(at_zero(kj), means[j], f"{label}: K{j}(s12=0) == E[phi^({j})]^2")


def dual_at(fn: Callable[..., Dual], *params: Iterable) -> Dual:
    return fn(S11, S12, S22, *params)


# ------------------------------------------------------------------------------------------------
# The standard argument for one activation


def mean_product(f: sp.Expr, *, split: bool = False) -> sp.Expr:
    """E[f(u)] E[f(v)] for u ~ N(0, s11), v ~ N(0, s22), by 1-D integration (``expect1d``)."""
    m = expect1d(f, X, S11, split=split)
    return m * m.subs(S11, S22)


def standard_claims(proof: Proof, dual: Dual, phi: sp.Expr, *, base: sp.Expr | None, dphi: sp.Expr | None = None,
                    split: bool = False, square_mean: bool = True, label: str = "") -> None:
    """The claims that pin down (T, Tdot) of phi (an expression in X), given the library's ``dual``:

    * Price: dT/ds12 == Tdot and, with ``base`` = E[phi''(u) phi''(v)] computed independently by the caller,
      dTdot/ds12 == base;
    * initial values: T(s12 = 0) == E[phi(u)] E[phi(v)], Tdot(s12 = 0) == E[phi'(u)] E[phi'(v)];
    * diagonal: Tdiag == T at s12 = s22 = s11 (continuous extension) and, with ``square_mean``,
      Tdiag == E[phi(u)^2] by 1-D integration.

    Uniqueness: two functions of s12 on the segment from 0 (inside the PD cone for fixed s11, s22) with
    the same derivative and the same value at 0 coincide; so Tdot == E[phi' phi'] and then T == E[phi phi].
    With ``base=None`` the caller proves Tdot otherwise (directly by ``gauss2d``).
    """
    lab = f"{label}: " if label else ""
    dphi = sp.diff(phi, X) if dphi is None else dphi
    proof.equal(d12(dual.T), dual.Tdot, f"{lab}Price dT/ds12 == Tdot")
    proof.equal(at_zero(dual.T), mean_product(phi, split=split), f"{lab}T(s12=0) == E[phi(u)] E[phi(v)]")
    proof.equal(at_zero(dual.Tdot), mean_product(dphi, split=split), f"{lab}Tdot(s12=0) == E[phi'(u)] E[phi'(v)]")
    if base is not None:
        proof.equal(d12(dual.Tdot), base, f"{lab}Price dTdot/ds12 == E[phi''(u) phi''(v)]")
    proof.equal(dual.Tdiag, diagonal(dual.T), f"{lab}Tdiag == T(s, s, s) (continuous extension)")
    if square_mean:
        proof.equal(dual.Tdiag, expect1d(phi**2, X, S11, split=split), f"{lab}Tdiag == E[phi(u)^2]")


def at_point(expr: sp.Expr, s11: object, s12: object, s22: object) -> sp.Expr:
    """expr at numeric (s11, s12, s22) (exact rationals)."""
    vals = {S11: sp.nsimplify(s11), S12: sp.nsimplify(s12), S22: sp.nsimplify(s22)}
    return plain(expr).subs(vals, simultaneous=True)
