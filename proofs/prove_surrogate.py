"""Proof of the surrogate-gradient NTK closed forms in ``kernelalg.layers._surrogate`` (sympy).

Setting: (u, v) ~ N(0, S), S = [[s11, s12], [s12, s22]] positive definite, jump J = 2 (sign), forward at
finite sharpness phi = erf(m x) with phi'(u) = (2 m / sqrt(pi)) exp(-m^2 u^2), surrogate psi'(v) = 2 a g(a v)
with a unit-area shape g. Step = (1 + sign)/2 scales T to (1 + T_sign)/4 and Tdot by 1/4 (E[erf(m u)] = 0).

1. Tilting lemma: exp(-m^2 u^2) N(w; S) = (1 + 2 m^2 s11)^{-1/2} N(w; S') with S' = S - 2 m^2/(1 + 2 m^2 s11)
   S e1 e1^T S (checked on the log-densities); hence for ANY psi',
   E[phi'(u) psi'(v)] = 2 m / sqrt(pi (1 + 2 m^2 s11)) * E_{z ~ N(0, S'_22)}[psi'(z)],
   S'_22 = (s22 + 2 m^2 det) / (1 + 2 m^2 s11), det = s11 s22 - s12^2.
2. Gaussian averages G(v) = E_{z ~ N(0, v)}[a g(a z)] of the erf, rectangle, triangle shapes by integration.
3. The erf-surrogate form of theory.md follows from 1 + 2; the m -> infinity limits (sympy ``limit``) equal the
   library's m = None forms; 0.569410 at (1, .5, 1), a = 1.
4. Forward: Williams' erf(m x) kernel by Price's theorem (dT/ds12 = E[phi'(u) phi'(v)], which is 1 + 2 with
   a = m, and T = 0 at s12 = 0); its m -> infinity limit is (2/pi) asin(rho); step: (pi - theta)/(2 pi).
5. Naive NTK (psi' = phi'): the diagonal factor grows like 2 m / (pi sqrt(s)) while the off-diagonal one
   tends to (2/pi)/sqrt(det) -- the ill-posedness shown by Eilers, Memmesheimer, Goedeke (NeurIPS 2024).
6. The library's expressions (``surrogate_dual``) equal the proven ones.
"""

from __future__ import annotations

import sympy as sp

from kernelalg.layers._surrogate import explicit, gauss_average, surrogate_dual

s11, s22, m, a, v, s = sp.symbols("s11 s22 m a v s", positive=True)
s12, u, w, z = sp.symbols("s12 u w z", real=True)
DET = s11 * s22 - s12**2
P1 = 1 + 2 * m**2 * s11
RHO = s12 / sp.sqrt(s11 * s22)


def _zero(expr: sp.Expr, what: str) -> None:
    e = sp.simplify(expr)
    if e != 0:
        e = sp.simplify(sp.expand(sp.radsimp(e)))
    assert e == 0, f"{what}: residual {e}"


def _equal_on_pd(lhs: sp.Expr, rhs: sp.Expr, what: str) -> None:
    """lhs == rhs as functions of (s11, s12, s22, m, a) on the positive-definite cone.

    Tried symbolically first; where ``simplify`` cannot decide (erf/exp of radicals), both sides are compared
    to 40 digits at 12 points of the domain with |s12| < sqrt(s11 s22) (an identity of analytic functions).
    """
    diff = sp.simplify(lhs - rhs)
    if diff == 0:
        return
    pts = [(0.7, 0.3, 1.9, 2.5, 0.8), (1.0, 0.5, 1.0, 1.0, 1.0), (2.2, -1.1, 0.9, 7.0, 3.0), (0.3, 0.05, 0.2, 0.4, 5.0),
           (1.3, 1.2, 1.2, 11.0, 0.6), (4.0, -0.5, 0.6, 0.9, 1.7), (0.9, 0.0, 2.0, 3.3, 0.2),
           (1.7, 0.8, 0.5, 1.6, 2.2), (0.5, -0.45, 0.45, 20.0, 1.1), (3.1, 2.0, 1.5, 0.3, 0.9),
           (0.8, 0.6, 1.1, 5.0, 4.0), (2.0, 1.9, 1.9, 2.0, 0.5)]
    for p in pts:
        vals = dict(zip((s11, s12, s22, m, a), map(sp.Rational, map(str, p))))
        d = sp.N((lhs - rhs).subs(vals), 40)
        scale = sp.N(abs(rhs.subs(vals)), 40) + 1
        assert abs(d) < sp.Float("1e-30") * scale, f"{what}: differs by {d} at {p}"


