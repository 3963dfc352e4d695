"""Resumable Gram-matrix stores (zarr, chunks = tiles) with per-tile checksums.

Store layout (a directory; :mod:`kernelalg.scale._files` lists the names):
    ``zarr.json``, ``<kernel>/``   a zarr group with one (N, M) array per kernel, chunks = tiles, fill NaN.
    ``kernelalg.json``            what was computed: architecture, hyperparameters, the identity of its
                                  functions (sympy form or code fingerprint), kernels, dtype, input shapes
                                  and SHA-256 of the inputs, tile, symmetry.
    ``_done/<i>_<j>.json``        one completion record per tile (run id, seconds, SHA-256 of each block),
                                  written atomically (temporary file + rename) only after the tile's data.
    ``_claim/<i>_<j>``            created exclusively by the run that computes the tile (concurrent runs
                                  share the work); a claim without a record is taken over at the end of a run.
    ``_log/<run>-<pid>.log``      one line "i j" per tile computation started, per run and process.

A new store is built under a temporary name and renamed into place (atomic). A killed run never marks a
half-written tile done; a rerun computes the tiles without a record and first re-verifies every recorded
tile against its checksum, recomputing damaged ones. :meth:`GramStore.load` checks every checksum too.
Symmetric stores (x2 None) hold the tiles j >= i only; ``load`` mirrors them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kernelalg.core._errors import KernelalgError
from kernelalg.core._tiles import tile_offsets, transpose_into
from kernelalg.scale import _files as F
from kernelalg.scale._meta import DAMAGED_META, REMAINS, check_same, read_meta

NEED_ZARR = "gram(store=...) needs the zarr package. Fix: pip install 'kernelalg[scale]' (or pip install zarr)."
NEED_DASK = ("gram(client=...) needs dask.distributed. Fix: pip install 'kernelalg[scale]' "
             "(or pip install 'dask[distributed]').")
NOT_A_STORE = ("{path} is not a kernelalg Gram store: it holds files kernelalg did not create ({files}). "
               "kernelalg never deletes those, not even with overwrite=True. Fix: choose another path (e.g. "
               "{path}/kernel.zarr), or move those files away.")
TILE_MISMATCH = ("The store {path} {how} tile={old}; this call asked for tile={new}. Fix: pass tile={old}, or "
                 "tile=None (a store keeps its own tile), to resume it; or overwrite=True to start again with "
                 "tile={new}; or choose another path.")
INCOMPLETE = ("The store {path} is missing {k} of {total} tiles. Fix: rerun ka.gram with the same arguments "
              "and store={path!r} to compute them, or load(allow_missing=True) for NaN there.")
DAMAGED = ("The store {path} has {k} damaged tile(s) (data not matching the checksum in their completion "
           "record, unreadable or deleted chunk files, or damaged records), first {tiles}. Fix: rerun ka.gram "
           "with the same arguments and store={path!r} (a resume re-verifies every tile and recomputes damaged "
           "ones), or load(allow_missing=True) for NaN there.")
DAMAGED_RECORD = ("The completion record {file} of tile {tile} is damaged ({err}). Fix: "
                  "ka.open_gram({path!r}).invalidate([{tile}]) drops it; the next ka.gram run with the same "
                  "arguments recomputes that tile (a resume does this by itself).")
STRAY = ("{file} is not a completion record of this store ({why}); kernelalg did not create it and does not "
         "delete it. Fix: move it out of {folder}.")


def _block_sha(blk: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(blk).tobytes()).hexdigest()


def _build(root: Path, meta: dict, n: int, m: int, tile: int, dtype: Any) -> None:
    """Create the store's arrays and folders in ``root``, kernelalg.json last."""
    import zarr
    g = zarr.open_group(str(root), mode="w")
    for nm in meta["get"]:
        g.create_array(nm, shape=(n, m), chunks=(min(tile, n), min(tile, m)), dtype=np.dtype(dtype),
                       fill_value=np.nan)
    for sub in (F.DONE, F.LOG, F.CLAIM):
        (root / sub).mkdir()
    F.atomic_write(root / F.INFO, json.dumps(meta, indent=1))


