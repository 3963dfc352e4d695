"""Gram stores never lose or mix data (issues #16 and #24).

Expected values come from the documented behaviour (refusals, what ``verify`` lists), from the file state
after real file operations (a deleted chunk, flipped bytes, a truncated JSON file, a user's file that must
survive), and from recomputing: a repaired store must equal the untiled ``ka.kernel``. The concurrency test
runs two real processes on one new store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from kernelalg.core._fingerprint import FingerprintError, callable_fingerprint

pytest.importorskip("zarr")

NET = ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05)
ROOT = Path(__file__).resolve().parents[1]
X = np.random.default_rng(0).standard_normal((10, 5))


def _close(actual: np.ndarray, ref: np.ndarray) -> None:
    ref = np.asarray(ref)
    np.testing.assert_allclose(actual, ref, rtol=1e-13, atol=1e-14 * np.abs(ref).max())


def _store(path: Path, **kw) -> ka.GramStore:
    return ka.gram(NET, X, tile=4, store=path, progress=False, **kw)


def _runs(st: ka.GramStore) -> dict[str, list]:
    out: dict[str, list] = {}
    for run, t in st.compute_log():
        out.setdefault(run, []).append(t)
    return out


def _resume_recomputes(path: Path, tiles: list) -> None:
    """A resume warns about ``tiles``, recomputes exactly them, and the store equals the untiled kernel."""
    before = set(_runs(ka.open_gram(path)))
    with pytest.warns(UserWarning, match="Recomputing"):
        st = _store(path)
    (new,) = set(_runs(st)) - before
    assert sorted(_runs(st)[new]) == sorted(tiles)
    assert st.verify() == []
    _close(st.load(), ka.kernel(NET, X, get="ntk"))
    # documented: the same tile size gives the same bits in memory and through a store
    np.testing.assert_array_equal(st.load(), ka.gram(NET, X, tile=4, progress=False))


# ---------------------------------------------------------------------------------- nothing foreign deleted


def test_overwrite_never_deletes_user_files(tmp_path):
    thesis = tmp_path / "work"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\section{Results}")
    (thesis / "figs").mkdir()
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(ka.KernelalgError, match="thesis.tex") as err:
            _store(thesis, **kw)
        assert "never deletes" in str(err.value)
    assert (thesis / "thesis.tex").read_text() == "\\section{Results}" and (thesis / "figs").is_dir()
    assert sorted(p.name for p in thesis.iterdir()) == ["figs", "thesis.tex"]
    # a store with a user's file put inside it: overwrite refuses and leaves store and file as they were
    store = tmp_path / "k.zarr"
    st = _store(store)
    (store / "notes.txt").write_text("mine")
    with pytest.raises(ka.KernelalgError, match="notes.txt"):
        _store(store, overwrite=True)
    assert (store / "notes.txt").read_text() == "mine" and ka.open_gram(store).verify() == []
    (store / "notes.txt").unlink()
    with pytest.raises(ka.KernelalgError, match="tile must be"):  # bad arguments: the old store is kept
        ka.gram(NET, X, tile=0, store=store, overwrite=True, progress=False)
    assert ka.open_gram(store).verify() == [] and ka.open_gram(store).complete
    # a pure store is replaced: every tile recomputed by the new run
    old_runs = set(_runs(st))
    st = _store(store, overwrite=True)
    assert set(_runs(st)).isdisjoint(old_runs) and sorted(t for _, t in st.compute_log()) == sorted(st.tiles)
    # a file where the store should be is neither deleted nor used
    f = tmp_path / "k.npy"
    f.write_bytes(b"data")
    with pytest.raises(ka.KernelalgError, match="is a file"):
        _store(f, overwrite=True)
    assert f.read_bytes() == b"data"
    # an empty directory (e.g. made by the user) becomes the store
    empty = tmp_path / "empty"
    empty.mkdir()
    _close(_store(empty).load(), ka.kernel(NET, X, get="ntk"))


def test_uncreatable_store_path_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ka.KernelalgError, match="afile is a file, not a directory"):
        _store(tmp_path / "afile" / "sub" / "k.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no temporary directory left behind
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # (root may write anyway: then there is no such directory to test)
        with pytest.raises(ka.KernelalgError, match="Cannot create the Gram store"):
            _store(locked / "k.zarr")
    if Path("/proc/self").is_dir():  # Linux: a directory no one can create files in
        with pytest.raises(ka.KernelalgError, match="Cannot create the Gram store"):
            _store(Path("/proc/kernelalg-test.zarr"))


# ---------------------------------------------------------------------------------- functions fingerprinted


def test_store_refuses_another_activation_function(tmp_path):
    def net(fn, name="act"):
        return ka.Dense(1.2, 0.1) >> ka.Elementwise(fn, name=name) >> ka.Dense(1.2, 0.1)

    x = X[:6]
    path = tmp_path / "e.zarr"
    ka.gram(net(lambda z: sp.tanh(z)), x, tile=3, store=path, progress=False)
    assert repr(net(lambda z: sp.tanh(z))) == repr(net(lambda z: sp.atan(z)))  # repr alone cannot tell them apart
    for other in (net(lambda z: sp.atan(z)), net(lambda z: z / 2 + sp.sin(z)),
                  ka.parse("Dense(1.2, 0.1) >> Elementwise('atan(x)') >> Dense(1.2, 0.1)"), net(jnp.tanh)):
        with pytest.raises(ka.KernelalgError, match="functions differ"):
            ka.gram(other, x, tile=3, store=path, progress=False)
    st = ka.gram(net(lambda z: sp.tanh(z)), x, tile=3, store=path, progress=False)  # the same function resumes
    assert len(st.compute_log()) == len(st.tiles)  # nothing recomputed
    # a function inside a recurrent cell (a layer held in another layer's settings) is recorded too
    from kernelalg.scale._meta import network_functions
    cell = [ka.Recurrent(ka.Elementwise(fn, name="act")) for fn in (sp.tanh, sp.atan)]
    assert repr(cell[0]) == repr(cell[1]) and network_functions(cell[0]) != network_functions(cell[1])


def test_store_refuses_another_jax_function_or_constant(tmp_path):
    def net(fn):
        return ka.Dense(1.2, 0.1) >> ka.Elementwise(fn, name="act") >> ka.Dense(1.2, 0.1)

    def scaled(c):
        return lambda z: jnp.tanh(c * z)

    x = X[:6]
    path = tmp_path / "j.zarr"
    ka.gram(net(scaled(2.0)), x, tile=3, store=path, progress=False)
    for other in (net(scaled(3.0)), net(lambda z: jnp.arctan(2.0 * z))):
        with pytest.raises(ka.KernelalgError, match="functions differ"):
            ka.gram(other, x, tile=3, store=path, progress=False)
    st = ka.gram(net(scaled(2.0)), x, tile=3, store=path, progress=False)
    assert len(st.compute_log()) == len(st.tiles)

    class Scale:
        c = 2.0
    obj = Scale()
    opaque = net(lambda z: jnp.tanh(obj.c * z))
    with pytest.raises(ka.KernelalgError, match="cannot record what determines the numbers.*Scale"):
        ka.gram(opaque, x, tile=3, store=tmp_path / "o.zarr", progress=False)
    assert not (tmp_path / "o.zarr").exists()
    ka.gram(opaque, x, tile=3, progress=False)  # without a store there is nothing to mix up


def test_callable_fingerprint_tracks_code_constants_and_reads():
    w1, w2 = np.array([1.0, 2.0]), np.array([1.0, 2.5])

    def make(a, w):
        return lambda z: jnp.tanh(a * z) * w[0] + w[1]

    fp = callable_fingerprint
    assert fp(make(1.0, w1)) == fp(make(1.0, w1.copy()))  # the same code and values: the same numbers
    assert fp(make(1.0, w1)) != fp(make(1.5, w1)) != fp(make(1.0, w2))
    assert fp(lambda z: jnp.tanh(z)) != fp(lambda z: jnp.sinh(z))
    assert fp(lambda z: jnp.tanh(z)) != fp(lambda z: jnp.tanh(-z))
    assert fp(jnp.tanh) != fp(jnp.arctan) and fp(np.tanh) != fp(np.arctan)
    inner = make(1.0, w1)
    assert fp(lambda z: inner(z) + 1) != fp(lambda z: make(1.5, w1)(z) + 1)
    import jax
    assert fp(jax.jit(make(1.0, w1))) == fp(jax.jit(make(1.0, w1))) != fp(jax.jit(make(2.0, w1)))
    with pytest.raises(FingerprintError, match="object"):
        fp(lambda z, o=object(): z)


# ---------------------------------------------------------------------------------- damaged tiles


def _chunk(path: Path, tile: tuple[int, int], t: int = 4) -> Path:
    return path / "ntk" / "c" / str(tile[0] // t) / str(tile[1] // t)


def test_deleted_tile_is_caught_and_recomputed(tmp_path):
    path = tmp_path / "d.zarr"
    st = _store(path)
    _chunk(path, (0, 4)).unlink()  # the record of tile (0, 4) stays
    assert st.complete and st.verify() == [(0, 4)]
    with pytest.raises(ka.KernelalgError, match=r"damaged tile.*\(0, 4\).*rerun ka.gram"):
        st.load()
    k = st.load(allow_missing=True)
    nan = np.zeros(k.shape, bool)
    nan[0:4, 4:8] = nan[4:8, 0:4] = True  # the tile and its mirror, nothing else
    np.testing.assert_array_equal(np.isnan(k), nan)
    _resume_recomputes(path, [(0, 4)])


def test_flipped_bytes_are_caught_on_load_and_repaired_on_resume(tmp_path):
    path = tmp_path / "f.zarr"
    st = _store(path)
    chunk = _chunk(path, (4, 8))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert st.verify() == [(4, 8)]
    with pytest.raises(ka.KernelalgError, match=r"\(4, 8\)"):
        ka.open_gram(path).load()
    cut = _chunk(path, (0, 8))  # a truncated chunk: the codec cannot even decode it
    cut.write_bytes(cut.read_bytes()[:10])
    assert st.verify() == [(0, 8), (4, 8)]
    with pytest.raises(ka.KernelalgError, match=r"2 damaged tile.*\(0, 8\), \(4, 8\)"):
        st.load()
    nan = np.zeros((10, 10), bool)
    nan[0:8, 8:10] = nan[8:10, 0:8] = True
    np.testing.assert_array_equal(np.isnan(st.load(allow_missing=True)), nan)
    _resume_recomputes(path, [(0, 8), (4, 8)])


def test_damaged_record_and_stray_files(tmp_path):
    path = tmp_path / "r.zarr"
    st = _store(path)
    rec = path / "_done" / "0_0.json"
    rec.write_text(rec.read_text()[:20])  # truncated
    with pytest.raises(ka.KernelalgError, match=r"0_0.json of tile \(0, 0\) is damaged.*invalidate"):
        st.records()
    assert st.verify() == [(0, 0)]
    with pytest.raises(ka.KernelalgError, match=r"damaged tile"):
        st.load()
    _resume_recomputes(path, [(0, 0)])
    for name in ("notes.txt", "copy.json", "99_99.json"):
        stray = path / "_done" / name
        stray.write_text("{}")
        with pytest.raises(ka.KernelalgError, match=f"{name} is not a completion record.*move it out"):
            ka.open_gram(path).missing()
        with pytest.raises(ka.KernelalgError, match=name):
            _store(path)
        assert stray.read_text() == "{}"  # not deleted
        stray.unlink()
    _close(ka.open_gram(path).load(), ka.kernel(NET, X, get="ntk"))


def test_damaged_store_description(tmp_path):
    path = tmp_path / "m.zarr"
    _store(path)
    info = path / "kernelalg.json"
    info.write_text(info.read_text()[:40])
    for call in (lambda: ka.open_gram(path), lambda: _store(path)):
        with pytest.raises(ka.KernelalgError, match=r"kernelalg.json is damaged.*overwrite=True"):
            call()
    st = _store(path, overwrite=True)
    assert json.loads(info.read_text())["tile"] == 4 and st.verify() == []
    _close(st.load(), ka.kernel(NET, X, get="ntk"))


# ---------------------------------------------------------------------------------- two processes, one store

_RACER = textwrap.dedent("""
    import sys, time, numpy as np, zarr, kernelalg as ka
    import os
    from pathlib import Path
    path, sync = sys.argv[1], Path(sys.argv[2])
    slow = zarr.open_group
    def open_group(*a, **k):  # widen the window in which both processes create the store
        time.sleep(0.5)
        return slow(*a, **k)
    zarr.open_group = open_group
    net = ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05)
    x = np.random.default_rng(0).standard_normal((24, 5))
    ka.gram(net, x[:4], tile=4, progress=False)  # compile before the start signal
    (sync / f"ready-{os.getpid()}").touch()
    while not (sync / "go").exists():
        time.sleep(0.001)
    ka.gram(net, x, tile=4, store=path, progress=lambda done, total: time.sleep(0.05))
