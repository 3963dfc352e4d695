"""Machine-checked (sympy) derivations of every closed form kernelalg uses: ``python -m proofs.run_all``.

One module per family (prove_arccos, prove_smooth, prove_gelu, prove_polynomial, prove_surrogate) plus
theory.md's reference numbers and the Dense/recurrent recursions (prove_references). Machinery: _common
(Gaussian integrals, Price-theorem claims, the route-recording equality checker) and _algebra (exact
radical elimination).
"""
