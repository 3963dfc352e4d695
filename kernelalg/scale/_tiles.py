"""Fixed-shape tile evaluation on every local device (``jax.shard_map``), and progress reporting.

Each tile is a (tile x tile) call of the compiled kernel (edge tiles are padded by repeating a real row and
cropped), so a whole run compiles one program; tiles are grouped over the local devices, one tile per
device per step, so memory per device is that of one tile.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kernelalg.backends._compile import CompiledKernel, precision_of
from kernelalg.core._tiles import symmetrize_upper

class TileEvaluator:
    """Evaluates groups of (tile x tile) kernel blocks, one tile per device per step (``jax.shard_map``).

    Args:
        f: Compiled kernel (one output branch).
        tile: Tile edge.
        dtype: Compute dtype of the inputs.
        params: Hyperparameter overrides by name.
        devices: jax devices to spread tiles over.
    """

    def __init__(self, f: CompiledKernel, tile: int, dtype: Any, params: Mapping[str, Any] | None,
                 devices: Sequence[Any]):
        self.f, self.tile, self.dtype = f, int(tile), np.dtype(dtype)
        self.devices = list(devices)
        self.params = f._params(params)
        self.mesh = Mesh(np.array(self.devices), ("tiles",))
        names = f.names

        def one(a: jax.Array, b: jax.Array, p: dict) -> tuple:
            (k,) = f._jitted(a, b, p)
            return tuple(getattr(k, nm) for nm in names)

        def body(a: jax.Array, b: jax.Array, p: dict) -> tuple:  # a, b: (1, tile, ...): one tile per device
            return tuple(o[None] for o in one(a[0], b[0], p))

        self._one = jax.jit(one)
        self._group = jax.jit(jax.shard_map(body, mesh=self.mesh, in_specs=(P("tiles"), P("tiles"), P()),
                                            out_specs=P("tiles"), check_vma=False))

    def _p(self) -> dict:
        return {k: jnp.asarray(v, dtype=self.dtype) for k, v in self.params.items()}

    def tile_bytes(self, sample: np.ndarray, t: int | None = None) -> int:
        """Peak bytes per device of one (t x t) tile call, from XLA's compiled memory analysis."""
        t = self.tile if t is None else t
        with precision_of(sample):
            a = jax.ShapeDtypeStruct((t,) + sample.shape[1:], self.dtype)
            ma = self._one.lower(a, a, self._p()).compile().memory_analysis()
        if ma is None:  # backend without memory analysis: count the outputs only
            return t * t * self.dtype.itemsize * len(self.f.names)
        return int(ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
                   - ma.alias_size_in_bytes)

    def _rows(self, x: np.ndarray, i: int) -> np.ndarray:
        rows = x[i:i + self.tile]
        if len(rows) < self.tile:  # pad with a repeated real row: finite values, one compiled shape
            rows = np.concatenate([rows, np.repeat(rows[:1], self.tile - len(rows), axis=0)])
        return rows

    def blocks(self, group: Sequence[tuple[int, int]], x1: np.ndarray, other: np.ndarray,
               symmetric: bool = False) -> list[dict]:
        """Kernel blocks {name: (h, w) array} of the tiles in ``group`` (any length; padded to the devices).

        With ``symmetric``, diagonal tiles (i == j) take their upper triangle as the whole (floating-point
        rounding makes a computed K(a, a) symmetric only to ~1 ulp), so assembled matrices are exactly symmetric.
        """
        k = len(self.devices)
        steps = list(group) + [group[-1]] * (-len(group) % k)
        a = np.stack([self._rows(x1, i) for i, _ in steps])
        b = np.stack([self._rows(other, j) for _, j in steps])
        with precision_of(a):
            shard = NamedSharding(self.mesh, P("tiles"))
            outs = self._group(jax.device_put(a, shard), jax.device_put(b, shard), self._p())
            outs = [np.asarray(o) for o in outs]
        res = []
        for s, (i, j) in enumerate(group):
            h, w = min(self.tile, len(x1) - i), min(self.tile, len(other) - j)
            blk = {nm: outs[q][s, :h, :w] for q, nm in enumerate(self.f.names)}
            if symmetric and i == j:
                blk = {nm: symmetrize_upper(b) for nm, b in blk.items()}
            res.append(blk)
        return res


_EVALUATORS: dict[tuple, tuple[CompiledKernel, TileEvaluator]] = {}


def evaluator(f: CompiledKernel, tile: int, dtype: Any, params: Mapping[str, Any] | None,
              devices: Sequence[Any]) -> TileEvaluator:
    """A cached :class:`TileEvaluator` (so repeated ``gram`` calls compile their tile program once)."""
    key = (id(f), int(tile), np.dtype(dtype).str, repr(sorted((params or {}).items())),
           tuple(d.id for d in devices))
    hit = _EVALUATORS.get(key)
    if hit is None or hit[0] is not f:
        if len(_EVALUATORS) > 32:
            _EVALUATORS.clear()
        hit = _EVALUATORS[key] = (f, TileEvaluator(f, tile, dtype, params, devices))
    return hit[1]


def progress_callback(progress: Any, total: int, done: int) -> Callable[[int], None]:
    """An ``advance(k)`` callback: a tqdm bar (progress=True), a user callable(done, total), or nothing."""
    if callable(progress):
        state = [done]

        def advance(k: int) -> None:
            state[0] += k
            progress(state[0], total)
        return advance
    if not progress or total - done <= 1:
        return lambda k: None
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=done, desc="gram tiles", unit="tile")

    def advance(k: int) -> None:
        bar.update(k)
        if bar.n >= total:
            bar.close()
    return advance
