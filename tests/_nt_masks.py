"""Reading the stored neural-tangents 0.6.5 outputs of benchmarks/make_nt_masks_reference.py (masked images,
sequences and graphs): each case's spec translated to a kernelalg network, and its inputs."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

import kernelalg as ka

NT_MASKS = np.load(Path(__file__).resolve().parent / "data" / "nt_masks_reference.npz")
MASK_CASES = sorted({k.split(".")[0] for k in NT_MASKS.files if not k.startswith("_")})
WIDTH_ARG = {"Dense": "out_dim", "Conv": "out_chan", "ConvLocal": "out_chan", "ConvTranspose": "out_chan"}
#: Keywords only NT needs: where its axes went after lax.dot_general (kernelalg keeps its own order).
NT_ONLY = ("batch_axis", "channel_axis")


def from_spec(spec: list) -> ka.Layer:
    """kernelalg's layer for an NT spec (NT's first positional width becomes out_dim / out_chan)."""
    name, args, kw = spec
    kw = {k: (tuple(v) if k == "axis" else v) for k, v in kw.items() if k not in NT_ONLY}
    if name in WIDTH_ARG:
        kw[WIDTH_ARG[name]], args = args[0], args[1:]
    return getattr(ka, name)(*args, **kw)


@functools.lru_cache(maxsize=None)
def mask_net(case: str) -> ka.Layer:
    """The case's network, one object per case (its compiled kernels are reused across tests)."""
    return ka.serial(*map(from_spec, json.loads(str(NT_MASKS[f"{case}.spec"]))))


def mask_inputs(case: str) -> tuple:
    """x1, x2 of a case: arrays, or ka.Graphs with the stored patterns (graph cases)."""
    x1, x2 = NT_MASKS[f"{case}.x1"], NT_MASKS[f"{case}.x2"]
    if f"{case}.p1" in NT_MASKS.files:
        return ka.Graphs(x1, NT_MASKS[f"{case}.p1"]), ka.Graphs(x2, NT_MASKS[f"{case}.p2"])
    return x1, x2
