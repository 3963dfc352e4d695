"""Huang, Li, Song & Yang (ICML 2021): FL-NTK, federated averaging of wide nets vs its NTK prediction

``python examples/papers/huang2021.py [--quick] [--out DIR]`` prints PASS/FAIL with the numbers and writes
``DIR/huang2021.png`` (the check itself: ``kernelalg/papers/_flntk.py``).
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", "huang2021", *sys.argv[1:]]))
