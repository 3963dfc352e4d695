"""Surrogate-gradient training of sign networks vs kernel regression with the SG-NTK (in the spirit of
Eilers, Memmesheimer, Goedeke, NeurIPS 2024, "A generalized neural tangent kernel for surrogate gradient
learning").

Task: 16 training points on a closed curve in R^3, target sin(2 t) + cos(t)/2, 64 test points on the curve.
Network: Dense(1, 0.2) >> sign >> Dense(1, 0.2), NTK parametrization, trained by full-batch gradient descent
on the squared loss where the backward pass uses the erf surrogate derivative psi'(x) = d/dx erf(a x), a = 1.

For each width, each trained network is compared with the SG-NTK prediction started from the SAME initial
function f0 (so only the training dynamics are compared):

    f_test <- f_test - eta Theta_hat(X_test, X) r,   r <- r - eta Theta_hat(X, X) r,   r = f(X) - Y,

with Theta_hat = ka.kernel(net, x1, x2).ntk = J(x1) J_tilde(x2)^T (true Jacobian rows, surrogate columns).
Printed: the relative deviation |f_net - f_kernel| / |f_kernel - f0| on the test points (mean +- sd over
seeds), the same for the ensemble mean of the learned change f - f0, for the exact sign (m = inf) and for
its smooth version erf(4 x) (m = 4), plus a control: the "a.e. derivative" kernel (sign' = 0, i.e.
ka.Sign's NTK, readout-only learning), which does not describe SGL at any width. With the exact sign the
hidden layer moves f only through units whose sign flips, so the approach is slower (~ width^-1/4) than
with a smooth forward (~ width^-1/2).

Run: python examples/surrogate_gradient.py   (about a minute on 2 CPU cores)
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import kernelalg as ka

jax.config.update("jax_enable_x64", True)

WIDTHS = {None: (256, 1024, 4096, 16384, 65536), 4.0: (64, 256, 1024, 4096, 16384)}
SEEDS = 6
STEPS = 100
A = 2.0  # surrogate scale
W1, B1 = 1.5, 0.2  # first layer


def curve(t: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(t), np.sin(t), 0.5 * np.cos(2 * t)], axis=1)


def target(t: np.ndarray) -> np.ndarray:
    return np.sin(2 * t) + 0.5 * np.cos(t)


def kernel_dynamics(k_tt: np.ndarray, k_xt: np.ndarray, eta: float, f0_tr: np.ndarray, f0_te: np.ndarray,
                    y: np.ndarray) -> np.ndarray:
    """Test predictions after STEPS steps of kernel gradient descent with an (asymmetric) kernel."""
    r, f = f0_tr - y, f0_te.copy()
    for _ in range(STEPS):
        f = f - eta * k_xt @ r
        r = r - eta * k_tt @ r
    return f


def compare(m: float | None, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray) -> list[tuple]:
    net = ka.Dense(W1, B1) >> ka.SurrogateSign(m=m, surrogate="erf", a=A) >> ka.Dense(1.0, 0.2, out_dim=1)
    control = ka.Dense(W1, B1) >> ka.Sign() >> ka.Dense(1.0, 0.2)  # sign' = 0 a.e.: readout-only NTK
    k_tt, k_xt = (np.asarray(ka.kernel(net, a, x_tr, get="ntk")) for a in (x_tr, x_te))
    c_tt, c_xt = (np.asarray(ka.kernel(control, a, x_tr, get="ntk")) for a in (x_tr, x_te))
    eta = 1.0 / np.max(np.abs(np.linalg.eigvals(k_tt)))
    rows = []
    for width in WIDTHS[m]:
        tw = ka.surrogate_twins(net, x_tr.shape[1:], width)

        @jax.jit
        def train(key: jax.Array) -> tuple:
            p = tw.init(key)
            f0_tr, f0_te = tw.apply_surrogate(p, x_tr)[:, 0], tw.apply_surrogate(p, x_te)[:, 0]

            def loss(q: object) -> jax.Array:
                return 0.5 * jnp.sum((tw.apply_surrogate(q, x_tr)[:, 0] - y_tr) ** 2)

            def step(q: object, _: None) -> tuple:
                g = jax.grad(loss)(q)  # surrogate gradient: custom JVP of the sign layer
                return jax.tree_util.tree_map(lambda a, b: a - eta * b, q, g), None

            p, _ = jax.lax.scan(step, p, None, length=STEPS)
            return f0_tr, f0_te, tw.apply_surrogate(p, x_te)[:, 0], tw.apply_surrogate(p, x_tr)[:, 0]

        dev, ctl, mse, moved_net, moved_kern = [], [], [], [], []
        for seed in range(SEEDS):
            f0_tr, f0_te, f_te, f_tr = map(np.asarray, train(jax.random.PRNGKey(seed)))
            kern = kernel_dynamics(k_tt, k_xt, eta, f0_tr, f0_te, y_tr)
            ctrl = kernel_dynamics(c_tt, c_xt, eta, f0_tr, f0_te, y_tr)
            dev.append(np.linalg.norm(f_te - kern) / np.linalg.norm(kern - f0_te))
            ctl.append(np.linalg.norm(f_te - ctrl) / np.linalg.norm(ctrl - f0_te))
            mse.append(np.mean((f_tr - y_tr) ** 2))
            moved_net.append(f_te - f0_te)
            moved_kern.append(kern - f0_te)
        ens = np.linalg.norm(np.mean(moved_net, 0) - np.mean(moved_kern, 0)) / np.linalg.norm(np.mean(moved_kern, 0))
        rows.append((width, np.mean(dev), np.std(dev), ens, np.mean(ctl), np.mean(mse)))
    return rows


def main() -> None:
    rng = np.random.default_rng(0)
    t_tr = np.sort(rng.uniform(0, 2 * math.pi, 16))
    t_te = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x_tr, x_te, y_tr = curve(t_tr), curve(t_te), target(t_tr)
    start = time.time()
    for m, label in ((None, "sign forward (m = inf)"), (4.0, "erf(4 x) forward (m = 4)")):
        rows = compare(m, x_tr, y_tr, x_te)
        print(f"\n{label}, erf surrogate a = {A}, {STEPS} steps, {SEEDS} seeds")
        print(f"{'width':>7} | {'|f_net - f_SG-NTK| / |f_SG-NTK - f0|':>36} | {'ensemble mean':>13} | "
              f"{'vs sign-NTK (control)':>21} | {'train MSE':>9}")
        for width, mean, sd, ens, ctl, mse in rows:
            print(f"{width:>7} | {mean:>28.4f} +- {sd:.4f} | {ens:>13.4f} | {ctl:>21.3f} | {mse:>9.2e}")
        w = np.log([r[0] for r in rows])
        slope = np.polyfit(w, np.log([r[1] for r in rows]), 1)[0]
        print(f"deviation ~ width^{slope:.2f}")
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
