"""Reference values of the duals of composed activations by nested mpmath quadrature.

T = E[c(u) c(v)] and Tdot = E[c'(u) c'(v)] for c = phi2 o phi1 and (u, v) ~ N(0, [[s11, s12], [s12, s22]]): the 2-D
Gaussian integral over the Cholesky variables, each 1-D integral by mpmath's Gauss-Legendre quadrature at dps 15
on [-9, 9] split where the argument of a kink changes sign (relu inside), tail mass beyond 9 standard deviations
below 1e-18. Independent of the Gauss-Hermite route under test.

Writes tests/data/mpmath_composed_reference.npz. Run: python benchmarks/make_mpmath_composed_reference.py
"""

from __future__ import annotations

from pathlib import Path

import mpmath as mp
import numpy as np

mp.mp.dps = 15


def _erf_gelu(t):
    return mp.erf(t) / 2 * (1 + mp.erf(mp.erf(t) / mp.sqrt(2)))


def _erf_gelu_d(t):
    e = mp.erf(t)
    return 2 / mp.sqrt(mp.pi) * mp.exp(-t * t) * ((1 + mp.erf(e / mp.sqrt(2))) / 2 + e * mp.npdf(e))


def _leaky(t):
    return t if t > 0 else t / 10


def _gelu(y):
    return y * mp.ncdf(y)


def _gelu_d(y):
    return mp.ncdf(y) + y * mp.npdf(y)


#: name -> (c, c'); Relu >> Erf, Erf >> Gelu, Sin >> Monomial(2), LeakyRelu(0.1) >> Gelu, Abs >> Sin.
FUNCS = {
    "relu_erf": (lambda t: mp.erf(max(t, 0)), lambda t: 2 / mp.sqrt(mp.pi) * mp.exp(-t * t) if t > 0 else mp.mpf(0)),
    "erf_gelu": (_erf_gelu, _erf_gelu_d),
    "sin_square": (lambda t: mp.sin(t) ** 2, lambda t: mp.sin(2 * t)),
    "leaky_gelu": (lambda t: _gelu(_leaky(t)), lambda t: _gelu_d(_leaky(t)) * (1 if t > 0 else mp.mpf(1) / 10)),
    "abs_sin": (lambda t: mp.sin(abs(t)), lambda t: mp.cos(abs(t)) * mp.sign(t)),
}
POINTS = [(1.0, 0.6 * 2 ** 0.5, 2.0), (2.0, 1.9, 2.0), (1.5, -0.9, 1.0)]


def expectation(f, s11: float, s12: float, s22: float) -> mp.mpf:
    r1, r2 = mp.sqrt(s11), mp.sqrt(s22)
    rho = mp.mpf(s12) / (r1 * r2)
    sig = mp.sqrt(1 - rho * rho)

    def inner(z1):
        return mp.quad(lambda z2: f(r2 * (rho * z1 + sig * z2)) * mp.npdf(z2), [-9, -rho * z1 / sig, 9],
                       method="gauss-legendre")
    return mp.quad(lambda z1: f(r1 * z1) * inner(z1) * mp.npdf(z1), [-9, 0, 9], method="gauss-legendre")


def main() -> None:
    out = {}
    for name, (f, df) in FUNCS.items():
        out[name] = np.array([[float(expectation(f, *p)), float(expectation(df, *p))] for p in POINTS])
        print(name, out[name], flush=True)
    path = Path(__file__).resolve().parents[1] / "tests" / "data" / "mpmath_composed_reference.npz"
    np.savez(path, points=np.array(POINTS), **out)
    print("wrote", path)


if __name__ == "__main__":
    main()
