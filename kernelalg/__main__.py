"""``python -m kernelalg``: the command line (see :mod:`kernelalg._cli`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
