"""Tsilivis & Kempe (NeurIPS 2022): NTK-crafted adversarial perturbations transfer to wide nets

``python examples/papers/tsilivis2022.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/tsilivis2022.png`` (the check itself: ``kernelalg/papers/_adversarial.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "tsilivis2022", *sys.argv[1:]]))
