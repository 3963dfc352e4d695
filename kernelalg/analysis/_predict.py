"""Linearized training dynamics for any loss, with or without momentum (neural-tangents' ``predict.gradient_descent``).

A network trained by gradient flow moves in function space as ``df/dt = -eta Theta grad_f L(f, y)``
(Jacot et al. 2018; Lee et al. 2019, Eq. 11): for a general loss this is an ODE, solved here with an
explicit Runge-Kutta method of order 8 (``scipy.integrate.solve_ivp``, DOP853) in float64. Test points
follow ``df_test/dt = -eta Theta_test,train grad_f L``.

Conventions are neural-tangents' (``nt.predict.gradient_descent``): ``t`` counts steps, so the absolute time
of plain gradient descent is ``eta t``; with ``momentum`` m the ODE is the continuous heavy-ball limit in
units of ``sqrt(eta)``: ``f' = q``, ``q' = -Theta grad_f L + ((m - 1)/sqrt(eta)) q``, ``q(0) = 0``, absolute time
``sqrt(eta) t``. The loss is not normalised for you: ``loss="mse"`` is ``|f - y|^2 / (2 N)``, N = y.size
(so the result equals :func:`gradient_descent_mse`), ``loss="cross_entropy"`` the softmax cross-entropy
averaged over examples; any JAX function ``loss(f, y)`` works.

Kernels: (n, n) acts on every output column alike (neural-tangents' ``trace_axes=(-1,)``, Theta (x) I); an
untraced (n, n, k, k) kernel (``trace_axes=()``, e.g. ``ka.empirical_ntk(..., trace=False)``) couples the
outputs and reproduces the linearized network exactly.

References:
    Lee et al. (2019), "Wide neural networks of any depth evolve as linear models under gradient descent";
    Novak et al. (2020), Neural Tangents (``predict.gradient_descent``); Hairer, Norsett & Wanner (1993), DOP853.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from kernelalg.core import _errors as E
from kernelalg.finite._train import loss_function

BAD_K = ("{name} has shape {shape}; expected {expected}. Fix: pass the traced kernel (n, n) / (m, n), or the "
         "untraced one (n, n, k, k) / (m, n, k, k) from ka.empirical_ntk(..., trace=False).")
BAD_TIMES = ("t must be finite, >= 0 and increasing, got {t!r}. Fix: pass training steps in increasing order; a "
             "general loss has no closed form at t = infinity.")
BAD_MOMENTUM = "momentum must be a number in [0, 1) or None, got {m!r}. Fix: e.g. momentum=0.9."
NEEDS_K_TEST = "fx_test_0 needs k_test_train. Fix: pass k_test_train=kernel(x_test, x_train)."


def _check_kernel(name: str, k: Any, rows: int | None, n: int, outs: int) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    ok = k.ndim in (2, 4) and k.shape[1] == n and (rows is None or k.shape[0] == rows)
    if k.ndim == 4:
        ok = ok and k.shape[2:] == (outs, outs)
    if not ok:
        r = "n" if rows is None else rows
        raise E.KernelalgError(BAD_K.format(name=name, shape=k.shape, expected=f"({r}, {n}) or ({r}, {n}, {outs}, {outs})"))
    return k


def _apply(k: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Theta g for g of shape (n, outs): the traced kernel acts per column, the untraced couples them."""
    return k @ g if k.ndim == 2 else np.einsum("ijab,jb->ia", k, g)


