"""kernelalg: exact infinite-width kernels (NNGP and NTK) of neural networks.

Define an architecture as an expression, get its kernel as a closed form (sympy), evaluate it fast
(JAX), and verify the theory numerically.

Example:
    >>> import kernelalg as ka
    >>> net = ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05)
    >>> ka.symbolic(net).nngp  # doctest: +SKIP
"""

from ._activations import (ABRelu, Abs, Cos, Erf, Exp, Gaussian, Gelu, LeakyRelu, Monomial, Polynomial,
                           Rbf, RectifiedMonomial, Relu, Sign, Sin, activation)
from ._api import CompiledKernel, Kernel, compile, kernel, reference_kernel
from ._dense import Dense, FanInSum, FanOut, Identity
from ._elementwise import Elementwise
from ._errors import InputError, KernelalgError, LayerOrderError, LoweringError
from ._layer import Layer, parallel, serial
from ._program import C, D, Q1, Q2
from ._symbolic import SymbolicKernel, symbolic
from ._recurrent import Recurrent, recurrent_step_map
from ._sequences import Sequences
from ._conv import Conv
from ._pooling import AvgPool, Flatten, GlobalAvgPool, GlobalSumPool, SumPool
from ._surrogate import SurrogateSign, SurrogateStep, true_gradient
from ._surrogate_twins import SurrogateTwins, empirical_sg_ntk, surrogate_twins
from ._finite import FiniteNet, finite
from ._empirical import empirical_nngp, empirical_ntk, empirical_ntk_fn
from ._montecarlo import Convergence, MonteCarlo, convergence, monte_carlo
from ._verify import Verification, verify
from . import analysis  # ka.analysis: spectra, decay, loss asymptotics, dynamics
from ._scale import GramPlan, gram, plan_gram
from ._distributed import GramStore, open_gram
from ._parse import parse

__version__ = "0.1.0"

__all__ = [
    # layers
    "ABRelu", "Abs", "Cos", "Dense", "Elementwise", "Erf", "Exp", "FanInSum", "FanOut", "Gaussian", "Gelu", "Identity",
    "LeakyRelu", "Monomial", "Polynomial", "Rbf", "RectifiedMonomial", "Relu", "Sign", "Sin", "activation",
    "parallel", "serial", "Layer",
    # convolutional
    "Conv", "AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "Flatten",
    # recurrent
    "Recurrent", "Sequences", "recurrent_step_map",
    # surrogate gradients
    "SurrogateSign", "SurrogateStep", "SurrogateTwins", "surrogate_twins", "empirical_sg_ntk", "true_gradient",
    # finite width and verification
    "finite", "FiniteNet", "empirical_ntk", "empirical_ntk_fn", "empirical_nngp", "monte_carlo", "MonteCarlo",
    "convergence", "Convergence", "verify", "Verification",
    # kernels
    "symbolic", "SymbolicKernel", "parse", "compile", "CompiledKernel", "kernel", "Kernel", "reference_kernel",
    "Q1", "Q2", "C", "D",
    # scale: tiled / multi-device / Dask Gram matrices, resumable zarr stores
    "gram", "plan_gram", "GramPlan", "GramStore", "open_gram",
    # errors
    "KernelalgError", "InputError", "LayerOrderError", "LoweringError",
]
