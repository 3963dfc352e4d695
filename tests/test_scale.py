"""ka.gram: tiled == untiled, symmetric half, memory plan, several devices, Dask, stores, kill-and-resume.

The reference everywhere is the untiled ``ka.kernel`` (one jitted call over all pairs): these tests check the
plumbing (tiling, padding, mirroring, sharding, scheduling, storage), whose values are verified elsewhere.
Subprocess tests run a fresh interpreter (forced host devices; a real SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import kernelalg as ka

zarr = pytest.importorskip("zarr")

NET = ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.2, 0.1) >> ka.Erf() >> ka.Dense(1.5, 0.05)
ROOT = Path(__file__).resolve().parents[1]


def _x(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def _close(actual, ref, rtol: float = 1e-13) -> None:
    """Equal up to rounding: relative to each entry and to the matrix scale (entries near 0 included)."""
    ref = np.asarray(ref)
    np.testing.assert_allclose(actual, ref, rtol=rtol, atol=rtol * 0.1 * np.abs(ref).max())


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("n, tile", [(5, 1), (23, 7), (23, 64)])
def test_tiled_equals_untiled_symmetric(n, tile):
    x = _x(n)
    ref = ka.kernel(NET, x, get=("nngp", "ntk"))
    k = ka.gram(NET, x, get=("nngp", "ntk"), tile=tile, progress=False)
    _close(k.nngp, ref.nngp)
    _close(k.ntk, ref.ntk)
    assert k.ntk.dtype == np.float64


def test_tiled_equals_untiled_rectangular_float32():
    x1, x2 = _x(19).astype(np.float32), _x(11, seed=1).astype(np.float32)
    ref = np.asarray(ka.kernel(NET, x1, x2, get="nngp"))
    k = ka.gram(NET, x1, x2, get="nngp", tile=4, progress=False)
    assert k.shape == (19, 11) and k.dtype == np.float32
    _close(k, ref, rtol=2e-6)


def test_symmetric_half_plan_and_mirror():
    x = _x(21)
    plan = ka.plan_gram(NET, x, tile=5)
    nb = 5  # ceil(21 / 5) block rows
    assert plan.symmetric and len(plan.tiles) == nb * (nb + 1) // 2
    assert all(j >= i for i, j in plan.tiles)
    rect = ka.plan_gram(NET, x, x, tile=5)  # x2 given: no symmetry assumed, every tile
    assert not rect.symmetric and len(rect.tiles) == nb * nb
    k = ka.gram(NET, x, tile=5, progress=False)
    np.testing.assert_array_equal(k, k.T)  # the lower triangle is the mirrored upper one
    _close(k, ka.kernel(NET, x, get="ntk"))


def test_asymmetric_kernel_computes_every_tile():
    net = ka.Dense(1.0) >> ka.SurrogateSign(a=1.0) >> ka.Dense(1.0)
    x = _x(9, 3)
    plan = ka.plan_gram(net, x, tile=4)
    assert not plan.symmetric and len(plan.tiles) == 9
    ref = np.asarray(ka.kernel(net, x, get="ntk"))
    assert not np.allclose(ref, ref.T)  # the case where mirroring would be wrong
    _close(ka.gram(net, x, tile=4, progress=False), ref)


def test_conv_gap_tiled_equals_untiled():
    net = ka.serial(ka.Conv((3, 3), padding="SAME", W_std=1.5, b_std=0.1), ka.Relu(), ka.GlobalAvgPool(),
                    ka.Dense(1.5, 0.05))
    x = np.random.default_rng(3).standard_normal((7, 4, 4, 2))
    _close(ka.gram(net, x, tile=3, progress=False), ka.kernel(net, x, get="ntk"), rtol=1e-12)


def test_memory_plan_is_bounded():
    x = _x(1000)
    budgets = (1 << 20, 256 << 10)
    big, small = (ka.plan_gram(NET, x, memory=b) for b in budgets)
    for plan, budget in ((big, budgets[0]), (small, budgets[1])):
        assert plan.memory == budget and plan.tile_bytes <= budget
        assert plan.tile * plan.tile * 8 <= budget  # the output block alone must fit
        # the largest tile that fits, up to rounding: a tile 10% larger would not (bytes grow like tile^2)
        assert plan.tile_bytes * 1.1 ** 2 > budget
    assert small.tile < big.tile < 1000
    # XLA's own figure for the chosen tile size is the one the plan reports
    from kernelalg.scale._tiles import TileEvaluator
    ev = TileEvaluator(ka.compile(NET, ("ntk",)), small.tile, np.float64, None, [jax.devices()[0]])
    assert ev.tile_bytes(x) == small.tile_bytes
    with pytest.raises(ka.KernelalgError, match="memory"):
        ka.plan_gram(NET, x, memory=100)
    with pytest.raises(ka.KernelalgError, match="tile must be a positive integer"):
        ka.gram(NET, x, tile=0)
    with pytest.raises(ka.KernelalgError, match="devices"):
        ka.gram(NET, x, devices=99)


def test_multi_device_subprocess(tmp_path):
    code = textwrap.dedent("""
        import json, sys, jax, numpy as np, kernelalg as ka
        net = ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.2, 0.1) >> ka.Erf() >> ka.Dense(1.5, 0.05)
        x = np.random.default_rng(0).standard_normal((30, 6))
        y = np.random.default_rng(1).standard_normal((17, 6))
        ref, refxy = np.asarray(ka.kernel(net, x, get="ntk")), np.asarray(ka.kernel(net, x, y, get="ntk"))
        plan = ka.plan_gram(net, x, tile=4)
        k = ka.gram(net, x, tile=4, progress=False)
        kxy = ka.gram(net, x, y, tile=4, progress=False)
        st = ka.gram(net, x, tile=4, store=sys.argv[1], progress=False)
        print(json.dumps({"devices": len(jax.devices()), "plan_devices": plan.devices,
                          "err": float(np.abs(k - ref).max() / np.abs(ref).max()),
                          "errxy": float(np.abs(kxy - refxy).max() / np.abs(refxy).max()),
                          "errstore": float(np.abs(st.load() - ref).max() / np.abs(ref).max()),
                          "tiles": len(st.records())}))
    """)
    env = _env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "g.zarr")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["devices"] == 4 and res["plan_devices"] == 4
    assert res["err"] < 1e-13 and res["errxy"] < 1e-13 and res["errstore"] < 1e-13
    assert res["tiles"] == 8 * 9 // 2


def test_store_roundtrip_and_refusals(tmp_path):
    x, y = _x(13), _x(9, seed=2)
    path = tmp_path / "k.zarr"
    st = ka.gram(NET, x, y, get=("nngp", "ntk"), tile=4, store=path, progress=False)
    assert isinstance(st, ka.GramStore) and st.complete and st.verify() == []
    ref = ka.kernel(NET, x, y, get=("nngp", "ntk"))
    loaded = ka.open_gram(path).load()
    _close(loaded["ntk"], ref.ntk)
    _close(loaded["nngp"], ref.nngp)
    assert zarr.open_array(str(path / "ntk"), mode="r").chunks == (4, 4)  # chunks = tiles
    again = ka.gram(NET, x, y, get=("nngp", "ntk"), store=path, progress=False)  # resumes with tile 4: nothing to do
    assert len(again.compute_log()) == len(st.tiles)
    with pytest.raises(ka.KernelalgError, match="x1 differs"):
        ka.gram(NET, x + 1e-9, y, get=("nngp", "ntk"), tile=4, store=path, progress=False)
    with pytest.raises(ka.KernelalgError, match="params"):
        ka.gram(NET, x, y, get=("nngp", "ntk"), tile=4, store=path, params={"sigma_w_1": 1.0}, progress=False)
    with pytest.raises(ka.KernelalgError, match="arch"):
        ka.gram(ka.Dense(1.5) >> ka.Relu(), x, y, get=("nngp", "ntk"), tile=4, store=path, progress=False)
    with pytest.raises(ka.KernelalgError, match="tile=4"):
        ka.gram(NET, x, y, get=("nngp", "ntk"), tile=5, store=path, progress=False)
    # a corrupted tile is caught by its checksum, invalidated and recomputed
    zarr.open_array(str(path / "ntk"), mode="r+")[0, 0] = 0.0
    assert st.verify() == [(0, 0)]
    st.invalidate(st.verify())
    assert st.missing() == [(0, 0)]
    ka.gram(NET, x, y, get=("nngp", "ntk"), tile=4, store=path, progress=False)
    _close(st.load("ntk"), ref.ntk)
    with pytest.raises(ka.KernelalgError, match="store=path"):
        ka.gram(NET, x, client="local")


def test_dask_local_cluster_threads(tmp_path):
    x = _x(26)
    st = ka.gram(NET, x, tile=6, store=tmp_path / "d.zarr", client="local", processes=False, progress=False)
    assert st.complete and len(st.tiles) == 5 * 6 // 2
    assert sorted(t for _, t in st.compute_log()) == sorted(st.tiles)  # each tile computed exactly once
    _close(st.load(), ka.kernel(NET, x, get="ntk"))
    # a user's Client, reused: the same inputs into new stores (warm worker caches, re-scattered inputs)
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for name in ("e.zarr", "f.zarr"):
            st2 = ka.gram(NET, x, tile=6, store=tmp_path / name, client=client, progress=False)
            assert st2.complete and len(st2.compute_log()) == len(st2.tiles)
            _close(st2.load(), st.load(), rtol=1e-15)


def test_dask_local_cluster_processes(tmp_path):
    x = _x(20)
    st = ka.gram(NET, x, tile=7, store=tmp_path / "p.zarr", client="local", processes=True, workers=2,
                 tiles_per_task=1, progress=False)
    assert st.complete
    pids = {rec["pid"] for rec in st.records().values()}
    assert os.getpid() not in pids  # written by worker processes
    _close(st.load(), ka.kernel(NET, x, get="ntk"))


_KILLED = textwrap.dedent("""
    import sys, time, numpy as np, kernelalg as ka
    net = ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.2, 0.1) >> ka.Erf() >> ka.Dense(1.5, 0.05)
    x = np.random.default_rng(0).standard_normal((60, 6))
    ka.gram(net, x, tile=4, store=sys.argv[1], progress=lambda done, total: time.sleep(0.15))
""")


def test_kill_and_resume(tmp_path):
    path = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(path)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = list((path / "_done").glob("*.json")) if (path / "_done").exists() else []
            if len(done) >= 12 or proc.poll() is not None:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    st = ka.open_gram(path)
    done_at_kill = st.done()
    total = set(st.tiles)
    assert len(total) == 15 * 16 // 2 and 12 <= len(done_at_kill) < len(total)
    first_runs = {rec["run"] for rec in st.records().values()}
    assert len(first_runs) == 1
    x = np.random.default_rng(0).standard_normal((60, 6))
    st = ka.gram(NET, x, store=path, progress=False)  # resume: the store's tile (4) is reused
    assert st.complete and st.verify() == []
    runs = {}
    for run, t in st.compute_log():
        runs.setdefault(run, []).append(t)
    (resume_run,) = set(runs) - first_runs
    assert sorted(runs[resume_run]) == sorted(total - done_at_kill)  # only the missing tiles, each once
    recs = st.records()
    assert all(recs[t]["run"] in first_runs for t in done_at_kill)  # finished tiles never rewritten
    _close(st.load(), ka.kernel(NET, x, get="ntk"))