def lemma_tilting() -> sp.Expr:
    """Return S'_22 after proving exp(-m^2 u^2) N(S) = N(S') / sqrt(1 + 2 m^2 s11)."""
    S = sp.Matrix([[s11, s12], [s12, s22]])
    Sp = S - (2 * m**2 / P1) * S[:, 0] * S[0, :]
    x = sp.Matrix([u, w])

    def log_density(C: sp.Matrix) -> sp.Expr:
        return -(x.T * C.inv() * x)[0] / 2 - sp.log(C.det()) / 2 - sp.log(2 * sp.pi)

    _zero(sp.expand(-m**2 * u**2 + log_density(S) - (-sp.log(P1) / 2 + log_density(Sp))), "tilting lemma")
    _zero(Sp[1, 1] - (s22 + 2 * m**2 * DET) / P1, "tilted variance")
    return (s22 + 2 * m**2 * DET) / P1


def lemma_gauss_averages() -> dict[str, sp.Expr]:
    """G(v) for each surrogate shape by direct integration against N(0, v)."""
    dens = sp.exp(-z**2 / (2 * v)) / sp.sqrt(2 * sp.pi * v)
    got = {
        "erf": sp.integrate(a / sp.sqrt(sp.pi) * sp.exp(-a**2 * z**2) * dens, (z, -sp.oo, sp.oo)),
        "rectangle": sp.integrate(a * dens, (z, -1 / (2 * a), 1 / (2 * a))),
        "triangle": 2 * sp.integrate(a * (1 - a * z) * dens, (z, 0, 1 / a)),
    }
    shapes = {"erf": sp.exp(-z**2) / sp.sqrt(sp.pi), "rectangle": sp.Integer(1), "triangle": 1 - z}
    for name, g in shapes.items():  # unit area (on the support)
        lim = (-sp.oo, sp.oo) if name == "erf" else ((-sp.Rational(1, 2), sp.Rational(1, 2)) if name == "rectangle"
                                                     else (-1, 1))
        area = sp.integrate(g if name != "triangle" else 1 - sp.Abs(z), (z, *lim))
        assert sp.simplify(area - 1) == 0, f"{name} shape area {area}"
        _zero(got[name] - gauss_average(name, v, a), f"G_{name}")
        # G is continuous at v = 0 with G(0) = a g(0) (needed at the diagonal in the m -> infinity limit)
        g0 = a * g.subs(z, 0)
        assert sp.simplify(sp.limit(gauss_average(name, v, a), v, 0, "+") - g0) == 0, f"G_{name}(0+)"
    return got


def mixed_finite(name: str, var: sp.Expr) -> sp.Expr:
    """E[phi'(u) psi'(v)] at finite m for sign (lemma 1 with psi' = 2 a g(a v))."""
    return 2 * m / sp.sqrt(sp.pi * P1) * 2 * gauss_average(name, var, a)


def mixed_infinite(name: str) -> sp.Expr:
    """The library's m = None form, correlation written out."""
    return explicit(surrogate_dual("sign", s11, s12, s22, None, a, name).Tdot)


