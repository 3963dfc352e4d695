"""Recurrent (Elman) layers: the recurrent NTK on the time-pair grid.

Elman RNN (Alemohammad et al., "The Recurrent Neural Tangent Kernel", ICLR 2021), NTK parametrization:
``g_t = (W_std/sqrt(n)) W h_{t-1} + (U_std/sqrt(m)) U x_t + b_std b``, ``h_t = phi(g_t)``, ``h_0 = 0``, weights
shared over time. On the time-pair grid, with K_in/Theta_in the kernels of the layer's input sequence
(x_t.x'_t'/m and 0 for raw data):

    S(t,t')     = W^2 K(t-1,t'-1) + U^2 K_in(t,t') + b^2
    K(t,t')     = T(S),  D(t,t') = Tdot(S),  K(0, .) = K(., 0) = 0
    Theta(t,t') = S(t,t') + W^2 D(t-1,t'-1) Theta(t-1,t'-1) + U^2 Theta_in(t,t')

and the state of h_t is (K, D * Theta). T(S) needs the diagonal S(t,t) of each sequence, a 1-D recursion of
its own. The per-step maps are sympy (the activation layer's own dual supplies T, Tdot, Tdiag); they are
CSE'd once and run inside a scan over the rows t of the (N, M, T, T') grid (row t needs row t-1 shifted by
one column): ``jax.lax.scan`` in JAX, so compile time does not depend on T and no (T, T) Python loop exists;
a loop over t in the NumPy reference. The whole layer is one named structural Op (see :mod:`._scan`).

Readouts: "last" (h at each sequence's last step), "mean" (average of h over each sequence's valid steps;
its K(x, x) needs each sequence's own time-pair grid, tracked from the input and through Recurrent
layers), "sequence" (the whole h_t sequence, for stacking). Variable lengths: see
:mod:`kernelalg.layers.recurrent._sequences` (last steps aligned, h = 0 on padding). ``bidirectional=True`` concatenates
a second RNN run on each sequence reversed in time: the kernels are the mean of both directions.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, as_layer, bind_params, check_std
from kernelalg.core._program import Assign, Builder, KernelState
from kernelalg.backends import Arrays, evaluate_program, structural
from kernelalg.layers._affine import check_parameterization, weight_bias
from kernelalg.layers.recurrent._scan import make_op, rnn_apply
from kernelalg.layers.recurrent._sequences import SEQUENCE_LAYOUT, SequenceState
from kernelalg.layers.recurrent._symbols import D_PREV, K_IN, K_PREV, KD_IN, KD_PREV, S1, S2, TH_IN, TH_PREV

_READOUTS = ("last", "mean", "sequence")

NOT_SEQUENCE = (
    "Recurrent expects a sequence (batch, time, features) but follows {after}, whose output has no time axis. "
    "Fix: put Recurrent first, or after Recurrent(..., readout='sequence') (time-distributed Dense and "
    "activations may sit in between)."
)
BAD_READOUT = "Recurrent: readout must be one of {choices}, got {got!r}. Fix: e.g. readout='last'."
BAD_ACTIVATION = (
    "Recurrent: activation must be an activation layer such as ka.Relu() or ka.Erf(), got {got!r}. "
    "Fix: e.g. ka.Recurrent(ka.Relu(), W_std=1.0, U_std=1.0, b_std=0.1)."
)
MEAN_NEEDS_SELF_GRID = (
    "Recurrent(readout='mean') needs each sequence's own time-pair covariance grid of its input, which is "
    "tracked only from the raw input and through Recurrent layers; this layer follows {after}. Fix: feed it "
    "the input or a Recurrent(readout='sequence') directly (a time-distributed Dense before a Recurrent layer "
    "is absorbed by U_std), or use readout='last'."
)
STANDARD_NEEDS_WIDTHS = (
    "Recurrent(parameterization='standard'): the NTK depends on the hidden width and the input width. "
    "Fix: give out_dim=<hidden width> and make sure the input width is known (raw input, or a preceding "
    "layer with out_dim)."
)



def step_maps(builder: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> dict:
    """The per-step maps of the recursion as sympy expressions in the step symbols above.

    Returns:
        {"S", "K", "D", "Theta"} (time-pair step, in K_prev, D_prev, Theta_prev, K_in, Theta_in, S_11, S_22)
        and {"S_diag", "K_diag"} (diagonal step, in Kdiag_prev, Kdiag_in).
    """
    act: Layer = static["activation"]
    (w2, b2, bias), u2 = weight_bias(p), p["U_std"] ** 2
    s = w2 * K_PREV + u2 * K_IN + b2
    inner = KernelState(S1, S2, s, sp.Integer(1), gaussian=True, width=None, after="Recurrent")
    out = act.kernel(builder, inner, {k: p[k] for k, _ in act.params}, dict(act.static))
    if not isinstance(out, KernelState):
        raise E.KernelalgError(BAD_ACTIVATION.format(got=act))
    if static["parameterization"] == "ntk":
        grads = s
    else:
        n, m = static["out_dim"], st.width
        if n is None or m is None:
            raise E.LayerOrderError(STANDARD_NEEDS_WIDTHS)
        grads = n * K_PREV + m * K_IN + bias
    sd = w2 * KD_PREV + u2 * KD_IN + b2
    return {"S": s, "K": out.nngp, "D": out.ntk, "Theta": grads + w2 * D_PREV * TH_PREV + u2 * TH_IN,
            "S_diag": sd, "K_diag": out.cov1.xreplace({S1: sd})}


def recurrent_step_map(layer: Layer, keep_symbols: bool = True) -> dict[str, sp.Expr]:
    """The sympy per-step maps of a :func:`Recurrent` layer: one step of the time-pair recursion.

    These are the expressions the layer lowers once and runs inside ``jax.lax.scan``. Step symbols:
    ``K_prev``, ``D_prev``, ``Theta_prev`` (the grid at (t-1, t'-1)), ``K_in``, ``Theta_in`` (the layer
    input's NNGP and NTK at (t, t'); x_t.x'_t'/m and 0 for raw data), ``S_11``, ``S_22`` (the pre-activation
    variances S(t, t) and S(t', t')), ``Kdiag_prev``, ``Kdiag_in`` (the same on one sequence's diagonal).

    Args:
        layer: A layer made by :func:`Recurrent`.
        keep_symbols: True (default): hyperparameters appear as symbols ``sigma_w_1``, ``sigma_u_1``,
            ``sigma_b_1`` (and the activation's); False: their numeric values are substituted.

    Returns:
        Dict of sympy expressions: ``"S"`` (pre-activation covariance S(t, t')), ``"K"`` = T(S), ``"D"`` =
        Tdot(S), ``"Theta"`` (pre-activation NTK), and the diagonal chain ``"S_diag"``, ``"K_diag"``.
        Activations with a correlation node (e.g. ReLU's arccos) keep it as a function of S, S_11, S_22.

    Raises:
        KernelalgError: ``layer`` is not a Recurrent layer.

    Example:
        >>> m = ka.recurrent_step_map(ka.Recurrent(ka.Relu(), 1.0, 1.0, 0.1))  # doctest: +SKIP
        >>> m["Theta"]  # S + sigma_w_1**2 * D_prev * Theta_prev + sigma_u_1**2 * Theta_in  # doctest: +SKIP

    References:
        Alemohammad, Wang, Balestriero, Baraniuk (2021), The Recurrent Neural Tangent Kernel, ICLR.
    """
    layer = as_layer(layer)
    if layer.name != "Recurrent":
        raise E.KernelalgError(f"recurrent_step_map needs a Recurrent layer, got {layer!r}. "
                               "Fix: pass ka.Recurrent(activation, W_std, U_std, b_std).")
    b = Builder(keep_symbols=keep_symbols)
    p = bind_params(b, layer, 1)
    st = KernelState(sp.Symbol("q1"), sp.Symbol("q2"), sp.Symbol("c"), sp.Integer(0), width=sp.Symbol("d"))
    return step_maps(b, st, p, dict(layer.static))


def _lower(outputs: list[sp.Expr]) -> Callable[[Arrays, dict], list]:
    """CSE a list of step expressions once; returns (arrays, env) -> [arrays] on that backend's table."""
    reps, reduced = sp.cse(outputs, symbols=sp.numbered_symbols("rnn_"), optimizations=None)
    program = [Assign(s, e) for s, e in reps]
    return lambda ops, env: evaluate_program(program, reduced, env, ops.table)


def _recurrent_kernel(builder: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    seq = st.layout
    if not isinstance(seq, SequenceState):
        raise E.LayerOrderError(NOT_SEQUENCE.format(after=st.after))
    readout = static["readout"]
    current = seq.current(st)
    has_self = current and seq.self1 is not None
    if readout == "mean" and not has_self:
        raise E.LayerOrderError(MEAN_NEEDS_SELF_GRID.format(after=st.after))
    maps = step_maps(builder, st, p, static)
    locals_ = {K_PREV, D_PREV, TH_PREV, K_IN, TH_IN, S1, S2, KD_PREV, KD_IN}
    extra = sorted(set().union(*(e.free_symbols for e in maps.values())) - locals_, key=str)
    runners = {"diag": _lower([maps["S_diag"], maps["K_diag"]]),
               "cross": _lower([maps["K"], maps["D"], maps["Theta"]]),
               "self": _lower([maps["K"]])}
    raw = seq.raw if (current and seq.raw is not None) else None
    inputs = {"mask1": seq.mask1, "mask2": seq.mask2}
    if raw is not None:
        inputs.update(x1=raw[0], x2=raw[1])
    else:
        inputs.update(cov1=st.cov1, cov2=st.cov2, nngp=st.nngp, ntk=st.ntk)
    if has_self and (readout != "last"):
        inputs.update(self1=seq.self1, self2=seq.self2)
    fn, names, out_names = make_op(runners, extra, inputs, readout, static["bidirectional"])
    sources = [inputs[k] for k in names] + extra
    # Constants (e.g. an input NTK of exactly 0) are bound inside the op; only symbols are sources.
    syms = [s for s in sources if isinstance(s, sp.Symbol)]
    consts = {i: float(s) for i, s in enumerate(sources) if not isinstance(s, sp.Symbol)}

    def op(ops: Arrays, *arrays: Any) -> tuple:
        it = iter(arrays)
        full = [consts[i] if i in consts else next(it) for i in range(len(sources))]
        return fn(ops, *full)

    name = f"Recurrent_{readout}" + ("_bidirectional" if static["bidirectional"] else "")
    outs = dict(zip(out_names, builder.emit(name, structural(op), syms, len(out_names), stem="r")))
    width = static["out_dim"] * (2 if static["bidirectional"] else 1) if static["out_dim"] else None
    if readout != "sequence":
        return KernelState(outs["cov1"], outs["cov2"], outs["nngp"], outs["ntk"], gaussian=False, width=width,
                     after="Recurrent", layout="dense")
    key = (outs["cov1"], outs["cov2"], outs["nngp"], outs["ntk"])
    layout = SequenceState(seq.mask1, seq.mask2, outs.get("self1"), outs.get("self2"), key=key)
    return KernelState(*key, gaussian=False, width=width, after="Recurrent", layout=layout)


def _recurrent_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    """Finite-width twin: the Elman RNN itself (inputs: (N, T, m) arrays or :class:`Sequences`)."""
    m = in_shape[-1]
    n = static["out_dim"] or width
    act: Layer = static["activation"]
    _, phi, _ = act.finite({k: p[k] for k, _ in act.params}, dict(act.static), (n,), n)
    standard = static["parameterization"] == "standard"
    w, u, b = p["W_std"], p["U_std"], p.get("b_std")
    dirs = ("fwd", "bwd") if static["bidirectional"] else ("fwd",)

    def init(key: jax.Array) -> dict:
        params = {}
        for d, k in zip(dirs, jax.random.split(key, len(dirs))):
            kw, ku, kb = jax.random.split(k, 3)
            pw, pu = jax.random.normal(kw, (n, n)), jax.random.normal(ku, (m, n))
            params[d] = {"W": pw * w / math.sqrt(n) if standard else pw, "U": pu * u / math.sqrt(m) if standard else pu}
            if b is not None:
                pb = jax.random.normal(kb, (n,))
                params[d]["b"] = pb * b if standard else pb
        return params

    scales = (1.0, 1.0, 1.0) if standard else (w / math.sqrt(n), u / math.sqrt(m), b or 0.0)

    def apply(params: dict, x: Any) -> Any:
        return rnn_apply(params, x, lambda g: phi({}, g), scales, static["readout"], dirs)

    t = in_shape[-2]
    out_width = n * len(dirs)
    return init, apply, ((t, out_width) if static["readout"] == "sequence" else (out_width,))


def Recurrent(activation: Layer, W_std: float = 1.0, U_std: float = 1.0, b_std: float | None = None,
              readout: str = "last", parameterization: str = "ntk", bidirectional: bool = False, *,
              out_dim: int | None = None) -> Layer:
    """Elman recurrent layer with weights shared over time; its kernel lives on the time-pair grid.

    ``g_t = (W_std/sqrt(n)) W h_{t-1} + (U_std/sqrt(m)) U x_t + b_std b``, ``h_t = phi(g_t)``, ``h_0 = 0``.
    Input: sequences (N, T, m) -- arrays, or :class:`kernelalg.Sequences` for different lengths (aligned at
    their last step, h = 0 on padding; x1 and x2 may have different T). Add ``Dense(V_std)`` after it for
    the usual linear readout f = (V_std/sqrt(n)) v.r: its NNGP is V^2 K and its NTK V^2 (K + D Theta), where
    for readout "last" K, D, Theta are taken at the two sequences' last steps (T, T') and for "mean"
    averaged over all valid time pairs, (1/(L L')) sum_{t,t'}.

    Args:
        activation: Activation layer phi, e.g. ``ka.Relu()``, ``ka.Erf()``, ``ka.Elementwise(fn)``.
        W_std: Recurrent weight std (h_{t-1} -> g_t).
        U_std: Input weight std (x_t -> g_t).
        b_std: Bias std, or None for no bias.
        readout: "last" (h_T), "mean" (average of h_t over the valid steps) or "sequence" (all h_t, to stack
            another Recurrent layer or time-distributed layers).
        parameterization: "ntk" (default) or "standard" (then ``out_dim`` is required).
        bidirectional: Also run a second RNN on each sequence reversed in time and concatenate the hidden
            states (the kernels average the two directions; "last" reads each direction at its own end).
        out_dim: Hidden width n (finite-width twin; the fan-in of the next layer in standard parametrization).

    Returns:
        The layer (hyperparameter symbols ``sigma_w_i``, ``sigma_u_i``, ``sigma_b_i`` and the activation's).

    Raises:
        KernelalgError: a non-activation ``activation``, an unknown ``readout`` or ``parameterization``, a bad
            ``out_dim``; at kernel time, a Recurrent layer after a layer without a time axis, or a "mean"
            readout whose input's own time-pair grids are not tracked (see the message for the fix).

    Example:
        >>> seqs = ka.Sequences.from_list([np.ones((3, 2)), np.ones((5, 2))])       # doctest: +SKIP
        >>> net = ka.Recurrent(ka.Erf(), 1.0, 1.0, 0.1, readout="mean") >> ka.Dense(1.0)  # doctest: +SKIP
        >>> ka.kernel(net, seqs).ntk                                                  # doctest: +SKIP

    References:
        Alemohammad, Wang, Balestriero, Baraniuk (2021), The Recurrent Neural Tangent Kernel, ICLR.
    """
    act = as_layer(activation) if isinstance(activation, Layer) else None
    if act is None or act.role != "activation" or act.kernel is None:
        raise E.KernelalgError(BAD_ACTIVATION.format(got=activation))
    if readout not in _READOUTS:
        raise E.KernelalgError(BAD_READOUT.format(choices=_READOUTS, got=readout))
    check_parameterization("Recurrent", parameterization)
    if out_dim is not None and (int(out_dim) != out_dim or out_dim < 1):
        raise E.KernelalgError(f"Recurrent: out_dim must be a positive integer, got {out_dim!r}. "
                               "Fix: e.g. out_dim=512.")
    params: tuple[tuple[str, Any], ...] = (("W_std", check_std("Recurrent", "W_std", W_std)),
                                           ("U_std", check_std("Recurrent", "U_std", U_std)))
    if b_std is not None:
        params += (("b_std", check_std("Recurrent", "b_std", b_std)),)
    clash = {k for k, _ in act.params} & {k for k, _ in params}
    if clash:
        raise E.KernelalgError(f"Recurrent: activation parameter names {sorted(clash)} clash with the layer's.")
    static = (("activation", act), ("readout", readout), ("parameterization", parameterization),
              ("bidirectional", bool(bidirectional)), ("out_dim", None if out_dim is None else int(out_dim)))
    return Layer("Recurrent", _recurrent_kernel, params + act.params, static, _recurrent_finite,
                 positive=frozenset({"W_std", "U_std", "b_std"}) | act.positive, input_layout=SEQUENCE_LAYOUT,
                 role="recurrent", width_arg="out_dim", asymmetric=act.asymmetric, routes=act.routes)
