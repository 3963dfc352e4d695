"""Monte Carlo estimates of the NNGP and NTK over random finite-width networks, and convergence in width.

For independent draws theta_s of the finite-width twin (``ka.finite``), the estimates are sample means
with standard errors from the spread across draws (draws are independent; the output units of one draw
are not, which is why the standard error never uses them as independent samples):

* NNGP: when the network ends in a Dense readout (f = W_std/sqrt(n) W h + b_std b, or the standard
  parametrization) the estimate of draw s is the conditional expectation over the readout weights,
  ``W_std^2 h(x).h(x')/n + b_std^2`` (Rao-Blackwellization: same mean, smaller variance). Otherwise it
  is the product f(x) f(x') averaged over the output channels (give the readout many channels: the
  default out_dim is then ``width``).
* NTK: the empirical NTK J J^T of the first ``ntk_units`` output channels (per channel), by Jacobian
  contraction (``ka.empirical_ntk``).

The mean at width n carries an O(1/n) bias for networks with two or more hidden nonlinear layers
(Dyer & Gur-Ari 2020; Hanin & Nica 2020); one hidden layer is unbiased at any width because the first
layer's pre-activations are exactly Gaussian. :func:`convergence` measures the bias across widths and
fits ``E_n = K + b/n`` entrywise (weighted least squares), whose intercept is a width-extrapolated
estimate with a standard error (two widths n, 2n: Richardson's 2 E_2n - E_n); :func:`convergence` lives in
:mod:`kernelalg.finite._convergence`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.core import _errors as E
from kernelalg.backends._compile import normalize_get, precision_of
from kernelalg.backends._checks import check_count, check_inputs
from kernelalg.core._inputs import layout_of
from kernelalg.finite._empirical import ntk_block, output_covariance
from kernelalg.finite._twins import FiniteNet, finite, input_shape_of, masked_batches
from kernelalg.core._layer import Layer, as_layer
from kernelalg.finite._surrogate import true_gradient_twin

#: Bytes of Jacobians held at once while vectorizing over draws (draws are processed in chunks).
CHUNK_BYTES = 256 * 2**20
#: At most this many draws at once.
MAX_CHUNK = 128

TOO_FEW_SAMPLES = "samples={samples!r}: a standard error needs at least 2 draws. Fix: e.g. samples=64."


@dataclass(frozen=True)
class Stderr:
    """Standard errors of the Monte Carlo means (None for kernels not requested)."""

    nngp: np.ndarray | None = None
    ntk: np.ndarray | None = None


@dataclass(frozen=True)
class MonteCarlo:
    """Monte Carlo estimate of the kernels at one width.

    Attributes:
        nngp, ntk: Sample means (arrays shaped like ``ka.kernel``'s), None when not requested.
        stderr: Their standard errors (``stderr.nngp``, ``stderr.ntk``): sample std / sqrt(samples).
        width, samples: Hidden width and number of independent networks.
        draws: Per-draw estimates {name: (samples, N, M, ...)} (kept only with ``keep_draws=True``).
    """

    nngp: np.ndarray | None
    ntk: np.ndarray | None
    stderr: Stderr
    width: int
    samples: int
    draws: dict = field(default_factory=dict, repr=False)

    def get(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard error) of "nngp" or "ntk"."""
        return getattr(self, name), getattr(self.stderr, name)

    def z(self, exact: Any, name: str) -> np.ndarray:
        """Entrywise z-scores (mean - exact) / stderr of kernel ``name`` against an exact kernel array."""
        mean, se = self.get(name)
        return (mean - np.asarray(exact)) / _floor(se, mean)


def _floor(se: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Standard errors floored at 1e-12 of the kernel scale (entries that are exact in every draw)."""
    scale = float(np.max(np.abs(ref))) if np.size(ref) else 1.0
    return np.maximum(se, max(1e-12 * scale, 1e-30))


def _key(key: Any) -> jax.Array:
    return jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key


def _as_batch(x: Any) -> Any:
    if isinstance(x, (np.ndarray, list, tuple)) or np.isscalar(x):
        arr = np.asarray(x)
        return arr.astype(np.float64) if arr.dtype.kind in "iub" else arr
    return x


def _concat(x1: Any, x2: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([jnp.asarray(a), jnp.asarray(b)]), x1, x2)


def _n_params(twin: FiniteNet, in_shape: tuple) -> int:
    shapes = jax.eval_shape(lambda k: twin.init(k, in_shape), jax.random.PRNGKey(0))
    return sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes))


#: Compiled per-draw estimators, keyed by (network object, width, out_dim, kernels, units, Rao-Blackwell,
#: method); the inputs are an argument, so repeated calls (new seeds, new inputs of the same shape) reuse
#: the compiled code.
_ESTIMATORS: dict = {}
_MAX_ESTIMATORS = 32


def _sampler(twin: FiniteNet, in_shape: tuple, names: tuple[str, ...], ntk_units: int, rao_blackwell: bool,
             method: str):
    """(init_chunk, estimate_chunk): parameters for a chunk of keys, and the jitted per-draw estimates
    ``estimate_chunk(params, x)`` (vmapped over the parameters' leading axis).

    Initialization runs eagerly under ``vmap``: JAX caches its random-number kernels per shape, so a new
    architecture with familiar layer shapes costs no new compilation (a jitted init recompiles the
    threefry generator for every architecture, seconds each on CPU)."""
    cache_key = (twin.net, twin.width, twin.out_dim, names, ntk_units, rao_blackwell, method)
    hit = _ESTIMATORS.get(cache_key)
    if hit is not None:
        est_twin, estimate = hit

        def init_cached(keys: jax.Array) -> Any:
            return jax.vmap(lambda k: est_twin.init(k, in_shape))(keys)
        return init_cached, estimate
    readout = twin.readout_layer
    w2 = b2 = 0.0
    if rao_blackwell:
        rp = dict(readout.params)
        w2, b2 = rp["W_std"] ** 2, (rp.get("b_std") or 0.0) ** 2

    def unit_fn(params: Any, xb: Any) -> jax.Array:
        y = twin.apply(params, xb)
        y = y.reshape(y.shape[0], 1) if y.ndim == 1 else y
        return y[..., :ntk_units]

    true_fn = None
    if _has_surrogate(twin.net):  # SG-NTK: J_true(x) J_surrogate(x')^T with shared parameters
        true_twin = true_gradient_twin(twin)

        def true_fn(params: Any, xb: Any) -> jax.Array:
            y = true_twin.apply(params, xb)
            y = y.reshape(y.shape[0], 1) if y.ndim == 1 else y
            return y[..., :ntk_units]

    def one(params: Any, x: Any) -> tuple:
        out = []
        if "nngp" in names:
            if rao_blackwell:
                h = twin.features(params, x)
                out.append(w2 * output_covariance(h, h) + b2)
            else:
                y = twin.apply(params, x)
                y = y.reshape(y.shape[0], 1) if y.ndim == 1 else y
                out.append(output_covariance(y, y))
        if "ntk" in names:
            if true_fn is None:
                out.append(ntk_block(unit_fn, params, x, None, method))
            else:
                out.append(ntk_block(true_fn, params, x, None, "jacobian", fn2=unit_fn))
        return tuple(out)

    def init_chunk(keys: jax.Array) -> Any:
        return jax.vmap(lambda k: twin.init(k, in_shape))(keys)

    estimate = jax.jit(jax.vmap(one, in_axes=(0, None)))
    if len(_ESTIMATORS) >= _MAX_ESTIMATORS:
        _ESTIMATORS.pop(next(iter(_ESTIMATORS)))
    _ESTIMATORS[cache_key] = (twin, estimate)
    return init_chunk, estimate


def monte_carlo(net: Layer, x1: Any, x2: Any = None, width: int = 512, samples: int = 64, key: Any = 0, *,
                get: Any = ("nngp", "ntk"), out_dim: int | None = None, ntk_units: int = 1,
                method: str = "jacobian", keep_draws: bool = False, chunk: int | None = None,
                mask_constant: float | None = None) -> MonteCarlo:
    """Monte Carlo NNGP and NTK of ``net`` from ``samples`` independent finite-width networks.

    Args:
        net: Architecture expression.
        x1: Inputs (N, ...); the precision follows them (float64 inputs run in float64).
        x2: Inputs (M, ...) or None (x1).
        width: Hidden width of the twin (``ka.finite``).
        samples: Number of independent networks (>= 2).
        key: PRNG key or int seed.
        get: "nngp", "ntk" or a tuple of them.
        out_dim: Readout width. None: 1 when the NNGP is taken in closed form over a final Dense readout,
            else ``width`` (more channels average the readout noise of f f').
        ntk_units: Output channels whose empirical NTK is averaged (cost grows linearly).
        method: Empirical NTK method, "jacobian" or "ntvp".
        keep_draws: Keep the per-draw estimates in ``.draws``.
        chunk: Draws vectorized at once (None: sized so that Jacobians stay within ``CHUNK_BYTES``).
        mask_constant: Mask input positions whose every channel equals it, as ``ka.kernel(...,
            mask_constant=c)`` (neural-tangents' ``mask_constant``; image networks and ``ka.Graphs``): every draw
            runs ``FiniteNet.apply(params, x, mask_constant=c)``, so the means estimate the masked kernel.

    Returns:
        A :class:`MonteCarlo` with ``.nngp``, ``.ntk`` and ``.stderr.nngp``, ``.stderr.ntk``.
    """
    net = as_layer(net)
    names, _ = normalize_get(get)
    if isinstance(samples, bool) or int(samples) != samples or samples < 2:
        raise E.KernelalgError(TOO_FEW_SAMPLES.format(samples=samples))
    samples = int(samples)
    ntk_units = check_count("ntk_units", ntk_units, 1)
    chunk = None if chunk is None else check_count("chunk", chunk, 16)
    if mask_constant is None:
        x1, x2 = check_inputs(layout_of(net), x1, x2)  # the checks of ka.kernel: rank, size, finite, magnitude
    else:  # the masked inputs (zeroed, with validities) of ka.kernel, checked as there
        x1, x2 = masked_batches(net, x1, x2, mask_constant)
    probe = finite(net, width)
    rb = probe.readout_is_last() and out_dim is None
    readout = probe.readout_layer
    if out_dim is None and not rb and readout is not None and dict(readout.static).get(readout.width_arg) is None:
        out_dim = int(width)
    twin = probe if out_dim is None else finite(net, width, out_dim)
    x1 = _as_batch(x1)
    x2 = None if x2 is None else _as_batch(x2)
    n1 = len(jax.tree_util.tree_leaves(x1)[0])
    with precision_of(*jax.tree_util.tree_leaves(x1)):
        x = jax.tree_util.tree_map(jnp.asarray, x1) if x2 is None else _concat(x1, x2)
        ntot = len(jax.tree_util.tree_leaves(x)[0])
        if chunk is None:
            itemsize = jax.tree_util.tree_leaves(x)[0].dtype.itemsize
            per = max(1, 2 * ntot * ntk_units * _n_params(twin, input_shape_of(x)) * itemsize)
            chunk = int(max(1, min(samples, MAX_CHUNK, CHUNK_BYTES // per)))
            chunk = 1 << (chunk.bit_length() - 1)  # powers of two: shapes (and compiled kernels) repeat
        init_chunk, estimate = _sampler(twin, input_shape_of(x), names, int(ntk_units), rb, method)
        keys = jax.random.split(_key(key), samples)
        pad = (-samples) % chunk
        if pad:  # a full last chunk keeps one compiled shape; the padding draws are discarded
            keys = jnp.concatenate([keys, keys[:pad]])
        parts = [estimate(init_chunk(keys[i:i + chunk]), x) for i in range(0, len(keys), chunk)]
        draws = [np.concatenate([np.asarray(p[j], dtype=np.float64) for p in parts])[:samples]
                 for j in range(len(names))]
    if x2 is not None:
        draws = [d[:, :n1, n1:] for d in draws]
    means = {n: d.mean(0) for n, d in zip(names, draws)}
    ses = {n: d.std(0, ddof=1) / math.sqrt(samples) for n, d in zip(names, draws)}
    return MonteCarlo(means.get("nngp"), means.get("ntk"), Stderr(ses.get("nngp"), ses.get("ntk")), int(width),
                      samples, dict(zip(names, draws)) if keep_draws else {})


def _has_surrogate(net: Layer) -> bool:
    return any(leaf.asymmetric for leaf in net.leaves())


def width_dependent(net: Layer) -> bool:
    """True when the exact kernel depends on the declared widths (a layer in the standard parametrization),
    so that widths cannot be varied freely around it."""
    return any(dict(leaf.static).get("parameterization") == "standard" for leaf in as_layer(net).leaves())


def extrapolate(means: Sequence[np.ndarray], ses: Sequence[np.ndarray], widths: Sequence[int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entrywise weighted least-squares fit ``E_n = a + b/n``: (a, stderr of a, b).

    With two widths it is exact interpolation (Richardson: n, 2n give a = 2 E_2n - E_n).
    """
    inv = np.asarray([1.0 / w for w in widths])[:, None]
    y = np.stack([np.asarray(m).reshape(-1) for m in means])
    se = np.stack([_floor(np.asarray(s), np.asarray(m)).reshape(-1) for s, m in zip(ses, means)])
    w = 1.0 / se**2
    s0, s1, s2 = w.sum(0), (w * inv).sum(0), (w * inv**2).sum(0)
    t0, t1 = (w * y).sum(0), (w * y * inv).sum(0)
    det = s0 * s2 - s1**2
    a = (s2 * t0 - s1 * t1) / det
    b = (s0 * t1 - s1 * t0) / det
    shape = np.shape(means[0])
    return a.reshape(shape), np.sqrt(s2 / det).reshape(shape), b.reshape(shape)


def _to64(x: Any) -> Any:
    if isinstance(x, (np.ndarray, jax.Array)):
        return np.asarray(x, dtype=np.float64)
    if hasattr(x, "as_float64"):  # pytree inputs with integer side data (ka.Graphs)
        return x.as_float64()
    if hasattr(x, "mask") and hasattr(x, "x"):
        return type(x)(np.asarray(x.x, dtype=np.float64), np.asarray(x.mask).sum(1).astype(int))
    return np.asarray(x, dtype=np.float64)
