"""Atomic outputs of the command line: an interrupted run never leaves a file that looks finished.

Kernel files are written under a temporary name in the same folder and renamed when complete; a report
folder is staged beside its destination and swapped in when the run ends, so a folder never mixes the
files of two runs. Only files kernelalg created are removed: an interrupted run removes its own temporary
files; a finished report replaces exactly the files the previous report listed in its manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import Iterator

from kernelalg.core._errors import KernelalgError

#: The manifest a report folder holds: the files kernelalg wrote there.
MANIFEST = ".kernelalg-report.json"
NOT_A_FOLDER = "Output {path} exists and is not a folder. Fix: choose another --out path."
PARENT_NOT_FOLDER = "Cannot write {path}: {parent} is a file, not a folder. Fix: choose another output path."


def check_parent(path: Path) -> None:
    """Refuse an output path whose parent is an existing file (e.g. ``file.txt/K.npy``)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise KernelalgError(PARENT_NOT_FOLDER.format(path=path, parent=parent))
            return


def temporary_beside(path: Path) -> Path:
    """A fresh temporary name in ``path``'s folder (hidden, marked partial, unique per run)."""
    return path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a staging folder for a report; on success its files replace the previous report in ``out``.

    On any exception (an interrupt included) the staging folder is removed and ``out`` is untouched.
    """
    out = Path(out)
    check_parent(out)
    if out.exists() and not out.is_dir():
        raise KernelalgError(NOT_A_FOLDER.format(path=out))
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    stage.mkdir()
    try:
        yield stage
        out.mkdir(exist_ok=True)
        old = out / MANIFEST
        if old.exists():
            try:
                listed = json.loads(old.read_text()).get("files", [])
            except (ValueError, AttributeError):
                listed = []
            for name in listed:  # the previous report's own files, nothing else
                target = out / Path(name).name
                if target.is_file():
                    target.unlink()
        files = sorted(p.name for p in stage.iterdir() if p.is_file())
        for name in files:
            os.replace(stage / name, out / name)
        tmp = out / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps({"files": files}))
        os.replace(tmp, out / MANIFEST)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the block runs, so cleanup code runs on ``kill`` too."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
