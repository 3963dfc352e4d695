"""The closed forms behind LayerNorm, Dropout and GlobalSelfAttention (kernelalg/layers/_normalization.py,
kernelalg/layers/spatial/_attention.py, _attend.py).

Exact Gaussian expectations are computed by Wick's theorem on polynomials of independent standard normals
(:func:`wick`: E[w^k] = (k-1)!! for even k, 0 for odd k), at small sizes with fully symbolic inputs; the
infinite-width statements then follow from sums of independent identically distributed terms (the law of
large numbers), as stated in each claim.

* LayerNorm: its Jacobian is (I - 1 1^T/n - y y^T/n) / sqrt(eps + var); the rank-2 correction changes the NTK
  contraction tr(P P')/n by (1 + s + s' - c^2)/n with s, s', c in [-1, 1] (an exact identity), i.e. O(1/n):
  the infinite-width map is the rescaling K / sqrt((eps + K11)(eps + K22)); the library's symbolic map is it.
* Dropout: E[(m x/r)(m x'/r)] = x x'/r for one mask, x x' for independent masks (m ~ Bernoulli(r)); the
  library's symbolic map multiplies by 1 + (1/r - 1) KroneckerDelta(i1, i2).
* Attention: the logits of tied keys and queries with 1/n_key scaling have mean K(p, q) and variance
  (K(p,p) K(q,q) + K(p,q)^2)/n_key -> 0; with independent keys and queries and 1/sqrt(n_key) scaling, mean 0
  and covariance K(p, p') K(q, q') (exactly, at any n_key); given the weights G, the output covariance over
  the value and output weights is G K G'^T and their NTK terms add 2 G K G'^T; and the general 1/sqrt map (the
  sum of those contributions with the mechanism's dual) reduces to NT's closed form for identity weights.
"""

from __future__ import annotations

import itertools

import sympy as sp

import kernelalg as ka
from kernelalg.core import _duals

from ._common import Proof


def wick(expr: sp.Expr, normals: list[sp.Symbol]) -> sp.Expr:
    """E[expr] for a polynomial in independent standard normals ``normals`` (other symbols are constants)."""
    poly = sp.Poly(sp.expand(expr), *normals)
    total = sp.Integer(0)
    for powers, coeff in poly.terms():
        if any(k % 2 for k in powers):
            continue
        total += coeff * sp.Mul(*(sp.factorial2(k - 1) for k in powers if k))
    return sp.expand(total)


def _vec(name: str, n: int) -> sp.Matrix:
    return sp.Matrix(sp.symbols(f"{name}1:{n + 1}", real=True))


def prove_layernorm() -> Proof:
    p = Proof("layernorm", covers=())
    n, eps = 4, sp.Symbol("eps", positive=True)
    x = _vec("x", n)
    mean = sum(x) / n
    var = sum((xi - mean) ** 2 for xi in x) / n
    y = (x - sp.ones(n, 1) * mean) / sp.sqrt(eps + var)
    jac = y.jacobian(x)
    proj = (sp.eye(n) - sp.ones(n, n) / n - y * y.T / n) / sp.sqrt(eps + var)
    for i, j in ((0, 0), (0, 1), (2, 3)):
        p.equal(jac[i, j], proj[i, j], f"n = 4: dLN/dx[{i},{j}] == (I - 11^T/n - y y^T/n)[{i},{j}] / sqrt(eps + var)")
    a, b = _vec("a", n - 1), _vec("b", n - 1)
    u = sp.Matrix(list(a) + [-sum(a)])  # y and y' sum to zero
    v = sp.Matrix(list(b) + [-sum(b)])
    pu, pv = sp.eye(n) - sp.ones(n, n) / n - u * u.T / n, sp.eye(n) - sp.ones(n, n) / n - v * v.T / n
    s, s2, c = (u.T * u)[0] / n, (v.T * v)[0] / n, (u.T * v)[0] / n
    p.equal((pu * pv).trace() / n, 1 - (1 + s + s2 - c**2) / n,
            "tr(P P')/n == 1 - (1 + s + s' - c^2)/n (s = |y|^2/n = var/(eps+var) <= 1, |c| <= 1): the NTK -> rescaling")
    sym = ka.symbolic(ka.Dense(1.0, 0.5) >> ka.LayerNorm(eps=0.1), keep_symbols=True)
    names = {q.name: q for q in sym.params}
    w, bb, e = names["sigma_w_1"], names["sigma_b_1"], names["eps_2"]
    k, k1, k2 = (w**2 * q + bb**2 for q in (ka.C, ka.Q1, ka.Q2))
    p.equal(sym.nngp, k / sp.sqrt((e + k1) * (e + k2)), "library: K <- K / sqrt((eps + K11)(eps + K22))")
    p.equal(sym.ntk, k / sp.sqrt((e + k1) * (e + k2)), "library: Theta <- Theta / sqrt((eps + K11)(eps + K22))")
    p.equal(sym.var1, k1 / (e + k1), "library: K11 <- K11 / (eps + K11)")
    return p


