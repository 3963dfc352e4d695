"""The layer record and the composition plumbing (serial, parallel).

A layer is a small frozen record of pure functions: its symbolic kernel map and its finite-width
sampler, plus its hyperparameters (named numbers, turned into sympy symbols by the plumbing) and its
static settings (structure that never becomes a symbol). All bookkeeping -- parameter symbols, CSE
and binding of the new state, branch handling, the asymmetry flag, quadrature routes -- lives here, so a
layer file holds only its maths.

A layer also *declares* what the rest of the system needs to know about it (its :attr:`Layer.role`, the
static key of its output width, its spatial requirements, whether it makes the NTK asymmetric, the input
layout it expects when it comes first). The finite-width twins, the layout planner, Monte Carlo and the
empirical NTK query these fields; nothing outside a layer's own module tests ``layer.name``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._inputs import InputLayout
from kernelalg.core._program import Block, Builder, KernelState, State, flatten_states
from kernelalg.core._replay import remember, replay, signature

#: Symbolic map of a leaf layer: (builder, state, hyperparameter exprs, static settings) -> new state.
KernelMap = Callable[[Builder, KernelState, Mapping[str, sp.Expr], Mapping[str, Any]], State]
#: Finite-width sampler: (hyperparameters, static, input shape (no batch), width) ->
#: (init(key) -> params, apply(params, x) -> y, output shape).
FiniteFn = Callable[..., tuple[Callable, Callable, tuple]]

#: Roles a layer declares. "affine": a trainable linear map whose output width is ``static[width_arg]`` (it
#: can be the readout of a finite twin); "activation": a pointwise nonlinearity on Gaussian inputs;
#: "pooling": linear and parameter-free over positions (may follow the readout); "reshape": linear and
#: parameter-free (Flatten; may follow the readout); "identity"; "recurrent": a recurrent cell with its own
#: readout; "attention": a trainable map that mixes positions (output width ``static[width_arg]``);
#: "normalization": a rescaling by the input's own variances (LayerNorm); "dropout": a random mask drawn per
#: input; "branch": FanOut; "combinator": serial, parallel, FanInSum.
ROLES = frozenset({"affine", "activation", "pooling", "reshape", "identity", "recurrent", "attention",
                   "normalization", "dropout", "branch", "combinator"})
#: Roles of layers that are linear, parameter-free and channel-preserving: they may follow a twin's readout.
TRANSPARENT_ROLES = frozenset({"pooling", "reshape", "identity"})


@dataclass(frozen=True)
class Spatial:
    """What a layer needs from the spatial layout (neural-tangents' ``diagonal_spatial`` requirement).

    Attributes:
        pairs: The layer needs the covariance of every pixel pair (pooling), not only same-position pairs.
        readout: The layer removes the spatial axes (GlobalAvgPool, GlobalSumPool, Flatten).
    """

    pairs: bool = False
    readout: bool = False


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer (or a composition of layers) of an architecture expression.

    Attributes:
        name: Display name, as in neural-tangents' stax ("Dense", "Relu", ...).
        kernel: Symbolic kernel map (None for combinators, which use ``combine``).
        params: Hyperparameters that become sympy symbols: ((name, value), ...).
        static: Structural settings: ((name, value), ...).
        finite: Finite-width sampler, or None where the layer has no finite-width counterpart.
        children: Sub-layers of a combinator.
        combine: For combinators: (builder, state, children) -> state.
        positive: Names of hyperparameters that are standard deviations (positive symbols).
        input_layout: The input layout this layer expects when it comes first (see
            :mod:`kernelalg.core._inputs`); None for layers that take any input.
        role: What kind of layer this is (one of :data:`ROLES`).
        width_arg: The static key that holds the layer's output width, or None: "out_dim" for a map of the
            feature axis (Dense, Recurrent), "out_chan" for the channels of a spatial map (Conv).
        spatial: Its spatial requirements (:class:`Spatial`), or None for layers that do not touch positions.
        asymmetric: True when the layer makes the NTK asymmetric in (x, x') (surrogate gradients): tiles
            of such a kernel are never mirrored.
        routes: How the duals this layer uses are computed, ((activation name, route), ...), for duals that
            are not library closed forms (``Elementwise``); the symbolic kernel reports them.
        identity: What determines the layer's values beyond its name, params and static settings (which
            ``repr`` shows): e.g. the sympy form or code fingerprint of an ``Elementwise`` function; "" when
            nothing else does. Stores of results compare it (:mod:`kernelalg.scale`).
        unidentified: Why ``identity`` could not be determined ("" when it could): results of such a
            layer cannot be stored for resumption.
    """

    name: str
    kernel: KernelMap | None = None
    params: tuple[tuple[str, float], ...] = ()
    static: tuple[tuple[str, Any], ...] = ()
    finite: FiniteFn | None = None
    children: tuple["Layer", ...] = ()
    combine: Callable[..., State] | None = None
    positive: frozenset[str] = frozenset()
    input_layout: InputLayout | None = None
    role: str = "identity"
    width_arg: str | None = None
    spatial: Spatial | None = None
    asymmetric: bool = False
    routes: tuple[tuple[str, str], ...] = ()
    identity: str = ""
    unidentified: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise E.InternalError(f"Layer {self.name}: unknown role {self.role!r} (one of {sorted(ROLES)}).")

    @property
    def transparent(self) -> bool:
        """Linear, parameter-free and channel-preserving: may follow the readout layer of a finite twin."""
        return self.role in TRANSPARENT_ROLES

    @property
    def is_feature_affine(self) -> bool:
        """An affine map of the feature axis, y = W x + b per sample (Dense): its parameter gradient is an
        outer product, which the structured empirical NTK and the exact readout conditional use."""
        return self.role == "affine" and self.width_arg == "out_dim"

    @property
    def is_serial(self) -> bool:
        """A ``serial`` composition (children applied in order)."""
        return self.role == "combinator" and self.combine is _serial_combine

    @property
    def is_parallel(self) -> bool:
        """A ``parallel`` composition (child i applied to branch i)."""
        return self.role == "combinator" and self.combine is _parallel_combine

    def __rshift__(self, other: "Layer") -> "Layer":
        return serial(self, other)

    def __rrshift__(self, other: "Layer") -> "Layer":
        return serial(other, self)

    def __repr__(self) -> str:
        if self.is_serial:
            return " >> ".join(_wrap(c) for c in self.children) if self.children else "serial()"
        if self.is_parallel:
            return "parallel(" + ", ".join(repr(c) for c in self.children) + ")"
        args = [f"{k}={_fmt(v)}" for k, v in self.params + self.static if v is not None]
        return f"{self.name}({', '.join(args)})"

    @property
    def hyperparameters(self) -> dict[str, float]:
        return dict(self.params)

    def leaves(self) -> list["Layer"]:
        """All leaf layers in build order."""
        if not self.children:
            return [self]
        return [leaf for c in self.children for leaf in c.leaves()]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if callable(v) and not isinstance(v, Layer):  # a function setting: its name (its code is in Layer.identity)
        return getattr(v, "__qualname__", type(v).__name__)
    return repr(v)


def _wrap(layer: Layer) -> str:
    return f"({layer!r})" if layer.is_parallel else repr(layer)


def check_std(layer: str, name: str, value: Any) -> float:
    """Validate a standard deviation: finite and >= 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise E.KernelalgError(E.NEGATIVE_STD.format(layer=layer, name=name, value=value, fix=1.0)) from None
    if not math.isfinite(v) or v < 0:
        fix = abs(v) if math.isfinite(v) else 1.0
        raise E.KernelalgError(E.NEGATIVE_STD.format(layer=layer, name=name, value=value, fix=fix))
    return v


def check_number(layer: str, name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise E.KernelalgError(f"{layer}: {name} must be a real number, got {value!r}. "
                               f"Fix: pass a float, e.g. {name}=1.0.") from None
    if not math.isfinite(v):
        raise E.KernelalgError(f"{layer}: {name} must be finite, got {value!r}. Fix: pass a finite float.")
    return v


def as_layer(obj: Any) -> Layer:
    if not isinstance(obj, Layer):
        raise E.KernelalgError(E.NOT_A_LAYER.format(what=obj))
    return obj


def require_gaussian(st: KernelState, layer: str) -> None:
    """Raise :class:`LayerOrderError` unless the state is Gaussian (the output of an affine layer)."""
    if not st.gaussian:
        raise E.LayerOrderError(E.NOT_GAUSSIAN.format(layer=layer, after=st.after))


def build(layer: Layer, builder: Builder, state: State) -> State:
    """Apply ``layer``'s symbolic map to ``state``: the one place where parameters and CSE are handled."""
    if layer.combine is not None:
        return layer.combine(builder, state, layer.children)
    if isinstance(state, tuple):
        raise E.LayerOrderError(
            f"{layer.name} received {len(state)} branches. Fix: merge them first with FanInSum() "
            f"(or apply {layer.name} inside parallel(...)).")
    p = bind_params(builder, layer, builder.next_layer_index())
    builder.asymmetric |= layer.asymmetric
    builder.routes.update(layer.routes)
    start = len(builder.program)
    key = signature(builder, layer, state, p)  # a layer met again on a state of the same structure: replayed
    out = None if key is None else replay(builder, key, state, p)
    if out is None:
        new = layer.kernel(builder, state, p, dict(layer.static))
        if isinstance(new, tuple):
            return tuple(builder.materialize(_own_composable(s, state)) for s in new)
        out = builder.materialize(_own_composable(new, state))
        if key is not None:
            remember(builder, key, start, state, p, out)
    syms = tuple(v for v in p.values() if isinstance(v, sp.Symbol))
    if len(builder.program) >= start:  # a layer that rewrote the program (a chunked readout) leaves no block
        builder.blocks.append(Block(start, len(builder.program), state.exprs, out.exprs, syms))
    return out


def _own_composable(new: KernelState, state: KernelState) -> KernelState:
    """``new`` without the composition record it inherited unchanged from ``state`` (only the activation that
    wrote the record may pass it on: a layer in between, e.g. LayerNorm or pooling, breaks the chain)."""
    if new.composable is not None and new.composable is state.composable:
        return new.replace(composable=None)
    return new


_SYMBOL_NAMES = {"W_std": "sigma_w", "b_std": "sigma_b", "U_std": "sigma_u", "V_std": "sigma_v",
                 "gate_U_std": "sigma_gu", "gate_b_std": "sigma_gb"}


def bind_params(builder: Builder, layer: Layer, index: int) -> dict[str, sp.Expr]:
    """The expressions (symbols ``sigma_w_<index>``, ...) that stand for ``layer``'s hyperparameters."""
    return {name: builder.param(index, _SYMBOL_NAMES.get(name, name), value, name in layer.positive)
            for name, value in layer.params if value is not None}


# ----------------------------------------------------------------------------------------- combinators


def _serial_combine(builder: Builder, state: State, children: Sequence[Layer]) -> State:
    for child in children:
        state = build(child, builder, state)
    return state


def _parallel_combine(builder: Builder, state: State, children: Sequence[Layer]) -> State:
    states = flatten_states(state)
    if len(states) != len(children):
        raise E.LayerOrderError(E.FANOUT_MISMATCH.format(got=len(children), expected=len(states)))
    return tuple(s for child, st in zip(children, states)
                 for s in flatten_states(build(child, builder, st)))


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence (``serial(a, b)`` is ``a >> b``)."""
    flat: list[Layer] = []
    for layer in map(as_layer, layers):
        flat.extend(layer.children if layer.is_serial else (layer,))
    return Layer("serial", children=tuple(flat), combine=_serial_combine, role="combinator")


#: Most layers ``repeat`` builds (the architecture language's limit too).
MAX_REPEATED_LAYERS = 10_000


def repeat(layer: Layer, n: int) -> Layer:
    """``layer`` applied ``n`` times in sequence: ``serial(*[layer] * n)`` (neural-tangents' ``stax.repeat``).

    Unlike neural-tangents, no separate loop is needed for speed: identical blocks of a serial network are
    already one ``lax.scan`` (dense) or replayed layer templates (conv), so the symbolic build and the compile
    time do not grow with ``n``. Each repetition has its own hyperparameter symbols and, in the finite twin,
    its own weights (as in neural-tangents).

    Raises:
        KernelalgError: ``n`` is not an integer >= 1, or the result would exceed MAX_REPEATED_LAYERS layers.
    """
    layer = as_layer(layer)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise E.KernelalgError(f"repeat: n must be an integer >= 1, got {n!r}. Fix: e.g. "
                               "repeat(Dense(1.5) >> Relu(), 3).")
    total = len(layer.leaves()) * int(n)
    if total > MAX_REPEATED_LAYERS:
        raise E.KernelalgError(f"repeat: {int(n)} x {len(layer.leaves())} layers = {total} exceeds "
                               f"{MAX_REPEATED_LAYERS}. Fix: use fewer repetitions or a smaller block.")
    return serial(*([layer] * int(n)))


def parallel(*layers: Layer) -> Layer:
    """Apply the i-th layer to the i-th branch (use after ``FanOut(n)``)."""
    return Layer("parallel", children=tuple(map(as_layer, layers)), combine=_parallel_combine, role="combinator")
