"""Runs of identical layers lowered to one ``lax.scan``: compile time independent of depth.

XLA's compile time grows superlinearly with the size of one straight-line elementwise program (measured:
16 s at depth 25, 73 s at depth 50 on a 2-core CPU). Deep networks repeat the same layers, so the
program is a sequence of blocks (one per leaf layer) that differ only in their symbols. Consecutive
units of identical blocks that chain (outputs of one unit are the inputs of the next) are executed by a
scan over the stacked hyperparameters with the kernel state as carry. Structural :class:`Op` nodes take
part when they declare a static ``key`` (e.g. a conv stencil: its filter, strides, padding and layout), so
[Conv, activation] blocks of a deep CNN scan like [Dense, activation] blocks; a run whose state changes
shape from one unit to the next (strided or VALID convolutions) is executed unrolled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import sympy as sp

from kernelalg.core._program import Assign, Block, Instruction, Op
from ._walker import Table, run_program

#: Executes one instruction in place on an environment (the caller's evaluation of the program).
Step = Callable[[Instruction, dict], None]

MIN_REPEATS = 2  # a depth-L stack of [Dense, act] has L - 1 identical units after the first


@dataclass(frozen=True)
class Run:
    """Units [start, stop) of the program executed as a scan."""

    start: int
    stop: int
    unit: tuple[Instruction, ...]
    inputs: tuple[sp.Symbol, ...]
    outputs: tuple[sp.Symbol, ...]
    params: tuple[tuple[sp.Symbol, ...], ...]  # per repetition
    final_outputs: tuple[sp.Symbol, ...]


def _key(program: Sequence[Instruction], blocks: Sequence[Block]) -> Any:
    """Canonical form of consecutive blocks (None if not scannable)."""
    first, last = blocks[0], blocks[-1]
    if not all(isinstance(e, sp.Symbol) for e in first.inputs + last.outputs):
        return None
    ren: dict[sp.Symbol, sp.Symbol] = {s: sp.Symbol(f"_in{i}") for i, s in enumerate(first.inputs)}
    j = 0
    for b in blocks:
        for p in b.params:
            ren[p] = sp.Symbol(f"_p{j}")
            j += 1
    out: list = []
    for ins in program[first.start:last.stop]:
        if isinstance(ins, Op):
            if ins.key is None or ins.tag is not None:
                return None
            sources = tuple(ren.get(s, s).name for s in ins.sources)
            for t in ins.targets:
                ren[t] = sp.Symbol(f"_t{len(ren)}")
            out.append(("op", ins.key, sources, tuple(ren[t].name for t in ins.targets)))
            continue
        ren[ins.target] = sp.Symbol(f"_t{len(ren)}")
        out.append((ren[ins.target].name, ins.expr.xreplace(ren)))
    out.append(tuple(ren.get(s, s).name for s in last.outputs))
    return tuple(out)


def find_runs(program: Sequence[Instruction], blocks: Sequence[Block], outputs: Sequence[sp.Expr]) -> list[Run]:
    """Maximal runs of >= MIN_REPEATS identical chained units of 1..4 blocks."""
    with sp.evaluate(False):  # units compare by the structure of their renamed expressions, not re-simplified
        return _find_runs(program, blocks, outputs)


def _find_runs(program: Sequence[Instruction], blocks: Sequence[Block], outputs: Sequence[sp.Expr]) -> list[Run]:
    runs: list[Run] = []
    i = 0
    while i < len(blocks):
        best = None
        for period in (1, 2, 3, 4):
            unit0 = blocks[i:i + period]
            if len(unit0) < period:
                break
            k0 = _key(program, unit0)
            if k0 is None:
                continue
            reps, j = 1, i + period
            while j + period <= len(blocks):
                nxt = blocks[j:j + period]
                if nxt[0].inputs != blocks[j - 1].outputs or _key(program, nxt) != k0:
                    break
                reps, j = reps + 1, j + period
            if reps >= MIN_REPEATS and (best is None or reps * period > best[0] * best[1]):
                best = (reps, period)
        if best is None:
            i += 1
            continue
        reps, period = best
        units = [blocks[i + r * period:i + (r + 1) * period] for r in range(reps)]
        start, stop = units[0][0].start, units[-1][-1].stop
        internal = {t for ins in program[start:stop] for t in _targets(ins)}
        final = units[-1][-1].outputs
        internal -= set(final)
        used_later = set().union(*(ins.expr.free_symbols for ins in program[stop:] if isinstance(ins, Assign)),
                                 *(getattr(o, "free_symbols", set()) for o in outputs))
        if any(getattr(ins, "sources", None) for ins in program[stop:]):
            used_later |= {s for ins in program[stop:] for s in getattr(ins, "sources", ())}
        if internal & used_later:
            i += 1
            continue
        runs.append(Run(start, stop, tuple(program[units[0][0].start:units[0][-1].stop]), units[0][0].inputs,
                        units[0][-1].outputs, tuple(tuple(p for b in u for p in b.params) for u in units), final))
        i += reps * period
    return runs


def _targets(ins: Instruction) -> tuple[sp.Symbol, ...]:
    return ins.targets if isinstance(ins, Op) else (ins.target,)


def run_scan(run: Run, env: dict, table: Table, step: Step | None = None) -> bool:
    """Execute ``run`` as a lax.scan, writing its final outputs into ``env``.

    Each instruction of the unit goes through ``step`` (default: the walker on ``table``). Returns False, and
    leaves ``env`` untouched, when the unit's outputs do not keep the shapes of its inputs (e.g. a strided
    convolution): such a run cannot be a loop with a fixed carry.
    """
    unit_params = run.params[0]
    step = step or (lambda ins, e: run_program((ins,), e, table))

    def body(carry: tuple, ps: tuple) -> tuple:
        local = dict(env)
        local.update(zip(run.inputs, carry))
        local.update(zip(unit_params, ps))
        for ins in run.unit:
            step(ins, local)
        return tuple(local[s] for s in run.outputs), None

    xs = tuple(jnp.stack([jnp.asarray(env[ps[k]]) for ps in run.params]) for k in range(len(unit_params)))
    init = tuple(jnp.asarray(env[s]) for s in run.inputs)
    out_shapes = (lambda c: jax.eval_shape(lambda c, p: body(c, p)[0], c, tuple(x[0] for x in xs)))
    shapes = out_shapes(init)
    try:
        init = tuple(jnp.broadcast_to(v, s.shape).astype(s.dtype) for v, s in zip(init, shapes))
    except ValueError:  # the first unit shrinks the state
        return False
    if out_shapes(init) != shapes:
        return False
    final, _ = jax.lax.scan(body, init, xs)
    env.update(zip(run.final_outputs, final))
    return True


def run_program_scanned(program: Sequence[Instruction], env: dict, table: Table, runs: Sequence[Run],
                        step: Step) -> dict:
    """Execute ``program`` with ``runs`` replaced by scans (unrolled where a run's shapes change); every other
    instruction, and every instruction of a scanned unit, goes through ``step``."""
    starts = {r.start: r for r in runs}
    i = 0
    while i < len(program):
        r = starts.get(i)
        if r is not None:
            if not run_scan(r, env, table, step):
                for ins in program[r.start:r.stop]:
                    step(ins, env)
            i = r.stop
            continue
        step(program[i], env)
        i += 1
    return env
