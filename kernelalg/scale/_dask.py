"""Dask scheduling of Gram tiles: each worker compiles the kernel once and writes its tiles to the store."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np

from kernelalg.backends._compile import CompiledKernel
from kernelalg.core._errors import KernelalgError
from kernelalg.scale._store import NEED_DASK, GramStore
from kernelalg.scale._tiles import TileEvaluator, progress_callback

#: Per worker process: compiled evaluators and store handles.
_WORKER_CACHE: dict[Any, Any] = {}


def _worker_state(spec: dict) -> tuple[Any, GramStore]:
    """This process's evaluator (compiled once per worker process and computation) and store handle."""
    ev = _WORKER_CACHE.get(spec["key"])
    if ev is None:
        f = CompiledKernel(spec["net"], tuple(spec["names"]))
        ev = _WORKER_CACHE[spec["key"]] = TileEvaluator(f, spec["tile"], spec["dtype"], spec["params"],
                                                        jax.local_devices())
    gs = _WORKER_CACHE.get(("store", spec["run"]))
    if gs is None:
        for k in [k for k in _WORKER_CACHE if isinstance(k, tuple)]:  # handles of earlier runs
            del _WORKER_CACHE[k]
        gs = _WORKER_CACHE[("store", spec["run"])] = GramStore(spec["path"])
    return ev, gs


def _task(spec: dict, x1: np.ndarray, x2: np.ndarray | None, group: list) -> list:
    """A Dask task: compute the tiles of ``group`` still missing and write them to the store."""
    ev, gs = _worker_state(spec)
    todo = [t for t in group if not gs.has_record(t)]
    if not todo:
        return []
    for t in todo:
        gs.log_compute(spec["run"], t)
    t0 = time.perf_counter()
    blocks = ev.blocks(todo, x1, x1 if x2 is None else x2, gs.symmetric)
    dt = (time.perf_counter() - t0) / len(todo)
    return [t for t, blk in zip(todo, blocks) if gs.write_tile(t, blk, spec["run"], dt)]


@contextlib.contextmanager
def _client(client: Any, workers: int | None, processes: bool) -> Iterator[Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise KernelalgError(NEED_DASK) from None
    if isinstance(client, Client):
        yield client
        return
    if client is True or client == "local":
        cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=processes,
                               dashboard_address=None, silence_logs=40)
        with cluster, Client(cluster) as c:
            yield c
        return
    if isinstance(client, str):
        with Client(client) as c:
            yield c
        return
    raise KernelalgError(f"client must be None, 'local', a scheduler address or a dask Client, got {client!r}. "
                         "Fix: e.g. client='local' or client='tcp://scheduler:8786'.")


def run_dask(gs: GramStore, net: Any, names: Sequence[str], params: Mapping[str, Any] | None, x1: np.ndarray,
             x2: np.ndarray | None, client: Any, workers: int | None, processes: bool,
             tiles_per_task: int | None, progress: Any) -> GramStore:
    """Schedule the store's missing tiles on Dask; workers compute them and write them to the store."""
    todo = gs.missing()
    total = len(gs.tiles)
    advance = progress_callback(progress, total, total - len(todo))
    run = uuid.uuid4().hex[:12]
    k = int(tiles_per_task or len(jax.local_devices()))
    spec = {"key": f"{gs.meta['x1_sha256']}-{gs.meta['x2_sha256']}-{gs.meta['arch']}-{gs.tile}-{gs.meta['params']}",
            "net": net, "names": list(names), "params": dict(params or {}), "tile": gs.tile,
            "dtype": gs.meta["dtype"], "path": str(gs.path.resolve()), "run": run}
    if not todo:
        return gs
    with _client(client, workers, processes) as c:
        from distributed import as_completed
        fx1 = c.scatter(x1, broadcast=True, hash=False)  # unique keys: no race with a previous run's release
        fx2 = None if x2 is None else c.scatter(x2, broadcast=True, hash=False)
        futures = [c.submit(_task, spec, fx1, fx2, todo[s:s + k], key=f"kernelalg-tiles-{run}-{s}", pure=False)
                   for s in range(0, len(todo), k)]
        try:
            for fut in as_completed(futures):
                fut.result()
                start = int(fut.key.rsplit("-", 1)[1])
                advance(min(k, len(todo) - start))
        except BaseException:
            c.cancel(futures)
            raise
    left = gs.missing()
    if left:
        raise KernelalgError(f"Dask finished but {len(left)} of {total} tiles have no record in {gs.path} (first: "
                             f"{left[0]}). Fix: check that every worker can write to the store path, then rerun "
                             "the same ka.gram call to resume.")
    return gs
