"""Deng, Zhou & Zhu (NeurIPS 2022): Nystrom (ELLA) vs exact NTK linearized Laplace, and calibration

``python examples/papers/deng2022.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/deng2022.png`` (the check itself: ``kernelalg/papers/_laplace.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "deng2022", *sys.argv[1:]]))
