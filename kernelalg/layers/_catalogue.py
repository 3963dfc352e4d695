"""The catalogue of layer constructors: every public function of a layer module that returns a Layer.

The architecture parser (:mod:`kernelalg.layers._parse`) accepts exactly these names, the command line's
``kernelalg layers`` lists them, and ``kernelalg`` exports them: a constructor added to a family module
is public, parsable and listed at once; a new family module is added to :data:`MODULES`.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Callable

from kernelalg.core import _layer
from kernelalg.core._layer import Layer
from kernelalg.layers import _activations, _dense, _elementwise, _normalization, _sigmoidal, _surrogate
from kernelalg.layers.graph import _aggregate
from kernelalg.layers.recurrent import _gated, _recurrent
from kernelalg.layers.spatial import _attention, _conv, _dotgeneral, _imageresize, _index, _local, _pooling, _resize

#: The modules whose public Layer-returning functions are layer constructors.
MODULES: tuple[ModuleType, ...] = (_layer, _dense, _activations, _elementwise, _sigmoidal, _surrogate, _conv,
                                   _local, _pooling, _recurrent, _gated, _normalization, _attention, _aggregate,
                                   _index, _dotgeneral, _resize, _imageresize)


#: Public functions of those modules that return a Layer but are no layer constructors of the language
#: (they take Python callables or objects).
EXCLUDED = frozenset({"activation", "as_layer"})


def constructors() -> dict[str, Callable[..., Layer]]:
    """Name -> constructor, for functions defined in :data:`MODULES` and annotated ``-> Layer``."""
    out: dict[str, Callable[..., Layer]] = {}
    for mod in MODULES:
        for name, fn in vars(mod).items():
            if name.startswith("_") or name in EXCLUDED or not inspect.isfunction(fn) or fn.__module__ != mod.__name__:
                continue
            ret = fn.__annotations__.get("return")
            if ret is Layer or ret == "Layer":
                out[name] = fn
    return dict(sorted(out.items()))
