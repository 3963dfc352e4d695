"""Ortiz-Jimenez, Moosavi-Dezfooli & Frossard (NeurIPS 2021): linearized nets on NTK-eigenfunction targets

``python examples/papers/ortizjimenez2021.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/ortizjimenez2021.png`` (the check itself: ``kernelalg/papers/_ortiz.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "ortizjimenez2021", *sys.argv[1:]]))
