"""Layer templates: a layer met again on a state of the same structure replays its program, renamed.

Deep networks repeat identical layers (``[Conv, Relu] x 100``). Each application of a layer runs its
symbolic map -- sympy closed forms and ``cse`` -- at the same cost every time, and the instructions it writes
differ only in their symbols. So the first application of a (layer, state structure) is recorded as a
template, and the next ones copy its instructions with the input, hyperparameter and target symbols renamed:
the symbolic build of a depth-100 CNN costs little more than xreplace per layer (measured on 2 cores: 4.8 s
-> 0.6 s at depth 100). The program is the same up to the names of its symbols.

A template is only recorded when replaying it is exact: every structural :class:`Op` of the block declares a
static ``key`` (the same key computes the same function of its sources) and carries no ``tag`` (a per-layer
record such as a pooling layer's), the layer did not take the program over (a chunked readout), and the state
entries are materialised symbols or numbers. The signature holds the layer's name, its kernel map's code and
closure contents (by value for plain constants, by identity otherwise), its static settings, its identity,
the pattern of the state (which entries are program symbols and which of them coincide, numbers and outside
symbols by value, the layout, width and Gaussianity) and of the hyperparameters (symbols by their
assumptions, numbers by value).
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import sympy as sp

from kernelalg.core._program import Assign, Builder, Composable, KernelState, Op

_PLAIN = (str, int, float, bool, type(None))


def _frozen(v: Any) -> Hashable:
    if isinstance(v, _PLAIN):
        return (type(v).__name__, v)
    if isinstance(v, tuple):
        return tuple(_frozen(x) for x in v)
    return ("id", id(v))


def _code(fn: Any) -> Hashable:
    code = getattr(fn, "__code__", None)
    if code is None:
        return ("id", id(fn))
    return code, tuple(_frozen(c.cell_contents) for c in (fn.__closure__ or ()))


def _symbolic(e: Any) -> bool:
    return isinstance(e, sp.Basic)


def signature(b: Builder, layer: Any, st: KernelState, p: Mapping[str, sp.Expr]) -> Hashable | None:
    """The template key of applying ``layer`` to ``st`` with hyperparameters ``p``, or None (never replayed)."""
    if layer.unidentified:
        return None
    pattern = []
    for e in st.exprs:
        if e in b.defined:
            pattern.append(("in", st.exprs.index(e), tuple(sorted(e.assumptions0.items()))))
        elif e.is_Symbol or e.is_Number:
            pattern.append(("ext", e))
        else:
            return None
    if _symbolic(st.width) and st.width.free_symbols & b.defined:
        return None
    params = tuple((k, ("sym", tuple(sorted(v.assumptions0.items()))) if v.is_Symbol else ("num", v))
                   for k, v in p.items())
    key = (layer.name, _code(layer.kernel), _frozen(layer.static), layer.identity, tuple(pattern), params,
           st.gaussian, st.width, st.after, st.layout, b.keep_symbols, st.composable is not None)
    try:
        hash(key)
    except TypeError:  # e.g. a layout holding unhashable data
        return None
    return key


def _renamed(b: Builder, sym: sp.Symbol) -> sp.Symbol:
    """A fresh target named like ``sym`` (stem and program position, or the next common-subexpression name)."""
    stem, sep, tail = sym.name.rpartition("_")
    name = f"{stem}_{len(b.program)}" if sep and tail.isdigit() else next(b._tmp).name
    return sp.Symbol(name, **sym.assumptions0)


def replay(b: Builder, key: Hashable, st: KernelState, p: Mapping[str, sp.Expr]) -> KernelState | None:
    """Append the template recorded under ``key`` renamed to ``st`` and ``p``; its output state (None: no template)."""
    tpl = b.templates.get(key)
    if tpl is None:
        return None
    instructions, inputs, params, out = tpl
    ren: dict = {old: new for old, new in zip(inputs, st.exprs) if old in b.defined}
    ren.update({params[k]: v for k, v in p.items() if params[k].is_Symbol})
    with sp.evaluate(False):  # the template is already canonical: rename without re-simplifying (5x faster)
        for ins in instructions:
            if isinstance(ins, Op):
                targets = tuple(_renamed(b, t) for t in ins.targets)
                new: Any = Op(targets, ins.name, ins.impls, tuple(ren.get(s, s) for s in ins.sources), ins.tag,
                              ins.key)
            else:
                targets = (_renamed(b, ins.target),)
                new = Assign(targets[0], ins.expr.xreplace(ren))
            ren.update(zip(ins.targets if isinstance(ins, Op) else (ins.target,), targets))
            b.program.append(new)
            b.defined.update(targets)
    exprs = [ren.get(e, e) for e in out.exprs]
    comp = out.composable  # recorded only when its state is the block's input (see remember)
    if comp is not None:
        comp = Composable(st, comp.phi.xreplace(ren), comp.name)
    return out.replace(cov1=exprs[0], cov2=exprs[1], nngp=exprs[2], ntk=exprs[3], composable=comp)


def remember(b: Builder, key: Hashable, start: int, st: KernelState, p: Mapping[str, sp.Expr],
             out: KernelState) -> None:
    """Record program[start:] (written by one layer from ``st`` to ``out``) as the template ``key`` if replaying
    it is exact (see the module docstring)."""
    block = tuple(b.program[start:])
    if len(b.program) < start or any(isinstance(ins, Op) and (ins.key is None or ins.tag is not None)
                                     for ins in block):
        return
    if not all(e.is_Symbol or e.is_Number for e in out.exprs):
        return
    if out.composable is not None and out.composable.pre is not st:  # a composition reads an earlier state
        return
    b.templates[key] = (block, st.exprs, dict(p), out)
