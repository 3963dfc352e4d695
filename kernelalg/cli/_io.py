"""Files and data sets for the command line: array loading, tiled .npy kernel outputs, built-in data.

``.npy`` outputs are written tile by tile through a memory map, so memory stays bounded by the tile size;
``.zarr`` outputs are :func:`kernelalg.gram` stores (per-tile completion records: a rerun of an interrupted
``kernelalg kernel`` command computes only the missing tiles).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kernelalg.cli._outputs import check_parent, temporary_beside
from kernelalg.analysis._sphere import sphere_points
from kernelalg.core._errors import NO_FEATURES, InputError, KernelalgError

BAD_SUFFIX = ("Cannot read {path!r}: unknown file type {suffix!r}. Fix: pass a .npy file (np.save) or a "
              ".csv/.txt file with one sample per row.")
BAD_CSV = ("Cannot read {path!r} as numbers: {err}. Fix: a CSV with one sample per row, comma-separated, "
           "optionally one header line; no missing values.")
BAD_NPY = ("Cannot read {path!r}: {err}. Fix: save plain numeric arrays with np.save (object arrays and "
           "pickles are refused for safety).")
NOT_NUMERIC = "{name} ({path}) has dtype {dtype}. Fix: save a numeric array, e.g. np.save(path, x.astype(float))."
OUT_SUFFIX = "Output {path!r} must end in .npy or .zarr. Fix: e.g. -o kernel.npy or -o kernel.zarr."
OUT_EXISTS = ("Output {path} exists. Fix: pass --overwrite, or choose another path (a .zarr output resumes "
              "instead).")
EMPTY_FILE = ("{name} ({path}) holds no data (shape {shape}). Fix: save at least one sample (for a CSV, one "
              "row of numbers below the optional header).")
OUT_PARENT = ("{option} {path!r}: {parent} is a file, not a folder, so nothing can be written under it. "
              "Fix: choose a path inside a folder, e.g. {option} out/{name}.")
OUT_NO_DIR = ("{option} {path!r}: the folder {parent} does not exist. Fix: create it first (mkdir -p) or choose "
              "another path.")
NEED_SKLEARN = ("--data {name} needs scikit-learn. Fix: pip install 'kernelalg[data]' (or pip install "
                "scikit-learn), or use the built-in --data sphere.")
UNKNOWN_DATA = ("Unknown data set {name!r}. Fix: use sphere, digits, iris, wine, breast_cancer, or a .npy/.csv "
                "file path.")
SKLEARN_SETS = ("digits", "iris", "wine", "breast_cancer")


def load_array(path: str, name: str = "X", dtype: str = "auto") -> np.ndarray:
    """Load a numeric array from .npy (no pickles) or .csv/.txt (one sample per row, optional header)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{name}: file {path!r} not found. Fix: check the path.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            x = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise InputError(BAD_NPY.format(path=path, err=err)) from None
    elif suffix in (".csv", ".txt", ".tsv"):
        delim = "," if suffix == ".csv" else ("\t" if suffix == ".tsv" else None)
        skip = 1 if _has_header(p, delim) else 0  # only a non-numeric first line is a header
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data": refused below
                x = np.loadtxt(p, delimiter=delim, skiprows=skip, ndmin=2, dtype=np.float64)
        except ValueError as err:
            raise InputError(BAD_CSV.format(path=path, err=str(err).split(";")[0].rstrip('.'))) from None
    else:
        raise InputError(BAD_SUFFIX.format(path=path, suffix=suffix))
    if x.dtype.kind not in "fiub":
        raise InputError(NOT_NUMERIC.format(name=name, path=path, dtype=x.dtype))
    if x.ndim >= 2 and x.shape[0] > 0 and x.size == 0:
        raise InputError(NO_FEATURES.format(name=f"{name} ({path})", shape=x.shape))
    if x.size == 0:
        raise InputError(EMPTY_FILE.format(name=name, path=path, shape=x.shape))
    if dtype == "auto":
        target = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    else:
        target = np.dtype(dtype)
    return np.ascontiguousarray(x, dtype=target)


