"""Eilers, Memmesheimer & Goedeke (NeurIPS 2024): the surrogate-gradient NTK of sign networks

``python examples/papers/eilers2024.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/eilers2024.png`` (the check itself: ``kernelalg/papers/_eilers.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "eilers2024", *sys.argv[1:]]))
