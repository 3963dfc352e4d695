"""Gated recurrent layers (GRU, LSTM) whose infinite-width kernels are exact time-pair recursions.

Model (NTK parametrization, hidden width n, input width m, h_0 = s_0 = 0, weights shared over time, the erf
gate g(a) = (1 + erf(a))/2, gate pre-activations ``a_t = (gate_U_std/sqrt(m)) U_g x_t + gate_b_std b_g
[+ (gate_W_std/sqrt(n)) W_g h_{t-1}]``, one independent (U_g, b_g, W_g) per gate):

    GRU:  c_t = (W_std/sqrt(n)) W (r_t * h_{t-1}) + (U_std/sqrt(m)) U x_t + b_std b,
          h_t = (1 - z_t) * h_{t-1} + z_t * phi(c_t)                           (Cho et al. 2014)
    LSTM: c_t = (W_std/sqrt(n)) W h_{t-1} + (U_std/sqrt(m)) U x_t + b_std b,
          s_t = f_t * s_{t-1} + i_t * phi(c_t),   h_t = o_t * s_t             (Greff et al. 2017, NOAF)

With ``gate_W_std = 0`` (the default: gates read the input, as in minGRU, Griffin's RG-LRU or Mamba's
selection) the infinite-width NNGP and NTK are exact time-pair recursions (derived in docs/recurrent.md,
"Gated cells"): the memory gate of a unit is a function of that unit's d = m (+1) gate weights, which are
integrated by a product trapezoid rule (``quadrature`` points per dimension; its error is measured by
:func:`gate_quadrature_error`), the other gates and the candidate enter through closed-form duals. With
``gate_W_std > 0`` (the textbook cells) the kernel is an expectation over the joint law of whole gate paths,
of dimension growing with t + t' -- no time-pair recursion; the finite-width twin exists (use
``ka.monte_carlo``) but ``ka.kernel`` refuses with that reason. The LSTM's tanh on s_t has the same
obstruction, which is why h_t = o_t * s_t here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.backends import lower_program
from kernelalg.backends._compile import kernel as exact_kernel
from kernelalg.core import _duals
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, as_layer, check_std
from kernelalg.core._program import Assign, Builder, KernelState
from kernelalg.layers.recurrent._gated_scan import gate, gated_op, gate_rule
from kernelalg.layers.recurrent._scan import _HI, _take, reverse_index
from kernelalg.layers.recurrent._sequences import SEQUENCE_LAYOUT, Sequences, SequenceState
from kernelalg.layers.recurrent._symbols import K_IN, K_PREV, KD_IN, KD_PREV, S1, S2, TH_PREV

_READOUTS = ("last", "mean", "sequence")
#: Per-sample input statistics |x_t|^2/m and |x'_t'|^2/m of a time pair (the gate pre-activation variances).
Q11, Q22 = sp.symbols("Qin_11 Qin_22", nonnegative=True)
_LOCALS = {K_PREV, TH_PREV, K_IN, Q11, Q22, S1, S2, KD_PREV, KD_IN}
#: Largest quadrature rule (nodes = quadrature ** d) accepted; the cost grows linearly with it.
MAX_NODES = 20000

NEEDS_RAW = (
    "{layer} must read the raw input sequences (its gates are functions of the input x_t), but it follows {after}. "
    "Fix: put {layer} first; stack other layers after {layer}(..., readout='sequence')."
)
RECURRENT_GATES = (
    "{layer}(gate_W_std={gw}): gates that read h_(t-1) make the infinite-width kernel an expectation over the "
    "joint Gaussian law of whole gate paths (dimension growing with t + t'), not a time-pair recursion "
    "(docs/recurrent.md, 'Gated cells'). Fix: gate_W_std=0 (gates read the input: exact kernel), or estimate this "
    "network's kernel at finite width with ka.monte_carlo(net, x, width=...)."
)
TOO_MANY_NODES = (
    "{layer}: the quadrature over one unit's memory-gate weights has {q}^{d} = {j} nodes (d = {d}: the input "
    "features plus the gate bias), more than {cap}. Fix: a smaller quadrature= (check the error with "
    "ka.gate_quadrature_error), fewer input features, or gate_b_std=None."
)
BAD_ACTIVATION = "{layer}: activation must be an activation layer such as ka.Erf(), got {got!r}. Fix: e.g. ka.Erf()."


def _gate_dual(c11: sp.Expr, c12: sp.Expr, c22: sp.Expr) -> _duals.Dual:
    """E[g(u) g(v)], E[g'(u) g'(v)] of the erf gate g = erf/2 + 1/2 (the proven erf dual with a = c = 1/2, b = 1)."""
    half = sp.Rational(1, 2)
    return _duals.erf(c11, c12, c22, half, sp.Integer(1), half)


def step_maps(builder: Builder, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> dict[str, list[sp.Expr]]:
    """The elementwise maps of one time pair, as sympy in the step symbols.

    Returns:
        {"pair": [P, Ddot, Theta_c, C_g, I, Idot]} (cross grid: phi's dual at the candidate covariance C, the
        candidate's NTK, the gate covariance, the LSTM input/output gate duals or 0),
        {"pair_k": [P] or [P, I]} (own grids, NNGP only), {"diag": [C(t, t)]} and {"scales": [gate stds]}.
    """
    act: Layer = static["activation"]
    lstm = static["cell"] == "LSTM"
    w2, u2 = p["W_std"] ** 2, p["U_std"] ** 2
    b2 = p["b_std"] ** 2 if "b_std" in p else sp.Integer(0)
    gu2, gb2 = p["gate_U_std"] ** 2, (p["gate_b_std"] ** 2 if "gate_b_std" in p else sp.Integer(0))
    cg, cg11, cg22, cgd = gu2 * K_IN + gb2, gu2 * Q11 + gb2, gu2 * Q22 + gb2, gu2 * KD_IN + gb2
    gd = _gate_dual(cg11, cg, cg22)
    if lstm or not static["reset"]:
        reset, reset_dot, reset_diag = sp.Integer(1), sp.Integer(0), sp.Integer(1)
    else:
        reset, reset_dot, reset_diag = gd.T, gd.Tdot, _gate_dual(cgd, cgd, cgd).Tdiag
    c = w2 * reset * K_PREV + u2 * K_IN + b2
    inner = KernelState(S1, S2, c, sp.Integer(1), gaussian=True, width=None, after=static["cell"])
    out = act.kernel(builder, inner, {k: p[k] for k, _ in act.params}, dict(act.static))
    theta_c = c + w2 * (reset * TH_PREV + reset_dot * cg * K_PREV)
    gates = [gd.T, gd.Tdot] if lstm else [sp.Integer(0), sp.Integer(0)]
    return {"pair": [out.nngp, out.ntk, theta_c, cg] + gates, "pair_k": [out.nngp] + gates[:1 if lstm else 0],
            "diag": [w2 * reset_diag * KD_PREV + u2 * KD_IN + b2],
            "scales": [p["gate_U_std"], p.get("gate_b_std", sp.Integer(0))]}


_NAMES = {"KP": K_PREV, "TP": TH_PREV, "KIN": K_IN, "Q11": Q11, "Q22": Q22, "S11": S1, "S22": S2, "KD": KD_PREV,
          "QD": KD_IN}


def _lower(exprs: list[sp.Expr]) -> Callable[..., list]:
    """CSE + lower once (JAX); returns (env of hyperparameters, **named step arrays) -> [arrays]."""
    reps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("gated_"), optimizations=None)
    fn = lower_program([Assign(s, e) for s, e in reps], reduced)
    return lambda env, **kw: fn({**env, **{_NAMES[k]: v for k, v in kw.items()}})


def _rule(layer: str, order: int, bias: bool) -> Callable[[int], tuple]:
    def rule(m: int) -> tuple:
        d = m + int(bias)
        if order**d > MAX_NODES:
            raise E.InputError(TOO_MANY_NODES.format(layer=layer, q=order, d=d, j=order**d, cap=MAX_NODES))
        return gate_rule(d, order)
    return rule


def _gated_kernel(builder: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    name = static["cell"]
    seq = st.layout
    if not (isinstance(seq, SequenceState) and seq.current(st) and seq.raw is not None):
        raise E.LayerOrderError(NEEDS_RAW.format(layer=name, after=st.after))
    if static["gate_W_std"] > 0:
        raise E.KernelalgError(RECURRENT_GATES.format(layer=name, gw=static["gate_W_std"]))
    maps = step_maps(builder, p, static)
    extra = sorted(set().union(*(e.free_symbols for v in maps.values() for e in v)) - _LOCALS, key=str)
    run = {k: _lower(maps[k]) for k in ("pair", "pair_k", "diag")}
    scales = _lower(maps["scales"])
    fn, out_names = gated_op(run, _rule(name, static["quadrature"], "gate_b_std" in p), name == "LSTM",
                             static["readout"], static["bidirectional"], lambda env: tuple(scales(env)), extra)
    sources = [seq.raw[0], seq.raw[1], seq.mask1, seq.mask2] + extra
    label = f"{name}_{static['readout']}" + ("_bidirectional" if static["bidirectional"] else "")
    outs = dict(zip(out_names, builder.emit(label, {"jax": fn}, sources, len(out_names), stem="g")))
    width = static["out_dim"] * (2 if static["bidirectional"] else 1) if static["out_dim"] else None
    key = (outs["cov1"], outs["cov2"], outs["nngp"], outs["ntk"])
    if static["readout"] != "sequence":
        return KernelState(*key, gaussian=False, width=width, after=name, layout="dense")
    layout = SequenceState(seq.mask1, seq.mask2, outs["self1"], outs["self2"], key=key)
    return KernelState(*key, gaussian=False, width=width, after=name, layout=layout)


# ------------------------------------------------------------------------------------------ finite-width twin


def _gate_names(static: Mapping[str, Any]) -> tuple[str, ...]:
    if static["cell"] == "LSTM":
        return ("f", "i", "o")
    return ("z", "r") if static["reset"] else ("z",)


def _gated_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    """Finite-width twin: the gated RNN itself (inputs: (N, T, m) arrays or :class:`Sequences`)."""
    m, n = in_shape[-1], static["out_dim"] or width
    act: Layer = static["activation"]
    _, phi_apply, _ = act.finite({k: p[k] for k, _ in act.params}, dict(act.static), (n,), n)
    gates, gw = _gate_names(static), static["gate_W_std"]
    dirs = ("fwd", "bwd") if static["bidirectional"] else ("fwd",)
    has_b, has_gb = "b_std" in p, "gate_b_std" in p

    def init(key: jax.Array) -> dict:
        params = {}
        for d, k in zip(dirs, jax.random.split(key, len(dirs))):
            ks = iter(jax.random.split(k, 3 + 3 * len(gates)))
            pr = {"W": jax.random.normal(next(ks), (n, n)), "U": jax.random.normal(next(ks), (m, n))}
            if has_b:
                pr["b"] = jax.random.normal(next(ks), (n,))
            for g in gates:
                pr[g] = {"U": jax.random.normal(next(ks), (m, n))}
                if has_gb:
                    pr[g]["b"] = jax.random.normal(next(ks), (n,))
                if gw > 0:
                    pr[g]["W"] = jax.random.normal(next(ks), (n, n))
            params[d] = pr
        return params

    sw, su, sb = p["W_std"] / math.sqrt(n), p["U_std"] / math.sqrt(m), p.get("b_std", 0.0)
    gu, gb, gwn = p["gate_U_std"] / math.sqrt(m), p.get("gate_b_std", 0.0), gw / math.sqrt(n)

    def step(pr: dict, carry: tuple, x_t: jax.Array) -> tuple:
        h, s = carry
        mm = lambda a, b: jnp.matmul(a, b.astype(a.dtype), precision=_HI)  # noqa: E731
        pre = {g: gu * mm(x_t, pr[g]["U"]) + (gb * pr[g]["b"] if has_gb else 0.0)
               + (gwn * mm(h, pr[g]["W"]) if gw > 0 else 0.0) for g in gates}
        gv = {g: gate(v) for g, v in pre.items()}
        inp = su * mm(x_t, pr["U"]) + (sb * pr["b"] if has_b else 0.0)
        if static["cell"] == "LSTM":
            s = gv["f"] * s + gv["i"] * phi_apply({}, sw * mm(h, pr["W"]) + inp)
            return gv["o"] * s, s
        c = sw * mm(gv.get("r", 1.0) * h, pr["W"]) + inp
        return (1.0 - gv["z"]) * h + gv["z"] * phi_apply({}, c), s

    def apply(params: dict, x: Any) -> Any:
        return _run(params, x, step, n, static["readout"], dirs)

    out_width = n * len(dirs)
    return init, apply, ((in_shape[-2], out_width) if static["readout"] == "sequence" else (out_width,))


def _run(params: dict, x: Any, step: Callable, n: int, readout: str, dirs: tuple) -> Any:
    """Run the cell over front-padded sequences (state 0 on padding) in each direction; apply the readout."""
    if isinstance(x, Sequences):
        xa, mask = jnp.asarray(x.x), jnp.asarray(x.mask, dtype=jnp.asarray(x.x).dtype)
    else:
        xa = jnp.asarray(x)
        mask = jnp.ones(xa.shape[:2], xa.dtype)
    idx = reverse_index(mask) if "bwd" in dirs else None
    outs = []
    for d in dirs:
        def body(carry: tuple, inp: tuple, pr: dict = params[d]) -> tuple:
            x_t, m_t = inp
            new = step(pr, carry, x_t)
            h, s = (jnp.where(m_t[:, None] > 0, v, 0).astype(xa.dtype) for v in new)
            return (h, s), h
        zero = jnp.zeros((xa.shape[0], n), xa.dtype)
        xin = _take(xa, idx, 1) if d == "bwd" else xa
        _, hs = jax.lax.scan(body, (zero, zero), (jnp.swapaxes(xin, 0, 1), mask.T))
        hs = jnp.swapaxes(hs, 0, 1)
        if readout == "last":
            outs.append(hs[:, -1])
        elif readout == "mean":
            outs.append(hs.sum(1) / mask.sum(1)[:, None])
        else:
            outs.append(_take(hs, idx, 1) if d == "bwd" else hs)
    out = jnp.concatenate(outs, axis=-1)
    return Sequences._raw(out, mask) if (readout == "sequence" and isinstance(x, Sequences)) else out


# ------------------------------------------------------------------------------------------ constructors


def _make(cell: str, activation: Layer, W_std: float, U_std: float, b_std: float | None, gate_U_std: float,
          gate_b_std: float | None, readout: str, bidirectional: bool, gate_W_std: float, quadrature: int,
          out_dim: int | None, reset: bool = True) -> Layer:
    act = as_layer(activation) if isinstance(activation, Layer) else None
    if act is None or act.role != "activation" or act.kernel is None:
        raise E.KernelalgError(BAD_ACTIVATION.format(layer=cell, got=activation))
    if readout not in _READOUTS:
        raise E.KernelalgError(f"{cell}: readout must be one of {_READOUTS}, got {readout!r}. Fix: e.g. readout='last'.")
    for name, v, low in (("out_dim", out_dim, 1), ("quadrature", quadrature, 1)):
        if v is not None and (isinstance(v, bool) or int(v) != v or v < low):
            raise E.KernelalgError(f"{cell}: {name} must be a positive integer, got {v!r}. Fix: e.g. {name}=16.")
    params: tuple[tuple[str, Any], ...] = tuple(
        (k, check_std(cell, k, v)) for k, v in (("W_std", W_std), ("U_std", U_std), ("b_std", b_std),
                                                ("gate_U_std", gate_U_std), ("gate_b_std", gate_b_std))
        if v is not None)
    clash = {k for k, _ in act.params} & {k for k, _ in params}
    if clash:
        raise E.KernelalgError(f"{cell}: activation parameter names {sorted(clash)} clash with the layer's.")
    static = (("activation", act), ("cell", cell), ("readout", readout), ("bidirectional", bool(bidirectional)),
              ("reset", bool(reset)), ("gate_W_std", check_std(cell, "gate_W_std", gate_W_std)),
              ("quadrature", int(quadrature)), ("out_dim", None if out_dim is None else int(out_dim)))
    route = (f"{cell} memory gate", f"product trapezoid rule, {int(quadrature)} points per gate weight")
    return Layer(cell, _gated_kernel, params + act.params, static, _gated_finite,
                 positive=frozenset(k for k, _ in params) | act.positive, input_layout=SEQUENCE_LAYOUT,
                 role="recurrent", width_arg="out_dim", asymmetric=act.asymmetric, routes=act.routes + (route,))


def GRU(activation: Layer, W_std: float = 1.0, U_std: float = 1.0, b_std: float | None = None,
        gate_U_std: float = 1.0, gate_b_std: float | None = None, readout: str = "last", bidirectional: bool = False,
        reset: bool = True, gate_W_std: float = 0.0, quadrature: int = 65, *, out_dim: int | None = None) -> Layer:
    """Gated recurrent unit; with ``gate_W_std = 0`` (default) its gates read the input and its kernel is exact.

    ``z_t = g(a^z_t)``, ``r_t = g(a^r_t)``, ``c_t = (W_std/sqrt(n)) W (r_t * h_(t-1)) + (U_std/sqrt(m)) U x_t +
    b_std b``, ``h_t = (1 - z_t) * h_(t-1) + z_t * phi(c_t)``, h_0 = 0, with the erf gate g(a) = (1 + erf(a))/2 and
    gate pre-activations ``a_t = (gate_U_std/sqrt(m)) U_g x_t + gate_b_std b_g + (gate_W_std/sqrt(n)) W_g h_(t-1)``
    (independent weights per gate, NTK parametrization). Same inputs (arrays or :class:`kernelalg.Sequences`),
    readouts and ``bidirectional`` as :func:`kernelalg.Recurrent`; it must read the raw input (stack other layers
    after ``readout="sequence"``).

    Args:
        activation: Candidate nonlinearity phi, e.g. ``ka.Erf()`` (tanh-like), ``ka.Relu()``.
        W_std, U_std, b_std: Candidate weights (h -> c, x -> c) and bias (None: no bias).
        gate_U_std, gate_b_std: Gate input weights and bias of every gate (None: no gate bias).
        readout: "last", "mean" or "sequence".
        bidirectional: Also run a second GRU on each sequence reversed in time (kernels average).
        reset: Include the reset gate r (False: c_t reads h_(t-1) directly).
        gate_W_std: Gate recurrent weights. 0: exact kernel. > 0: the textbook GRU, whose kernel is not a time-pair
            recursion; its finite twin works (``ka.monte_carlo``), ``ka.kernel`` raises with the reason.
        quadrature: Points per dimension of the trapezoid rule over one unit's update-gate weights (d = m
            dimensions, m + 1 with a gate bias; the cost is linear in quadrature ** d). Its error depends on the
            data (it falls exponentially once the spacing 14/(quadrature - 1) is below about 1 / (gate_U_std
            max|x_t| / sqrt(m))); check it with :func:`kernelalg.gate_quadrature_error`.
        out_dim: Hidden width n of the finite-width twin.

    Returns:
        The layer (hyperparameters ``sigma_w``, ``sigma_u``, ``sigma_b``, ``sigma_gu``, ``sigma_gb`` + index).

    Raises:
        KernelalgError: a non-activation ``activation``, an unknown ``readout``, bad stds or integers; at kernel
            time, ``gate_W_std > 0``, a GRU that does not read the raw input, or a quadrature rule too large.

    Example:
        >>> net = ka.GRU(ka.Erf(), 1.0, 1.0, 0.1, gate_U_std=1.0, gate_b_std=0.5, readout="mean") >> ka.Dense()  # doctest: +SKIP
        >>> ka.kernel(net, ka.Sequences.from_list([np.ones((3, 1)), np.ones((5, 1))])).ntk  # doctest: +SKIP

    References:
        Cho et al. (2014), Learning phrase representations using RNN encoder-decoder, EMNLP (the GRU);
        Yang (2019, 2020), Tensor Programs I, II (existence of the limit, gradient independence);
        Feng et al. (2024), Were RNNs all we needed? (minGRU: gates that read the input); docs/recurrent.md.
    """
    return _make("GRU", activation, W_std, U_std, b_std, gate_U_std, gate_b_std, readout, bidirectional,
                 gate_W_std, quadrature, out_dim, reset)


def LSTM(activation: Layer, W_std: float = 1.0, U_std: float = 1.0, b_std: float | None = None,
         gate_U_std: float = 1.0, gate_b_std: float | None = None, readout: str = "last", bidirectional: bool = False,
         gate_W_std: float = 0.0, quadrature: int = 65, *, out_dim: int | None = None) -> Layer:
    """LSTM without output nonlinearity (h = o * s); with ``gate_W_std = 0`` (default) its kernel is exact.

    ``c_t = (W_std/sqrt(n)) W h_(t-1) + (U_std/sqrt(m)) U x_t + b_std b``, ``s_t = f_t * s_(t-1) + i_t * phi(c_t)``,
    ``h_t = o_t * s_t``, h_0 = s_0 = 0; forget, input and output gates g(a_t) as in :func:`GRU`. The tanh of
    the textbook LSTM (h = o * tanh(s)) is left out: s_t is not Gaussian, and E[tanh(s_t) tanh(s'_t')] needs
    the law of whole paths (docs/recurrent.md); this is the "no output activation" variant of Greff et al.

    Args:
        activation: Cell-input nonlinearity phi, e.g. ``ka.Erf()``.
        W_std, U_std, b_std: Cell-input weights and bias (None: no bias).
        gate_U_std, gate_b_std: Gate input weights and bias of every gate (None: no gate bias).
        readout: "last", "mean" or "sequence".
        bidirectional: Also run a second LSTM on each sequence reversed in time (kernels average).
        gate_W_std: Gate recurrent weights (0: exact kernel; > 0: finite twin only, as for :func:`GRU`).
        quadrature: Points per dimension of the quadrature over one unit's forget-gate weights (as :func:`GRU`).
        out_dim: Hidden width n of the finite-width twin.

    Returns:
        The layer.

    Raises:
        KernelalgError: as :func:`GRU`.

    References:
        Hochreiter & Schmidhuber (1997); Gers et al. (2000) (forget gate); Greff et al. (2017), LSTM: a search
        space odyssey (the NOAF variant); Yang (2019, 2020), Tensor Programs I, II; docs/recurrent.md.
    """
    return _make("LSTM", activation, W_std, U_std, b_std, gate_U_std, gate_b_std, readout, bidirectional,
                 gate_W_std, quadrature, out_dim)


def _with_quadrature(layer: Layer, order: Callable[[int], int]) -> Layer:
    if layer.children:
        return dataclasses.replace(layer, children=tuple(_with_quadrature(c, order) for c in layer.children))
    if layer.kernel is not _gated_kernel:
        return layer
    return dataclasses.replace(layer, static=tuple((k, order(v) if k == "quadrature" else v) for k, v in layer.static))


@dataclasses.dataclass(frozen=True)
class GateQuadratureError:
    """Error estimate of the gate quadrature (see :func:`gate_quadrature_error`).

    Attributes:
        nngp, ntk: Max absolute difference between the kernels with q and with 2 q - 1 points per dimension.
        nngp_rel, ntk_rel: The same divided by the max absolute entry of the finer kernel.
        coarse, fine: The two kernels (``ka.Kernel``); ``fine`` is the more accurate one.
    """

    nngp: float
    ntk: float
    nngp_rel: float
    ntk_rel: float
    coarse: Any
    fine: Any


def gate_quadrature_error(net: Layer, x1: Any, x2: Any = None) -> GateQuadratureError:
    """Error estimate of the gate quadrature: the kernels with every gated layer's rule of q points per dimension
    against the nested rule of 2 q - 1 points (half the spacing).

    The trapezoid rule converges exponentially once its spacing resolves the gates' transitions in the weight
    space (width about 1 / (gate_U_std max|x_t| / sqrt(m))); from then on the finer rule is far more accurate
    and the difference is an upper estimate of the coarse rule's error. Before that regime (too few points)
    both rules can be off by similar amounts: a large estimate, or estimates that do not shrink as q doubles,
    mean "use more points". Costs (2 - 1/q)^d times the kernel.

    Args:
        net: Architecture with GRU/LSTM layers.
        x1, x2: Inputs as for ``ka.kernel``.

    Returns:
        A :class:`GateQuadratureError`.
    """
    net = as_layer(net)
    coarse = exact_kernel(net, x1, x2)
    fine = exact_kernel(_with_quadrature(net, lambda q: 2 * int(q) - 1), x1, x2)
    out = {}
    for k in ("nngp", "ntk"):
        a, b = np.asarray(getattr(coarse, k)), np.asarray(getattr(fine, k))
        out[k] = float(np.max(np.abs(a - b)))
        out[k + "_rel"] = out[k] / float(np.max(np.abs(b)))
    return GateQuadratureError(coarse=coarse, fine=fine, **out)
