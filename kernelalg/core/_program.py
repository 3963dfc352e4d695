"""Kernel state and the straight-line program that symbolic layers write into.

A network's kernel is built layer by layer. Each layer maps the symbolic kernel state (:class:`KernelState`)
to a new one; the plumbing in :class:`Builder` then *materialises* the new state: common
subexpressions are extracted (``sympy.cse``) and every state entry is bound to a fresh symbol. The
next layer therefore only ever sees symbols, so the program grows linearly with depth, whatever the
depth, and full closed forms are recovered on demand by substitution.

Layers whose maths is not elementwise (spatial convolutions, pooling, readouts, time recursions) emit
named :class:`Op` instructions that carry one implementation per backend; everything elementwise stays sympy.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import sympy as sp

Expr = sp.Expr

#: |x|^2 / d, the per-sample input statistic of the first argument.
Q1 = sp.Symbol("q1", positive=True)
#: |x'|^2 / d, the per-sample input statistic of the second argument.
Q2 = sp.Symbol("q2", positive=True)
#: x . x' / d, the input covariance.
C = sp.Symbol("c", real=True)
#: Input dimension (fan-in of the first affine layer); enters only the standard parametrization.
D = sp.Symbol("d", positive=True, integer=True)


@dataclass(frozen=True)
class KernelState:
    """Symbolic kernel state of one branch (per input pair).

    Attributes:
        cov1: Variance E[f(x)^2] of the current pre-/post-activation at x (per unit); the NNGP at (x, x).
        cov2: The same at x'.
        nngp: Covariance E[f(x) f(x')] (the NNGP).
        ntk: Neural tangent kernel Theta(x, x') of the current representation.
        gaussian: True when the representation is Gaussian in the infinite-width limit (the output of an
            affine layer), so that a nonlinearity's closed-form dual applies.
        width: Number of units/channels of the representation (fan-in of the next affine layer) when
            known: an int, the input-dimension symbol ``d``, or None.
        after: Name of the layer that produced this state (for error messages).
        layout: Static description of the array structure the symbols stand for ("dense" for one value
            per input pair; spatial layers use other layouts).
    """

    cov1: Expr
    cov2: Expr
    nngp: Expr
    ntk: Expr
    gaussian: bool = True
    width: Any = None
    after: str = "the input"
    layout: Any = "dense"

    def replace(self, **changes: Any) -> "KernelState":
        return dataclasses.replace(self, **changes)

    @property
    def exprs(self) -> tuple[Expr, Expr, Expr, Expr]:
        return (self.cov1, self.cov2, self.nngp, self.ntk)


State = Union[KernelState, tuple["KernelState", ...]]


@dataclass(frozen=True)
class Assign:
    """``target = expr``, elementwise over whatever arrays the free symbols stand for."""

    target: sp.Symbol
    expr: Expr


@dataclass(frozen=True, eq=False)
class Op:
    """``targets = impls[backend](*sources)``: a named structural node (stencil, pooling, readout, time
    recursion) for maths that is not elementwise.

    Attributes:
        targets: Output symbols.
        name: What the node computes (e.g. "conv", "avgpool", "Recurrent_last"); shown in closed forms and
            in the error raised when a backend has no implementation.
        impls: Backend name ("jax", "numpy", ...) -> function of the source arrays of that backend, returning
            a tuple of arrays (see :func:`kernelalg.backends.structural`).
        sources: Input symbols.
        tag: Optional static key other layers use to find this node (pooling ops whose last output is a
            per-image record, see :mod:`kernelalg.layers.spatial._pairs`).
        key: Optional static identity of the computation (hashable): two Ops with equal keys compute the same
            function of their sources, so runs of identical layers containing them can be lowered to one
            loop (:mod:`kernelalg.backends._scan`). None: the node is never part of such a run.
    """

    targets: tuple[sp.Symbol, ...]
    name: str
    impls: Mapping[str, Callable[..., tuple[Any, ...]]]
    sources: tuple[sp.Symbol, ...]
    tag: Any = None
    key: Any = None


Instruction = Union[Assign, Op]


@dataclass(frozen=True)
class Block:
    """The instructions [start, stop) written by one leaf layer, with its state in/out and parameters."""

    start: int
    stop: int
    inputs: tuple[Expr, ...]
    outputs: tuple[Expr, ...]
    params: tuple[sp.Symbol, ...]


@dataclass
class Builder:
    """Collects the straight-line program and the hyperparameter symbols of one network.

    Args:
        keep_symbols: If True, hyperparameters stay sympy symbols in the expressions; otherwise their
            numeric values are substituted (the program still refers to symbols when ``for_compile``).
    """

    keep_symbols: bool = True
    program: list[Instruction] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    params: dict[sp.Symbol, float] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)
    #: Set by layers whose NTK is not symmetric in (x, x') (surrogate gradients): never mirror tiles.
    asymmetric: bool = False
    #: Every symbol an instruction of this builder has defined (also those of a program taken over).
    defined: set = field(default_factory=set)
    #: Layer templates by signature (see :mod:`kernelalg.core._replay`).
    templates: dict = field(default_factory=dict)
    _layer_counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _tmp: Iterator[sp.Symbol] = field(default_factory=lambda: sp.numbered_symbols("z", start=0))
    _depth: int = 0

    def next_layer_index(self) -> int:
        return next(self._layer_counter)

    def param(self, layer_index: int, name: str, value: float, positive: bool = False) -> Expr:
        """The expression that stands for a hyperparameter of layer ``layer_index``."""
        sym = sp.Symbol(f"{name}_{layer_index}", positive=True) if positive else sp.Symbol(
            f"{name}_{layer_index}", real=True)
        self.params[sym] = float(value)
        return sym if self.keep_symbols else number(value)

    def fresh(self, stem: str, **assumptions: bool) -> sp.Symbol:
        return sp.Symbol(f"{stem}_{len(self.program)}", **assumptions)

    def materialize(self, st: KernelState) -> KernelState:
        """Bind each entry of ``st`` to a fresh symbol, sharing common subexpressions."""
        exprs = st.exprs
        todo = [i for i, e in enumerate(exprs) if not (e.is_Symbol or e.is_Number)]
        if not todo:
            return st
        replacements, reduced = sp.cse([exprs[i] for i in todo], symbols=self._tmp, optimizations=None)
        for sym, sub in replacements:
            self.program.append(Assign(sym, sub))
            self.defined.add(sym)
        out = list(exprs)
        stems = (("v1", True), ("v2", True), ("k", False), ("t", False))
        for i, red in zip(todo, reduced):
            if red.is_Symbol or red.is_Number:
                out[i] = red
                continue
            stem, pos = stems[i]
            sym = self.fresh(stem, positive=True) if pos else self.fresh(stem, real=True)
            self.program.append(Assign(sym, red))
            self.defined.add(sym)
            out[i] = sym
        return st.replace(cov1=out[0], cov2=out[1], nngp=out[2], ntk=out[3])

    def take_program(self) -> tuple[tuple[Instruction, ...], tuple[Block, ...]]:
        """Remove and return the program written so far and its layer blocks (indices into it), for a layer
        that runs it inside its own :class:`Op` (a chunked readout)."""
        seg, blocks = tuple(self.program), tuple(self.blocks)
        self.program.clear()
        self.blocks.clear()
        return seg, blocks

    def emit(self, name: str, impls: Mapping[str, Callable[..., tuple[Any, ...]]], sources: Sequence[sp.Symbol],
             n_out: int, stem: str = "s", tag: Any = None, key: Any = None) -> tuple[sp.Symbol, ...]:
        """Append an :class:`Op` named ``name`` with per-backend ``impls`` and return its fresh output symbols
        (``tag``, ``key``: see :class:`Op`)."""
        targets = tuple(sp.Symbol(f"{stem}{j}_{len(self.program)}", real=True) for j in range(n_out))
        self.program.append(Op(targets, name, dict(impls), tuple(sources), tag, key))
        self.defined.update(targets)
        return targets


def expand(program: Sequence[Instruction], outputs: Sequence[Expr]) -> list[Expr]:
    """Substitute the program back into ``outputs`` to obtain closed-form expressions.

    Raises:
        ValueError: If an output depends on an :class:`Op` (no elementwise closed form exists).
    """
    env: dict[sp.Symbol, Expr] = {}
    for ins in program:
        if isinstance(ins, Op):
            for t in ins.targets:
                env[t] = sp.Function(ins.name)(*[env.get(s, s) for s in ins.sources])
            continue
        env[ins.target] = ins.expr.xreplace(env) if ins.expr.free_symbols & env.keys() else ins.expr
    return [o.xreplace(env) if hasattr(o, "xreplace") else o for o in outputs]


def number(value: float) -> Expr:
    """A readable sympy number equal to the float ``value`` (integers stay integers)."""
    v = float(value)
    return sp.Integer(int(v)) if v.is_integer() else sp.Float(repr(v), 15)


def flatten_states(state: State) -> tuple[KernelState, ...]:
    return state if isinstance(state, tuple) else (state,)


def program_size(program: Sequence[Instruction]) -> int:
    """Number of sympy operations in the program (a measure that grows linearly with depth)."""
    return sum(sp.count_ops(i.expr) if isinstance(i, Assign) else 1 for i in program)


def substitute_params(exprs: Sequence[Expr], params: Mapping[sp.Symbol, float]) -> list[Expr]:
    values = {s: sp.Float(v, 17) for s, v in params.items()}
    return [e.xreplace(values) for e in exprs]
