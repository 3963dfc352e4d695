"""The house rules of the package layout (docs/architecture.md), checked.

* imports point down the floors and never form a cycle (tools/check_imports.py), with negative controls;
* no code outside a layer's own module recognises a layer by its name: the system queries declared fields;
* the catalogue of layer constructors is what the package exports, parses and lists;
* a pooling layer added to its family module is public, parsable, planned, twinned and Monte-Carlo
  checkable with no other file touched.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import kernelalg as ka
from kernelalg.cli import main as cli_main
from kernelalg.core._layer import ROLES, Layer
from kernelalg.layers._catalogue import MODULES, constructors
from kernelalg.layers._parse import layer_constructors
from kernelalg.layers.spatial import _pooling

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_imports", ROOT / "tools" / "check_imports.py")
check_imports = importlib.util.module_from_spec(spec)
sys.modules["check_imports"] = check_imports
spec.loader.exec_module(check_imports)


def test_import_structure_has_no_cycle_and_points_down() -> None:
    assert check_imports.check() == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in {q for p in tmp_path.rglob("*.py") for q in p.parents if q.is_relative_to(tmp_path / "kernelalg")}:
        (d / "__init__.py").touch()
    return tmp_path


def test_checker_catches_upward_imports_cycles_and_local_imports(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "kernelalg/core/_a.py": "from kernelalg.finite._b import g\n",                   # upward
        "kernelalg/finite/_b.py": "def g():\n    from kernelalg.finite import _c\n",      # function-local
        "kernelalg/finite/_c.py": "from kernelalg.finite._d import x\n",                   # cycle c <-> d
        "kernelalg/finite/_d.py": "from kernelalg.finite._c import y\n",
        "kernelalg/layers/_e.py": "import kernelalg\n",                                    # the public face
    })
    errors = "\n".join(check_imports.check(root))
    assert "kernelalg.core._a (floor 0) imports kernelalg.finite._b (floor 3)" in errors
    assert "function-local import of kernelalg.finite._c" in errors
    assert "import cycle: kernelalg.finite._c -> kernelalg.finite._d" in errors
    assert "imports the public face kernelalg" in errors


def test_no_layer_is_recognised_by_name_outside_its_module() -> None:
    """``x.name == "Dense"`` style tests are allowed only in the module that defines that layer."""
    pattern = re.compile(r"\.name\s*(==|!=|in)\s*[\"'(]")
    offenders = []
    for path in (ROOT / "kernelalg").rglob("*.py"):
        text = path.read_text()
        defined = set(re.findall(r"Layer\(\s*\"(\w+)\"", text))
        for lineno, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                names = set(re.findall(r"[\"'](\w+)[\"']", line))
                if not names or not names <= defined:
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert offenders == []


def test_no_registration_side_effects() -> None:
    """No module registers layers or layouts into a kernelalg table at import time (JAX pytree registration
    of kernelalg's own types is not a kernelalg registry)."""
    for path in (ROOT / "kernelalg").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                fn = node.value.func
                name = getattr(fn, "id", getattr(fn, "attr", ""))
                assert not name.startswith("register") or "pytree" in name, f"{path.relative_to(ROOT)}: module-level {name}(...)"


def test_catalogue_is_what_the_package_exports_parses_and_lists(capsys: pytest.CaptureFixture) -> None:
    cat = constructors()
    assert set(cat) <= set(ka.__all__)
    assert all(getattr(ka, name) is fn for name, fn in cat.items())
    assert set(cat) <= set(layer_constructors())
    cli_main(["layers"])
    listed = set(re.findall(r"^  (\w+)\(", capsys.readouterr().out, re.M))
    assert set(cat) <= listed


def test_every_layer_declares_a_known_role() -> None:
    layers = [ka.Dense(1.0), ka.Relu(), ka.Erf(), ka.Elementwise(lambda x: x ** 3), ka.SurrogateSign(),
              ka.Identity(), ka.FanOut(2), ka.FanInSum(), ka.Conv((3, 3)), ka.AvgPool((2, 2)), ka.Flatten(),
              ka.GlobalAvgPool(), ka.Recurrent(ka.Erf()), ka.serial(ka.Relu()), ka.parallel(ka.Relu()),
              ka.GlobalSelfAttention(), ka.LayerNorm(), ka.Dropout(0.5)]
    for layer in layers:
        assert layer.role in ROLES, layer
        assert (layer.width_arg is not None) == (layer.role in ("affine", "recurrent", "attention")), layer
    assert ka.SurrogateSign().asymmetric and not ka.Erf().asymmetric
    assert ka.Flatten().spatial.readout and not ka.Flatten().spatial.pairs
    assert ka.AvgPool((2, 2)).spatial.pairs and not ka.AvgPool((2, 2)).spatial.readout
    assert ka.GlobalSelfAttention().spatial.pairs and ka.LayerNorm().spatial is None


def Subsample(strides: tuple = (2, 2)) -> Layer:  # noqa: N802 (a layer constructor, stax style)
    """Keep every ``strides``-th pixel: a pooling layer with a 1 x 1 window (a new layer for this test)."""
    return _pooling._pool_layer("Subsample", True, (1,) * len(strides), strides, "VALID", False)


Subsample.__module__ = _pooling.__name__  # as if it were written in kernelalg/layers/spatial/_pooling.py


def test_a_new_pooling_layer_needs_only_its_family_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding ``Subsample`` to the pooling module (and nothing else) makes it parsable, planned (pixel pairs
    kept), twinned, and its exact kernel agrees with Monte Carlo over finite networks."""
    assert _pooling in MODULES
    monkeypatch.setattr(_pooling, "Subsample", Subsample, raising=False)
    net = ka.parse("Conv((3, 3), W_std=1.5, b_std=0.1, padding='SAME') >> Relu() >> Subsample((2, 2)) "
                   ">> GlobalAvgPool() >> Dense(1.0)")
    assert [leaf.name for leaf in net.leaves()][2] == "Subsample"
    x = np.random.default_rng(0).standard_normal((3, 6, 6, 2))
    exact = ka.kernel(net, x)
    est = ka.monte_carlo(net, x, width=64, samples=96, key=1)
    for name in ("nngp", "ntk"):
        k, mean, se = (np.asarray(v, np.float64) for v in (getattr(exact, name), getattr(est, name),
                                                             getattr(est.stderr, name)))
        z = (mean - k) / np.maximum(se, 1e-12)
        assert np.max(np.abs(z)) < 5.0, (name, z)


def test_no_test_module_switches_float64_globally() -> None:
    """``jax.config.update("jax_enable_x64", ...)`` in a test module changes every test collected after it (a
    float32 gallery check then runs in float64 in the full suite only); modules use a scoped fixture instead."""
    offenders = [p.name for p in sorted((Path(__file__).resolve().parent).glob("*.py"))
                 if 'config.update("jax_enable_x64"' in p.read_text() and p.name != Path(__file__).name]
    assert not offenders, f"module-level jax_enable_x64 in {offenders}: use a module-scoped jax.enable_x64 fixture"
