"""Error types and message templates.

Every message names the problem and the fix. Messages are constants (``str.format`` templates) so that
tests, docs and users can rely on their wording.
"""

from __future__ import annotations


class KernelalgError(ValueError):
    """Base class of all errors raised on bad input to kernelalg."""


class LayerOrderError(KernelalgError):
    """A layer sequence is invalid (e.g. a nonlinearity applied to non-Gaussian inputs)."""


class InternalError(RuntimeError):
    """An invariant of kernelalg itself failed: a bug to report, not a mistake in the input."""


class LoweringError(KernelalgError):
    """A symbolic expression contains a node the backend cannot lower."""


class InputError(KernelalgError):
    """Input arrays have the wrong shape, dtype or values."""


class NotRepresentableError(KernelalgError):
    """A kernel value cannot be computed in the requested precision (an overflow or a divergent expectation)."""


class PrecisionWarning(UserWarning):
    """Rounding is predicted to cost more than ~1e-3 relative accuracy (e.g. deep nets in the chaotic phase)."""


class DivergentKernelError(NotRepresentableError):
    """The kernel does not exist: a divergent Gaussian integral (an activation that is not integrable against
    the Gaussian, or an existence condition of a dual violated by the variances met)."""


NEGATIVE_STD = (
    "{layer}: {name} must be a finite number >= 0, got {value!r}. "
    "Fix: pass the standard deviation itself (its sign is irrelevant for a Gaussian), e.g. {name}={fix}."
)
BAD_PARAMETERIZATION = (
    "{layer}: parameterization must be 'ntk' or 'standard', got {value!r}. "
    "Fix: use parameterization='ntk' (the default) or parameterization='standard'."
)
STANDARD_NEEDS_WIDTH = (
    "Dense(parameterization='standard') after a layer of unknown width: in the standard parametrization "
    "the NTK depends on the fan-in. Fix: give the previous Dense an out_dim, e.g. Dense(1.5, 0.05, out_dim=512)."
)
NOT_GAUSSIAN = (
    "{layer} is applied to inputs that are not Gaussian in the infinite-width limit (it follows {after}). "
    "The closed-form dual E[phi(u)phi(v)] only holds for Gaussian pre-activations. "
    "Fix: put an affine layer (Dense or Conv) before {layer}, e.g. Dense() >> {layer}."
)
FANOUT_MISMATCH = (
    "parallel() got {got} input branches but the preceding layer provides {expected}. "
    "Fix: put FanOut({got}) before parallel(...)."
)
FANIN_NEEDS_BRANCHES = (
    "FanInSum() needs several branches (a tuple of kernels) as input, got a single one. "
    "Fix: use FanOut(n) >> parallel(b1, ..., bn) >> FanInSum()."
)
NOT_A_LAYER = (
    "{what!r} is not a kernelalg layer. Fix: build networks from ka.Dense(), ka.Relu(), ... "
    "composed with >>, ka.serial(...) or ka.parallel(...)."
)
UNSUPPORTED_ACTIVATION = (
    "Activation {name!r} has no dual in kernelalg. Fix: use ka.Elementwise(fn) with fn a sympy-compatible "
    "callable (exact dual when sympy can derive it, otherwise Gauss-Hermite quadrature of stated degree)."
)
NOT_TRACEABLE = (
    "Elementwise({name}): fn is neither a sympy-compatible function nor JAX-traceable ({err}). "
    "Fix: write it with sympy (lambda x: sympy.tanh(x)) for an exact dual, or with jax.numpy "
    "(jnp.tanh instead of np.tanh) for the quadrature route."
)
UNKNOWN_NODE = (
    "No {backend} lowering for the sympy node {node} (class {cls}). "
    "Fix: rewrite the expression with supported functions ({supported}), or register a lowering with "
    "kernelalg.backends.register_{backend}_lowering({cls}, fn)."
)
BAD_RANK = (
    "{name} must be a {ndim}-D array (batch axis first) for this network, got shape {shape}. "
    "Fix: {fix}."
)
FEATURE_MISMATCH = (
    "x1 has {d1} features but x2 has {d2}. Fix: pass inputs with the same trailing dimension(s)."
)
NON_FINITE = (
    "{name} contains {count} NaN or infinite value(s) (first at index {index}). "
    "Fix: clean or impute the data before computing kernels, e.g. x = np.nan_to_num(x)."
)
BAD_DTYPE = (
    "{name} has dtype {dtype}; kernels are computed in float32 or float64. "
    "Fix: convert, e.g. {name} = np.asarray({name}, dtype=np.float64)."
)
BAD_GET = (
    "get={get!r} is not understood. Fix: use 'nngp', 'ntk', or a tuple of them, e.g. get=('nngp', 'ntk')."
)
EMPTY_INPUT = "{name} has no samples (shape {shape}). Fix: pass at least one input row."
UNKNOWN_PARAM = (
    "Unknown hyperparameter(s) {names}. Known: {known}. "
    "Fix: use the names listed by ka.symbolic(net).params."
)
BAD_BACKEND = (
    "backend={backend!r} is not available. Fix: use backend='jax' (jitted, fast) or backend='numpy' "
    "(the NumPy float64 reference, slow; for testing)."
)
NO_OP_IMPL = (
    "The structural op {op!r} (a stencil, pooling, readout or time recursion) has no {backend} implementation "
    "(it has: {have}). Fix: evaluate this network on one of those backends, e.g. ka.reference_kernel(net, x1, "
    "x2, dps=None) for the NumPy float64 reference or ka.kernel(...) for JAX; the mpmath reference (dps=...) "
    "covers dense networks only."
)
MPMATH_DENSE_ONLY = (
    "reference_kernel(..., dps={dps}) evaluates dense networks only (mpmath works scalar by scalar), but this "
    "network takes {layout!r} inputs and uses the structural op(s) {ops}, which have no mpmath implementation. "
    "Fix: use dps=None (the NumPy float64 reference), or compare a dense network at high precision."
)
NOT_REPRESENTABLE = (
    "{dtype} kernel of {net} has {count} non-finite entr{ies} (first at index {index}): {reason} "
    "Fix: {fix}."
)
PRECISION_LOSS = (
    "{dtype} loses about {digits:.0f} of its {total:.0f} significant digits on nearly parallel inputs in {net}: "
    "rounding near correlation 1 is amplified {amp:.2g}-fold through its layers (the correlation map's slope at "
    "rho = 1 exceeds 1: the chaotic phase, chi_1 > 1). Predicted relative error eps * amplification = {err:.1g} "
    "for entries whose inputs have 1 - rho below about {gap:.0e} ({dtype} cannot tell them from parallel "
    "inputs); entries of less correlated inputs are not affected. Fix: {fix}. See docs/numerics.md."
)


