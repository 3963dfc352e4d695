"""Reference values of the tanh and sigmoid duals (and of a 2-layer NTK) by mpmath at 30 digits.

T = E[phi(u) phi(v)] and Tdot = E[phi'(u) phi'(v)] for (u, v) ~ N(0, [[s11, s12], [s12, s22]]), as the 2-D Gaussian
integral over the Cholesky variables (z1, z2) by the trapezoidal rule on [-L, L]^2 in mpmath at dps 30. For an
integrand analytic in |Im z| < d the trapezoidal rule with step h has error O(exp(-2 pi d' / h)) for d' < d
(Trefethen & Weideman 2014), here d = pole / sqrt(s) with the poles of tanh at u = i pi / 2 (sigmoid: i pi);
h = min(0.1, d / 10), the truncation at L = 10 is below 1e-21. Each value is also computed with 2h and the two
must agree to 1e-6 (the script fails otherwise); as the error decays like exp(-c / h), the error at h is about the
square of that at 2h: at most ~1e-12, below the smallest bound the tests check (9.4e-11). Independent of
Gauss-Hermite.

Writes tests/data/mpmath_sigmoidal_reference.npz. Run: python benchmarks/make_mpmath_sigmoidal_reference.py
"""

from __future__ import annotations

from pathlib import Path

import mpmath as mp
import numpy as np

mp.mp.dps = 30
L = 10
FUNCS = {
    "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2, mp.pi / 2),
    "sigmoid": (lambda x: 1 / (1 + mp.exp(-x)), lambda x: 1 / (4 * mp.cosh(x / 2) ** 2), mp.pi),
}
#: (function, s11, s12 / sqrt(s11 s22) = rho, s22): rho = +-1, +-0.999, 0, 0.5; small and large variances.
GRID = [(f, s1, rho, s2) for f, variances in (("tanh", [(0.05, 0.05), (1.0, 1.0), (0.3, 1.0), (4.0, 4.0)]),
                                              ("sigmoid", [(0.05, 0.05), (4.0, 4.0), (16.0, 16.0)]))
        for s1, s2 in variances for rho in (1.0, -1.0, 0.999, -0.999, 0.0, 0.5)]


def _nodes(h: mp.mpf) -> list[tuple[mp.mpf, mp.mpf]]:
    n = int(L / h)
    return [(k * h, h * mp.npdf(k * h)) for k in range(-n, n + 1)]


def expectation(f, s11, s12, s22, pole) -> mp.mpf:
    s11, s12, s22 = mp.mpf(s11), mp.mpf(s12), mp.mpf(s22)
    d = pole / mp.sqrt(max(s11, s22))
    out = []
    for h in (min(mp.mpf("0.1"), d / 10), 2 * min(mp.mpf("0.1"), d / 10)):
        nodes = _nodes(h)
        r1, r2 = mp.sqrt(s11), mp.sqrt(s22)
        rho = s12 / (r1 * r2)
        sig = mp.sqrt(max(1 - rho * rho, 0))
        if sig == 0:
            val = mp.fsum(w * f(r1 * z) * f(r2 * rho * z) for z, w in nodes)
        else:
            val = mp.fsum(w1 * f(r1 * z1) * mp.fsum(w2 * f(r2 * (rho * z1 + sig * z2)) for z2, w2 in nodes)
                          for z1, w1 in nodes)
        out.append(val)
    assert abs(out[0] - out[1]) < mp.mpf("1e-6"), (s11, s12, s22, out)
    return out[0]


def duals(name: str, s11, s12, s22) -> tuple[mp.mpf, ...]:
    f, df, pole = FUNCS[name]
    return (expectation(f, s11, s12, s22, pole), expectation(df, s11, s12, s22, pole),
            expectation(f, s11, s11, s11, pole), expectation(f, s22, s22, s22, pole),
            expectation(df, s11, s11, s11, pole), expectation(df, s22, s22, s22, pole))


#: Dense(1.2, 0.1) >> Tanh() >> Dense(1.1, 0.2) >> Tanh() >> Dense(0.9, 0.1), NTK parametrization, on NET_X.
NET = [(1.2, 0.1), (1.1, 0.2), (0.9, 0.1)]
NET_X = np.array([[0.9, -0.4], [0.3, 0.8], [-0.5, -0.6]])


def network_kernels(name: str) -> tuple[np.ndarray, np.ndarray]:
    """NNGP and NTK of the network by the recursion nngp' = W^2 T + b^2, ntk' = nngp' + W^2 Tdot ntk."""
    x = [[mp.mpf(v) for v in row] for row in NET_X.tolist()]
    n, d = len(x), len(x[0])
    (w, b) = NET[0]
    k = [[mp.mpf(w) ** 2 * mp.fsum(a * c for a, c in zip(x[i], x[j])) / d + mp.mpf(b) ** 2 for j in range(n)]
         for i in range(n)]
    t = [row[:] for row in k]
    for w, b in NET[1:]:
        kn, tn = [[None] * n for _ in range(n)], [[None] * n for _ in range(n)]
        for i in range(n):
            for j in range(i, n):
                T, Td = duals(name, k[i][i], k[i][j], k[j][j])[:2]
                kn[i][j] = kn[j][i] = mp.mpf(w) ** 2 * T + mp.mpf(b) ** 2
                tn[i][j] = tn[j][i] = kn[i][j] + mp.mpf(w) ** 2 * Td * t[i][j]
        k, t = kn, tn
    return np.array(k, dtype=float), np.array(t, dtype=float)


def main() -> None:
    rows = []
    for name, s1, rho, s2 in GRID:
        s12 = rho * (s1 * s2) ** 0.5
        rows.append([s1, s12, s2] + [float(v) for v in duals(name, s1, s12, s2)])
        print(name, s1, rho, s2, rows[-1][3:], flush=True)
    nngp, ntk = network_kernels("tanh")
    out = Path(__file__).resolve().parents[1] / "tests" / "data" / "mpmath_sigmoidal_reference.npz"
    np.savez(out, names=np.array([g[0] for g in GRID]), grid=np.array(rows), net_x=NET_X, net=np.array(NET),
             net_nngp=nngp, net_ntk=ntk)
    print("wrote", out)


if __name__ == "__main__":
    main()
