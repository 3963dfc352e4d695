"""``python -m kernelalg``: the command line (see :mod:`kernelalg.cli._main`)."""

import sys

from kernelalg.cli import main

if __name__ == "__main__":
    sys.exit(main())
