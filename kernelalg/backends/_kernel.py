"""What the kernel functions share: the Kernel record, the requested kernels, hyperparameters, precision.

:class:`KernelFunction` is the common part of the jitted :class:`~kernelalg.backends._compile.CompiledKernel`
and the NumPy :class:`~kernelalg.backends._reference_kernel.ReferenceKernel`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import jax
import numpy as np
import sympy as sp

from kernelalg.backends._checks import check_params
from kernelalg.core import _errors as E
from kernelalg.core._inputs import layout_of
from kernelalg.core._layer import Layer, as_layer
from kernelalg.core._symbolic import SymbolicKernel, trace

#: The kernels a network has.
GETS = ("nngp", "ntk")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Kernel:
    """Kernel arrays (neural-tangents' field names).

    Attributes:
        nngp: NNGP Gram matrix, shape (N, M), or None if not requested.
        ntk: NTK Gram matrix, shape (N, M), or None if not requested.
        cov1: K(x, x) per row of x1, shape (N,).
        cov2: K(x', x') per row of x2, shape (M,).
    """

    nngp: Any = None
    ntk: Any = None
    cov1: Any = None
    cov2: Any = None


def normalize_get(get: Any) -> tuple[tuple[str, ...], bool]:
    """Return (requested names, whether a single array is returned)."""
    if isinstance(get, str):
        if get not in GETS:
            raise E.KernelalgError(E.BAD_GET.format(get=get))
        return (get,), True
    try:
        names = tuple(get)
    except TypeError:
        raise E.KernelalgError(E.BAD_GET.format(get=get)) from None
    if not names or any(n not in GETS for n in names):
        raise E.KernelalgError(E.BAD_GET.format(get=get))
    return names, False


def merge_params(defaults: Mapping[str, float], params: Mapping[str, Any] | None) -> dict:
    """The hyperparameter values of one call: ``defaults`` overridden by ``params`` (names must exist)."""
    p = dict(defaults)
    if params:
        unknown = set(params) - set(p)
        if unknown:
            raise E.KernelalgError(E.UNKNOWN_PARAM.format(names=sorted(unknown), known=sorted(p)))
        p.update(params)
    return p


@contextlib.contextmanager
def precision_of(*arrays: Any) -> Iterator[None]:
    """Run in float64 when any input is float64 (JAX's x64 mode, locally), else as configured."""
    wants64 = any(getattr(a, "dtype", None) == np.float64 for a in arrays if a is not None)
    if wants64 and not jax.config.jax_enable_x64:
        enable = getattr(jax, "enable_x64", None)
        if enable is None:  # older JAX
            from jax.experimental import enable_x64 as enable  # type: ignore
        with enable(True):
            yield
    else:
        yield


class KernelFunction:
    """What a compiled and a reference kernel share: the traced network, its outputs and its hyperparameters.

    Attributes:
        net: The architecture.
        symbolic: Its :class:`SymbolicKernel` with hyperparameters as symbols.
        get: The requested kernels.
        params: Default hyperparameter values by symbol name.
    """

    def __init__(self, net: Layer, get: Any = GETS):
        self.net = as_layer(net)
        self.names, self.single = normalize_get(get)
        self.get = get
        self.layout = layout_of(self.net)
        self.symbolic: SymbolicKernel = trace(self.net, keep_symbols=True)
        self.params = self.symbolic.param_values
        self._param_symbols = {s.name: s for s in self.symbolic.params}
        self._stds = {s.name for s in self.symbolic.params if s.is_positive}

    def _outputs(self) -> list[sp.Expr]:
        """Per output branch: cov1, cov2, then the requested kernels."""
        outs: list[sp.Expr] = []
        for st in self.symbolic.outputs:
            outs += [st.cov1, st.cov2] + [st.nngp if n == "nngp" else st.ntk for n in self.names]
        return outs

    def _params(self, params: Mapping[str, Any] | None) -> dict:
        """The hyperparameters of one call: overrides checked as the layer constructors check them."""
        if params:
            check_params(params, self._stds)
        return merge_params(self.params, params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.net!r}, get={self.get!r})"
