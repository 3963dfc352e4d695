"""Linearization and Taylor expansion of any JAX function ``f(params, *args)`` around fixed parameters.

Semantics are neural-tangents' ``nt.linearize`` and ``nt.taylor_expand`` (Novak et al. 2020):

* ``linearize(f, params)(p, *args) = f(params, *args) + J(params) (p - params)``, the first-order model whose
  gradient-descent training is the NTK dynamics of Lee et al. (2019, Eq. 6);
* ``taylor_expand(f, params, degree)(p, *args) = sum_{k=0}^{degree} D^k f(params)[p - params]^k / k!``.

The directional derivatives ``D^k f[dp]^k`` come from ``degree`` nested forward-mode JVPs evaluated in one
pass (each level returns every lower derivative, so nothing is recomputed). Outputs may be any pytree.

References:
    Lee et al. (2019), "Wide neural networks of any depth evolve as linear models under gradient descent";
    Novak et al. (2020), "Neural Tangents" (``neural_tangents.linearize``, ``taylor_expand``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax

from kernelalg.core import _errors as E

BAD_DEGREE = "taylor_expand: degree must be an integer >= 0, got {degree!r}. Fix: e.g. degree=2."
BAD_PARAMS = ("{name}: the parameters p do not have the structure of the expansion point ({why}). Fix: pass "
              "parameters of the same pytree structure and leaf shapes as those given to {name}(f, params).")


def _displacement(name: str, p: Any, params: Any) -> Any:
    """p - params, leaf by leaf, with a clear error when the structures differ."""
    try:
        return jax.tree_util.tree_map(lambda a, b: a - b, p, params)
    except (ValueError, TypeError) as err:
        raise E.KernelalgError(BAD_PARAMS.format(name=name, why=err)) from None


def linearize(f: Callable, params: Any) -> Callable:
    """The first-order Taylor model of ``f`` around ``params`` (neural-tangents' ``linearize``).

    Args:
        f: ``f(params, *args, **kwargs) -> outputs`` (any pytree of arrays).
        params: The expansion point (any pytree).

    Returns:
        ``f_lin(p, *args, **kwargs) = f(params, *args, **kwargs) + J(params) (p - params)``, one JVP per call.

    Example:
        >>> twin = ka.finite(net, 512); p0 = twin.init(0, (3,))               # doctest: +SKIP
        >>> f_lin = ka.linearize(twin.apply, p0)
        >>> f_lin(p0, x) == twin.apply(p0, x)
    """
    def f_lin(p: Any, *args: Any, **kwargs: Any) -> Any:
        dp = _displacement("linearize", p, params)
        out, tangent = jax.jvp(lambda q: f(q, *args, **kwargs), (params,), (dp,))
        return jax.tree_util.tree_map(lambda a, b: a + b, out, tangent)
    return f_lin


def taylor_expand(f: Callable, params: Any, degree: int) -> Callable:
    """The Taylor polynomial of ``f`` of order ``degree`` around ``params`` (neural-tangents' ``taylor_expand``).

    Args:
        f: ``f(params, *args, **kwargs) -> outputs`` (any pytree of arrays).
        params: The expansion point (any pytree).
        degree: Order of the expansion (0: the constant ``f(params)``; 1: :func:`linearize`).

    Returns:
        ``f_tayl(p, *args, **kwargs) = sum_{k<=degree} D^k f(params)[p - params]^k / k!``.
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise E.KernelalgError(BAD_DEGREE.format(degree=degree))

    def f_tayl(p: Any, *args: Any, **kwargs: Any) -> Any:
        dp = _displacement("taylor_expand", p, params)
        derivs = directional_derivatives(lambda q: f(q, *args, **kwargs), params, dp, degree)
        total = derivs[0]
        for k in range(1, degree + 1):
            total = jax.tree_util.tree_map(lambda a, b, c=math.factorial(k): a + b / c, total, derivs[k])
        return total
    return f_tayl


def directional_derivatives(g: Callable[[Any], Any], params: Any, direction: Any, degree: int) -> list:
    """``[g(params), D g[d], D^2 g[d, d], ..., D^degree g[d]^degree]`` by nested JVPs in one evaluation."""
    def level(k: int) -> Callable[[Any], list]:
        if k == 0:
            return lambda q: [g(q)]
        lower = level(k - 1)

        def all_up_to_k(q: Any) -> list:
            values, tangents = jax.jvp(lower, (q,), (direction,))
            return values + [tangents[-1]]
        return all_up_to_k
    return level(degree)(params)
