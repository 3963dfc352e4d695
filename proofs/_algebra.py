"""A sound zero test for expressions built from rational functions and square roots (no ``simplify``).

``radical_zero(expr)`` decides expr == 0 by exact algebra:

1. sin/cos of multiples of acos/asin/atan are expanded (sin(acos x) = sqrt(1 - x^2), ...); pi becomes
   a positive symbol; every other transcendental node f(args) (acos, atan, exp, erf, ...)
   becomes an opaque symbol keyed by f and its canonicalised arguments (an identity that holds for every
   value of the opaque symbols holds in particular for the true values);
2. every power b^(p/2) is written through square-free factors: b = num/den, each polynomial factored over
   Q, each factor f of odd multiplicity shown POSITIVE by sympy (the PD parametrisation makes radicands
   manifestly positive) and replaced by a symbol r_f with the relation r_f^2 = f; a positive rational
   constant is split into primes the same way. For positive factors sqrt(prod f^e) = prod sqrt(f)^e.
   The imaginary unit is the symbol with r^2 = -1. Expressions with sin/cos/sinh/cosh (of plain
   arguments) are first written as sums of exponentials with each product of exponentials combined;
3. the expression is evaluated in Q(gens)[r_1, ..., r_m] / (r_i^2 - f_i), elements stored as
   {square-free monomial in the r: coefficient in the rational-function field}; division multiplies by
   conjugates (r_i -> -r_i) until the denominator lies in Q(gens).

The answer True is a proof (every step is an identity on the domain where the radicands are positive);
False only means "not shown" (e.g. a radicand whose sign sympy cannot see, or two opaque nodes equal
only after a transformation the canonicalisation does not make). Distinct irreducible radicands give
algebraically independent square roots over Q(gens) (Kummer theory), so the reduction itself misses no
identity of this class.
"""

from __future__ import annotations

import sympy as sp

from kernelalg.core._duals import plain

PI = sp.Symbol("PI", positive=True)


class _Fail(Exception):
    pass


def _positive(e: sp.Expr) -> bool:
    for cand in (e, sp.factor(e)):
        if cand.is_positive:
            return True
    return False


