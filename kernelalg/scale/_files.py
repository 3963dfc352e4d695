"""The files of a Gram store: their names, atomic creation and writes, and what kernelalg may delete.

A store directory holds only files kernelalg (or zarr on its behalf) creates, with the names matched by
:data:`OWNED`. ``overwrite=True`` deletes a store only when every file in it is one of those, so it never
deletes a file kernelalg did not create; a new store is built under a temporary name next to its path and
renamed into place, so two processes starting on one path never build into each other's files.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable

from kernelalg.core._errors import KernelalgError

INFO = "kernelalg.json"
DONE, LOG, CLAIM = "_done", "_log", "_claim"
KERNELS = ("nngp", "ntk")

_HEX8, _HEX32 = "[0-9a-f]{8}", "[0-9a-f]{32}"
_ARRAY = "(?:" + "|".join(KERNELS) + ")"
#: Relative paths (POSIX) of the files kernelalg creates in a store; ``.tmp`` and ``.partial`` files are
#: the temporary files of atomic writes (kernelalg's and zarr's) that a kill can leave behind.
OWNED = tuple(re.compile(p) for p in (
    rf"{re.escape(INFO)}", rf"\.{re.escape(INFO)}\.{_HEX8}\.tmp",
    rf"(?:{_ARRAY}/)?zarr\.json", rf"(?:{_ARRAY}/)?zarr\.{_HEX32}\.partial",
    rf"{_ARRAY}/c(?:/\d+)*/\d+(?:\.{_HEX32}\.partial)?",
    rf"{DONE}/\d+_\d+\.json", rf"{DONE}/\.\d+_\d+\.json\.{_HEX8}\.tmp",
    rf"{LOG}/[0-9a-f]{{12}}-\d+\.log", rf"{CLAIM}/\d+_\d+",
))
#: Directories kernelalg creates in a store.
OWNED_DIRS = tuple(re.compile(p) for p in (DONE, LOG, CLAIM, _ARRAY, rf"{_ARRAY}/c(?:/\d+)*"))
_RECORD = re.compile(r"(\d+)_(\d+)\.json")
_RECORD_TMP = re.compile(rf"\.\d+_\d+\.json\.{_HEX8}\.tmp")

CANNOT_CREATE = ("Cannot create the Gram store {path}: {err}. Fix: pass store= a path in a directory you can "
                 "write to (its parent directories are created if they do not exist).")
NOT_A_DIRECTORY = ("The Gram store path {path} exists and is a file, not a directory. Fix: choose another "
                   "path, e.g. {path}.zarr (kernelalg never deletes a file it did not create).")


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename: readers see all or nothing."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic on POSIX


def record_tile(name: str) -> tuple[int, int] | None:
    """The tile offset of a completion record's file name ``<i>_<j>.json``, or None."""
    m = _RECORD.fullmatch(name)
    return None if m is None else (int(m.group(1)), int(m.group(2)))


def is_record_tmp(name: str) -> bool:
    """A temporary file of an interrupted record write (ignored; deleted with the store)."""
    return _RECORD_TMP.fullmatch(name) is not None


def foreign_entries(path: Path, limit: int = 5) -> list[str]:
    """Up to ``limit`` relative paths under ``path`` that kernelalg did not create (files, links, folders)."""
    out: list[str] = []
    for root, dirs, files in os.walk(path):
        rel_root = Path(root).relative_to(path)
        for d in list(dirs):
            rel = (rel_root / d).as_posix()
            if os.path.islink(os.path.join(root, d)) or not any(p.fullmatch(rel) for p in OWNED_DIRS):
                out.append(rel + "/")
                dirs.remove(d)  # not ours: do not descend
        for fname in files:
            rel = (rel_root / fname).as_posix()
            if os.path.islink(os.path.join(root, fname)) or not any(p.fullmatch(rel) for p in OWNED):
                out.append(rel)
        if len(out) >= limit:
            break
    return sorted(out)[:limit]


def remove_store(path: Path) -> list[str]:
    """Delete the contents of a store directory, unless it holds files kernelalg did not create.

    Returns:
        [] after deleting; else (nothing deleted) up to 5 paths of foreign files. ``kernelalg.json`` goes
        first, so an interrupted removal never leaves something that looks like a store; the directory
        itself stays (it may be the user's).
    """
    foreign = foreign_entries(path)
    if foreign:
        return foreign
    info = path / INFO
    if info.exists():
        info.unlink()
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return []


def _why(path: Path, err: OSError) -> str:
    """What stopped the creation of ``path``, in words (a file where a parent directory should be)."""
    for up in path.parents:
        if up.exists():
            return f"{up} is a file, not a directory" if not up.is_dir() else (err.strerror or str(err))
    return err.strerror or str(err)


def create_atomically(path: Path, build: Callable[[Path], None]) -> bool:
    """Build a directory under a temporary name next to ``path``, then rename it to ``path``.

    The rename is atomic and fails when ``path`` is a non-empty directory (it replaces an empty one), so of
    several processes creating one store exactly one succeeds.

    Returns:
        True if this call created ``path``; False if another process created it meanwhile (this call's
        temporary directory is removed).
    """
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KernelalgError(CANNOT_CREATE.format(path=path, err=_why(path, err))) from None
    tmp = parent / f".{path.name}.{uuid.uuid4().hex[:8]}.creating"
    try:
        tmp.mkdir()
    except OSError as err:
        raise KernelalgError(CANNOT_CREATE.format(path=path, err=_why(path, err))) from None
    try:
        build(tmp)
        os.rename(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)  # this call's own temporary directory
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST) and path.is_dir():
            return False
        if err.errno == errno.ENOTDIR and path.exists():
            raise KernelalgError(NOT_A_DIRECTORY.format(path=path)) from None
        raise KernelalgError(CANNOT_CREATE.format(path=path, err=_why(path, err))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True
