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

from kernelalg.core._errors import KernelalgError

Expr = sp.Expr

#: Most operations (``sympy.count_ops``) a kernel program may hold. Symbolic work is about linear in this size
#: (1,000-2,000 operations per second, whatever the layers), so it bounds the work of any architecture to about
#: that of 10,000 layers of Dense >> Relu (115,000 operations) or Dense >> Erf (185,000).
MAX_PROGRAM_SIZE = 200_000
#: Largest closed form :func:`expand` builds: tree nodes counted with repetition (what printing, ``subs`` and
#: ``lambdify`` traverse; the closed form of depth-L ReLU networks grows like 3^L) ...
MAX_CLOSED_FORM_SIZE = 20_000
#: ... and nesting depth (sympy's printers, ``subs`` and ``diff`` recurse once or more per level and fail
#: from about 250 levels under Python's default recursion limit).
MAX_CLOSED_FORM_DEPTH = 120

PROGRAM_TOO_LARGE = ("The kernel program of this network exceeds {limit} operations (at layer {layer}). Fix: use "
                     "fewer layers or cheaper activations (lower degrees, simpler Elementwise formulas).")
CLOSED_FORM_TOO_LARGE = ("The closed form of this kernel is too large to build ({what}). Fix: use the straight-line "
                         "program instead: SymbolicKernel.program or .latex(program=True), 'kernelalg formula ARCH "
                         "--program'; evaluate numbers with ka.kernel, ka.compile or 'kernelalg formula --at'.")