def prove() -> None:
    var = lemma_tilting()
    lemma_gauss_averages()

    # 3. theory.md's erf form, its m -> infinity limit, the checkable number
    erf_fin = (4 * m * a / sp.pi) / sp.sqrt((1 + 2 * m**2 * s11) * (1 + 2 * a**2 * s22) - 4 * m**2 * a**2 * s12**2)
    _zero(mixed_finite("erf", var) - erf_fin, "erf surrogate, finite m (theory.md)")
    erf_inf = (4 * a / (sp.pi * sp.sqrt(2))) / sp.sqrt(s11 + 2 * a**2 * DET)
    _zero(sp.limit(erf_fin, m, sp.oo) - erf_inf, "erf surrogate, m -> oo (theory.md)")
    num = erf_inf.subs({s11: 1, s12: sp.Rational(1, 2), s22: 1, a: 1})
    assert abs(sp.N(num, 30) - sp.Float("0.569410")) < 5e-7, num
    # the same limit for every surrogate: sympy limit of the finite form == the library's m = None form
    for name in ("erf", "rectangle", "triangle"):
        lim = sp.limit(mixed_finite(name, var), m, sp.oo)
        _equal_on_pd(lim, mixed_infinite(name), f"m -> oo limit, {name}")

    # 4. forward kernels: Price's theorem at finite m, limits, step
    p2 = 1 + 2 * m**2 * s22
    t_fin = 2 / sp.pi * sp.asin(2 * m**2 * s12 / sp.sqrt(P1 * p2))
    tdot_true = mixed_finite("erf", var).subs(a, m)  # psi' = phi' (same scale)
    _zero(sp.diff(t_fin, s12) - tdot_true, "Price's theorem for erf(m x)")
    assert t_fin.subs(s12, 0) == 0  # E[erf(m u)] E[erf(m v)] = 0: odd integrand
    assert sp.integrate(sp.erf(m * z) * sp.exp(-z**2 / (2 * v)), (z, -sp.oo, sp.oo)) == 0
    _zero(sp.limit(t_fin, m, sp.oo) - 2 / sp.pi * sp.asin(RHO), "sign NNGP as m -> oo")
    _zero(sp.limit(t_fin.subs({s12: s, s11: s, s22: s}), m, sp.oo) - 1, "sign variance as m -> oo")
    # acos = pi/2 - asin on [-1, 1]
    _zero(((1 + 2 / sp.pi * sp.asin(RHO)) / 4 - (sp.pi - sp.acos(RHO)) / (2 * sp.pi)).rewrite(sp.asin), "step NNGP")

    # 5. naive NTK: diagonal grows linearly in m, off-diagonal converges
    diag = tdot_true.subs({s11: s, s12: s, s22: s})
    _zero(sp.limit(diag / m, m, sp.oo) - 2 / (sp.pi * sp.sqrt(s)), "naive diagonal slope")
    _zero(sp.limit(tdot_true, m, sp.oo) - 2 / sp.pi / sp.sqrt(DET), "naive off-diagonal limit")

    # 6. the library's expressions are the proven ones
    for name in ("erf", "rectangle", "triangle"):
        for kind, scale in (("sign", 1), ("step", sp.Rational(1, 4))):
            d = surrogate_dual(kind, s11, s12, s22, m, a, name)
            _equal_on_pd(explicit(d.Tdot), scale * mixed_finite(name, var), f"library Tdot {kind}/{name}")
            _zero(explicit(d.T) - (t_fin if kind == "sign" else (1 + t_fin) / 4), f"library T {kind}")
            d_inf = surrogate_dual(kind, s11, s12, s22, None, a, name)
            t_inf = 2 / sp.pi * sp.asin(RHO)
            _zero(explicit(d_inf.T) - (t_inf if kind == "sign" else (1 + t_inf) / 4), f"library T {kind}, m = None")
            assert d_inf.Tdiag == (1 if kind == "sign" else sp.Rational(1, 2))
    naive = surrogate_dual("sign", s11, s12, s22, m, None, "true")
    _equal_on_pd(explicit(naive.Tdot), tdot_true, "library naive Tdot")


if __name__ == "__main__":
    prove()
    print("prove_surrogate: all identities hold")
