"""Gram matrices at scale: tiles with bounded memory, every local device, resumable stores, Dask.

``ka.gram(net, x1, x2=None)`` evaluates the N x M kernel tile by tile. Each tile is a fixed-shape
(tile x tile) call of the compiled kernel (edge tiles are padded by repeating a real row and cropped), so
the whole run compiles one program. Tiles are grouped over the local devices with ``jax.shard_map`` (one
tile per device per step), so memory per device is that of one tile. With ``x2=None`` (and a symmetric
kernel) only tiles j >= i are computed; the lower triangle is mirrored on assembly. With ``store=path`` tiles stream into a zarr store with per-tile completion
records (:mod:`kernelalg.scale._store`), and a rerun resumes; with ``client=`` Dask schedules the tiles.

References:
    Novak et al., "Neural Tangents" (ICLR 2020), ``nt.batch``: the tiling idea. Arora et al., "On exact
    computation with an infinitely wide neural net" (NeurIPS 2019): the CIFAR-scale CNTK cost.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kernelalg.backends._compile import CompiledKernel, Kernel, check_input, compile as compile_kernel, normalize_get, precision_of
from kernelalg.core._errors import InputError, KernelalgError

DEFAULT_MEMORY = 1 << 30  # bytes per device for one tile when neither tile nor memory is given
_PROBE = 8  # probe tile sizes 8, 16, 32 for the memory model

BAD_TILE = "tile must be a positive integer, got {tile!r}. Fix: e.g. tile=512, or tile=None to size it from memory."
BAD_MEMORY = "memory must be a positive number of bytes, got {memory!r}. Fix: e.g. memory=2**30 (1 GiB per device)."
TOO_LITTLE_MEMORY = ("A 1 x 1 tile of this kernel already needs {need} bytes per device, more than memory={memory}. "
                     "Fix: raise memory (e.g. memory={fix}) or pass tile= explicitly.")
MULTI_OUTPUT = ("The network has {n} output branches; gram computes one kernel. Fix: end the network in a single "
                "readout (e.g. FanInSum() after parallel branches), or use ka.kernel for several outputs.")
NOT_ARRAY = ("gram takes array inputs; got {kind}. Fix: pass NumPy/JAX arrays (for ka.Sequences inputs use "
             "ka.kernel(..., batch_size=...)).")
BAD_DEVICES = ("devices must be None (all local devices), a positive count <= {have}, or a list of jax devices; "
               "got {devices!r}. Fix: e.g. devices=None.")


_BLOCK = 128  # cache-friendly block edge for host-side transposes


def transpose_into(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src.T`` block by block (a plain strided transpose of a large matrix thrashes the cache)."""
    h, w = src.shape[:2]
    for r in range(0, h, _BLOCK):
        for c in range(0, w, _BLOCK):
            dst[c:c + _BLOCK, r:r + _BLOCK] = src[r:r + _BLOCK, c:c + _BLOCK].T


def symmetrize_upper(b: np.ndarray) -> np.ndarray:
    """A copy of square ``b`` whose strictly lower triangle is the mirror of its upper triangle."""
    b = np.array(b)
    for r in range(0, b.shape[0], _BLOCK):
        d = b[r:r + _BLOCK, r:r + _BLOCK]
        d[...] = np.triu(d) + np.triu(d, 1).T
        transpose_into(b[r + _BLOCK:, r:r + _BLOCK], b[r:r + _BLOCK, r + _BLOCK:])
    return b


def tile_offsets(n: int, m: int, tile: int, symmetric: bool) -> list[tuple[int, int]]:
    """Row/column offsets of the tiles to compute, row-major (upper block triangle only when symmetric)."""
    return [(i, j) for i in range(0, n, tile) for j in range(i if symmetric else 0, m, tile)]


