"""Run one paper check (or all): ``python examples/papers/run.py jacot2018 [--quick] [--out DIR]``.

The scripts beside this one (``<name>.py``) run their own check; each prints a PASS/FAIL line with its
numbers and writes a PNG. The same checks run from the command line: ``kernelalg papers [NAME] --out DIR``.
"""

from __future__ import annotations

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main(["papers", *sys.argv[1:]]))
