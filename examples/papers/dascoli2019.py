"""d'Ascoli, Sagun, Bruna & Biroli (NeurIPS 2019): a CNN's equivalent FCN, trained on, against an FCN from scratch

``python examples/papers/dascoli2019.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/dascoli2019.png`` (the check itself: ``kernelalg/papers/_dascoli.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "dascoli2019", *sys.argv[1:]]))
