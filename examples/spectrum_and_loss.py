"""Spectra on the sphere and loss curves of wide networks, end to end (kernelalg.analysis).

Writes PNG plots to an output folder and prints the numbers behind them:

1. Mercer spectrum of the two-layer ReLU NTK and NNGP on S^2 with the derived decay (k^-d, k^-d-2), the
   fitted slope, and the Gram-matrix eigenvalues of 800 uniform samples.
2. The derived decay exponent for d = 3, 5, 8 (singular expansion of k(t) at t = 1).
3. Velikanov-Yarotsky loss asymptotics: the exact sum vs (K/(2 nu)) Gamma(kappa/nu) (2 Lam t)^(-kappa/nu).
4. Kernel gradient flow on the sphere: population prediction from mu_k vs the flow on 800 samples.
5. A wide finite network trained by gradient descent vs the infinite-width linearized prediction, and how
   far its empirical NTK moves (Fort et al. kernel distance).
6. Hu et al. early-time linear model: operator-norm error vs input dimension.

Usage:
    python examples/spectrum_and_loss.py [OUTPUT_DIR]      (default ./report_analysis; ~1 minute on 2 cores)
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import kernelalg as ka
from kernelalg import analysis as A


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="report_analysis", help="output folder (default report_analysis)")
    out = parser.parse_args().out
    os.makedirs(out, exist_ok=True)
    net = ka.Dense(1.0, 0.0) >> ka.Relu() >> ka.Dense(2 ** 0.5, 0.0)

    print("1. Mercer spectrum on S^2 (d = 3)")
    for which in ("ntk", "nngp"):
        spec = A.mercer_spectrum(net, 3, kmax=100, which=which)
        derived = A.decay_exponent(net, 3, which)
        fit = spec.fit(kmin=20, corrections=2)
        gram = A.gram_spectrum(net, 3, 800, which=which, seed=0)
        chk = spec.trace_check()
        path = spec.plot(os.path.join(out, f"spectrum_{which}.png"), derived=derived, fit=fit)
        A.plot_gram_spectrum(spec, gram, os.path.join(out, f"gram_{which}.png"), count=400)
        print(f"   {which}: mu_0..4 = {np.round(spec.mu[:5], 6).tolist()}  derived slope {derived.slope} "
              f"(s = {derived.s_plus}), fitted {fit.slope:.4f}; trace {chk.partial:.6f} + tail {chk.tail:.2e} "
              f"vs k(1) = {chk.target:.6f}; top Gram eigenvalues/n {np.round(gram[:4], 4).tolist()} -> {path}")

    print("2. Derived decay exponents (two-layer ReLU, no bias)")
    for d in (3, 5, 8):
        e1, e2 = A.decay_exponent(net, d, "ntk"), A.decay_exponent(net, d, "nngp")
        print(f"   d = {d}: NTK mu_k ~ k^{e1.slope}, NNGP mu_k ~ k^{e2.slope}")

    print("3. Power-law loss asymptotics")
    K, kappa, Lam, nu = 1.0, 0.5, 1.0, 1.5
    k = np.arange(1, 1_000_001, dtype=np.float64)
    ts = np.logspace(0, 4, 25)
    exact = np.array([0.5 * np.sum(K * k ** (-kappa - 1) * np.exp(-2 * Lam * k ** -nu * t)) for t in ts])
    asym = A.power_law_loss(ts, K, kappa, Lam, nu)
    A.plot_loss_curves(ts, {"sum over k": exact, "asymptote": asym}, os.path.join(out, "loss_power_law.png"),
                       title=f"lambda_k = k^-{nu}, c_k^2 = k^-{kappa + 1}")
    print(f"   ratio exact/asymptote at t = 1, 1e2, 1e4: {np.round(exact[[0, 12, 24]] / asym[[0, 12, 24]], 4)}")

    print("4. Kernel gradient flow on S^2: population prediction vs 800 samples")
    a = np.array([0.0, 1.0, 0.8, 0.0, 0.5, 0.0, 0.3])
    spec = A.mercer_spectrum(net, 3, kmax=10)
    x = A.sphere_points(800, 3, seed=1)
    y = A.zonal_target(x, a, 3)
    gram = A.as_kernel(net)(np.clip(x @ x.T / 3, -1, 1))
    ts = np.logspace(-1, 3, 40)
    pred, sim = A.sphere_loss_curve(spec, a, ts), A.kernel_flow_loss(gram, y, ts)
    A.plot_loss_curves(ts, {"population (Mercer mu_k)": pred, "flow on 800 samples": sim},
                       os.path.join(out, "loss_sphere_flow.png"), title="kernel gradient flow, ReLU NTK, d = 3")
    print(f"   L(10)/L(0.1): predicted {pred[20] / pred[0]:.4f}, simulated {sim[20] / sim[0]:.4f}")

    print("5. Wide network (width 2048) trained by GD vs the linearized infinite-width prediction")
    netb = ka.Dense(1.0, 0.2) >> ka.Relu() >> ka.Dense(1.0, 0.1)
    x = A.sphere_points(16, 3, seed=2)
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1]
    theta = A.as_kernel(netb)(np.clip(x @ x.T / 3, -1, 1))
    lr, steps = 0.5 * A.max_learning_rate(theta), 200
    run = A.train_finite(netb, x, y, 2048, lr, steps, seed=0, record_every=50)
    pred = A.linearized_gd_loss(theta, y, run.f0, lr, steps)
    s = np.arange(steps + 1)
    A.plot_loss_curves(s[1:], {"finite network (width 2048)": run.loss[1:], "linearized, exact NTK": pred[1:]},
                       os.path.join(out, "loss_finite_vs_ntk.png"), xlabel="GD step",
                       title=f"learning rate {lr:.3g} = half the maximal stable rate")
    print(f"   max |L_net - L_pred| / L0 = {np.max(np.abs(run.loss - pred)) / run.loss[0]:.4f}; "
          f"NTK distance from init at steps {run.ntk_steps.tolist()}: {np.round(run.distances_from_init(), 6)}")

    print("6. Early-time linear model (Hu et al. 2020): relative operator-norm error vs d")
    for act in ("relu", "erf"):
        c = A.early_time_constants(act)
        print(f"   {act}: zeta = {c.zeta}, E[phi''] = {c.mean_ddphi}; error at d = 25, 100, 400: "
              f"{np.round(A.early_time_error(act, [25, 100, 400]), 4).tolist()}")
    print(f"plots in {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
