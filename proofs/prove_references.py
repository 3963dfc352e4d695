"""theory.md's reference numbers that involve more than one dual, reproduced from the library's kernels.

* Deep ReLU (Dense recursion, NTK parametrisation, W^2 = 2, b = 0, |x|^2/d = |x'|^2/d = 1, rho = 0.5):
  L = 2, 3, 5 Dense layers (ReLU between): NNGP 1.217996 / 1.367811 / 1.557790, NTK 1.884662 / 2.702959
  / 4.214225 -- from ``ka.symbolic`` (exact: W_std kept symbolic and set to sqrt(2)).
* Theta^L(x, x) = L W^2 |x|^2/d for that network (W^2 = 2), as a symbolic identity in q = |x|^2/d.
* Early-time constants (Hu et al. 2020), g ~ N(0, 1): ReLU zeta = E[phi'(g)] = 1/2; erf
  zeta = E[erf'(g)] = 2/sqrt(3 pi), E[erf''(g)] = 0.
* Spectrum on S^2 (theory.md): mu_0..mu_4 of kappa(t) = 2 T_relu(1, t, 1) = 3/8, 1/6, 3/128, 0, 1/1536.
* Recurrent step: ``ka.recurrent_step_map`` is theory.md's Elman step and equals the Dense step on the
  concatenated input [h_(t-1); x_t].
* Dense recursion identity: the library's Dense map equals theory.md's recursion
  K(l+1) = W^2 T(K l) + b^2, Theta(l+1) = K(l+1) + W^2 Tdot(K l) Theta(l) for a generic activation dual.
"""

from __future__ import annotations

import sympy as sp

import kernelalg as ka
from kernelalg.core import _duals

from ._common import X, Proof, expect1d

DEEP_RELU = {2: ("1.217996", "1.884662"), 3: ("1.367811", "2.702959"), 5: ("1.557790", "4.214225")}


def _deep_relu(depth: int, b_std: float | None = None) -> ka.Layer:
    net = ka.Dense(1.0, b_std)
    for _ in range(depth - 1):
        net = net >> ka.Relu() >> ka.Dense(1.0, b_std)
    return net


def _exact(sym: ka.SymbolicKernel, expr: sp.Expr, w: sp.Expr, b: sp.Expr = sp.Integer(0)) -> sp.Expr:
    vals = {s: (w if s.name.startswith("sigma_w") else b) for s in sym.params}
    return expr.subs(vals)


def prove_deep_relu() -> Proof:
    p = Proof("deep_relu_references", covers=())
    inputs = {ka.Q1: 1, ka.Q2: 1, ka.C: sp.Rational(1, 2)}
    for depth, (nngp, ntk) in DEEP_RELU.items():
        sym = ka.symbolic(_deep_relu(depth), keep_symbols=True)
        p.close_to(_exact(sym, sym.nngp, sp.sqrt(2)).subs(inputs), nngp, f"theory.md deep ReLU L={depth} NNGP")
        p.close_to(_exact(sym, sym.ntk, sp.sqrt(2)).subs(inputs), ntk, f"theory.md deep ReLU L={depth} NTK")
        q = sp.Symbol("q", positive=True)
        diag = _exact(sym, sym.ntk, sp.sqrt(2)).subs({ka.Q1: q, ka.Q2: q, ka.C: q})
        p.equal(diag, depth * 2 * q, f"L={depth}: Theta(x, x) == L W^2 |x|^2/d (W^2 = 2, any q)")
    return p


def prove_dense_recursion() -> Proof:
    """ka.symbolic(Dense >> phi >> Dense) equals theory.md's recursion with the dual of phi."""
    p = Proof("dense_recursion", covers=())
    w1, b1, w2, b2 = sp.symbols("w1 b1 w2 b2", positive=True)
    for layer, dual in ((ka.Erf(), lambda s11, s12, s22: _duals.erf(s11, s12, s22, 1, 1, 0)),
                        (ka.Relu(), _duals.relu)):
        sym = ka.symbolic(ka.Dense(1.0, 0.5) >> layer >> ka.Dense(1.0, 0.5), keep_symbols=True)
        ws = sorted((s for s in sym.params if s.name.startswith("sigma_w")), key=lambda s: s.name)
        bs = sorted((s for s in sym.params if s.name.startswith("sigma_b")), key=lambda s: s.name)
        rep = dict(zip(ws, (w1, w2))) | dict(zip(bs, (b1, b2)))
        rep |= {s: sp.Integer(1) for s in sym.params if s not in rep}  # activation parameters a=b=1
        rep |= {s: sp.Integer(0) for s in sym.params if s.name.startswith("c_")}
        k1 = {n: w1**2 * v + b1**2 for n, v in (("q1", ka.Q1), ("q2", ka.Q2), ("c", ka.C))}
        d = dual(k1["q1"], k1["c"], k1["q2"])
        k2 = w2**2 * d.T + b2**2
        th2 = k2 + w2**2 * d.Tdot * k1["c"]  # Theta1 = K1
        p.equal(sym.nngp.subs(rep), k2, f"{layer.name}: NNGP == W2^2 T(K1) + b2^2")
        p.equal(sym.ntk.subs(rep), th2, f"{layer.name}: NTK == K2 + W2^2 Tdot(K1) Theta1")
    return p


