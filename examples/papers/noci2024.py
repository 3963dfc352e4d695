"""Noci et al. (NeurIPS 2024): super consistency of the sharpness under muP, lazy (flat) under the NTK parametrization

``python examples/papers/noci2024.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/noci2024.png`` (the check itself: ``kernelalg/papers/_noci.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "noci2024", *sys.argv[1:]]))
