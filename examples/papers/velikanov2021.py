"""Velikanov & Yarotsky (NeurIPS 2021): the loss of lazy gradient flow decays as t^-xi, xi = kappa/nu

``python examples/papers/velikanov2021.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/velikanov2021.png`` (the check itself: ``kernelalg/papers/_velikanov.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "velikanov2021", *sys.argv[1:]]))
