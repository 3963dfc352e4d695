"""Check the import structure of kernelalg: no cycles, lower packages never import higher ones.

The house, from the ground up (a module may import its own package and any package on a lower floor):

    floor 0  kernelalg.core        kernel state, program/builder, layer record, duals, errors, tiles
    floor 1  kernelalg.backends    lowering of every node the core emits (JAX, NumPy, mpmath), compile
    floor 2  kernelalg.layers      one module per layer family; the expression parser
    floor 3  kernelalg.finite      finite-width twins, empirical NTK, Monte Carlo, verify, training
    floor 4  kernelalg.scale       tiled / distributed Gram matrices and their stores
    floor 5  kernelalg.analysis    spectra, decay, loss asymptotics, dynamics
    floor 6  kernelalg.papers      the paper gallery: each paper's central claim checked
    floor 7  kernelalg.cli         the command line and its reports
    face     kernelalg/__init__.py, kernelalg.strategies, kernelalg.__main__ (import anything, imported by none)

Function-local imports are allowed only for optional third-party dependencies (OPTIONAL below); an import
of kernelalg inside a function is an error (it usually hides a cycle).

Usage: ``python tools/check_imports.py`` (exit status 1 and one line per violation when the rules are
broken); ``tests/test_architecture.py`` runs it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"core": 0, "backends": 1, "layers": 2, "finite": 3, "scale": 4, "analysis": 5, "papers": 6, "cli": 7}
FACE = {"kernelalg", "kernelalg.strategies", "kernelalg.__main__"}
#: Leaf modules of the top-level package that import nothing of kernelalg (usable from any floor).
LEAVES = {"kernelalg._version"}
OPTIONAL = {"distributed", "dask", "zarr", "hypothesis", "sklearn", "pyts", "tqdm", "matplotlib", "optax",
            "numcodecs", "psutil", "resource", "jax.experimental"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> tuple[str, list[str]]:
    """(the module named after ``from``, the names it imports prefixed by it) of an ImportFrom."""
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
        pkg = pkg[:len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    return base, [f"{base}.{a.name}" for a in node.names]


def imports(path: Path, root: Path = ROOT) -> tuple[list[tuple[str, int, bool]], str]:
    """(imported name, line, inside a function) for every import of ``path``."""
    mod = module_name(path, root)
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, local) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base, names = resolve(mod, path.name == "__init__.py", child)
                # ``from pkg import mod`` imports the submodule, not the package's face
                out.extend((n, child.lineno, local) for n in names if n in MODULES or n.rsplit(".", 1)[0] != base
                           or base not in MODULES)
                if not any(n in MODULES for n in names):
                    out.append((base, child.lineno, local))
            visit(child, inner)

    visit(tree, False)
    return out, mod


def floor(mod: str) -> int | None:
    parts = mod.split(".")
    if mod in FACE:
        return 99
    if mod in LEAVES:
        return -1
    return FLOORS.get(parts[1]) if len(parts) > 1 else None


MODULES: set[str] = set()


def check(root: Path = ROOT) -> list[str]:
    """Every violation of the rules in the module docstring, for the package ``root/kernelalg``."""
    modules = {module_name(p, root): p for p in (root / "kernelalg").rglob("*.py")}
    MODULES.clear()
    MODULES.update(modules)
    errors: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in sorted(modules.items()):
        found, _ = imports(path, root)
        seen: set[tuple[int, str]] = set()
        for name, line, local in found:
            top = name.split(".")[0]
            where = f"{path.relative_to(root)}:{line}"
            if top != "kernelalg":
                if local and not any(name == o or name.startswith(o + ".") for o in OPTIONAL):
                    errors.append(f"{where}: function-local import of {name} (only optional dependencies may be "
                                  "imported inside functions; move it to the top of the module)")
                continue
            target = name if name in modules else name.rsplit(".", 1)[0]
            if target not in modules or (line, target) in seen:
                continue
            seen.add((line, target))
            if local:
                errors.append(f"{where}: function-local import of {name}: import it at module level (a local "
                              "import of kernelalg usually hides a cycle)")
            if target == mod:
                continue
            if target not in FACE:
                graph[mod].add(target)
            fm, ft = floor(mod), floor(target)
            if ft == 99 and mod not in FACE:
                errors.append(f"{where}: {mod} imports the public face {target}; import the defining module")
            elif fm is not None and ft is not None and ft > fm:
                errors.append(f"{where}: {mod} (floor {fm}) imports {target} (floor {ft}): lower packages "
                              "never import higher ones")
            elif fm is None and mod not in FACE:
                errors.append(f"{where}: {mod} is outside the known packages; add it to FLOORS or LEAVES")
    errors += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return errors


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def main() -> int:
    errors = check()
    for e in errors:
        print(e)
    print(f"{len(errors)} import-structure violation(s)" if errors else "import structure OK")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