def gradient_descent(loss: str | Callable, k_train_train: Any, y_train: Any, learning_rate: float = 1.0,
                     momentum: float | None = None) -> Callable:
    """Function-space [momentum] gradient descent of the linearized network on a general loss (an ODE).

    Args:
        loss: "mse", "cross_entropy" or a JAX function ``loss(f, y) -> scalar`` of the training outputs.
        k_train_train: NTK on the training inputs, (n, n) or untraced (n, n, k, k).
        y_train: Targets (n,) or (n, k).
        learning_rate: eta.
        momentum: Heavy-ball momentum in [0, 1), or None for plain gradient descent.

    Returns:
        ``predict_fn(t, fx_train_0=0., fx_test_0=None, k_test_train=None)`` returning ``fx_train_t``,
        ``(fx_train_t, fx_test_t)``, or ``fx_test_t`` when ``fx_train_0=None`` (the training outputs then start
        at 0), with a leading time axis when ``t`` is an array.
    """
    y = np.asarray(y_train, dtype=np.float64)
    flat = y.ndim == 1
    y2 = y[:, None] if flat else y
    n, outs = y2.shape
    ktt = _check_kernel("k_train_train", k_train_train, n, n, outs)
    if momentum is not None and not (isinstance(momentum, numbers.Real) and not isinstance(momentum, bool)
                                     and 0 <= momentum < 1):
        raise E.KernelalgError(BAD_MOMENTUM.format(m=momentum))
    fn = loss_function(loss)
    with jax.enable_x64(True):
        grad_loss = jax.jit(jax.grad(lambda f: fn(f.reshape(y.shape), jnp.asarray(y))))
    rate = float(learning_rate) ** 0.5 if momentum is not None else float(learning_rate)
    friction = None if momentum is None else (momentum - 1.0) / rate

    def grad(f: np.ndarray) -> np.ndarray:
        with jax.enable_x64(True):
            return np.asarray(grad_loss(jnp.asarray(f.reshape(y.shape)))).reshape(n, outs)

    def predict_fn(t: Any, fx_train_0: Any = 0.0, fx_test_0: Any = None, k_test_train: Any = None) -> Any:
        times = np.asarray(t, dtype=np.float64)
        tt = times.reshape(-1)
        if t is None or not np.all(np.isfinite(tt)) or np.any(tt < 0) or np.any(np.diff(tt) <= 0):
            raise E.KernelalgError(BAD_TIMES.format(t=t))
        f0 = np.broadcast_to(np.asarray(0.0 if fx_train_0 is None else fx_train_0, np.float64).reshape(
            (n, outs) if np.ndim(fx_train_0) else ()), (n, outs))
        ktx, m = None, 0
        if fx_test_0 is not None:
            if k_test_train is None:
                raise E.KernelalgError(NEEDS_K_TEST)
            ktx = _check_kernel("k_test_train", k_test_train, None, n, outs)
            m = ktx.shape[0]
            ft0 = np.broadcast_to(np.asarray(fx_test_0, np.float64).reshape((m, outs) if np.ndim(fx_test_0) else ()),
                                  (m, outs))
        size = (n + m) * outs
        state0 = np.concatenate([f0.ravel()] + ([ft0.ravel()] if m else []))
        if friction is not None:
            state0 = np.concatenate([state0, np.zeros(size)])

        def rhs(_: float, s: np.ndarray) -> np.ndarray:
            g = grad(s[: n * outs])
            df = [-_apply(ktt, g).ravel()] + ([-_apply(ktx, g).ravel()] if m else [])
            df = np.concatenate(df)
            if friction is None:
                return df
            q = s[size:]
            return np.concatenate([q, df + friction * q])

        span = tt * rate
        sol = solve_ivp(rhs, (0.0, float(span[-1]) if span[-1] > 0 else 1.0), state0, method="DOP853",
                        t_eval=span, rtol=1e-10, atol=1e-12)
        if not sol.success:
            raise E.KernelalgError(f"the ODE solver failed ({sol.message}). Fix: use shorter times or a smaller "
                                   "learning rate.")
        states = sol.y.T  # (T, state)
        shape_tr = times.shape + ((n,) if flat else (n, outs))
        ftr = states[:, : n * outs].reshape(shape_tr)
        if not m:
            return ftr
        fte = states[:, n * outs: size].reshape(times.shape + ((m,) if flat else (m, outs)))
        return (ftr, fte) if fx_train_0 is not None else fte

    return predict_fn
