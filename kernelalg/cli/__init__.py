"""kernelalg.cli: the ``kernelalg`` command line (formula, kernel, verify, spectrum, layers)."""

from kernelalg.cli._main import main

__all__ = ["main"]
