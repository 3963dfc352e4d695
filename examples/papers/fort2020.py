"""Fort et al. (NeurIPS 2020): the empirical NTK moves fast early, then slowly

``python examples/papers/fort2020.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/fort2020.png`` (the check itself: ``kernelalg/papers/_fort.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "fort2020", *sys.argv[1:]]))
