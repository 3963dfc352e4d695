"""Isolated virtual environment for neural-tangents (the benchmark reference).

neural-tangents 0.6.5 only installs beside an old JAX (0.4.26) and ``numpy<2``, which
clash with kernelalg's own requirements, so it lives in its own venv and is driven
through a subprocess (``benchmarks/_nt_worker.py``).  It is never a dependency of
kernelalg.

Usage::

    python benchmarks/nt_env.py            # create (idempotent), print the venv python
    python benchmarks/nt_env.py --force    # rebuild from scratch
    python benchmarks/nt_env.py --check    # exit 0 iff the venv exists and imports NT
    KERNELALG_NT_ENV=/path/to/venv python benchmarks/run.py   # use a venv elsewhere

    from benchmarks.nt_env import ensure_nt_env
    py = ensure_nt_env()                   # pathlib.Path to the venv's python
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
#: The venv directory: $KERNELALG_NT_ENV if set (e.g. one venv shared by several checkouts), else benchmarks/_env/nt.
DEFAULT_ENV_DIR = Path(os.environ.get("KERNELALG_NT_ENV") or HERE / "_env" / "nt")

# Pinned set known to import and run together (neural-tangents 0.6.5 needs
# jax.experimental APIs removed after 0.4.2x, and numpy<2 for jaxlib 0.4.26).
REQUIREMENTS = [
    "neural-tangents==0.6.5",
    "jax==0.4.26",
    "jaxlib==0.4.26",
    "numpy<2",
    "scipy>=1.10,<1.14",  # last series built against numpy 1.x ABI with jax 0.4.26 support
    "ml_dtypes>=0.2,<0.5",
]

# Written into the venv once the install succeeded; its content records the pins
# so that a change of REQUIREMENTS rebuilds the environment.
STAMP = "kernelalg-nt-env.stamp"

CHECK_SNIPPET = (
    "import jax, jaxlib, numpy, scipy, neural_tangents as nt; "
    "print(nt.__version__, jax.__version__, jaxlib.__version__, numpy.__version__, scipy.__version__)"
)


def venv_python(env_dir: Path | str = DEFAULT_ENV_DIR) -> Path:
    env_dir = Path(env_dir)
    if os.name == "nt":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


def _stamp_text() -> str:
    return "\n".join(REQUIREMENTS) + "\n"


def is_ready(env_dir: Path | str = DEFAULT_ENV_DIR) -> bool:
    """True when the venv exists, was built from the current pins and imports NT."""
    env_dir = Path(env_dir)
    py = venv_python(env_dir)
    stamp = env_dir / STAMP
    if not py.exists() or not stamp.exists() or stamp.read_text() != _stamp_text():
        return False
    r = subprocess.run([str(py), "-c", CHECK_SNIPPET], capture_output=True, text=True,
                       env=_clean_env())
    return r.returncode == 0


def versions(env_dir: Path | str = DEFAULT_ENV_DIR) -> dict:
    """Versions of neural-tangents, jax, jaxlib, numpy, scipy inside the venv."""
    py = venv_python(env_dir)
    r = subprocess.run([str(py), "-c", CHECK_SNIPPET], capture_output=True, text=True,
                       check=True, env=_clean_env())
    names = ["neural_tangents", "jax", "jaxlib", "numpy", "scipy"]
    return dict(zip(names, r.stdout.split()))


def _clean_env() -> dict:
    """Environment for subprocesses in the venv: drop variables that would leak the
    caller's interpreter / site-packages into it."""
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(k, None)
    return env


def ensure_nt_env(env_dir: Path | str = DEFAULT_ENV_DIR, *, force: bool = False,
                  quiet: bool = False) -> Path:
    """Create (idempotently) the neural-tangents venv and return its python path."""
    env_dir = Path(env_dir)
    if not force and is_ready(env_dir):
        return venv_python(env_dir)
    if env_dir.exists():
        shutil.rmtree(env_dir)
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True, symlinks=(os.name != "nt")).create(env_dir)
    py = venv_python(env_dir)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    subprocess.run(pip + REQUIREMENTS, check=True, env=_clean_env())
    r = subprocess.run([str(py), "-c", CHECK_SNIPPET], capture_output=True, text=True,
                       env=_clean_env())
    if r.returncode != 0:
        raise RuntimeError("neural-tangents venv built but does not import:\n" + r.stderr)
    (env_dir / STAMP).write_text(_stamp_text())
    return py


def run_worker(script: Path | str, out: Path | str, python: Path | str | None = None) -> None:
    """Run ``script --worker OUT`` with ``python`` (default: the neural-tangents venv's, created if missing),
    on the CPU: the one way the ``make_nt_*_reference.py`` scripts reach neural-tangents."""
    py = Path(python) if python else venv_python(DEFAULT_ENV_DIR)
    if not py.exists():
        py = ensure_nt_env(quiet=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    env = _clean_env()
    env.update(TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    subprocess.run([str(py), str(script), "--worker", str(out)], check=True, env=env)


def generator_main(worker: Callable[[str], None], script: Path | str, out: Path | str) -> int:
    """The ``main`` of a ``make_nt_*_reference.py`` script: ``script --worker OUT`` (in the neural-tangents venv)
    runs ``worker(OUT)``; a plain ``script`` runs itself that way through :func:`run_worker` and prints OUT."""
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        return 0
    run_worker(script, out)
    print(out)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env-dir", default=str(DEFAULT_ENV_DIR))
    ap.add_argument("--force", action="store_true", help="rebuild from scratch")
    ap.add_argument("--check", action="store_true", help="only report whether it is ready")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.check:
        ok = is_ready(a.env_dir)
        print(venv_python(a.env_dir) if ok else "not ready")
        return 0 if ok else 1
    py = ensure_nt_env(a.env_dir, force=a.force, quiet=a.quiet)
    print(py)
    return 0


if __name__ == "__main__":
    sys.exit(main())
