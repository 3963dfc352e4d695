"""JAX lowering: one table from sympy classes to jnp functions, with numerically safe primitives.

The safe primitives keep values and gradients finite where the closed forms have integrable
singularities that cancel analytically: sqrt of a vanishing determinant (|rho| = 1, e.g. x = x') and
arccos/arcsin at +-1. Their custom JVPs drop the infinite derivative at the boundary; in every dual of
this library the infinite parts cancel exactly (e.g. for ReLU d/ds12 [sqrt(det) + (pi - theta) s12] =
pi - theta), so the dropped terms are the ones that cancel and the gradient is the correct limit.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import sympy as sp

from kernelalg._duals import corr
from kernelalg._program import Instruction
from ._walker import Table, evaluate, run_program


@jax.custom_jvp
def safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt(max(x, 0)) with derivative 0 where x <= 0."""
    return jnp.sqrt(jnp.maximum(x, 0))


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    y = safe_sqrt(x)
    pos = x > 0
    return y, jnp.where(pos, t / (2 * jnp.where(pos, y, 1)), jnp.zeros_like(t))


@jax.custom_jvp
def safe_rsqrt(x: jax.Array) -> jax.Array:
    """1/sqrt(x), evaluated at max(x, tiny) so that 0 * rsqrt(0) = 0 (e.g. zero input vectors)."""
    return jax.lax.rsqrt(jnp.maximum(x, jnp.finfo(jnp.result_type(x, float)).tiny))


@safe_rsqrt.defjvp
def _safe_rsqrt_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    y = safe_rsqrt(x)
    pos = x > 0
    return y, jnp.where(pos, -0.5 * t * y**3, jnp.zeros_like(t))


def _clip_unit(x: jax.Array) -> jax.Array:
    return jnp.clip(x, -1, 1)


@jax.custom_jvp
def safe_arccos(x: jax.Array) -> jax.Array:
    """arccos(clip(x, -1, 1)) with derivative 0 at |x| >= 1."""
    return jnp.arccos(_clip_unit(x))


@safe_arccos.defjvp
def _safe_arccos_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    inside = jnp.abs(x) < 1
    den = jnp.sqrt(jnp.where(inside, 1 - x * x, 1))
    return safe_arccos(x), jnp.where(inside, -t / den, jnp.zeros_like(t))


@jax.custom_jvp
def safe_arcsin(x: jax.Array) -> jax.Array:
    """arcsin(clip(x, -1, 1)) with derivative 0 at |x| >= 1."""
    return jnp.arcsin(_clip_unit(x))


@safe_arcsin.defjvp
def _safe_arcsin_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    inside = jnp.abs(x) < 1
    den = jnp.sqrt(jnp.where(inside, 1 - x * x, 1))
    return safe_arcsin(x), jnp.where(inside, t / den, jnp.zeros_like(t))


def snapped_corr(s11: jax.Array, s12: jax.Array, s22: jax.Array) -> jax.Array:
    """rho = s12 / sqrt(s11 s22), clipped to [-1, 1] and snapped to +-1 within 512 ulps.

    Rounding makes rho of identical inputs 1 - O(eps); the arc-cosine duals' square-root singularity
    would amplify that to O(sqrt(eps)) per layer. Snapping restores the exact values there; the gradient
    of rho is 0 at snapped points, which is exact for parallel inputs (rho is maximal there).
    """
    rho = s12 * safe_rsqrt(s11 * s22)
    tol = 512 * jnp.finfo(jnp.result_type(rho, float)).eps
    return jnp.where(jnp.abs(rho) > 1 - tol, jnp.sign(rho), rho)


def _power(base: Any, exp: sp.Expr) -> Any:
    if exp.is_Integer:
        n = int(exp)
        return base**n if n >= 0 else 1 / base ** (-n)
    if exp.is_Rational and exp.q == 2:
        n = int(exp.p)
        return safe_sqrt(base) ** n if n > 0 else safe_rsqrt(base) ** (-n)
    return jnp.power(base, float(exp))


def _heaviside(x: Any, h0: Any = 0.5) -> Any:
    return jnp.where(x > 0, 1.0, jnp.where(x < 0, 0.0, h0)).astype(jnp.result_type(x, float))


def _reduce(fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def red(*args: Any) -> Any:
        out = args[0]
        for a in args[1:]:
            out = fn(out, a)
        return out
    return red


JAX_TABLE = Table(
    name="jax",
    functions={
        sp.exp: jnp.exp, sp.log: jnp.log, sp.sin: jnp.sin, sp.cos: jnp.cos, sp.tan: jnp.tan,
        sp.sinh: jnp.sinh, sp.cosh: jnp.cosh, sp.tanh: jnp.tanh, sp.asin: safe_arcsin,
        sp.acos: safe_arccos, sp.atan: jnp.arctan, sp.atan2: jnp.arctan2, sp.erf: jss.erf,
        sp.erfc: jss.erfc, sp.Abs: jnp.abs, sp.sign: jnp.sign, sp.Max: _reduce(jnp.maximum),
        sp.Min: _reduce(jnp.minimum), sp.Heaviside: _heaviside, sp.Pow: jnp.power, corr: snapped_corr,
    },
    const=lambda c: float(c),
    power=_power,
)


def register_jax_lowering(cls: type, fn: Callable[..., Any]) -> None:
    """Teach the JAX backend a new sympy node class."""
    JAX_TABLE.functions[cls] = fn


def lower_program(program: Sequence[Instruction], outputs: Sequence[sp.Expr]) -> Callable[[dict], list]:
    """Lower a program to a function env -> [output arrays] (pure; wrap it in jax.jit)."""
    program = tuple(program)

    def run(env: dict) -> list:
        env = run_program(program, dict(env), JAX_TABLE)
        return [evaluate(o, env, JAX_TABLE) for o in outputs]

    return run


def lower_elementwise(expr: sp.Expr, x: sp.Symbol) -> Callable[[jax.Array], jax.Array]:
    """Lower a sympy function of one symbol to an elementwise jnp function."""
    def f(arr: jax.Array) -> jax.Array:
        out = evaluate(expr, {x: arr}, JAX_TABLE)
        return jnp.broadcast_to(jnp.asarray(out, dtype=jnp.result_type(arr, float)), jnp.shape(arr))
    return f
