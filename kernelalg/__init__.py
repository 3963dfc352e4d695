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
from ._surrogate import SurrogateSign, SurrogateStep, true_gradient
from ._surrogate_twins import SurrogateTwins, empirical_sg_ntk, surrogate_twins

__version__ = "0.1.0"

__all__ = [
    # layers
    "ABRelu", "Abs", "Cos", "Dense", "Elementwise", "Erf", "Exp", "FanInSum", "FanOut", "Gaussian", "Gelu", "Identity",
    "LeakyRelu", "Monomial", "Polynomial", "Rbf", "RectifiedMonomial", "Relu", "Sign", "Sin", "activation",
    "parallel", "serial", "Layer",
    # surrogate gradients
    "SurrogateSign", "SurrogateStep", "SurrogateTwins", "surrogate_twins", "empirical_sg_ntk", "true_gradient",
    # kernels
    "symbolic", "SymbolicKernel", "compile", "CompiledKernel", "kernel", "Kernel", "reference_kernel",
    "Q1", "Q2", "C", "D",
    # errors
    "KernelalgError", "InputError", "LayerOrderError", "LoweringError",
]