def prove_early_time() -> Proof:
    p = Proof("early_time_constants", covers=())
    p.equal(expect1d(sp.Heaviside(X), X, 1, split=True), sp.Rational(1, 2), "ReLU zeta = E[phi'(g)] = 1/2")
    p.equal(expect1d(sp.diff(sp.erf(X), X), X, 1), 2 / sp.sqrt(3 * sp.pi), "erf zeta = 2/sqrt(3 pi)")
    p.equal(expect1d(sp.diff(sp.erf(X), X, 2), X, 1), 0, "erf E[phi''(g)] = 0")
    return p


def prove_recurrent_step() -> Proof:
    """``ka.recurrent_step_map`` is theory.md's Elman step with the proven dual, and that step is the Dense
    step (W_std = 1, bias b) applied to the concatenated input [h_(t-1); x_t], whose kernel is
    W^2 K_prev + U^2 K_in and whose NTK is W^2 D_prev Theta_prev + U^2 Theta_in."""
    from kernelalg.layers._dense import Dense
    from kernelalg.core._program import Builder, KernelState

    p = Proof("recurrent_step", covers=())
    for layer, dual in ((ka.Erf(), _duals.erf), (ka.Relu(), _duals.relu)):
        m = ka.recurrent_step_map(ka.Recurrent(layer, 1.0, 1.0, 0.1))
        sym = {s.name: s for e in m.values() for s in e.free_symbols}
        w, u, b = sym["sigma_w_1"], sym["sigma_u_1"], sym["sigma_b_1"]
        act = [sym[n] for n in ("a_1", "b_1", "c_1") if n in sym]
        s_ = w**2 * sym["K_prev"] + u**2 * sym["K_in"] + b**2
        d = dual(sym["S_11"], s_, sym["S_22"], *act)
        name = layer.name
        p.equal(m["S"], s_, f"{name}: S == W^2 K_prev + U^2 K_in + b^2")
        p.equal(m["K"], d.T, f"{name}: K == T(S_11, S, S_22)")
        p.equal(m["D"], d.Tdot, f"{name}: D == Tdot(S_11, S, S_22)")
        th = s_ + w**2 * sym["D_prev"] * sym["Theta_prev"] + u**2 * sym["Theta_in"]
        p.equal(m["Theta"], th, f"{name}: Theta == S + W^2 D_prev Theta_prev + U^2 Theta_in")
        sd = w**2 * sym["Kdiag_prev"] + u**2 * sym["Kdiag_in"] + b**2
        p.equal(m["S_diag"], sd, f"{name}: S_diag == W^2 Kdiag_prev + U^2 Kdiag_in + b^2")
        p.equal(m["K_diag"], dual(sd, sd, sd, *act).Tdiag, f"{name}: K_diag == Tdiag(S_diag)")
        dense = Dense(1.0, 0.1)
        kc = w**2 * sym["K_prev"] + u**2 * sym["K_in"]
        tc = w**2 * sym["D_prev"] * sym["Theta_prev"] + u**2 * sym["Theta_in"]
        out = dense.kernel(Builder(), KernelState(kc, kc, kc, tc), {"W_std": sp.Integer(1), "b_std": b}, dict(dense.static))
        p.equal(out.nngp, m["S"], f"{name}: S == Dense step of the concatenated input's kernel")
        p.equal(out.ntk, m["Theta"], f"{name}: Theta == Dense step of the concatenated input's NTK")
    return p


SPECTRUM_D3 = {0: sp.Rational(3, 8), 1: sp.Rational(1, 6), 2: sp.Rational(3, 128), 3: sp.Integer(0),
               4: sp.Rational(1, 1536)}


def prove_spectrum_d3() -> Proof:
    """theory.md: on S^2 (d = 3) kappa(t) = (sqrt(1 - t^2) + (pi - arccos t) t)/pi -- twice the library's ReLU
    T at unit variances -- has mu_k = c_3 int kappa(t) P_k(t) dt (c_3 = 1/2, P_k Legendre) equal to
    3/8, 1/6, 3/128, 0, 1/1536 for k = 0..4 (odd k >= 3 vanish). Integrated over theta with t = cos theta."""
    p = Proof("spectrum_d3", covers=())
    t = sp.Symbol("t", real=True)
    th = sp.Symbol("theta", positive=True)
    kappa = (sp.sqrt(1 - t**2) + (sp.pi - sp.acos(t)) * t) / sp.pi
    p.equal(kappa, 2 * _duals.relu(1, t, 1).T, "kappa(t) == 2 T_relu(1, t, 1)")
    c3 = sp.gamma(sp.Rational(3, 2)) / (sp.sqrt(sp.pi) * sp.gamma(1))
    p.equal(c3, sp.Rational(1, 2), "c_3 = Gamma(3/2)/(sqrt(pi) Gamma(1)) = 1/2")
    k_theta = (sp.sin(th) + (sp.pi - th) * sp.cos(th)) / sp.pi  # kappa(cos theta), 0 < theta < pi
    for k, mu in SPECTRUM_D3.items():
        f = sp.expand(sp.expand_trig(k_theta * sp.legendre(k, sp.cos(th)) * sp.sin(th)))
        p.equal(c3 * sp.integrate(f, (th, 0, sp.pi)), mu, f"theory.md d = 3 ReLU kappa: mu_{k} == {mu}")
    return p


PROOFS = {"deep_relu": prove_deep_relu, "spectrum_d3": prove_spectrum_d3, "dense_recursion": prove_dense_recursion, "early_time": prove_early_time,
          "recurrent_step": prove_recurrent_step}


def prove() -> list[Proof]:
    return [fn() for fn in PROOFS.values()]