@dataclass(frozen=True)
class GramPlan:
    """How a Gram matrix will be computed (see :func:`plan_gram`).

    Attributes:
        n: Rows (len(x1)).
        m: Columns (len(x2), or n).
        tile: Tile edge in input rows; every tile call has shape (tile, tile).
        symmetric: Whether only tiles j >= i are computed (x2 None and a symmetric kernel).
        tiles: Tile offsets (i, j).
        devices: Number of devices a step spreads tiles over.
        tile_bytes: Peak bytes per device of one tile call (XLA's compiled figure: arguments, outputs and
            temporaries), or None when not measured.
        memory: The per-device budget the tile was sized for (None: tile given by the user).
    """

    n: int
    m: int
    tile: int
    symmetric: bool
    tiles: tuple[tuple[int, int], ...] = field(repr=False)
    devices: int = 1
    tile_bytes: int | None = None
    memory: int | None = None

    @property
    def entries(self) -> int:
        """Kernel entries actually evaluated (padded tiles counted in full)."""
        return len(self.tiles) * self.tile * self.tile


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


def _devices(devices: Any) -> list:
    have = jax.local_devices()
    if devices is None:
        return have
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(have):
            raise KernelalgError(BAD_DEVICES.format(have=len(have), devices=devices))
        return have[:int(devices)]
    try:
        devs = list(devices)
    except TypeError:
        raise KernelalgError(BAD_DEVICES.format(have=len(have), devices=devices)) from None
    if not devs or not all(isinstance(d, jax.Device) for d in devs):
        raise KernelalgError(BAD_DEVICES.format(have=len(have), devices=devices))
    return devs