NO_FEATURES = ("{name} has no features (shape {shape}), so x.x'/d is undefined. "
               "Fix: pass at least one feature per sample.")
RAGGED_INPUT = ("{name} is ragged (its rows have different lengths). "
                "Fix: pass a rectangular array, e.g. pad the rows to one length.")
INPUT_OVERFLOW = ("{name} is too large for {dtype}: |x|^2 of row {row} (largest |entry| {peak:.3g}) exceeds the "
                  "largest {dtype} ({max:.3g}), so the input statistics x.x'/d overflow the precision. "
                  "Fix: {fix} the inputs, e.g. x = x / np.abs(x).max().")
BAD_COUNT = "{name}={value!r} is not a positive integer. Fix: pass a whole number >= 1, e.g. {name}={example}."
CONDITION_FAILED = ("The kernel cannot be computed for these inputs (smallest value of the condition met: {value:.6g}, "
                    "it must be > 0): {problem}. Fix: {fix}.")
KERNEL_OVERFLOW = ("The {which} kernel is not finite at {count} of {total} entries (first at {index}): a value "
                   "exceeds the range of {dtype} (largest {max:.3g}) or a closed form is undefined there. "
                   "Fix: rescale the inputs or the hyperparameters (e.g. a smaller b in Exp(a, b), smaller "
                   "W_std in deep networks), or use float64 inputs.")
DIVERGENT_DUAL = ("{name}: the kernel of this activation does not exist: {reason}. Fix: use an activation that is "
                  "finite and real on the whole real line and grows more slowly than exp(x^2/(4 s)) for the "
                  "input variance s (e.g. tanh, erf, x * tanh(x)).")
BAD_WHICH = "which={which!r} is not a kernel of the network. Fix: use one of {known}, e.g. which='ntk'."
