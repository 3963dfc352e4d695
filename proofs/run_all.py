"""Run every proof: ``python -m proofs.run_all [-q] [name ...]``.

Prints each claim with the route that established it (see ``_common.ROUTES``) and its time, then a
summary; exits non-zero if any proof fails. ``name`` selects proofs by module or proof name.

The tables below are the contract checked by ``tests/test_proofs.py``: every closed-form dual in
``kernelalg.core._duals`` and every activation layer exported by ``kernelalg`` must map to a proof here, so
adding a dual or an activation without a proof fails CI.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from typing import Callable

from ._common import Proof

#: Proof modules, in run order.
MODULES = ("prove_arccos", "prove_smooth", "prove_gelu", "prove_polynomial", "prove_references", "prove_surrogate",
           "prove_numeric", "prove_gated", "prove_transformer")

#: Closed forms in kernelalg.core._duals -> "module.proof" that proves them.
DUAL_PROOFS = {
    "relu": "prove_arccos.relu", "abrelu": "prove_arccos.abrelu", "sign": "prove_arccos.sign",
    "rectified_monomial": "prove_arccos.rectified_monomial",
    "erf": "prove_smooth.erf", "sin": "prove_smooth.sin", "cos": "prove_smooth.cos", "rbf": "prove_smooth.rbf",
    "exp": "prove_smooth.exp", "gaussian": "prove_smooth.gaussian", "identity": "prove_smooth.identity",
    "gabor": "prove_smooth.gabor", "exp_normalized": "prove_smooth.exp_normalized",
    "gelu": "prove_gelu.gelu",
    "gaussian_moment": "prove_polynomial.gaussian_moment", "polynomial": "prove_polynomial.polynomial",
    "monomial": "prove_polynomial.monomial", "hermite": "prove_polynomial.hermite",
    "hermite_coefficients": "prove_polynomial.hermite",
}

#: Layers of kernelalg.__all__ (from the activation modules) -> the proof that covers their closed forms.
LAYER_PROOFS = {
    "Relu": "prove_arccos.relu", "ABRelu": "prove_arccos.abrelu", "LeakyRelu": "prove_arccos.abrelu",
    "Abs": "prove_arccos.abrelu", "Sign": "prove_arccos.sign", "RectifiedMonomial": "prove_arccos.rectified_monomial",
    "Erf": "prove_smooth.erf", "Sin": "prove_smooth.sin", "Cos": "prove_smooth.cos", "Rbf": "prove_smooth.rbf",
    "Exp": "prove_smooth.exp", "Gaussian": "prove_smooth.gaussian", "Gelu": "prove_gelu.gelu",
    "Polynomial": "prove_polynomial.polynomial", "Monomial": "prove_polynomial.monomial",
    "Hermite": "prove_polynomial.hermite", "Sigmoid_like": "prove_smooth.erf", "Gabor": "prove_smooth.gabor",
    "ExpNormalized": "prove_smooth.exp_normalized",
    "Elementwise": "prove_polynomial.elementwise_mgf",
    "SurrogateSign": "prove_surrogate.prove", "SurrogateStep": "prove_surrogate.prove",
}

#: Names from the activation modules that are not activations with a closed form of their own.
NOT_ACTIVATIONS = {
    "activation": "generic constructor: the caller supplies the dual",
    "true_gradient": "network transformation to the naive NTK; its duals are proven in prove_surrogate",
    "with_sharpness": "network transformation to finite sharpness m; its duals are proven in prove_surrogate",
    "Tanh": "no closed form: Gauss-Hermite with a stated error bound, checked against mpmath (tests/test_tanh_sigmoid.py)",
    "Sigmoid": "no closed form: Gauss-Hermite with a stated error bound, checked against mpmath "
               "(tests/test_tanh_sigmoid.py)",
}

ProofFn = Callable[[], "Proof | list[Proof] | None"]


def proof_functions() -> dict[str, ProofFn]:
    """'module.name' -> proof function, for every proof (modules without PROOFS contribute 'module.prove')."""
    out: dict[str, ProofFn] = {}
    for mod_name in MODULES:
        mod = importlib.import_module(f"{__package__}.{mod_name}")
        table = getattr(mod, "PROOFS", None) or {"prove": mod.prove}
        out.update({f"{mod_name}.{k}": fn for k, fn in table.items()})
    return out


def run_one(key: str, fn: ProofFn, *, quiet: bool = False) -> tuple[bool, float]:
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception:  # a proof that fails is reported, the others still run
        print(f"FAIL {key} ({time.perf_counter() - t0:.1f} s)")
        traceback.print_exc()
        return False, time.perf_counter() - t0
    dt = time.perf_counter() - t0
    proofs = [] if result is None else (result if isinstance(result, list) else [result])
    summary = "; ".join(p.summary() for p in proofs) or "all assertions hold"
    print(f"ok   {key} ({dt:.1f} s): {summary}")
    if not quiet:
        for p in proofs:
            for claim, route, seconds in p.steps:
                print(f"       {seconds:6.2f} s  [{route}] {claim}")
    return True, dt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proofs.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only proofs whose 'module.name' contains one of these")
    parser.add_argument("-q", "--quiet", action="store_true", help="one line per proof")
    args = parser.parse_args(argv)
    fns = proof_functions()
    if args.names:
        fns = {k: f for k, f in fns.items() if any(n in k for n in args.names)}
    t0 = time.perf_counter()
    results = {k: run_one(k, f, quiet=args.quiet) for k, f in fns.items()}
    failed = [k for k, (ok, _) in results.items() if not ok]
    print(f"{len(results) - len(failed)}/{len(results)} proofs hold ({time.perf_counter() - t0:.1f} s)"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
