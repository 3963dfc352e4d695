"""The affine kernel update shared by every trainable linear layer (Dense, Conv, Recurrent).

For y = (W_std/sqrt(n)) W x + b_std b (NTK parametrization) or y = W x + b with W ~ N(0, W_std^2/n),
b ~ N(0, b_std^2) (standard), and a structural linear map A of the input kernel (identity for Dense, the
stencil sum for Conv), with n the fan-in:

    K     <- W^2 A[K] + b^2
    Theta <- K_new + W^2 A[Theta]                        (ntk)
    Theta <- n A[K] + [bias] + W^2 A[Theta]              (standard: the weights' own gradient term)

References:
    Jacot et al. (2018); Lee et al. (2019); Novak et al. (2020), neural-tangents' stax (both parametrizations).
"""

from __future__ import annotations

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