class GramStore:
    """A zarr Gram-matrix store with per-tile completion records and checksums (see the module docstring).

    Open an existing one with :func:`open_gram`; :func:`kernelalg.gram` creates and resumes them.
    """

    def __init__(self, path: Any, meta: dict | None = None):
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise KernelalgError(NEED_ZARR) from None
        self.path = Path(path)
        self.meta = meta if meta is not None else read_meta(self.path)
        self._arrays: dict[str, Any] = {}
        self._replace = False  # set by prepare(overwrite=True): initialize() deletes the old store first

    # ------------------------------------------------------------------ creation and resumption

    @classmethod
    def prepare(cls, path: Any, meta: dict, overwrite: bool = False) -> "GramStore":
        """Open ``path`` for the computation ``meta``: resume it if it matches, refuse it if not.

        With ``overwrite`` an existing store will be replaced, but only if every file in it is one kernelalg
        creates; :meth:`initialize` deletes it (after the arguments have been checked) and creates the new one.
        """
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise KernelalgError(F.NOT_A_DIRECTORY.format(path=p))
        if p.is_dir():
            foreign = F.foreign_entries(p) if overwrite or not (p / F.INFO).exists() else []
            if foreign:
                raise KernelalgError(NOT_A_STORE.format(path=p, files=", ".join(foreign)))
            if overwrite:
                gs = cls(p, dict(meta))
                gs._replace = True
                return gs
            if (p / F.INFO).exists():
                old = read_meta(p)
                check_same(p, old, meta)
                return cls(p, old)
            if any(p.iterdir()):
                raise KernelalgError(REMAINS.format(path=p))
        return cls(p, dict(meta))

    @property
    def initialized(self) -> bool:
        """Whether the store exists on disk (its kernelalg.json, written last at creation)."""
        return (self.path / F.INFO).exists()

    def initialize(self, n: int, m: int, tile: int, symmetric: bool, dtype: Any, tile_given: bool = True) -> int:
        """Create the store (atomically) unless it exists; return the store's tile.

        Args:
            n, m, tile, symmetric, dtype: The plan of a new store.
            tile_given: Whether the user chose ``tile`` (then an existing store with another tile is refused;
                otherwise its tile is adopted).
        """
        how = "was created with"
        if self._replace:
            foreign = F.remove_store(self.path)  # checked again: files may have been added since prepare
            if foreign:
                raise KernelalgError(NOT_A_STORE.format(path=self.path, files=", ".join(foreign)))
            self._replace = False
        if "tile" not in self.meta:  # there was no store when this call began
            meta = dict(self.meta, shape=[int(n), int(m)], tile=int(tile), symmetric=bool(symmetric),
                        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if not self.initialized and F.create_atomically(self.path, lambda r: _build(r, meta, n, m, tile, dtype)):
                self.meta = meta
                return int(tile)
            other = read_meta(self.path)  # another process created the store meanwhile
            check_same(self.path, other, self.meta)
            self.meta, how = other, "was created meanwhile, by another process started on it at the same time, with"
        if tile_given and int(tile) != self.tile:
            raise KernelalgError(TILE_MISMATCH.format(path=self.path, how=how, old=self.tile, new=tile))
        return self.tile

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
        return self.path / F.DONE / f"{int(tile[0])}_{int(tile[1])}.json"

    def _record_files(self) -> dict[tuple[int, int], Path]:
        """Record files by tile; anything else in ``_done/`` (but kernelalg's temporary files) is refused."""
        folder = self.path / F.DONE
        tiles = set(self.tiles)
        out = {}
        for p in folder.iterdir():
            t = F.record_tile(p.name)
            if t is None:
                if F.is_record_tmp(p.name):
                    continue  # an interrupted record write: the tile has no record
                raise KernelalgError(STRAY.format(file=p, folder=folder, why="not named <i>_<j>.json"))
            if t not in tiles:
                raise KernelalgError(STRAY.format(file=p, folder=folder, why=f"{t} is not a tile offset of a "
                                                  f"{self.shape} store with tile {self.tile}"))
            out[t] = p
        return out

    def _read_record(self, tile: tuple[int, int], p: Path) -> tuple[dict | None, str]:
        """(record, "") or (None, what is wrong with it)."""
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            return None, str(err)
        sums = rec.get("sha256") if isinstance(rec, dict) else None
        if not isinstance(sums, dict) or rec.get("tile") != list(tile):
            return None, "not a record of this tile"
        if set(sums) != set(self.names) or not all(isinstance(s, str) for s in sums.values()):
            return None, f"checksums for {sorted(sums)}, expected {self.names}"
        return rec, ""

    def records(self) -> dict[tuple[int, int], dict]:
        """Completion records by tile offset (a damaged record raises, naming its file and the fix)."""
        out = {}
        for t, p in self._record_files().items():
            rec, err = self._read_record(t, p)
            if rec is None:
                raise KernelalgError(DAMAGED_RECORD.format(file=p, tile=t, err=err, path=str(self.path)))
            out[t] = rec
        return out

    def done(self) -> set[tuple[int, int]]:
        """Tiles with a completion record (:meth:`verify` checks that their data match it)."""
        return set(self._record_files())

    def missing(self) -> list[tuple[int, int]]:
        """Tiles without a completion record, row-major."""
        done = self.done()
        return [t for t in self.tiles if t not in done]

    @property
    def complete(self) -> bool:
        """Every tile has a completion record (:meth:`verify` checks their data, :meth:`load` too)."""
        return not self.missing()

    def compute_log(self) -> list[tuple[str, tuple[int, int]]]:
        """Every tile computation started, as (run id, tile), from all runs and processes."""
        out = []
        for p in sorted((self.path / F.LOG).glob("*.log")):
            run = p.stem.rsplit("-", 1)[0]
            for line in p.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and all(s.isdigit() for s in parts):  # a line cut by a kill: skip it
                    out.append((run, (int(parts[0]), int(parts[1]))))
        return out

    # ------------------------------------------------------------------ writing and reading

    def array(self, name: str) -> Any:
        """The zarr array of kernel ``name`` (tiles j >= i only when symmetric)."""
        if name not in self._arrays:
            import zarr
            try:
                self._arrays[name] = zarr.open_array(str(self.path / name), mode="r+")
            except Exception as err:  # zarr raises several kinds for a missing or damaged array
                raise KernelalgError(DAMAGED_META.format(file=self.path / name / "zarr.json", err=err,
                                                         path=str(self.path))) from None
        return self._arrays[name]

    def has_record(self, tile: Sequence[int]) -> bool:
        """Whether ``tile`` has a completion record."""
        return self._record_path(tile).exists()

    def claim(self, tile: Sequence[int], run: str) -> bool:
        """Claim ``tile`` for ``run`` (exclusive create); False if another run claimed it first."""
        folder = self.path / F.CLAIM
        folder.mkdir(exist_ok=True)  # stores made before claims existed
        try:
            fd = os.open(folder / f"{int(tile[0])}_{int(tile[1])}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{run} {os.getpid()}\n")
        return True

    def log_compute(self, run: str, tile: Sequence[int]) -> None:
        """Append "i j" to this run's and process's compute log (before the tile is computed)."""
        with open(self.path / F.LOG / f"{run}-{os.getpid()}.log", "a") as fh:
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
            sums[nm] = _block_sha(blk)
        rec = {"tile": [i, j], "run": run, "pid": os.getpid(), "seconds": float(seconds), "sha256": sums,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        F.atomic_write(rec_path, json.dumps(rec))
        return True

    def _block(self, name: str, tile: Sequence[int]) -> np.ndarray | None:
        """The stored block, or None when its chunk cannot be read (e.g. corrupted compressed bytes)."""
        i, j = int(tile[0]), int(tile[1])
        n, m = self.shape
        try:
            return np.asarray(self.array(name)[i:min(i + self.tile, n), j:min(j + self.tile, m)])
        except KernelalgError:
            raise
        except Exception:  # the codec's error for bytes it cannot decode
            return None

    def read_tile(self, name: str, tile: Sequence[int]) -> np.ndarray:
        """The stored block of ``name`` at tile offset ``tile`` (as stored: not checked against its record)."""
        blk = self._block(name, tile)
        if blk is None:
            raise KernelalgError(DAMAGED.format(path=str(self.path), k=1, tiles=[tuple(tile)]))
        return blk

    def _check(self, names: Sequence[str], read: Callable[[str, tuple[int, int]], np.ndarray | None]
               ) -> tuple[set[tuple[int, int]], list[tuple[int, int]]]:
        """(good, damaged) recorded tiles: damaged ones have an unreadable record or blocks (``read(name,
        tile)``, None when the chunk cannot be decoded) that do not match the record's checksums."""
        good, bad = set(), []
        for t, p in sorted(self._record_files().items()):
            rec, _ = self._read_record(t, p)
            if rec is None or any((b := read(nm, t)) is None or _block_sha(b) != rec["sha256"][nm] for nm in names):
                bad.append(t)
            else:
                good.add(t)
        return good, bad

    def verify(self) -> list[tuple[int, int]]:
        """Recorded tiles that are damaged: data differing from the record's checksums (flipped bytes, a torn
        write), unreadable or deleted chunk files, or an unreadable record. Row-major."""
        return self._check(self.names, self._block)[1]

    def repair(self) -> list[tuple[int, int]]:
        """Invalidate the damaged tiles (:meth:`verify`) so that the next computation redoes them."""
        bad = self.verify()
        self.invalidate(bad)
        return bad

    def invalidate(self, tiles: Sequence[Sequence[int]]) -> None:
        """Drop the records (and claims) of ``tiles`` so that the next run recomputes them."""
        for t in tiles:
            for p in (self._record_path(t), self.path / F.CLAIM / f"{int(t[0])}_{int(t[1])}"):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    def load(self, get: Any = None, allow_missing: bool = False) -> Any:
        """Assemble the full (N, M) matrix (mirroring the lower triangle of symmetric stores), checking every
        tile against the checksum in its record.

        Args:
            get: A kernel name (returns its array), a tuple (returns a dict), or None (the stored kernels:
                an array if one, else a dict).
            allow_missing: Return NaN for missing and damaged tiles instead of raising.
        """
        missing = self.missing()
        if missing and not allow_missing:
            raise KernelalgError(INCOMPLETE.format(path=str(self.path), k=len(missing), total=len(self.tiles)))
        names = self.names if get is None else ([get] if isinstance(get, str) else list(get))
        t = self.tile
        try:  # one read per kernel (bounded memory: the result itself), checked tile by tile below
            out = {nm: np.asarray(self.array(nm)[...]) for nm in names}
            good, bad = self._check(names, lambda nm, tl: out[nm][tl[0]:tl[0] + t, tl[1]:tl[1] + t])
            read = None
        except KernelalgError:
            raise
        except Exception:  # a chunk the codec cannot decode: read tile by tile
            out = {nm: np.full(self.shape, np.nan, dtype=np.dtype(self.meta["dtype"])) for nm in names}
            (good, bad), read = self._check(names, self._block), self._block
        if bad and not allow_missing:
            raise KernelalgError(DAMAGED.format(path=str(self.path), k=len(bad), tiles=bad[:5]))
        for nm, full in out.items():
            for i, j in self.tiles:
                if (i, j) not in good:  # missing or damaged: NaN, whatever partial data the chunk holds
                    full[i:i + t, j:j + t] = np.nan
                elif read is not None:
                    full[i:i + t, j:j + t] = read(nm, (i, j))
                if self.symmetric and j > i:  # mirror (diagonal tiles are stored symmetric)
                    transpose_into(full[j:j + t, i:i + t], full[i:i + t, j:j + t])
        single = isinstance(get, str) or (get is None and len(names) == 1)
        return out[names[0]] if single else out

    def __repr__(self) -> str:
        state = f"{len(self.done())}/{len(self.tiles)} tiles" if self.initialized else "empty"
        return f"GramStore({str(self.path)!r}, {self.names}, shape={self.meta.get('shape')}, {state})"


def open_gram(path: Any) -> GramStore:
    """Open an existing Gram store for reading (``.load()``, ``.missing()``, ``.records()``, ``.verify()``)."""
    p = Path(path)
    if not p.exists():
        raise KernelalgError(f"No Gram store at {p}. Fix: check the path, or create one with "
                             "ka.gram(net, x, store=path).")
    if not p.is_dir():
        raise KernelalgError(F.NOT_A_DIRECTORY.format(path=p))
    if not (p / F.INFO).exists():
        foreign = F.foreign_entries(p)
        raise KernelalgError(NOT_A_STORE.format(path=p, files=", ".join(foreign)) if foreign
                             else REMAINS.format(path=p))
    return GramStore(p)
