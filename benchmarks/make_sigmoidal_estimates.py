"""Print the table ``ESTIMATES`` of kernelalg/layers/_sigmoidal.py: the embedded-rule error estimates of the polar
quadrature for Tanh and Sigmoid at each stored variance and number of points per arc.

    python benchmarks/make_sigmoidal_estimates.py    # prints the dict literal to paste (about a minute)

Each entry is ``error_estimate(name, n, v)``: 10 x the largest |Q_n - Q_2n| relative to the scale, over
correlations +-1, +-0.999, +-0.9, 0, 0.5, 0.9, 0.99, 0.999 and the variance pairs (v, v), (v, v / 4), T, Tdot and
the diagonal, at least 1e-14. tests/test_tanh_sigmoid.py recomputes entries and checks the stated estimates
against mpmath and an adaptive quadrature.
"""

from __future__ import annotations

from kernelalg.layers._sigmoidal import DEGREES, VARIANCES, error_estimate


def main() -> None:
    print("ESTIMATES: dict = {")
    for name in ("Tanh", "Sigmoid"):
        print(f'    "{name}": {{')
        for n in DEGREES:
            row = ", ".join(f"{error_estimate(name, n, v):.1e}" for v in VARIANCES)
            print(f"        {n}: ({row}),", flush=True)
        print("    },")
    print("}")


if __name__ == "__main__":
    main()