#: |x|^2 / d, the per-sample input statistic of the first argument.
Q1 = sp.Symbol("q1", positive=True)
#: |x'|^2 / d, the per-sample input statistic of the second argument.
Q2 = sp.Symbol("q2", positive=True)
#: x . x' / d, the input covariance.
C = sp.Symbol("c", real=True)
#: Input dimension (fan-in of the first affine layer); enters only the standard parametrization.
D = sp.Symbol("d", positive=True, integer=True)
#: Sample identities of the two arguments, per sample ((N, 1) and (1, M) arrays): equal exactly on the pairs of
#: an input with itself -- (i, i) when x2 is None or equals x1 (neural-tangents' ``x1_is_x2``). The kernel of a
#: layer that draws fresh randomness per input (Dropout) holds ``KroneckerDelta(ID1, ID2)``.
ID1 = sp.Symbol("i1", integer=True)
ID2 = sp.Symbol("i2", integer=True)


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
        composable: Set by an activation that declares its forward function: the Gaussian state it was
            applied to and that function (:class:`Composable`), so that an activation right after it can take
            the dual of the composition phi2(phi1(z)) on that Gaussian state. ``build`` clears it on the output
            of any layer that does not set it anew.
    """

    cov1: Expr
    cov2: Expr
    nngp: Expr
    ntk: Expr
    gaussian: bool = True
    width: Any = None
    after: str = "the input"
    layout: Any = "dense"
    composable: "Composable | None" = None

    def replace(self, **changes: Any) -> "KernelState":
        return dataclasses.replace(self, **changes)

    @property
    def exprs(self) -> tuple[Expr, Expr, Expr, Expr]:
        return (self.cov1, self.cov2, self.nngp, self.ntk)


State = Union[KernelState, tuple["KernelState", ...]]


@dataclass(frozen=True)
class Composable:
    """What an activation right after this one needs to form the dual of the composition.

    Attributes:
        pre: The Gaussian state the activation (or the chain of activations) was applied to.
        phi: The forward function applied so far, a sympy expression in the activation variable ``x``
            (hyperparameters as the builder's symbols or numbers).
        name: Display name of the chain so far (e.g. "Relu>>Erf"), for its route.
    """

    pre: KernelState
    phi: Expr
    name: str


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
    #: Conditions (expr, reason): expr > 0 wherever the kernel exists (a dual defined only for small
    #: variances); the backends evaluate them on the values met and raise ``reason`` where one fails.
    requires: list[tuple[Expr, str]] = field(default_factory=list)
    #: Every symbol an instruction of this builder has defined (also those of a program taken over).
    defined: set = field(default_factory=set)
    #: Layer templates by signature (see :mod:`kernelalg.core._replay`).
    templates: dict = field(default_factory=dict)
    _layer_counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _tmp: Iterator[sp.Symbol] = field(default_factory=lambda: sp.numbered_symbols("z", start=0))
    _depth: int = 0
    #: Operations written so far (bounded by MAX_PROGRAM_SIZE).
    size: int = 0

    def next_layer_index(self) -> int:
        return next(self._layer_counter)

    def param(self, layer_index: int, name: str, value: float, positive: bool = False) -> Expr:
        """The expression that stands for a hyperparameter of layer ``layer_index``."""
        sym = sp.Symbol(f"{name}_{layer_index}", positive=True) if positive else sp.Symbol(
            f"{name}_{layer_index}", real=True)
        self.params[sym] = float(value)
        return sym if self.keep_symbols else number(value)

    def require(self, conditions: Sequence[tuple[Expr, str]]) -> None:
        """Record conditions ``(expr, reason)`` that must hold (expr > 0) for the kernel to exist."""
        for expr, reason in conditions:
            if expr.is_positive is not True:  # provably positive conditions (e.g. b < 0 given) are dropped
                self.requires.append((expr, reason))

    def fresh(self, stem: str, **assumptions: bool) -> sp.Symbol:
        return sp.Symbol(f"{stem}_{len(self.program)}", **assumptions)

    def materialize(self, st: KernelState) -> KernelState:
        """Bind each entry of ``st`` to a fresh symbol, sharing common subexpressions."""
        exprs = st.exprs
        todo = [i for i, e in enumerate(exprs) if not (e.is_Symbol or e.is_Number)]
        if not todo:
            return st
        replacements, reduced = sp.cse([exprs[i] for i in todo], symbols=self._tmp, optimizations=None)
        self.size += sum(sp.count_ops(e) for e in [sub for _, sub in replacements] + list(reduced))
        if self.size > MAX_PROGRAM_SIZE:
            raise KernelalgError(PROGRAM_TOO_LARGE.format(limit=MAX_PROGRAM_SIZE, layer=st.after))
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


def _needed(program: Sequence[Instruction], outputs: Sequence[Any]) -> set[sp.Symbol]:
    """The program symbols ``outputs`` depend on (a backward pass over the program)."""
    need: set[sp.Symbol] = set()
    for o in outputs:
        need |= getattr(o, "free_symbols", set())
    for ins in reversed(program):
        if isinstance(ins, Op):
            if need.intersection(ins.targets):
                need.update(ins.sources)
        elif ins.target in need:
            need |= ins.expr.free_symbols
    return need


def closed_form_measure(expr: Any, memo: dict[int, tuple[Any, int, int]]) -> tuple[int, int]:
    """(tree size counted with repetition, depth) of a sympy expression, without recursion; shared subtrees
    are visited once (``memo``, keyed by id, keeps them alive)."""
    stack = [expr]
    while stack:
        e = stack[-1]
        if id(e) in memo:
            stack.pop()
            continue
        args = getattr(e, "args", ())
        todo = [a for a in args if id(a) not in memo]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        memo[id(e)] = (e, 1 + sum(memo[id(a)][1] for a in args), 1 + max((memo[id(a)][2] for a in args), default=0))
    return memo[id(expr)][1:]


def check_closed_form(expr: Any, memo: dict[int, tuple[Any, int, int]]) -> None:
    """Raise :class:`KernelalgError` (CLOSED_FORM_TOO_LARGE) beyond MAX_CLOSED_FORM_SIZE or _DEPTH."""
    size, depth = closed_form_measure(expr, memo)
    if size > MAX_CLOSED_FORM_SIZE:
        raise KernelalgError(CLOSED_FORM_TOO_LARGE.format(
            what=f"more than {MAX_CLOSED_FORM_SIZE} operations, counted with repetition"))
    if depth > MAX_CLOSED_FORM_DEPTH:
        raise KernelalgError(CLOSED_FORM_TOO_LARGE.format(what=f"nested more than {MAX_CLOSED_FORM_DEPTH} deep"))


def expand(program: Sequence[Instruction], outputs: Sequence[Expr]) -> list[Expr]:
    """Substitute the program back into ``outputs`` to obtain closed-form expressions.

    Only the instructions the outputs depend on are substituted, and every intermediate closed form is
    measured as it is built (:func:`check_closed_form`), so the work is bounded by the limits, never
    exponential in depth and never a RecursionError.

    Raises:
        KernelalgError: If a closed form exceeds MAX_CLOSED_FORM_SIZE operations or MAX_CLOSED_FORM_DEPTH
            levels (the message points to the program form). Outputs that depend on an :class:`Op` contain
            an opaque function node named after the op.
    """
    need = _needed(program, outputs)
    env: dict[sp.Symbol, Expr] = {}
    memo: dict[int, tuple[Any, int, int]] = {}
    for ins in program:
        if isinstance(ins, Op):
            if need.intersection(ins.targets):
                for t in ins.targets:
                    env[t] = sp.Function(ins.name)(*[env.get(s, s) for s in ins.sources])
                    check_closed_form(env[t], memo)
            continue
        if ins.target not in need:
            continue
        env[ins.target] = ins.expr.xreplace(env) if ins.expr.free_symbols & env.keys() else ins.expr
        check_closed_form(env[ins.target], memo)
    out = [o.xreplace(env) if hasattr(o, "xreplace") else o for o in outputs]
    for o in out:
        check_closed_form(o, memo)
    return out


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