def prove_dropout() -> Proof:
    p = Proof("dropout", covers=())
    r, x, xp = sp.Symbol("r", positive=True), sp.Symbol("x", real=True), sp.Symbol("xp", real=True)
    expect = (lambda f: r * f(1) + (1 - r) * f(0))  # m ~ Bernoulli(r)
    p.equal(expect(lambda m: (m * x / r) * (m * xp / r)), x * xp / r, "one mask: E[(m x/r)(m x'/r)] == x x'/r")
    p.equal(expect(lambda m: m * x / r) * expect(lambda m: m * xp / r), x * xp, "independent masks: == x x'")
    sym = ka.symbolic(ka.Dense(1.0, 0.5) >> ka.Relu() >> ka.Dropout(0.5) >> ka.Dense(1.0), keep_symbols=True)
    names = {q.name: q for q in sym.params}
    w1, b1, rate, w2 = names["sigma_w_1"], names["sigma_b_1"], names["rate_3"], names["sigma_w_4"]
    k = {q: w1**2 * q + b1**2 for q in (ka.Q1, ka.Q2, ka.C)}
    d = _duals.relu(k[ka.Q1], k[ka.C], k[ka.Q2])
    boost = 1 + (1 / rate - 1) * sp.KroneckerDelta(ka.ID1, ka.ID2)
    p.equal(sym.nngp, w2**2 * d.T * boost, "library: K <- K (1 + (1/rate - 1) delta(x, x'))")
    p.equal(sym.ntk, w2**2 * d.T * boost + w2**2 * d.Tdot * k[ka.C] * boost, "library: Theta likewise")
    p.equal(sym.var1, w2**2 * d.Tdiag / rate, "library: K(x, x) <- K(x, x) / rate")
    return p


def prove_attention_logits() -> Proof:
    p = Proof("attention_logits", covers=())
    c = 2  # input channels (symbolic inputs); one key channel: n_key channels are i.i.d. copies
    xp_, xq, yp, yq = (_vec(nm, c) for nm in ("xp", "xq", "yp", "yq"))  # x at positions p, q; x' at p', q'
    a, b = _vec("a", c), _vec("b", c)
    K = (lambda u, v: (u.T * v)[0] / c)
    term = (xp_.T * a)[0] * (xq.T * a)[0] / c  # tied keys and queries, one channel of the 1/(C n_key) sum
    p.equal(wick(term, list(a)), K(xp_, xq), "linear scaling: E[logit] == K(p, q) (each key channel)")
    var1 = wick(term**2, list(a)) - K(xp_, xq) ** 2
    p.equal(var1, K(xp_, xp_) * K(xq, xq) + K(xp_, xq) ** 2,
            "linear scaling: Var of one channel == K(p,p)K(q,q) + K(p,q)^2, so Var[logit] = that / n_key -> 0")
    z = (xp_.T * a)[0] * (xq.T * b)[0] / c  # independent queries a and keys b, one channel of the sum
    z2 = (yp.T * a)[0] * (yq.T * b)[0] / c
    p.equal(wick(z, list(a) + list(b)), 0, "1/sqrt scaling: E[logit] == 0")
    p.equal(wick(z * z2, list(a) + list(b)), K(xp_, yp) * K(xq, yq),
            "1/sqrt scaling: Cov(Z(p,q), Z'(p',q')) == K(p,p') K(q,q') (n_key channels / sqrt(n_key)^2)")
    return p