def _prepare(f: CompiledKernel, x1: Any, x2: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if len(f.symbolic.outputs) != 1:
        raise KernelalgError(MULTI_OUTPUT.format(n=len(f.symbolic.outputs)))
    if f.layout.prepare is not None:
        x1, x2 = f.layout.prepare(x1, x2)
    else:
        x1 = check_input("x1", x1, f.layout.rank_fix, f.layout.rank)
        if x2 is not None:
            x2 = check_input("x2", x2, f.layout.rank_fix, f.layout.rank)
    for x in (x1, x2):
        if x is not None and not isinstance(x, (np.ndarray, jax.Array)):
            raise InputError(NOT_ARRAY.format(kind=type(x).__name__))
    x1 = np.asarray(x1)
    x2 = None if x2 is None else np.asarray(x2)
    if x2 is not None:
        if x1.shape[1:] != x2.shape[1:]:
            raise InputError(f"x1 has sample shape {x1.shape[1:]} but x2 has {x2.shape[1:]}. "
                             "Fix: pass inputs with the same per-sample shape.")
        dt = np.result_type(x1.dtype, x2.dtype)
        x1, x2 = x1.astype(dt, copy=False), x2.astype(dt, copy=False)
    return np.ascontiguousarray(x1), None if x2 is None else np.ascontiguousarray(x2)


def _auto_tile(ev: TileEvaluator, x1: np.ndarray, memory: int, limit: int) -> tuple[int, int]:
    """Largest tile whose compiled peak bytes fit ``memory``: the quadratic a t^2 + b t + c through XLA's
    figures at three probe sizes, then confirmed (and shrunk if needed) by compiling the chosen size."""
    probes = [t for t in (_PROBE, 2 * _PROBE, 4 * _PROBE) if t < limit]
    if len(probes) < 3:
        t = limit
    else:
        ys = [ev.tile_bytes(x1, t) for t in probes]
        a, b, c = np.polyfit(np.asarray(probes, float), np.asarray(ys, float), 2)
        a = max(a, 1e-12)
        disc = b * b - 4 * a * (c - memory)
        t = int((-b + math.sqrt(disc)) / (2 * a)) if disc > 0 else 1
        t = min(max(t, 1), limit)
        if 64 < t < limit:
            t -= t % 8
    while True:
        need = ev.tile_bytes(x1, t)
        if need <= memory:
            return t, need
        if t == 1:
            raise KernelalgError(TOO_LITTLE_MEMORY.format(need=need, memory=memory, fix=2 * need))
        t = max(1, int(t * 0.9))


def plan_gram(net: Any, x1: Any, x2: Any = None, get: Any = "ntk", *, tile: int | None = None,
              memory: int | None = None, devices: Any = None, params: Mapping[str, Any] | None = None) -> GramPlan:
    """Plan a tiled Gram matrix without computing it: tile size, tiles, devices and per-tile memory.

    Args:
        net: Architecture.
        x1: Inputs (N, ...).
        x2: Inputs (M, ...) or None (then only the upper block triangle is planned, unless the kernel is
            asymmetric).
        get: "nngp", "ntk" or a tuple of them.
        tile: Tile edge in rows; None: the largest tile whose compiled peak memory per device (XLA's
            memory analysis: arguments, outputs, temporaries) fits ``memory``.
        memory: Per-device byte budget for one tile (default 1 GiB); ignored when ``tile`` is given.
        devices: None (all local devices), a count, or a list of jax devices.
        params: Hyperparameter overrides by name.

    Returns:
        A :class:`GramPlan`.
    """
    f = compile_kernel(net, get)
    x1, x2 = _prepare(f, x1, x2)
    return _plan(f, x1, x2, tile, memory, devices, params)[1]


def _plan(f: CompiledKernel, x1: np.ndarray, x2: np.ndarray | None, tile: Any, memory: Any, devices: Any,
          params: Any) -> tuple[TileEvaluator, GramPlan]:
    devs = _devices(devices)
    n, m = len(x1), len(x1 if x2 is None else x2)
    symmetric = x2 is None and not f.symbolic.asymmetric
    limit = max(n, m)
    if tile is not None:
        if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
            raise KernelalgError(BAD_TILE.format(tile=tile))
        t, need, budget = min(int(tile), limit), None, None
        ev = evaluator(f, t, x1.dtype, params, devs)
    else:
        budget = DEFAULT_MEMORY if memory is None else memory
        if isinstance(budget, bool) or not isinstance(budget, (int, float, np.number)) or not budget > 0:
            raise KernelalgError(BAD_MEMORY.format(memory=memory))
        t, need = _auto_tile(evaluator(f, 1, x1.dtype, params, devs), x1, int(budget), limit)
        ev = evaluator(f, t, x1.dtype, params, devs)
        budget = int(budget)
    plan = GramPlan(n, m, t, symmetric, tuple(tile_offsets(n, m, t, symmetric)), len(devs), need, budget)
    return ev, plan


def _progress(progress: Any, total: int, done: int) -> Callable[[int], None]:
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


def gram(net: Any, x1: Any, x2: Any = None, get: Any = "ntk", *, params: Mapping[str, Any] | None = None,
         tile: int | None = None, memory: int | None = None, devices: Any = None, store: Any = None,
         overwrite: bool = False, client: Any = None, workers: int | None = None, processes: bool = False,
         tiles_per_task: int | None = None, progress: Any = True) -> Any:
    """Exact kernel Gram matrix of ``net`` between the rows of x1 and x2, tiled, on all local devices,
    optionally streamed to a resumable zarr store and scheduled by Dask.

    Args:
        net: Architecture.
        x1: Inputs (N, ...) (arrays; the dtype sets the precision).
        x2: Inputs (M, ...) or None for x1 (then only tiles j >= i are computed and mirrored, unless the
            kernel is asymmetric).
        get: "nngp", "ntk" or a tuple of them.
        params: Hyperparameter overrides by name.
        tile: Tile edge in rows (None: sized from ``memory``; a resumed store keeps its own tile).
        memory: Per-device byte budget for one tile call when ``tile`` is None (default 1 GiB).
        devices: None (all local devices), a count, or a list of jax devices (local runs).
        store: None (return arrays) or a path: a zarr store with per-tile completion records; an existing
            store of the same computation is resumed (only missing tiles are computed), a different one
            is refused. Returns a :class:`~kernelalg.GramStore` then.
        overwrite: Replace an existing store at ``store``.
        client: None (run in this process), "local" / True (start a Dask LocalCluster), a scheduler address
            "tcp://host:port", or a ``dask.distributed.Client``. Dask needs ``store`` (workers write tiles).
        workers: Workers of a LocalCluster started here (default 1).
        processes: LocalCluster workers as processes (True) or threads of this process (False).
        tiles_per_task: Tiles per Dask task (default: the number of local devices).
        progress: True (a tqdm bar), False, or a callable(done_tiles, total_tiles).

    Returns:
        Without store: the array (``get`` a string) or a :class:`Kernel` with the requested fields.
        With store: the :class:`~kernelalg.GramStore` (``.load()`` assembles the full matrix).
    """
    from kernelalg.scale._store import GramStore, fingerprint, run_dask
    names, single = normalize_get(get)
    f = compile_kernel(net, names)
    x1, x2 = _prepare(f, x1, x2)
    gs = None
    if store is not None:
        meta = fingerprint(f, x1, x2, names, params)
        gs = GramStore.prepare(store, meta, overwrite)
        if tile is None and gs.tile is not None:
            tile = gs.tile  # resume with the store's tile, whatever the memory planner would pick now
    if client is not None and gs is None:
        raise KernelalgError("gram(client=...) needs store=path: Dask workers write their tiles to the store. "
                             "Fix: pass store='kernel.zarr' (a path all workers can reach).")
    if client is not None:
        n, m = len(x1), len(x1 if x2 is None else x2)
        t = int(tile) if tile is not None else _plan(f, x1, x2, None, memory, devices, params)[1].tile
        gs.initialize(n, m, t, x2 is None and not f.symbolic.asymmetric, x1.dtype)
        return run_dask(gs, net, names, params, x1, x2, client, workers, processes, tiles_per_task, progress)
    ev, plan = _plan(f, x1, x2, tile, memory, devices, params)
    other = x1 if x2 is None else x2
    if gs is not None:
        gs.initialize(plan.n, plan.m, plan.tile, plan.symmetric, x1.dtype)
        return run_local(ev, plan, x1, other, gs, progress)
    out = run_local(ev, plan, x1, other, None, progress)
    return out[names[0]] if single else Kernel(**out)


def run_local(ev: TileEvaluator, plan: GramPlan, x1: np.ndarray, other: np.ndarray, gs: Any,
              progress: Any) -> Any:
    """Compute the plan's tiles in this process, device-group by device-group, into arrays or a store."""
    run = uuid.uuid4().hex[:12]
    todo = list(plan.tiles) if gs is None else gs.missing()
    advance = _progress(progress, len(plan.tiles), len(plan.tiles) - len(todo))
    out: dict[str, np.ndarray] = {}
    if gs is None:
        out = {nm: np.empty((plan.n, plan.m), ev.dtype) for nm in ev.f.names}
    k = len(ev.devices)
    for s in range(0, len(todo), k):
        group = todo[s:s + k]
        t0 = time.perf_counter()
        if gs is not None:
            for tl in group:
                gs.log_compute(run, tl)
        blocks = ev.blocks(group, x1, other, plan.symmetric)
        dt = (time.perf_counter() - t0) / len(group)
        for (i, j), blk in zip(group, blocks):
            if gs is not None:
                gs.write_tile((i, j), blk, run, dt)
                continue
            for nm, b in blk.items():
                out[nm][i:i + b.shape[0], j:j + b.shape[1]] = b
                if plan.symmetric and j > i:
                    transpose_into(out[nm][j:j + b.shape[1], i:i + b.shape[0]], b)
        advance(len(group))
    return gs if gs is not None else out
