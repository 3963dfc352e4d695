"""JAX lowering: one table from sympy classes to jnp functions, with numerically safe primitives.

The safe primitives keep values and gradients finite where the closed forms have integrable
singularities that cancel analytically: sqrt of a vanishing determinant (|rho| = 1, e.g. x = x') and
arccos/arcsin at +-1. Their custom JVPs drop the infinite derivative at the boundary; in every dual of
this library the infinite parts cancel exactly (e.g. for ReLU d/ds12 [sqrt(det) + (pi - theta) s12] =
pi - theta), so the dropped terms are the ones that cancel and the gradient is the correct limit.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import sympy as sp

from kernelalg.core._nodes import asin_gap, corr
from kernelalg.core._program import C, ID1, ID2, Q1, Q2, Assign, Instruction
from ._walker import Table, evaluate, run_program
from . import _pairtiles as pairtiles
from ._scan import find_runs, run_program_scanned

#: The input symbols of the dense layout (per-sample q1, q2, the pair covariance c, the sample identities).
DENSE_INPUTS = frozenset((Q1, Q2, C, ID1, ID2))


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
    """Derivative -y^3/2 where x > 0, else 0. The cube is formed only where x > 0 (rsqrt(tiny)^3 is inf, and
    the transpose of a ``where`` multiplies the unselected branch's factor by a zero cotangent: inf * 0 = NaN)."""
    (x,), (t,) = primals, tangents
    y = safe_rsqrt(x)
    pos = x > 0
    ys = jnp.where(pos, y, 0)
    return y, jnp.where(pos, -0.5 * t * (ys * ys * ys), jnp.zeros_like(t))


def _clip_unit(x: jax.Array) -> jax.Array:
    return jnp.clip(x, -1, 1)


# asin(s) = s (1 + z P(z)), z = s^2 <= 1/4: least-squares fit on Chebyshev nodes (mpmath, 50 digits); the
# error of z P(z) is below 1.1e-18 on [0, 1/4], i.e. under half an ulp of asin (checked in tests/test_conv.py).
_ASIN_COEF = (0.16666666666666760587, 0.074999999999709971066, 0.04464285717430074001,
              0.030381942726351434867, 0.022372214396866388084, 0.017351623457583357878,
              0.013980676388246932593, 0.011400132004304689136, 0.010773256451690326702,
              0.0037332587328423016532, 0.021641408484405353851, -0.020904939185592837659,
              0.032569502850850934853)


# The same fit with 5 coefficients for float32 and narrower types: max error 0.77 ulp of float32 on [0, 1/2],
# rounding of the float32 evaluation included (checked in tests/test_conv.py); 8 fewer multiply-adds per entry.
_ASIN_COEF_F32 = (0.16666672764698376, 0.07498809175769783, 0.04501070005569604, 0.026494276786963013,
                  0.038206452064434356)


def _asin_abs(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For a = |x| in [0, 1]: (big, r) with asin(a) = pi/2 - 2 r where big (a > 1/2), else r."""
    big = a > 0.5
    z = jnp.where(big, (1 - a) * 0.5, a * a)
    s = jnp.where(big, jnp.sqrt(z), a)
    coef = _ASIN_COEF_F32 if jnp.finfo(a.dtype).bits <= 32 else _ASIN_COEF
    acc = jnp.full_like(z, coef[-1])
    for c in coef[-2::-1]:
        acc = acc * z + c
    return big, s + s * z * acc


def fast_arccos(x: jax.Array) -> jax.Array:
    """arccos on [-1, 1] from one polynomial (vectorises; XLA's CPU arccos is a scalar libm call, ~10x slower).

    |x| <= 1/2: pi/2 - asin(x); |x| > 1/2: acos(|x|) = 2 asin(sqrt((1 - |x|)/2)) (Cephes' range reduction).
    """
    big, r = _asin_abs(jnp.abs(x))
    neg = x < 0
    return jnp.where(big, jnp.where(neg, jnp.pi - 2 * r, 2 * r), jnp.pi / 2 - jnp.where(neg, -r, r))


def fast_arcsin(x: jax.Array) -> jax.Array:
    """arcsin on [-1, 1] from the same polynomial (XLA's CPU arcsin is a scalar libm call, ~15x slower)."""
    big, r = _asin_abs(jnp.abs(x))
    y = jnp.where(big, jnp.pi / 2 - 2 * r, r)
    return jnp.where(x < 0, -y, y)


@jax.custom_jvp
def arcsin_gap(g: jax.Array, h: jax.Array) -> jax.Array:
    """asin(g) for |g| <= 1 given h = 1 - g^2 computed without cancellation (node ``asin_gap``): the range
    reduction asin(a) = pi/2 - 2 asin(sqrt((1 - a)/2)) for a = |g| > 1/2 takes 1 - a = h / (1 + a), exact where
    1 - a itself would have lost its digits. Derivative dg / sqrt(h) (h follows g: the two are one function)."""
    a = jnp.abs(g)
    big = a > 0.5
    z = jnp.where(big, 0.5 * jnp.maximum(h, 0) / (1 + a), a * a)
    s = jnp.where(big, jnp.sqrt(z), a)
    acc = jnp.full_like(z, _ASIN_COEF[-1])
    for c in _ASIN_COEF[-2::-1]:
        acc = acc * z + c
    r = s + s * z * acc
    y = jnp.where(big, jnp.pi / 2 - 2 * r, r)
    return jnp.where(g < 0, -y, y)


@arcsin_gap.defjvp
def _arcsin_gap_jvp(primals: tuple, tangents: tuple) -> tuple:
    (g, h), (tg, _) = primals, tangents
    pos = h > 0
    return arcsin_gap(g, h), jnp.where(pos, tg * safe_rsqrt(jnp.where(pos, h, 1)), jnp.zeros_like(tg))


@jax.custom_jvp
def fast_arctan(x: jax.Array) -> jax.Array:
    """arctan from the arcsin polynomial: atan(u) = asin(u / sqrt(1 + u^2)) for u = min(|x|, 1/|x|) <= 1,
    atan(|x|) = pi/2 - atan(1/|x|) for |x| > 1 (vectorises; XLA's CPU atan is a scalar libm call, ~8x slower).
    The argument of asin is at most 1/sqrt(2), where asin is well conditioned (error below 4 ulps)."""
    a = jnp.abs(x)
    inv = a > 1
    u = jnp.where(inv, 1 / jnp.where(inv, a, 1), a)
    big, r = _asin_abs(u * jax.lax.rsqrt(1 + u * u))
    y = jnp.where(big, jnp.pi / 2 - 2 * r, r)
    y = jnp.where(inv, jnp.pi / 2 - y, y)
    return jnp.where(x < 0, -y, y)


@fast_arctan.defjvp
def _fast_arctan_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return fast_arctan(x), t / (1 + x * x)


@jax.custom_jvp
def safe_arccos(x: jax.Array) -> jax.Array:
    """arccos(clip(x, -1, 1)) with derivative 0 at |x| >= 1."""
    return fast_arccos(_clip_unit(x))


def _unit_slope(x: jax.Array, t: jax.Array) -> jax.Array:
    """t / sqrt(1 - x^2) inside (-1, 1), 0 at |x| >= 1: the tangent of arcsin (minus that of arccos)."""
    inside = jnp.abs(x) < 1
    return jnp.where(inside, t / jnp.sqrt(jnp.where(inside, 1 - x * x, 1)), jnp.zeros_like(t))


@safe_arccos.defjvp
def _safe_arccos_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return safe_arccos(x), -_unit_slope(x, t)


@jax.custom_jvp
def safe_arcsin(x: jax.Array) -> jax.Array:
    """arcsin(clip(x, -1, 1)) with derivative 0 at |x| >= 1."""
    return fast_arcsin(_clip_unit(x))


@safe_arcsin.defjvp
def _safe_arcsin_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return safe_arcsin(x), _unit_slope(x, t)


def _smaller(a: Any, b: Any) -> bool:
    """Whether ``a`` has fewer elements than ``b`` (a broadcast factor, e.g. a per-sample variance)."""
    return jnp.size(a) < jnp.size(b)


def snapped_corr(s11: jax.Array, s12: jax.Array, s22: jax.Array) -> jax.Array:
    """rho = s12 / sqrt(s11 s22), clipped to [-1, 1] and snapped to +-1 within 512 ulps.

    Rounding makes rho of identical inputs 1 - O(eps); the arc-cosine duals' square-root singularity
    would amplify that to O(sqrt(eps)) per layer, and where the correlation map is expanding (the chaotic
    phase) the diagonal would drift away from the variance map. Snapping restores the exact values there;
    the gradient of rho is 0 at snapped points, which is exact for parallel inputs (rho is maximal there).
    The two rsqrts are taken separately (per sample when the variances are per-sample arrays): s11 s22 would
    overflow float32 at variances of 2e19.
    """
    if _smaller(s11, s12) and _smaller(s22, s12):  # per-sample variances: N + M rsqrts instead of N M
        rho = s12 * (safe_rsqrt(s11) * safe_rsqrt(s22))
    else:  # not rsqrt(s11 s22): the product underflows for variances below sqrt(tiny) (1e-19 in float32,
        # reached by 63 ReLU layers with W_std = 1), which made rho 0
        rho = s12 * safe_rsqrt(s11) * safe_rsqrt(s22)
    tol = 512 * jnp.finfo(jnp.result_type(rho, float)).eps
    return jnp.where(jnp.abs(rho) > 1 - tol, jnp.copysign(jnp.ones_like(rho), rho), rho)


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


def _product(num: list, den: list) -> Any:
    """A product num[0] ... / den[0] ... evaluated by increasing array size: scalars first, then each per-sample
    group (shape (N, 1), then (1, M)) with its own denominators, the per-pair factors last.

    Per-sample factors meet the pair arrays once (fewer per-pair operations), and per-sample ratios such as
    s / (1 + s) are formed before any per-pair product, so a scaled dual (``kernelalg.core._duals``) has no
    intermediate larger than its result (s11 s22 / ((1 + s11)(1 + s22)) never forms s11 s22).
    """
    groups: dict[tuple, tuple[list, list]] = {}
    for values, slot in ((num, 0), (den, 1)):
        for v in values:
            groups.setdefault(jnp.shape(v), ([], []))[slot].append(v)
    out = None
    for shape in sorted(groups, key=lambda sh: (math.prod(sh), sh)):
        nums, dens = groups[shape]
        for i in range(max(len(nums), len(dens))):
            if i < len(nums):
                out = nums[i] if out is None else out * nums[i]
            if i < len(dens):
                out = 1 / dens[i] if out is None else out / dens[i]
    return out


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
        sp.acos: safe_arccos, sp.atan: fast_arctan, sp.atan2: jnp.arctan2, sp.erf: jss.erf,
        sp.erfc: jss.erfc, sp.Abs: jnp.abs, sp.sign: jnp.sign, sp.Max: _reduce(jnp.maximum),
        sp.Min: _reduce(jnp.minimum), sp.Heaviside: _heaviside, sp.Pow: jnp.power, corr: snapped_corr,
        asin_gap: arcsin_gap,
        sp.KroneckerDelta: lambda a, b: jnp.where(a == b, 1.0, 0.0),
    },
    const=lambda c: float(c),
    power=_power,
    product=_product,
)


def register_jax_lowering(cls: type, fn: Callable[..., Any]) -> None:
    """Teach the JAX backend a new sympy node class."""
    JAX_TABLE.functions[cls] = fn


#: Target number of elements of one per-pair array in a tile (512 KiB of float64): a tile's layer state
#: stays in the cores' L2 caches while all layers run on it.
TILE_ELEMENTS = 2**16


def lower_program(program: Sequence[Instruction], outputs: Sequence[sp.Expr],
                  blocks: Sequence[Any] = (), flagged: int = 0) -> Callable[..., list]:
    """Lower a program to a function (env, symmetric=None) -> [output arrays] (pure; wrap it in jax.jit).

    With ``blocks`` (the per-layer :class:`~kernelalg.core._program.Block` records), runs of identical layers
    become one ``lax.scan`` each, so compile time does not grow with depth. A dense (all elementwise)
    program on large inputs runs, on CPU, on tiles of the pair arrays (``lax.map``), all layers per
    tile, so that the per-layer state is read and written in cache instead of main memory.

    ``symmetric=n`` says that env holds the kernel of n samples with themselves: every (n, n) output is then
    exactly symmetric, and a dense program on CPU computes only the tiles on and above the diagonal
    (:mod:`kernelalg.backends._pairtiles`).

    ``flagged=k`` appends one more output: whether every entry of the first k outputs is finite, reduced tile
    by tile while the tile is in cache (a separate pass over the outputs costs ~2% of a dense kernel).
    """
    program = tuple(program)
    runs = find_runs(program, blocks, outputs) if blocks else []
    elementwise = all(isinstance(ins, Assign) for ins in program)

    def run(env: dict) -> list:
        if runs:
            env = run_program_scanned(program, dict(env), JAX_TABLE, runs,
                                      lambda ins, e: run_program((ins,), e, JAX_TABLE))
        else:
            env = run_program(program, dict(env), JAX_TABLE)
        vals = [evaluate(o, env, JAX_TABLE) for o in outputs]
        if flagged:
            vals.append(jnp.all(jnp.stack([jnp.all(jnp.isfinite(jnp.asarray(v))) for v in vals[:flagged]])))
        return vals

    def tiled(env: dict, symmetric: int | None = None) -> list:
        # accelerators want one big fused kernel, not a loop of small ones
        tiles = elementwise and set(env) <= DENSE_INPUTS | _params(env) and jax.default_backend() == "cpu"
        if symmetric is not None:
            return pairtiles.symmetric(run, env, symmetric, TILE_ELEMENTS, tiles, bool(flagged))
        return pairtiles.row_tiled(run, env, TILE_ELEMENTS, bool(flagged)) if tiles else run(env)

    return tiled


def _params(env: dict) -> set:
    return {k for k, v in env.items() if jnp.ndim(v) == 0}


def lower_elementwise(expr: sp.Expr, x: sp.Symbol) -> Callable[[jax.Array], jax.Array]:
    """Lower a sympy function of one symbol to an elementwise jnp function."""
    def f(arr: jax.Array) -> jax.Array:
        out = evaluate(expr, {x: arr}, JAX_TABLE)
        return jnp.broadcast_to(jnp.asarray(out, dtype=jnp.result_type(arr, float)), jnp.shape(arr))
    return f
