"""Jacot, Gabriel & Hongler (NeurIPS 2018): the finite-width NTK converges to the exact kernel at
initialization (per-network spread ~ width^-1/2) and stays constant in training as width grows.

``python examples/papers/jacot2018.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/jacot2018.png`` (the check itself: ``kernelalg/papers/_jacot.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "jacot2018", *sys.argv[1:]]))