def _has_header(path: Path, delim: str | None) -> bool:
    """True when the first non-empty line of a text table has a field that is not a number."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                fields = line.strip().split(delim)
                try:
                    [float(f) for f in fields]
                except ValueError:
                    return True
                return False
    return False


def check_output_path(path: str, option: str, folder: bool = False) -> None:
    """Refuse an output path under a regular file, before any work is done.

    Args:
        path: The output path.
        option: The command-line option that named it (for the message).
        folder: The output is a folder that the command creates with its parents (``verify --out``);
            otherwise the output is a file whose folder must exist.
    """
    target = Path(path).absolute()
    start = target if folder else target.parent
    for p in (start, *start.parents):
        if p.exists():
            if not p.is_dir():
                raise KernelalgError(OUT_PARENT.format(option=option, path=path, parent=p, name=target.name))
            break
    if not folder and not target.parent.exists():
        raise KernelalgError(OUT_NO_DIR.format(option=option, path=path, parent=target.parent))


class _NpySink:
    """Memory-mapped .npy outputs written under temporary names; renamed only when complete (:meth:`close`),
    removed by :meth:`abort` (an interrupted run leaves no file that loads like a finished kernel)."""

    def __init__(self, path: Path, names: Sequence[str], shape: tuple, dtype: Any, overwrite: bool):
        check_parent(path)
        self.paths = {nm: path if len(names) == 1 else path.with_name(f"{path.stem}.{nm}.npy") for nm in names}
        for p in self.paths.values():
            if p.exists() and not overwrite:
                raise KernelalgError(OUT_EXISTS.format(path=p))
        self.temps = {nm: temporary_beside(p) for nm, p in self.paths.items()}
        self.maps: dict[str, np.memmap] = {}
        try:
            for nm, p in self.temps.items():
                self.maps[nm] = np.lib.format.open_memmap(p, mode="w+", dtype=dtype, shape=shape)
        except BaseException:
            self.abort()
            raise

    def put(self, name: str, i: int, j: int, blk: np.ndarray) -> None:
        """Write one block at rows i.., columns j.. (the tiler's ``write``)."""
        self.maps[name][i:i + blk.shape[0], j:j + blk.shape[1]] = blk

    def close(self) -> dict[str, str]:
        """Flush and rename the complete files to their final names."""
        for mm in self.maps.values():
            mm.flush()
        self.maps.clear()
        for nm, p in self.paths.items():
            os.replace(self.temps[nm], p)
        return {nm: str(p) for nm, p in self.paths.items()}

    def abort(self) -> None:
        """Remove this run's temporary files (kernelalg created them; nothing else is touched)."""
        self.maps.clear()
        for p in self.temps.values():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def open_npy(path: str, names: Sequence[str], shape: tuple, dtype: Any, overwrite: bool) -> _NpySink:
    """A tile sink writing memory-mapped .npy files (``K.npy``, or ``K.nngp.npy`` and ``K.ntk.npy``)."""
    p = Path(path)
    if p.suffix.lower() != ".npy":
        raise KernelalgError(OUT_SUFFIX.format(path=path))
    return _NpySink(p, names, shape, dtype, overwrite)


# ----------------------------------------------------------------------------------------- data sets


def sphere(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` points uniform on the sphere of radius sqrt(dim) in R^dim (so |x|^2/d = 1)."""
    if dim < 2:
        raise KernelalgError(f"--dim must be >= 2 for sphere data, got {dim}. Fix: e.g. --dim 3.")
    return sphere_points(n, dim, seed)


def load_data(name: str, n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, description) for the verify command: inputs normalised to |x|^2/d = 1, a scalar target.

    ``sphere``: uniform on S^{dim-1}, target a fixed degree-1 plus degree-2 polynomial (x_1 + 2 x_1 x_2 / sqrt d);
    scikit-learn sets: a random subset of ``n`` samples, target the standardised class label; files: rows
    of the array, target a fixed random linear function of the inputs passed through sin.
    """
    rng = np.random.default_rng(seed + 1)
    if name == "sphere":
        x = sphere(n, dim, seed)
        y = x[:, 0] / np.sqrt(dim) + x[:, 0] * x[:, 1] / dim * 2.0
        desc = f"{n} points uniform on the sphere S^{dim - 1} (radius sqrt({dim}))"
    elif name in SKLEARN_SETS:
        try:
            import sklearn.datasets as ds
        except ImportError:
            raise KernelalgError(NEED_SKLEARN.format(name=name)) from None
        bunch = getattr(ds, f"load_{name}")()
        idx = rng.choice(len(bunch.data), size=min(n, len(bunch.data)), replace=False)
        x = np.asarray(bunch.data[idx], dtype=np.float64)
        x = x - x.mean(0)
        y = np.asarray(bunch.target[idx], dtype=np.float64)
        desc = f"{len(x)} samples of scikit-learn's {name} ({x.shape[1]} features), centred"
    elif Path(name).suffix.lower() in (".npy", ".csv", ".txt", ".tsv"):
        x = load_array(name, "--data", "float64")
        if x.ndim != 2:
            raise InputError(f"--data {name}: verify takes (samples, features) arrays, got shape {x.shape}. "
                             "Fix: reshape to 2-D, or use 'kernelalg kernel' for images/sequences.")
        x = x[rng.permutation(len(x))[:n]]
        w = rng.standard_normal(x.shape[1])
        y = np.sin(x @ w / np.sqrt(x.shape[1]))
        desc = f"{len(x)} rows of {name} ({x.shape[1]} features)"
    else:
        raise KernelalgError(UNKNOWN_DATA.format(name=name))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InputError("Some inputs are all zeros. Fix: drop them; verify normalises inputs to |x|^2/d = 1.")
    x = x / norms * np.sqrt(x.shape[1])
    y = (y - y.mean()) / (y.std() + 1e-12)
    return x, y, desc
