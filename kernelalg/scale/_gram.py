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
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import jax
import numpy as np

from kernelalg.backends._compile import CompiledKernel, Kernel, check_inputs, compile as compile_kernel, normalize_get
from kernelalg.core._errors import InputError, KernelalgError
from kernelalg.core._tiles import tile_offsets, transpose_into
from kernelalg.scale._dask import run_dask
from kernelalg.scale._meta import fingerprint
from kernelalg.scale._store import GramStore
from kernelalg.scale._tiles import TileEvaluator, evaluator, progress_callback

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
REPAIRED = ("Recomputing {k} damaged tile(s) of the store {path} (data not matching their checksums, deleted "
            "chunk files or damaged records), first {tiles}.")
BAD_DEVICES = ("devices must be None (all local devices), a positive count <= {have}, or a list of jax devices; "
               "got {devices!r}. Fix: e.g. devices=None.")


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
    x1, x2 = check_inputs(f.layout, x1, x2)
    for x in (x1, x2):
        if x is not None and not isinstance(x, (np.ndarray, jax.Array)):
            raise InputError(NOT_ARRAY.format(kind=type(x).__name__))
    x1 = np.asarray(x1)
    x2 = None if x2 is None else np.asarray(x2)
    if x2 is not None:
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
        store: None (return arrays) or a path: a zarr store with per-tile completion records and checksums;
            an existing store of the same computation is resumed (its tiles re-verified, damaged and missing
            ones computed), a different one is refused. Returns a :class:`~kernelalg.GramStore` then.
        overwrite: Replace an existing store at ``store`` (refused when the directory holds any file that
            kernelalg did not create).
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
    names, single = normalize_get(get)
    f = compile_kernel(net, names)
    x1, x2 = _prepare(f, x1, x2)
    if store is None:
        if client is not None:
            raise KernelalgError("gram(client=...) needs store=path: Dask workers write their tiles to the store. "
                                 "Fix: pass store='kernel.zarr' (a path all workers can reach).")
        ev, plan = _plan(f, x1, x2, tile, memory, devices, params)
        out = run_local(ev, plan, x1, x1 if x2 is None else x2, None, progress)
        return out[names[0]] if single else Kernel(**out)
    gs = GramStore.prepare(store, fingerprint(f, x1, x2, names, params), overwrite)
    tile_given = tile is not None
    if tile is None and gs.tile is not None:
        tile = gs.tile  # resume with the store's tile, whatever the memory planner would pick now
    n, m = len(x1), len(x1 if x2 is None else x2)
    symmetric = x2 is None and not f.symbolic.asymmetric
    if client is not None:
        t = int(tile) if tile is not None else _plan(f, x1, x2, None, memory, devices, params)[1].tile
        gs.initialize(n, m, t, symmetric, x1.dtype, tile_given)
        _repair(gs)
        return run_dask(gs, net, names, params, x1, x2, client, workers, processes, tiles_per_task, progress)
    ev, plan = _plan(f, x1, x2, tile, memory, devices, params)
    t = gs.initialize(n, m, plan.tile, symmetric, x1.dtype, tile_given)
    if t != plan.tile:  # another process created the store meanwhile, with its own tile: adopt it
        ev, plan = _plan(f, x1, x2, t, None, devices, params)
    _repair(gs)
    return run_local(ev, plan, x1, x1 if x2 is None else x2, gs, progress)


def _repair(gs: GramStore) -> None:
    """Re-verify every recorded tile of a store being resumed; damaged ones lose their record (recomputed)."""
    bad = gs.repair()
    if bad:
        warnings.warn(REPAIRED.format(k=len(bad), path=gs.path, tiles=bad[:5]), stacklevel=3)


def _store_groups(gs: GramStore, todo: list, k: int, run: str, skipped: list) -> Iterator[list]:
    """Groups of up to ``k`` tiles of ``todo`` for this run: first the tiles it can claim (so concurrent runs
    on one store share the work), then tiles claimed by other runs but still without a record (runs that
    were killed, or are slow). Tiles that got a record meanwhile are skipped (counted in ``skipped``)."""
    group, others = [], []
    for t in todo:
        if gs.has_record(t):
            skipped[0] += 1
        elif gs.claim(t, run):
            group.append(t)
        else:
            others.append(t)
        if len(group) == k:
            yield group
            group = []
    if group:
        yield group
    for s in range(0, len(others), k):
        group = [t for t in others[s:s + k] if not gs.has_record(t)]
        skipped[0] += min(k, len(others) - s) - len(group)
        if group:
            yield group


def run_local(ev: TileEvaluator, plan: GramPlan, x1: np.ndarray, other: np.ndarray, gs: Any,
              progress: Any) -> Any:
    """Compute the plan's tiles in this process, device-group by device-group, into arrays or a store."""
    run = uuid.uuid4().hex[:12]
    todo = list(plan.tiles) if gs is None else gs.missing()
    advance = progress_callback(progress, len(plan.tiles), len(plan.tiles) - len(todo))
    out: dict[str, np.ndarray] = {}
    k = len(ev.devices)
    if gs is None:
        out = {nm: np.empty((plan.n, plan.m), ev.dtype) for nm in ev.f.names}
        groups: Iterator[list] = (todo[s:s + k] for s in range(0, len(todo), k))
    else:
        skipped = [0]
        groups = _store_groups(gs, todo, k, run, skipped)
    for group in groups:
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
        if gs is not None and skipped[0]:  # tiles another process finished meanwhile
            advance(skipped[0])
            skipped[0] = 0
    if gs is not None and skipped[0]:
        advance(skipped[0])
    return gs if gs is not None else out