class _Canon:
    """Replace radicals and transcendental nodes by symbols (see the module docstring)."""

    def __init__(self) -> None:
        self.roots: dict[sp.Expr, sp.Dummy] = {}
        self.atoms: dict[tuple, sp.Dummy] = {}

    def root(self, f: sp.Expr) -> sp.Dummy:
        f = sp.expand(f)
        if f not in self.roots:
            self.roots[f] = sp.Dummy("r", positive=True)
        return self.roots[f]

    def sqrt_of(self, base: sp.Expr) -> sp.Expr:
        if base.free_symbols & (set(self.roots.values()) | set(self.atoms.values())):
            raise _Fail("nested radical or radical of a transcendental node")
        num, den = sp.fraction(sp.cancel(sp.together(base)))
        return self._sqrt_poly(num) / self._sqrt_poly(den)

    def _sqrt_poly(self, p: sp.Expr) -> sp.Expr:
        if p.is_Rational:
            if p < 0:
                raise _Fail("negative radicand")
            if not p.is_Integer:  # sqrt(a/b) = sqrt(a)/sqrt(b)
                return self._sqrt_poly(sp.Integer(p.p)) / self._sqrt_poly(sp.Integer(p.q))
            out = sp.Integer(1)
            for prime, e in sp.factorint(p).items():
                out *= sp.Integer(prime) ** (e // 2) * (self.root(sp.Integer(prime)) if e % 2 else 1)
            return out
        coeff, factors = sp.factor_list(p)
        if coeff < 0:
            raise _Fail("negative leading coefficient")
        out = self._sqrt_poly(coeff)
        for f, e in factors:
            if not _positive(f):
                if e % 2 == 0 and _positive(-f):
                    f = -f
                else:
                    raise _Fail(f"cannot show {f} > 0")
            out *= f ** (e // 2)
            if e % 2:
                out *= self.root(f)
        return out

    def __call__(self, e: sp.Expr) -> sp.Expr:
        if e is sp.I:
            return self.root(sp.Integer(-1))  # r^2 = -1
        if e.is_Atom:
            return e
        if e.is_Pow:
            base, ex = self(e.base), e.exp
            if ex.is_Integer:
                return base**ex
            if ex.is_Rational and ex.q == 2:
                return self.sqrt_of(base) ** ex.p
            return self.atom(sp.Pow, (base, self(ex)))
        if e.is_Add or e.is_Mul:
            return e.func(*[self(a) for a in e.args])
        if isinstance(e, sp.exp):
            return self.atom(sp.exp, (sp.expand(self(e.args[0])),))
        return self.atom(e.func, tuple(sp.cancel(self(a)) for a in e.args))

    def atom(self, func: object, args: tuple) -> sp.Dummy:
        key = (func, args)
        if key not in self.atoms:
            self.atoms[key] = sp.Dummy(getattr(func, "__name__", "f"))
        return self.atoms[key]


Elem = dict  # frozenset of radical symbols -> coefficient in the fraction field


def _mul(a: Elem, b: Elem, rel: dict, K: object) -> Elem:
    out: Elem = {}
    for ka, va in a.items():
        for kb, vb in b.items():
            v = va * vb
            for r in ka & kb:
                v = v * rel[r]
            k = ka ^ kb
            out[k] = out.get(k, K.zero) + v
    return {k: v for k, v in out.items() if v}


def _inv(a: Elem, rel: dict, K: object) -> Elem:
    if not a:
        raise _Fail("division by zero")
    rs = set().union(*a)
    if not rs:
        return {frozenset(): K.one / a[frozenset()]}
    r = min(rs, key=lambda s: s.dummy_index)
    conj = {k: (-v if r in k else v) for k, v in a.items()}
    return _mul(conj, _inv(_mul(a, conj, rel, K), rel, K), rel, K)


def _to_alg(e: sp.Expr, rel: dict, K: object) -> Elem:
    if e in rel:
        return {frozenset([e]): K.one}
    if e.is_Add:
        out: Elem = {}
        for a in e.args:
            for k, v in _to_alg(a, rel, K).items():
                out[k] = out.get(k, K.zero) + v
        return {k: v for k, v in out.items() if v}
    if e.is_Mul:
        out = {frozenset(): K.one}
        for a in e.args:
            out = _mul(out, _to_alg(a, rel, K), rel, K)
        return out
    if e.is_Pow and e.exp.is_Integer:
        base, n = _to_alg(e.base, rel, K), int(e.exp)
        if n < 0:
            base, n = _inv(base, rel, K), -n
        out = {frozenset(): K.one}
        while n:
            if n & 1:
                out = _mul(out, base, rel, K)
            n >>= 1
            if n:
                base = _mul(base, base, rel, K)
        return out
    if e.free_symbols & set(rel):
        raise _Fail(f"unexpected node {e.func}")
    return {frozenset(): K.from_sympy(e)} if e != 0 else {}


def radical_zero(expr: sp.Expr) -> bool:
    """True if ``expr`` is identically zero by exact radical elimination (see the module docstring)."""
    canon = _Canon()
    try:
        e = plain(sp.sympify(expr))
        # sin(n acos(x)), cos(n asin(x)), ...: multiple-angle expansion, then sin(acos(x)) = sqrt(1 - x^2) etc.
        e = e.replace(lambda n: isinstance(n, (sp.sin, sp.cos)) and n.args[0].has(sp.acos, sp.asin, sp.atan),
                      lambda n: sp.expand_trig(n))
        trig = (sp.sin, sp.cos, sp.sinh, sp.cosh, sp.tan, sp.tanh)
        if any(not n.args[0].has(sp.acos, sp.asin, sp.atan) for n in e.atoms(*trig)):
            # sums of exponentials: exp(x) exp(y) -> exp(x + y), so equal exponents give equal symbols
            e = sp.Add(*[sp.powsimp(t) for t in sp.Add.make_args(sp.expand(e.rewrite(sp.exp)))])
        e = canon(sp.powsimp(e).subs(sp.pi, PI))
        rels = {r: f for f, r in canon.roots.items()}
        gens = sorted(e.free_symbols.union(*(f.free_symbols for f in rels.values())) - set(rels), key=str)
        K = sp.QQ.frac_field(*gens) if gens else sp.QQ
        rel = {r: K.from_sympy(f) for r, f in rels.items()}
        return not _to_alg(e, rel, K)
    except (_Fail, ZeroDivisionError, sp.PolynomialError, sp.CoercionFailed, NotImplementedError):
        return False