""")


def test_two_processes_start_one_store(tmp_path):
    path, sync = tmp_path / "s" / "race.zarr", tmp_path / "sync"
    sync.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(path), str(sync)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.monotonic() + 120
    while len(list(sync.glob("ready-*"))) < 2 and time.monotonic() < deadline and None in [p.poll() for p in procs]:
        time.sleep(0.01)
    (sync / "go").touch()  # both start creating the store within milliseconds
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    st = ka.open_gram(path)
    assert st.complete and st.verify() == []
    x = np.random.default_rng(0).standard_normal((24, 5))
    _close(st.load(), ka.kernel(NET, x, get="ntk"))
    log = st.compute_log()
    assert len({run for run, _ in log}) == 2 and sorted(set(t for _, t in log)) == sorted(st.tiles)
    # claims share the work: a tile is computed twice only when a process takes over, at its end, a tile
    # the other one is still computing (at most one per process with one device)
    assert len(log) <= len(st.tiles) + 2, len(log)
    assert sorted(p.name for p in path.parent.iterdir()) == ["race.zarr"]  # the loser's temporary copy is gone


def test_store_created_meanwhile_with_another_tile(tmp_path):
    from kernelalg.scale._meta import fingerprint
    from kernelalg.scale._store import GramStore
    path = tmp_path / "t.zarr"
    meta = fingerprint(ka.compile(NET, ("ntk",)), X, None, ["ntk"], None)
    late = GramStore.prepare(path, meta)  # this call found no store ...
    _store(path)  # ... another one creates it with tile 4 meanwhile
    with pytest.raises(ka.KernelalgError, match=r"created meanwhile, by another process.*tile=4; this call "
                                                r"asked for tile=6"):
        late.initialize(10, 10, 6, True, np.float64, tile_given=True)
    late = GramStore.prepare(tmp_path / "u.zarr", meta)
    _store(tmp_path / "u.zarr")
    assert late.initialize(10, 10, 6, True, np.float64, tile_given=False) == 4  # tile=None adopts the store's
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to repair
        st = ka.gram(NET, X, tile=None, store=tmp_path / "u.zarr", progress=False)
    assert st.tile == 4 and len(st.compute_log()) == len(st.tiles)