def prove_attention_values() -> Proof:
    p = Proof("attention_values", covers=())
    c, nv, npos = 2, 2, 2
    x = [_vec(f"x{q}_", c) for q in range(npos)]  # positions of x and x'
    y = [_vec(f"y{q}_", c) for q in range(npos)]
    g = sp.Matrix(npos, npos, sp.symbols("g1:5", real=True))  # weights of x and of x' (any values)
    h = sp.Matrix(npos, npos, sp.symbols("h1:5", real=True))
    wv = sp.Matrix(c, nv, sp.symbols("v1:5", real=True))
    wo = sp.Matrix(sp.symbols("o1:3", real=True))
    normals = list(wv) + list(wo)
    K = sp.Matrix(npos, npos, lambda q, r: (x[q].T * y[r])[0] / c)

    def out(wts: sp.Matrix, pts: list, pos: int) -> sp.Expr:
        return sum(wts[pos, q] * (pts[q].T * wv * wo)[0] for q in range(npos)) / sp.sqrt(nv * c)

    for pos, pos2 in ((0, 0), (0, 1)):
        f, f2 = out(g, x, pos), out(h, y, pos2)
        want = (g * K * h.T)[pos, pos2]
        p.equal(wick(f * f2, normals), want, f"E over W_V, W_O of f(p) f'(p') == (G K G'^T)[{pos},{pos2}]")
        grads = sum(sp.diff(f, w) * sp.diff(f2, w) for w in normals)
        p.equal(wick(grads, normals), 2 * want, f"their NTK terms == 2 (G K G'^T)[{pos},{pos2}]")
    return p


def prove_attention_identity_sqrt() -> Proof:
    """The general 1/sqrt-scaling map of kernelalg/layers/spatial/_attend.py -- the sum of the contributions
    (values, W_V and W_O, the logits through their covariance S12 and their NTK Theta_Z, with the mechanism's
    dual T, Tdot; abs and relu use it with their arc-cosine duals) -- with identity weights (T = S12, Tdot = 1)
    equals NT's closed form, for 2 positions and symbolic kernels."""
    p = Proof("attention_identity_sqrt", covers=())
    npos, qk = 2, sp.Symbol("qk", positive=True)
    mat = (lambda nm: sp.Matrix(npos, npos, sp.symbols(f"{nm}1:{npos * npos + 1}", real=True)))
    ki, ti, vk, vt = mat("Ki"), mat("Ti"), mat("V"), mat("VT")  # keys' kernel / NTK, values' kernel / NTK
    pairs = list(itertools.product(range(npos), repeat=2))
    dot = sum(ki[q, r] * vk[q, r] for q, r in pairs)
    cross = sum(ki[q, r] * vt[q, r] + ti[q, r] * vk[q, r] for q, r in pairs)
    for pp, pq in ((0, 0), (0, 1)):
        s12 = {(q, r): qk**2 * ki[pp, pq] * ki[q, r] for q, r in pairs}  # Cov of the logits; identity: T = S12
        nngp = sum(s12[q, r] * vk[q, r] for q, r in pairs)
        logit_ntk = {(q, r): qk**2 * (2 * ki[pp, pq] * ki[q, r] + ti[pp, pq] * ki[q, r] + ki[pp, pq] * ti[q, r])
                     for q, r in pairs}  # W_Q, W_K gradients and the inputs of queries and keys; Tdot = 1
        ntk = sum(s12[q, r] * (vt[q, r] + 2 * vk[q, r]) + logit_ntk[q, r] * vk[q, r] for q, r in pairs)
        p.equal(nngp, qk**2 * dot * ki[pp, pq], f"NNGP[{pp},{pq}] == QK^2 dot K_int (neural-tangents)")
        p.equal(ntk, qk**2 * (cross * ki[pp, pq] + dot * (ti[pp, pq] + 4 * ki[pp, pq])),
                f"NTK[{pp},{pq}] == QK^2 [(sum K_int V_T + sum Theta_int V) K_int + dot (Theta_int + 4 K_int)]")
    return p


PROOFS = {"layernorm": prove_layernorm, "dropout": prove_dropout, "attention_logits": prove_attention_logits,
          "attention_values": prove_attention_values, "attention_identity_sqrt": prove_attention_identity_sqrt}


def prove() -> list[Proof]:
    return [fn() for fn in PROOFS.values()]
