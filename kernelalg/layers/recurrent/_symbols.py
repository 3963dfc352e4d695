"""Symbols of the recurrent time step (one step of the time-pair recursion, see :mod:`._recurrent`)."""

from __future__ import annotations

import sympy as sp

# Step-map symbols (per time pair). "prev" = (t-1, t'-1); "in" = the layer input at (t, t').
K_PREV, D_PREV, TH_PREV = sp.symbols("K_prev D_prev Theta_prev", real=True)
K_IN, TH_IN = sp.symbols("K_in Theta_in", real=True)
S1, S2 = sp.symbols("S_11 S_22", positive=True)  # S(t, t) of x and S(t', t') of x'
KD_PREV, KD_IN = sp.symbols("Kdiag_prev Kdiag_in", nonnegative=True)
