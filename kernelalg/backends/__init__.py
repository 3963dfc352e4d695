"""Backends that lower kernelalg's symbolic programs to executable code.

``jax`` is the fast, jitted path; ``numpy`` (float64) and ``mpmath`` (arbitrary precision, dense networks)
are the reference the JAX lowering is tested against. Structural ops (stencils, pooling, readouts, time
recursions) run on the :class:`Arrays` namespace of their backend (JAX and NumPy).
"""

from ._jax import (JAX_TABLE, lower_elementwise, lower_program, register_jax_lowering, safe_arccos,
                   safe_arcsin, safe_rsqrt, safe_sqrt)
from ._scan import find_runs, run_program_scanned
from ._reference import (MPMATH_TABLE, NUMPY_TABLE, evaluate_program, register_mpmath_lowering,
                         register_numpy_lowering)
from ._structural import ARRAYS, JAX_ARRAYS, NUMPY_ARRAYS, Arrays, structural
from ._walker import Table, evaluate, run_program

__all__ = [
    "ARRAYS", "Arrays", "JAX_ARRAYS", "JAX_TABLE", "MPMATH_TABLE", "NUMPY_ARRAYS", "NUMPY_TABLE", "Table",
    "evaluate", "evaluate_program", "find_runs", "lower_elementwise", "lower_program", "register_jax_lowering",
    "register_mpmath_lowering", "register_numpy_lowering", "run_program", "run_program_scanned", "safe_arccos", "safe_arcsin",
    "safe_rsqrt", "safe_sqrt", "structural",
]
