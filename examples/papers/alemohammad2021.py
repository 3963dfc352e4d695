"""Alemohammad et al. (ICLR 2021): the recurrent NTK on UCR series of different lengths

``python examples/papers/alemohammad2021.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/alemohammad2021.png`` (the check itself: ``kernelalg/papers/_rntk.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "alemohammad2021", *sys.argv[1:]]))
