"""Analysis of infinite-width kernels: spectra on the sphere, decay, loss asymptotics, training dynamics.

* Spectra: :func:`mercer_spectrum` (Funk-Hecke eigenvalues mu_k with multiplicities N(d, k)),
  :func:`exact_eigenvalue` (exact sympy mu_k where the closed form allows), :func:`gram_spectrum`
  (eigenvalues / n of Gram matrices on uniform sphere samples), :func:`decay_exponent` (mu_k ~ k^{-(d-1)-2s}
  from the singular expansion of k(t) at t = +-1).
* Empirical spectra of any network on data: :func:`empirical_spectrum` -> :class:`EmpiricalSpectrum`
  (dense or Lanczos over the tiled Gram; power-law fits, effective dimension, target alignment);
  :func:`fit_power_law` -> :class:`SlopeFit` (95% interval, drift over the range).
* Loss exponent: :func:`loss_exponent` -> :class:`LossExponent` (xi = kappa/nu of Velikanov & Yarotsky 2021,
  derived on the sphere, fitted on data). Degenerate cases warn with :class:`SpectralWarning` and
  :class:`FitRangeWarning`. :func:`finite_loss_exponent` -> :class:`FiniteLossExponent`: the loss slope of
  finite networks trained by gradient descent against the exact linearized loss over the same steps, with
  xi beside it as the asymptote.
* Loss: :func:`power_law_loss`, :func:`spectral_loss`, :func:`sphere_loss_curve`, :func:`kernel_flow_loss`,
  :func:`linearized_gd_loss`, :func:`gd_loss` (expected loss of linearized GD, asymmetric NTKs too).
* Dynamics (neural-tangents' ``predict`` conventions: loss 1/(2N)|f - y|^2, N = y.size):
  :func:`gradient_descent_mse`, :func:`gradient_descent_mse_ensemble`, :func:`gp_inference`,
  :func:`max_learning_rate`, :func:`gradient_descent` (any loss, optional momentum: an ODE).
* Early-time linear model (Hu et al. 2020): :func:`early_time_constants`, :func:`linear_model_ntk`,
  :func:`first_layer_ntk`, :func:`early_time_error`.
* Kernel evolution (Fort et al. 2020): :func:`kernel_distance`, :func:`kernel_velocity`,
  :func:`centered_alignment`, :func:`train_finite`.
* Plots (PNG): :func:`plot_spectrum`, :func:`plot_gram_spectrum`, :func:`plot_loss_curves`.

Example:
    >>> import kernelalg as ka
    >>> from kernelalg.analysis import mercer_spectrum, decay_exponent
    >>> net = ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0)
    >>> spec = mercer_spectrum(net, dim=3, kmax=60)            # doctest: +SKIP
    >>> decay_exponent(net, dim=3).slope                       # doctest: +SKIP
    -3
"""

from ._decay import DecayExponent, PowerFit, decay_exponent, singular_exponent
from ._dynamics import Gaussian, gp_inference, gradient_descent_mse, gradient_descent_mse_ensemble, max_learning_rate
from ._early import EarlyTimeConstants, early_time_constants, early_time_error, first_layer_ntk, linear_model_ntk
from ._empirical import EmpiricalSpectrum, empirical_spectrum
from ._evolution import Training, centered_alignment, kernel_distance, kernel_velocity, train_finite
from ._exponent import LossExponent, loss_exponent
from ._finite_exponent import FiniteLossExponent, finite_loss_exponent
from ._fit import FitRangeWarning, SlopeFit, SpectralWarning, fit_power_law
from ._predict import gradient_descent
from ._loss import (gd_loss, kernel_flow_loss, linearized_gd_loss, power_law_loss, spectral_loss, sphere_loss_curve,
                    zonal_target)
from ._plots import plot_gram_spectrum, plot_loss_curves, plot_spectrum
from ._spectrum import Spectrum, TraceCheck, exact_eigenvalue, gram_spectrum, mercer_spectrum
from ._sphere import (DotProductKernel, as_kernel, gegenbauer_table, multiplicity, sphere_constant,
                      sphere_points)

__all__ = [
    # spectra
    "mercer_spectrum", "Spectrum", "TraceCheck", "exact_eigenvalue", "gram_spectrum", "decay_exponent",
    "DecayExponent", "singular_exponent", "PowerFit", "DotProductKernel", "as_kernel", "multiplicity",
    "sphere_constant", "gegenbauer_table", "sphere_points",
    # empirical spectra, fits, warnings
    "empirical_spectrum", "EmpiricalSpectrum", "fit_power_law", "SlopeFit", "SpectralWarning", "FitRangeWarning",
    # loss
    "power_law_loss", "spectral_loss", "sphere_loss_curve", "zonal_target", "kernel_flow_loss",
    "linearized_gd_loss", "gd_loss", "loss_exponent", "LossExponent", "finite_loss_exponent", "FiniteLossExponent",
    # dynamics
    "gradient_descent_mse", "gradient_descent_mse_ensemble", "gp_inference", "max_learning_rate", "Gaussian",
    "gradient_descent",
    # early time
    "early_time_constants", "EarlyTimeConstants", "linear_model_ntk", "first_layer_ntk", "early_time_error",
    # kernel evolution
    "kernel_distance", "kernel_velocity", "centered_alignment", "train_finite", "Training",
    # plots
    "plot_spectrum", "plot_gram_spectrum", "plot_loss_curves",
]
