"""The affine kernel update shared by every trainable linear layer (Dense, Conv, Recurrent).

For y = (W_std/sqrt(n)) W x + b_std b (NTK parametrization) or y = W x + b with W ~ N(0, W_std^2/n),
b ~ N(0, b_std^2) (standard), and a structural linear map A of the input kernel (identity for Dense, the
stencil sum for Conv), with n the fan-in:

    K     <- W^2 A[K] + b^2
    Theta <- K_new + W^2 A[Theta]                        (ntk)
    Theta <- n A[K] + [bias] + W^2 A[Theta]              (standard: the weights' own gradient term)

The finite-width twins of these layers take their scales from :func:`affine_scales`: the layer's own
parametrization ("ntk" or "standard"), or an :class:`AffineScaling` (width exponents of an
abc-parametrization, Yang & Hu 2021) that ``ka.finite(net, width, parametrization=...)`` puts in the twin's
static settings under the key ``"scaling"``.

References:
    Jacot et al. (2018); Lee et al. (2019); Novak et al. (2020), neural-tangents' stax (both parametrizations);
    Yang & Hu (2021), "Tensor Programs IV: Feature Learning in Infinite-Width Neural Networks" (abc).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._program import KernelState

PARAMETERIZATIONS = ("ntk", "standard")


def check_parameterization(layer: str, value: Any) -> str:
    """Validate a parametrization name ("ntk" or "standard")."""
    if value not in PARAMETERIZATIONS:
        raise E.KernelalgError(E.BAD_PARAMETERIZATION.format(layer=layer, value=value))
    return value


def weight_bias(p: Mapping[str, sp.Expr]) -> tuple[sp.Expr, sp.Expr, int]:
    """(W_std^2, b_std^2, 1 if there is a bias else 0) from a layer's hyperparameter expressions."""
    has_bias = "b_std" in p
    return p["W_std"] ** 2, (p["b_std"] ** 2 if has_bias else sp.Integer(0)), int(has_bias)


def affine_state(p: Mapping[str, sp.Expr], parameterization: str, mapped: tuple[sp.Expr, ...],
                 weight_grad: Callable[[], sp.Expr], **fields: Any) -> KernelState:
    """The kernel state after an affine layer.

    Args:
        p: Hyperparameter expressions (``W_std``, optional ``b_std``).
        parameterization: "ntk" or "standard".
        mapped: (cov1, cov2, nngp, ntk) of the input after the layer's structural linear map A.
        weight_grad: () -> n A[K], the weights' own NTK term in the standard parametrization (called only
            there; it raises when the fan-in n is unknown).
        **fields: The other :class:`KernelState` fields (width, after, layout).
    """
    w2, b2, bias = weight_bias(p)
    a1, a2, acov, antk = mapped
    cov1, cov2, nngp = (w2 * a + b2 for a in (a1, a2, acov))
    ntk = nngp + w2 * antk if parameterization == "ntk" else weight_grad() + bias + w2 * antk
    return KernelState(cov1, cov2, nngp, ntk, gaussian=True, **fields)


@dataclass(frozen=True)
class AffineScaling:
    """Width exponents of one affine layer in an abc-parametrization (Yang & Hu 2021, Sec. 3).

    The effective weight is ``W_eff = m n^{-a} w`` with ``w ~ N(0, (i n^{-b})^2)`` and the bias
    ``b_eff = m_b n_b^{-a_bias} beta`` with ``beta ~ N(0, (i_b n_b^{-b_bias})^2)``, where ``n`` is the layer's
    fan-in for hidden and output layers and its fan-out for the input layer, ``n_b`` the fan-out. The
    constant ``K = W_std / sqrt(fan_in)`` (input layer) or ``W_std`` (others), ``b_std`` for the bias, sits
    in the multiplier (``m = K``, ``i = 1``: "multiplier") or in the initialisation (``m = 1``, ``i = K``: "init").

    Attributes:
        kind: "input", "hidden" or "output".
        a, b: Weight multiplier and initialisation exponents.
        a_bias, b_bias: The bias's exponents.
        constants: "multiplier" or "init".
    """

    kind: str
    a: float
    b: float
    a_bias: float
    b_bias: float
    constants: str


@dataclass(frozen=True)
class Scales:
    """Multipliers and initial standard deviations of an affine layer's weight and bias."""

    w_mult: float
    w_init: float
    b_mult: float
    b_init: float


def affine_scales(static: Mapping[str, Any], w_std: float, b_std: float | None, fan_in: int,
                  fan_out: int) -> Scales:
    """The twin's scales: ``y = w_mult (x . W) + b_mult b`` with ``W ~ N(0, w_init^2)``, ``b ~ N(0, b_init^2)``.

    "ntk": (W_std/sqrt(fan_in), 1, b_std, 1); "standard": (1, W_std/sqrt(fan_in), 1, b_std); an
    :class:`AffineScaling` under ``static["scaling"]``: see its docstring.
    """
    sc = static.get("scaling")
    bs = 0.0 if b_std is None else float(b_std)
    if sc is None:
        k = w_std / math.sqrt(fan_in)
        return Scales(1.0, k, 1.0, bs) if static["parameterization"] == "standard" else Scales(k, 1.0, bs, 1.0)
    n = fan_out if sc.kind == "input" else fan_in
    k = w_std / math.sqrt(fan_in) if sc.kind == "input" else float(w_std)
    wm, wi = n ** -sc.a, n ** -sc.b
    bm, bi = fan_out ** -sc.a_bias, fan_out ** -sc.b_bias
    if sc.constants == "init":
        return Scales(wm, k * wi, bm, bs * bi)
    return Scales(k * wm, wi, bs * bm, bi)
