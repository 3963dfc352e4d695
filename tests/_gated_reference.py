"""Brute-force reference for the gated kernels (GRU, LSTM with input-driven gates), written from the model alone.

It shares no code and no recursion with kernelalg: the NNGP is the explicit double sum over write times,

    E[h_t h'_t' | xi] = sum_{k <= t, k' <= t'} w_{k,t}(xi) w'_{k',t'}(xi) E[src_k src'_k'],  w_{k,t} = G_k prod_{l=k+1..t} F_l

(GRU: F = 1 - z, G = z, src = phi(c); LSTM: F = f, G = 1, src = i phi(c), h = o s), averaged over the
memory-gate weights xi with a quadrature rule given by the caller; and the NTK is computed BACKWARD, as
sum_{parameter groups} sum_{s,s'} Gamma_group(s,s') C_group(s,s') with the gradient covariances Gamma
propagated from the readout under the gradient-independence assumption (Yang 2020), whereas the library
runs a forward recursion of tangent inner products. Sequences are unpadded (no masks); the readout is
"last" or "mean"; bidirectional = the mean of the reversed-time kernels. Duals: erf (Williams 1997) and the
erf gate g = (1 + erf)/2, written here.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf


def erf_dual(s11, s12, s22):
    """E[erf(u) erf(v)], E[erf'(u) erf'(v)] (Williams 1997)."""
    t = 2 / np.pi * np.arcsin(2 * s12 / np.sqrt((1 + 2 * s11) * (1 + 2 * s22)))
    return t, 4 / np.pi / np.sqrt((1 + 2 * s11) * (1 + 2 * s22) - 4 * s12**2)


def gate_dual(c11, c12, c22):
    """E[g(u) g(v)], E[g'(u) g'(v)] for g = (1 + erf)/2: 1/4 + E[erf erf]/4 and E[erf' erf']/4."""
    t, d = erf_dual(c11, c12, c22)
    return 0.25 + t / 4, d / 4


def g(a):
    return 0.5 * (1 + erf(a))


def g_grad(a):
    return np.exp(-a * a) / np.sqrt(np.pi)


class Pair:
    """Kernels of one cell between the unpadded sequences x (T, m) and y (T', m).

    hp: w, u, b, gu, gb (None: no gate bias), v (readout). rule: (nodes (J, d), weights (J,)) for xi.
    """

    def __init__(self, x, y, hp, lstm, reset, rule):
        self.seq, self.hp, self.lstm, self.reset = (x, y), hp, lstm, reset
        self.nodes, self.wq = rule
        self.memo = {}
        self.m = x.shape[1]
        self.gates = []
        for s in self.seq:
            a = hp["gu"] / np.sqrt(self.m) * self.nodes[:, :self.m] @ s.T
            if hp["gb"] is not None:
                a = a + hp["gb"] * self.nodes[:, self.m:self.m + 1]
            z = g(a)
            keep, write = (z, np.ones_like(z)) if lstm else (1 - z, z)
            self.gates.append((keep, write, g_grad(a)))  # each (J, T_i), column t-1 = time t

    # ---------------------------------------------------------------- forward (1-based times, 0 = h_0)
    def cached(self, key, fn):
        if key not in self.memo:
            self.memo[key] = fn()
        return self.memo[key]

    def kin(self, i, j, s, t):
        return self.seq[i][s - 1] @ self.seq[j][t - 1] / self.m

    def cg(self, i, j, s, t):
        gb2 = 0.0 if self.hp["gb"] is None else self.hp["gb"] ** 2
        return self.hp["gu"] ** 2 * self.kin(i, j, s, t) + gb2

    def gate_pair(self, i, j, s, t):
        return gate_dual(self.cg(i, i, s, s), self.cg(i, j, s, t), self.cg(j, j, t, t))

    def C(self, i, j, s, t):
        def f():
            h = self.hp
            r = self.gate_pair(i, j, s, t)[0] if (self.reset and not self.lstm) else 1.0
            return h["w"] ** 2 * r * self.Kh(i, j, s - 1, t - 1) + h["u"] ** 2 * self.kin(i, j, s, t) + h["b"] ** 2
        return self.cached(("C", i, j, s, t), f)

    def P(self, i, j, s, t):
        return erf_dual(self.C(i, i, s, s), self.C(i, j, s, t), self.C(j, j, t, t))

    def src(self, i, j, s, t):
        """E[src_s src'_t] (GRU: E[phi phi']; LSTM: E[i i'] E[phi phi'])."""
        p = self.P(i, j, s, t)[0]
        return self.gate_pair(i, j, s, t)[0] * p if self.lstm else p

    def wt(self, i, k, t):
        """w_{k,t}(xi) = G_k prod_{l=k+1..t} F_l, shape (J,)."""
        keep, write, _ = self.gates[i]
        return write[:, k - 1] * np.prod(keep[:, k:t], axis=1)

    def Kxi(self, i, j, t, tp):
        """E[state_t state'_t' | xi] (J,)."""
        if t == 0 or tp == 0:
            return np.zeros(len(self.wq))
        return self.cached(("Kxi", i, j, t, tp), lambda: sum(
            self.wt(i, k, t) * self.wt(j, kp, tp) * self.src(i, j, k, kp)
            for k in range(1, t + 1) for kp in range(1, tp + 1)))

    def Ks(self, i, j, t, tp):
        return self.wq @ self.Kxi(i, j, t, tp)

    def Kh(self, i, j, t, tp):
        if t == 0 or tp == 0:
            return 0.0
        out = self.gate_pair(i, j, t, tp)[0] if self.lstm else 1.0
        return out * self.Ks(i, j, t, tp)

    def Mxi(self, a, t):
        """GRU: E[h_a phi'_t | xi] (x-state, y-candidate)."""
        return sum(self.wt(0, k, a) * self.P(0, 1, k, t)[0] for k in range(1, a + 1)) if a else 0.0

    def Mxi_rev(self, s, b):
        """GRU: E[phi_s h'_b | xi]."""
        return sum(self.wt(1, k, b) * self.P(0, 1, s, k)[0] for k in range(1, b + 1)) if b else 0.0

    # ---------------------------------------------------------------- backward NTK of (x, y), readout ro
    def ntk(self, ro):
        h, (t1, t2) = self.hp, (len(self.seq[0]), len(self.seq[1]))
        iota = [np.where(np.arange(1, n + 1) == n, 1.0, 0.0) if ro == "last" else np.full(n, 1.0 / n)
                for n in (t1, t2)]
        gam = np.zeros((t1 + 2, t2 + 2))                      # Gamma(s, s') of the candidate pre-activation
        lam = {}                                              # E[delta state_s delta state'_s' | xi]

        def b(i, s, u):
            return np.prod(self.gates[i][0][:, s:u], axis=1)   # prod_{k=s+1..u} F_k

        def dh(u, up):                                        # E[delta h_u delta h'_u'] (before the cell's gates)
            e = h["v"] ** 2 * iota[0][u - 1] * iota[1][up - 1] + h["w"] ** 2 * gam[u + 1, up + 1] * (
                self.gate_pair(0, 1, u + 1, up + 1)[0] if (self.reset and not self.lstm and u < t1 and up < t2)
                else 1.0)
            return e * self.gate_pair(0, 1, u, up)[0] if self.lstm else e

        for s in range(t1, 0, -1):
            for sp in range(t2, 0, -1):
                lam[s, sp] = sum(b(0, s, u) * b(1, sp, up) * dh(u, up)
                                 for u in range(s, t1 + 1) for up in range(sp, t2 + 1))
                write = 1.0 if self.lstm else self.gates[0][1][:, s - 1] * self.gates[1][1][:, sp - 1]
                gd = self.gate_pair(0, 1, s, sp)[0] if self.lstm else 1.0
                gam[s, sp] = (self.wq @ (lam[s, sp] * write)) * gd * self.P(0, 1, s, sp)[1]
        total = 0.0
        for s in range(1, t1 + 1):
            for sp in range(1, t2 + 1):
                cg, (gdt, gdd) = self.cg(0, 1, s, sp), self.gate_pair(0, 1, s, sp)
                d1, d2 = self.gates[0][2][:, s - 1], self.gates[1][2][:, sp - 1]
                total += gam[s, sp] * self.C(0, 1, s, sp)
                if self.lstm:
                    p = self.P(0, 1, s, sp)[0]
                    e_dh = h["v"] ** 2 * iota[0][s - 1] * iota[1][sp - 1] + h["w"] ** 2 * gam[s + 1, sp + 1]
                    total += cg * (self.wq @ (lam[s, sp] * self.Kxi(0, 1, s - 1, sp - 1) * d1 * d2)   # forget
                                   + (self.wq @ lam[s, sp]) * p * gdd                                 # input
                                   + e_dh * self.Ks(0, 1, s, sp) * gdd)                                # output
                else:
                    e = (self.P(0, 1, s, sp)[0] - self.Mxi(s - 1, sp) - self.Mxi_rev(s, sp - 1)
                         + self.Kxi(0, 1, s - 1, sp - 1))
                    total += cg * (self.wq @ (lam[s, sp] * d1 * d2 * e))                             # update
                    if self.reset:
                        total += cg * self.Kh(0, 1, s - 1, sp - 1) * h["w"] ** 2 * gam[s, sp] * gdd  # reset
        return h["v"] ** 2 * self.readout_k(ro) + total

    def readout_k(self, ro):
        t1, t2 = len(self.seq[0]), len(self.seq[1])
        if ro == "last":
            return self.Kh(0, 1, t1, t2)
        return np.mean([[self.Kh(0, 1, s, sp) for sp in range(1, t2 + 1)] for s in range(1, t1 + 1)])


def reference(seqs, hp, lstm, reset, rule, readout, bidirectional=False):
    """(NNGP, NTK) matrices of cell >> Dense(v) over all pairs of the unpadded sequences."""
    n = len(seqs)
    out = np.zeros((2, n, n))
    for i in range(n):
        for j in range(n):
            dirs = [(seqs[i], seqs[j])] + ([(seqs[i][::-1], seqs[j][::-1])] if bidirectional else [])
            vals = []
            for x, y in dirs:
                p = Pair(x, y, hp, lstm, reset, rule)
                vals.append((hp["v"] ** 2 * p.readout_k(readout), p.ntk(readout)))
            out[:, i, j] = np.mean(vals, axis=0)
    return out
