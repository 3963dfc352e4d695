"""What a Gram store holds: the fingerprint of the computation (``kernelalg.json``) and its checks.

The fingerprint records everything that determines the numbers: the architecture (``repr``), the identity
of its functions (an ``Elementwise`` function's sympy form, or a fingerprint of its code and the values it
reads: :mod:`kernelalg.core._fingerprint`), hyperparameters, kernels, dtype, and the inputs' shapes and
SHA-256. A store is resumed only by the same computation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kernelalg._version import __version__
from kernelalg.core._errors import KernelalgError
from kernelalg.core._layer import Layer
from kernelalg.scale import _files as F

FORMAT = "kernelalg-gram/1"
STORE_MISMATCH = ("The store {path} holds a different computation: {what}. Fix: rerun with exactly the same "
                  "network, params, inputs, get and dtype to resume it, or pass overwrite=True to replace it, "
                  "or choose another store path.")
REMAINS = ("{path} holds parts of a kernelalg Gram store but no kernelalg.json (its creation or removal was "
           "interrupted). Fix: pass overwrite=True to replace it, or choose another path.")
DAMAGED_META = ("The store description {file} is damaged ({err}). It records which computation the tiles belong "
                "to, so the store cannot be resumed. Fix: ka.gram(..., store={path!r}, overwrite=True) to compute "
                "it again, or choose another path.")
UNIDENTIFIED = ("gram(store=...) cannot record what determines the numbers: {why}. A resumed store could not tell "
                "this function from another one. Fix: write it with sympy (lambda x: sympy.tanh(x)) or with jnp "
                "functions, numbers and arrays only; or compute without store=.")
_META_KEYS = ("arch", "functions", "params", "get", "dtype", "x1_shape", "x2_shape", "x1_sha256", "x2_sha256",
              "asymmetric")


def _sha(x: np.ndarray | None) -> str | None:
    return None if x is None else hashlib.sha256(memoryview(np.ascontiguousarray(x)).cast("B")).hexdigest()


def network_functions(net: Layer) -> list[list[str]] | None:
    """[repr, identity] of every layer whose values depend on more than its repr (e.g. Elementwise functions).

    Raises:
        KernelalgError: a layer's identity could not be determined (e.g. a function reading an object).
    """
    out: list[list[str]] = []

    def visit(layer: Layer) -> None:
        if layer.unidentified:
            raise KernelalgError(UNIDENTIFIED.format(why=layer.unidentified))
        if layer.identity:
            out.append([repr(layer), layer.identity])
        for child in layer.children + tuple(v for _, v in layer.static if isinstance(v, Layer)):
            visit(child)
    visit(net)
    return out or None


def fingerprint(f: Any, x1: np.ndarray, x2: np.ndarray | None, names: Sequence[str],
                params: Mapping[str, Any] | None) -> dict:
    """What identifies a Gram computation: architecture and its functions, hyperparameters, kernels, dtype
    and inputs."""
    return {"format": FORMAT, "version": __version__, "arch": repr(f.net), "functions": network_functions(f.net),
            "params": {k: float(v) for k, v in sorted(f._params(params).items())}, "get": list(names),
            "dtype": np.dtype(x1.dtype).name, "x1_shape": list(x1.shape),
            "x2_shape": None if x2 is None else list(x2.shape), "x1_sha256": _sha(x1), "x2_sha256": _sha(x2),
            "asymmetric": bool(f.symbolic.asymmetric)}


def read_meta(path: Path) -> dict:
    """The parsed, checked ``kernelalg.json`` of the store at ``path``."""
    info = path / F.INFO
    try:
        meta = json.loads(info.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        get, shape, tile = meta.get("get"), meta.get("shape"), meta.get("tile")
        if not (isinstance(get, list) and get and set(get) <= set(F.KERNELS)):
            raise ValueError(f"bad 'get': {get!r}")
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
            raise ValueError(f"bad 'shape': {shape!r}")
        if not (isinstance(tile, int) and tile > 0 and isinstance(meta.get("symmetric"), bool)):
            raise ValueError(f"bad 'tile' or 'symmetric': {tile!r}, {meta.get('symmetric')!r}")
    except FileNotFoundError:
        raise KernelalgError(REMAINS.format(path=path)) from None
    except (OSError, ValueError) as err:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise KernelalgError(DAMAGED_META.format(file=info, err=err, path=str(path))) from None
    return meta


def _describe(key: str, old: Any, new: Any) -> str:
    if key.endswith("sha256"):
        return f"{key[:2]} differs (input hash {str(old)[:12]}... in the store vs {str(new)[:12]}... now)"
    if key == "functions":
        def show(v: Any) -> str:
            return "none" if not v else ", ".join(f"{r} [{i[:24]}...]" for r, i in v)
        return f"the functions differ (sympy form or code of {show(old)} in the store vs {show(new)} now)"
    return f"{key} is {old!r} in the store vs {new!r} now"


def check_same(path: Path, old: dict, meta: dict) -> None:
    """Refuse (naming every difference) unless ``meta`` is the computation ``old`` of the store at ``path``."""
    diff = [k for k in _META_KEYS if old.get(k) != meta.get(k)]
    if diff:
        what = "; ".join(_describe(k, old.get(k), meta.get(k)) for k in diff)
        raise KernelalgError(STORE_MISMATCH.format(path=path, what=what))
