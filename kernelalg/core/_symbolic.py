"""``ka.symbolic``: the kernel of an architecture as sympy expressions.

The network is built into a straight-line program (one CSE'd block per layer, see
:mod:`kernelalg.core._program`); closed forms are recovered on demand by substitution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._duals import plain
from kernelalg.core._errors import KernelalgError
from kernelalg.core._inputs import layout_of
from kernelalg.core._layer import Layer, as_layer, build
from kernelalg.core._program import (C, D, Q1, Q2, Builder, Instruction, KernelState, check_closed_form, expand,
                                     flatten_states, program_size)


@dataclass(frozen=True, eq=False)
class SymbolicKernel:
    """The symbolic kernel of a network.

    Attributes:
        net: The architecture.
        program: Straight-line program (CSE'd per layer); size grows linearly with depth.
        outputs: Final kernel state per output branch (entries are program symbols).
        params: Hyperparameter symbol -> value.
        keep_symbols: Whether hyperparameters appear as symbols in ``nngp``/``ntk``.
        routes: How each non-library activation's dual was obtained.
        asymmetric: True when the NTK is not symmetric in (x, x') (surrogate-gradient kernels).
        requires: Conditions (expr > 0, reason) on program symbols for the kernel to exist (see
            :meth:`~kernelalg.core._program.Builder.require`).
    """

    net: Layer
    program: tuple[Instruction, ...]
    outputs: tuple[KernelState, ...]
    params: dict[sp.Symbol, float]
    keep_symbols: bool
    routes: dict[str, str] = field(default_factory=dict)
    asymmetric: bool = False
    blocks: tuple = ()
    requires: tuple[tuple[sp.Expr, str], ...] = ()

    #: Input symbols: |x|^2/d, |x'|^2/d, x.x'/d, and the input dimension d.
    inputs = {"q1": Q1, "q2": Q2, "c": C, "d": D}

    def _expanded(self, which: str) -> list[sp.Expr]:
        exprs = [getattr(s, which) for s in self.outputs]
        out, memo = [plain(e) for e in expand(self.program, exprs)], {}
        for e in out:  # plain() writes each correlation node out: check the final size once more
            check_closed_form(e, memo)
        return out

    def _single(self, which: str) -> Any:
        out = self._expanded(which)
        return out[0] if len(out) == 1 else tuple(out)

    @cached_property
    def nngp(self) -> sp.Expr:
        """NNGP kernel K(x, x') in q1, q2, c (a tuple for several output branches).

        Raises:
            KernelalgError: When the closed form exceeds MAX_CLOSED_FORM_SIZE = 20,000 operations or
                MAX_CLOSED_FORM_DEPTH = 120 levels (e.g. deep ReLU networks): use :attr:`program` instead.
        """
        return self._single("nngp")

    @cached_property
    def ntk(self) -> sp.Expr:
        """NTK Theta(x, x') in q1, q2, c."""
        return self._single("ntk")

    @cached_property
    def cov1(self) -> sp.Expr:
        """K(x, x) in q1 (the name of :class:`Kernel`'s field)."""
        return self._single("cov1")

    @cached_property
    def cov2(self) -> sp.Expr:
        """K(x', x') in q2."""
        return self._single("cov2")

    @property
    def var1(self) -> sp.Expr:
        """Deprecated alias of :attr:`cov1`."""
        return self.cov1

    @property
    def var2(self) -> sp.Expr:
        """Deprecated alias of :attr:`cov2`."""
        return self.cov2

    @property
    def symbols(self) -> dict[str, sp.Symbol]:
        """All free symbols users may substitute: inputs and hyperparameters, by name."""
        out = dict(self.inputs)
        out.update({s.name: s for s in self.params})
        return out

    @property
    def param_values(self) -> dict[str, float]:
        """Hyperparameter name -> value."""
        return {s.name: v for s, v in self.params.items()}

    def size(self) -> int:
        """Operation count of the CSE'd program (linear in depth)."""
        return program_size(self.program)

    def closed_form_fits(self, which: str = "ntk") -> bool:
        """Whether the closed form of ``which`` is within the limits (building it if so; see :attr:`nngp`)."""
        try:
            getattr(self, which)
        except KernelalgError:
            return False
        return True

    def latex(self, which: str = "ntk", program: bool | None = None) -> str:
        """LaTeX of the kernel.

        Args:
            which: "nngp", "ntk", "cov1" or "cov2".
            program: If True, the CSE'd program as aligned equations (readable at any depth); if False, the
                single closed form; None chooses the program when the closed form would be long.

        Raises:
            KernelalgError: ``program=False`` and the closed form is too large (see :attr:`nngp`).
        """
        if which not in _LATEX_WHICH:
            raise E.KernelalgError(E.BAD_WHICH.format(which=which, known=", ".join(map(repr, _LATEX_WHICH))))
        if program is None:
            program = len(self.program) > 40 or not self.closed_form_fits(which)
        if not program:
            expr = getattr(self, which)
            return sp.latex(expr) if not isinstance(expr, tuple) else ",\\;".join(map(sp.latex, expr))
        lines = [f"{sp.latex(i.target)} &= {sp.latex(i.expr)}" for i in self.program if hasattr(i, "expr")]
        lines += [f"\\mathrm{{{which}}} &= {sp.latex(getattr(s, which))}" for s in self.outputs]
        return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"

    def subs(self, **values: float) -> dict[str, sp.Expr]:
        """NNGP and NTK with some symbols replaced by numbers, e.g. ``subs(q1=1, q2=1)``."""
        sym = self.symbols
        rep = {sym[k]: v for k, v in values.items()}
        return {"nngp": _subs(self.nngp, rep), "ntk": _subs(self.ntk, rep)}

    def __repr__(self) -> str:
        return (f"SymbolicKernel({self.net!r}; {len(self.program)} instructions, size {self.size()}, "
                f"params {self.param_values})")


_LATEX_WHICH = ("nngp", "ntk", "cov1", "cov2")


def _subs(e: Any, rep: dict) -> Any:
    return tuple(x.subs(rep) for x in e) if isinstance(e, tuple) else e.subs(rep)


#: Traces by architecture identity (layers are immutable records): symbolic() and compile() of the same
#: expression share one trace. The layer is kept beside its trace so that its id is never reused.
_TRACES: dict[tuple[int, bool], tuple[Layer, "SymbolicKernel"]] = {}


def trace(net: Layer, keep_symbols: bool) -> SymbolicKernel:
    """Build the program of ``net`` (internal: shared by :func:`symbolic` and the compilers)."""
    net = as_layer(net)
    hit = _TRACES.get((id(net), keep_symbols))
    if hit is not None and hit[0] is net:
        return hit[1]
    sk = _trace(net, keep_symbols)
    _TRACES[(id(net), keep_symbols)] = (net, sk)
    return sk


def _trace(net: Layer, keep_symbols: bool) -> SymbolicKernel:
    builder = Builder(keep_symbols=keep_symbols)
    out = build(net, builder, layout_of(net).stats())
    return SymbolicKernel(net, tuple(builder.program), flatten_states(out), dict(builder.params),
                          keep_symbols, dict(builder.routes), builder.asymmetric,
                          tuple(builder.blocks), tuple(builder.requires))


def symbolic(net: Layer, keep_symbols: bool = False) -> SymbolicKernel:
    """The NNGP and NTK of ``net`` in closed form.

    Args:
        net: An architecture expression, e.g. ``Dense(1.5, 0.05) >> Relu() >> Dense(1.5, 0.05)``.
        keep_symbols: Keep hyperparameters (W_std, b_std, activation parameters) as symbols named
            ``sigma_w_1``, ``sigma_b_1``, ``a_2``, ... (layer index after the underscore).

    Returns:
        A :class:`SymbolicKernel` whose ``nngp``/``ntk`` are sympy expressions in ``q1 = |x|^2/d``,
        ``q2 = |x'|^2/d`` and ``c = x.x'/d``.

    Example:
        >>> import kernelalg as ka
        >>> ka.symbolic(ka.Dense(1.0, 0.0) >> ka.Relu() >> ka.Dense(1.0)).nngp  # doctest: +SKIP
    """
    return trace(net, keep_symbols)
