"""Hu, Xiao, Adlam & Pennington (NeurIPS 2020): early training of a two-layer net is a linear model's

``python examples/papers/hu2020.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/hu2020.png`` (the check itself: ``kernelalg/papers/_hu.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "hu2020", *sys.argv[1:]]))
