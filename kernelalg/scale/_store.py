"""Resumable Gram-matrix stores (zarr, chunks = tiles) and Dask scheduling of tiles.

Store layout (a directory):
    ``zarr.json``, ``<kernel>/``   a zarr group with one (N, M) array per kernel, chunks = tiles, fill NaN.
    ``kernelalg.json``            what was computed: architecture, hyperparameters, kernels, dtype, input
                                  shapes and SHA-256 of the inputs, tile, symmetry. Written last at creation.
    ``_done/<i>_<j>.json``        one completion record per tile (run id, seconds, SHA-256 of each block),
                                  written atomically (temporary file + rename) only after the tile's data.
    ``_log/<run>-<pid>.log``      one line "i j" per tile computation started, per run and process.

A killed run therefore never marks a half-written tile done; a rerun computes exactly the tiles without a
record. Symmetric stores (x2 None) hold the tiles j >= i only; :meth:`GramStore.load` mirrors them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kernelalg.core._errors import KernelalgError
from kernelalg._version import __version__
from kernelalg.core._tiles import tile_offsets
from kernelalg.core._tiles import transpose_into

FORMAT = "kernelalg-gram/1"
NEED_ZARR = "gram(store=...) needs the zarr package. Fix: pip install 'kernelalg[scale]' (or pip install zarr)."
NEED_DASK = ("gram(client=...) needs dask.distributed. Fix: pip install 'kernelalg[scale]' "
             "(or pip install 'dask[distributed]').")
STORE_MISMATCH = ("The store {path} holds a different computation: {what}. Fix: rerun with exactly the same "
                  "network, params, inputs, get and dtype to resume it, or pass overwrite=True to replace it, "
                  "or choose another store path.")
NOT_A_STORE = ("{path} exists but is not a kernelalg Gram store (no kernelalg.json). Fix: choose another path "
               "or pass overwrite=True to replace it.")
TILE_MISMATCH = ("The store {path} was computed with tile={old}, not tile={new}. Fix: pass tile={old} (or "
                 "tile=None) to resume, or overwrite=True to start again.")
INCOMPLETE = ("The store {path} is missing {k} of {total} tiles. Fix: rerun ka.gram with the same arguments "
              "and store={path!r} to compute them, or load(allow_missing=True) for NaN there.")
_META_KEYS = ("arch", "params", "get", "dtype", "x1_shape", "x2_shape", "x1_sha256", "x2_sha256", "asymmetric")


def _sha(x: np.ndarray | None) -> str | None:
    return None if x is None else hashlib.sha256(memoryview(np.ascontiguousarray(x)).cast("B")).hexdigest()


def fingerprint(f: Any, x1: np.ndarray, x2: np.ndarray | None, names: Sequence[str],
                params: Mapping[str, Any] | None) -> dict:
    """What identifies a Gram computation: architecture, hyperparameters, kernels, dtype and inputs."""
    return {"format": FORMAT, "version": __version__, "arch": repr(f.net),
            "params": {k: float(v) for k, v in sorted(f._params(params).items())}, "get": list(names),
            "dtype": np.dtype(x1.dtype).name, "x1_shape": list(x1.shape),
            "x2_shape": None if x2 is None else list(x2.shape), "x1_sha256": _sha(x1), "x2_sha256": _sha(x2),
            "asymmetric": bool(f.symbolic.asymmetric)}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one


class GramStore:
    """A zarr Gram-matrix store with per-tile completion records (see the module docstring).

    Open an existing one with :func:`open_gram`; :func:`kernelalg.gram` creates and resumes them.
    """

    def __init__(self, path: Any, meta: dict | None = None):
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise KernelalgError(NEED_ZARR) from None
        self.path = Path(path)
        info = self.path / "kernelalg.json"
        self.meta = meta if meta is not None else json.loads(info.read_text())
        self._arrays: dict[str, Any] = {}

    # ------------------------------------------------------------------ creation and resumption

    @classmethod
    def prepare(cls, path: Any, meta: dict, overwrite: bool = False) -> "GramStore":
        """Open ``path`` for the computation ``meta``: resume it if it matches, refuse it if not."""
        p = Path(path)
        if p.exists() and overwrite:
            shutil.rmtree(p)
        if p.exists():
            info = p / "kernelalg.json"
            if not info.exists():
                if p.is_dir() and not any(p.iterdir()):
                    return cls(p, dict(meta))
                raise KernelalgError(NOT_A_STORE.format(path=p))
            old = json.loads(info.read_text())
            diff = [k for k in _META_KEYS if old.get(k) != meta.get(k)]
            if diff:
                what = "; ".join(_describe(k, old.get(k), meta.get(k)) for k in diff)
                raise KernelalgError(STORE_MISMATCH.format(path=p, what=what))
            return cls(p, old)
        return cls(p, dict(meta))

    @property
    def initialized(self) -> bool:
        return (self.path / "kernelalg.json").exists()

    def initialize(self, n: int, m: int, tile: int, symmetric: bool, dtype: Any) -> None:
        """Create the zarr arrays and write kernelalg.json (last), or check the tile of an existing store."""
        if self.initialized:
            if int(tile) != self.tile:
                raise KernelalgError(TILE_MISMATCH.format(path=self.path, old=self.tile, new=tile))
            return
        import zarr
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "_done").mkdir(exist_ok=True)
        (self.path / "_log").mkdir(exist_ok=True)
        g = zarr.open_group(str(self.path), mode="a")
        for nm in self.meta["get"]:
            g.create_array(nm, shape=(n, m), chunks=(min(tile, n), min(tile, m)), dtype=np.dtype(dtype),
                           fill_value=np.nan, overwrite=True)
        self.meta.update(shape=[n, m], tile=int(tile), symmetric=bool(symmetric),
                         created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        _atomic_write(self.path / "kernelalg.json", json.dumps(self.meta, indent=1))

    # ------------------------------------------------------------------ description

    @property
    def names(self) -> list[str]:
        return list(self.meta["get"])

    @property
    def tile(self) -> int | None:
        return self.meta.get("tile")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.meta["shape"])  # type: ignore[return-value]

    @property
    def symmetric(self) -> bool:
        return bool(self.meta["symmetric"])

    @property
    def tiles(self) -> list[tuple[int, int]]:
        """All tile offsets of the computation, row-major."""
        return tile_offsets(*self.shape, self.tile, self.symmetric)

    def _record_path(self, tile: Sequence[int]) -> Path:
        return self.path / "_done" / f"{int(tile[0])}_{int(tile[1])}.json"

    def records(self) -> dict[tuple[int, int], dict]:
        """Completion records by tile offset."""
        out = {}
        for p in (self.path / "_done").glob("*.json"):
            rec = json.loads(p.read_text())
            out[tuple(rec["tile"])] = rec
        return out

    def done(self) -> set[tuple[int, int]]:
        """Tiles with a completion record."""
        out = set()
        for p in (self.path / "_done").glob("*.json"):
            i, j = p.stem.split("_")
            out.add((int(i), int(j)))
        return out

    def missing(self) -> list[tuple[int, int]]:
        """Tiles without a completion record, row-major."""
        done = self.done()
        return [t for t in self.tiles if t not in done]

    @property
    def complete(self) -> bool:
        return not self.missing()

    def compute_log(self) -> list[tuple[str, tuple[int, int]]]:
        """Every tile computation started, as (run id, tile), from all runs and processes."""
        out = []
        for p in sorted((self.path / "_log").glob("*.log")):
            run = p.stem.rsplit("-", 1)[0]
            for line in p.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2:  # a line cut by a kill is incomplete: skip it
                    out.append((run, (int(parts[0]), int(parts[1]))))
        return out

    # ------------------------------------------------------------------ writing and reading

    def array(self, name: str) -> Any:
        """The zarr array of kernel ``name`` (tiles j >= i only when symmetric)."""
        if name not in self._arrays:
            import zarr
            self._arrays[name] = zarr.open_array(str(self.path / name), mode="r+")
        return self._arrays[name]

    def log_compute(self, run: str, tile: Sequence[int]) -> None:
        with open(self.path / "_log" / f"{run}-{os.getpid()}.log", "a") as fh:
            fh.write(f"{int(tile[0])} {int(tile[1])}\n")

    def write_tile(self, tile: Sequence[int], blocks: Mapping[str, np.ndarray], run: str,
                   seconds: float) -> bool:
        """Write a tile's blocks, then (atomically) its record. Returns False if it was already done."""
        rec_path = self._record_path(tile)
        if rec_path.exists():  # finished meanwhile (e.g. a retried Dask task): values are deterministic
            return False
        i, j = int(tile[0]), int(tile[1])
        sums = {}
        for nm, blk in blocks.items():
            arr = self.array(nm)
            blk = np.ascontiguousarray(blk, dtype=arr.dtype)
            arr[i:i + blk.shape[0], j:j + blk.shape[1]] = blk  # zarr's local store renames whole chunks
            sums[nm] = hashlib.sha256(blk.tobytes()).hexdigest()
        rec = {"tile": [i, j], "run": run, "pid": os.getpid(), "seconds": float(seconds), "sha256": sums,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _atomic_write(rec_path, json.dumps(rec))
        return True

    def read_tile(self, name: str, tile: Sequence[int]) -> np.ndarray:
        """The stored block of ``name`` at tile offset ``tile``."""
        i, j = int(tile[0]), int(tile[1])
        n, m = self.shape
        return np.asarray(self.array(name)[i:min(i + self.tile, n), j:min(j + self.tile, m)])

    def verify(self) -> list[tuple[int, int]]:
        """Tiles whose stored data differs from the checksum in their record (e.g. torn by a power loss)."""
        bad = []
        for t, rec in sorted(self.records().items()):
            for nm, digest in rec["sha256"].items():
                if hashlib.sha256(np.ascontiguousarray(self.read_tile(nm, t)).tobytes()).hexdigest() != digest:
                    bad.append(t)
                    break
        return bad

    def invalidate(self, tiles: Sequence[Sequence[int]]) -> None:
        """Drop the records of ``tiles`` so that the next run recomputes them."""
        for t in tiles:
            with contextlib.suppress(FileNotFoundError):
                self._record_path(t).unlink()

    def load(self, get: Any = None, allow_missing: bool = False) -> Any:
        """Assemble the full (N, M) matrix (mirroring the lower triangle of symmetric stores).

        Args:
            get: A kernel name (returns its array), a tuple (returns a dict), or None (the stored kernels:
                an array if one, else a dict).
            allow_missing: Return NaN for missing tiles instead of raising.
        """
        missing = self.missing()
        if missing and not allow_missing:
            raise KernelalgError(INCOMPLETE.format(path=str(self.path), k=len(missing), total=len(self.tiles)))
        names = self.names if get is None else ([get] if isinstance(get, str) else list(get))
        out = {}
        for nm in names:
            full = np.asarray(self.array(nm)[...])
            if self.symmetric:  # mirror the tiles above the diagonal (diagonal tiles are stored symmetric)
                t = self.tile
                for i, j in self.tiles:
                    if j > i:
                        transpose_into(full[j:j + t, i:i + t], full[i:i + t, j:j + t])
            out[nm] = full
        single = isinstance(get, str) or (get is None and len(names) == 1)
        return out[names[0]] if single else out

    def __repr__(self) -> str:
        state = f"{len(self.done())}/{len(self.tiles)} tiles" if self.initialized else "empty"
        return f"GramStore({str(self.path)!r}, {self.names}, shape={self.meta.get('shape')}, {state})"


def _describe(key: str, old: Any, new: Any) -> str:
    if key.endswith("sha256"):
        return f"{key[:2]} differs (input hash {str(old)[:12]}... in the store vs {str(new)[:12]}... now)"
    return f"{key} is {old!r} in the store vs {new!r} now"


def open_gram(path: Any) -> GramStore:
    """Open an existing Gram store for reading (``.load()``, ``.missing()``, ``.records()``, ``.verify()``)."""
    p = Path(path)
    if not p.exists():
        raise KernelalgError(f"No Gram store at {p}. Fix: check the path, or create one with "
                             "ka.gram(net, x, store=path).")
    if not (p / "kernelalg.json").exists():
        raise KernelalgError(NOT_A_STORE.format(path=p))
    return GramStore(p)


# ---------------------------------------------------------------------------------------------- Dask

