"""The ``kernelalg`` command line: formula, kernel, verify, spectrum, layers.

Architectures are expression strings (``"Dense(1.5, 0.05) >> Relu() >> Dense(1.5)"``) read by the safe
parser :func:`kernelalg.layers._parse.parse` (never ``eval``). Every command exits with 0 on success, 1 when a
verification check fails, and 2 on bad input (with a message naming the problem and the fix).

Examples::

    kernelalg formula "Dense(1.5, 0.05) >> Relu() >> Dense(1.5)" --kernel ntk
    kernelalg kernel "Dense(1.5) >> Erf() >> Dense(1.5)" x.npy -o K.npy --get ntk
    kernelalg verify --out report
    kernelalg spectrum "Dense(1, 0.1) >> Relu() >> Dense(1)" --dim 3 -o spectrum.png
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import sympy as sp

from kernelalg._version import __version__
from kernelalg.backends._compile import compile as compile_kernel
from kernelalg.cli._io import OUT_SUFFIX, load_array, open_npy
from kernelalg.cli._outputs import staged_folder, terminate_as_interrupt
from kernelalg.backends._checks import check_inputs
from kernelalg.cli._at import at_values, evaluate_at
from kernelalg.cli._io import check_output_path
from kernelalg.cli._spectrum_report import spectrum_command
from kernelalg.cli._verify_report import VerifyConfig, run_verify
from kernelalg.core._errors import InternalError, KernelalgError
from kernelalg.core._inputs import layout_of
from kernelalg.core._program import Op
from kernelalg.core._symbolic import symbolic
from kernelalg.core._tiles import run_tiles, tile_offsets
from kernelalg.layers._parse import FORMULA_FUNCTIONS, _signature, layer_constructors, parse
from kernelalg.papers import names as paper_names, run_papers
from kernelalg.scale._gram import gram
from kernelalg.scale._store import open_gram

DEFAULT_ARCH = "Dense(1.5, 0.05) >> Relu() >> Dense(1.5, 0.05)"
MULTI_OUTPUT = ("The network has {n} output branches; the kernel command writes one kernel. "
                "Fix: merge the branches with FanInSum(), e.g. FanOut(2) >> parallel(a, b) >> FanInSum().")


def _int_list(text: str) -> list[int]:
    """argparse type of --widths: comma-separated positive integers."""
    try:
        out = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive widths. Fix: e.g. --widths 64,256,1024")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kernelalg",
        description="Exact infinite-width kernels (NNGP, NTK) of neural networks: closed forms, fast "
                    "evaluation and numerical verification. Architectures are expressions such as "
                    f"\"{DEFAULT_ARCH}\" (see 'kernelalg layers').",
        epilog="Docs: docs/cli.md. Exit codes: 0 ok, 1 a verification check failed, 2 bad input.")
    p.add_argument("--version", action="version", version=f"kernelalg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser("formula", help="print the closed-form NNGP/NTK (text, pretty or LaTeX)",
                       description="Print the kernel of an architecture in closed form, or as its straight-line "
                                   "program (CSE'd per layer) when the closed form is long or not elementwise.")
    f.add_argument("arch", help="architecture expression, e.g. \"Dense(1.5, 0.05) >> Relu() >> Dense(1.5)\"")
    f.add_argument("--kernel", choices=("nngp", "ntk", "both"), default="both", help="which kernel (default both)")
    f.add_argument("--format", choices=("text", "pretty", "latex"), default="text", help="output format")
    f.add_argument("--symbols", action="store_true", help="keep hyperparameters as symbols (sigma_w_1, ...)")
    form = f.add_mutually_exclusive_group()
    form.add_argument("--program", action="store_true", help="always print the straight-line program")
    form.add_argument("--closed", action="store_true", help="always print the single closed form")
    f.add_argument("--at", nargs="+", metavar="NAME=VALUE", help="also evaluate at these values, e.g. q1=1 q2=1 c=0.5")
    f.add_argument("-o", "--output", help="write to this file instead of stdout")

    k = sub.add_parser("kernel", help="compute the Gram matrix of a .npy/.csv input (to .npy or .zarr)",
                       description="Evaluate the exact kernel between the rows of X (and X2) tile by tile with a "
                                   "progress bar. Output .npy (memory-mapped) or .zarr (a kernelalg.gram store: "
                                   "resumable, rerun the same command to finish an interrupted run; optionally "
                                   "scheduled by Dask).")
    k.add_argument("arch", help="architecture expression")
    k.add_argument("x", help="input: .npy (any rank the network takes) or .csv/.txt (rows = samples)")
    k.add_argument("--x2", help="second input (default: X itself; then only the upper tile triangle is computed)")
    k.add_argument("-o", "--output", default="kernel.npy", help="output .npy or .zarr (default kernel.npy)")
    k.add_argument("--get", choices=("nngp", "ntk", "both"), default="ntk", help="which kernel (default ntk)")
    k.add_argument("--batch-size", type=int,
                   help="tile size in rows (default: .npy 1024 or the layout's own; .zarr sized from 1 GiB per "
                        "device, or the existing store's)")
    k.add_argument("--dtype", choices=("auto", "float32", "float64"), default="auto",
                   help="compute precision (auto: the input's float dtype; integers and CSV -> float64)")
    k.add_argument("--overwrite", action="store_true", help="replace an existing output")
    k.add_argument("--dask", action="store_true",
                   help="schedule the tiles on a Dask LocalCluster (needs a .zarr output and kernelalg[scale])")
    k.add_argument("--workers", type=int, default=None, help="LocalCluster workers with --dask (default 1)")
    k.add_argument("--no-progress", action="store_true", help="no progress bar")

    v = sub.add_parser("verify", help="exact kernel vs Monte Carlo across widths, spectrum, loss curve -> report",
                       description="Check the exact kernels against finite networks: Monte Carlo across widths "
                                   "(with error bars and the 1/width convergence), the spectrum on the sphere "
                                   "(fitted vs derived decay), and gradient-descent loss curves vs the kernel "
                                   "prediction. Writes OUT/summary.md, OUT/results.json and PNG plots. "
                                   "Exit status 0 iff every check that ran passed.")
    v.add_argument("arch", nargs="?", default=DEFAULT_ARCH, help=f"architecture (default \"{DEFAULT_ARCH}\")")
    v.add_argument("--data", default="sphere",
                   help="sphere (uniform on S^{dim-1}, built in), digits/iris/wine/breast_cancer (scikit-learn), "
                        "or a .npy/.csv file (default sphere)")
    v.add_argument("-n", type=int, default=None, help="number of inputs (default 24; 8 with --quick)")
    v.add_argument("--dim", type=int, default=3,
                   help="dimension d of the sphere data and of the spectrum check on S^{d-1} (default 3)")
    v.add_argument("--widths", type=_int_list, default=None,
                   help="comma-separated widths (default 64,256,1024,4096; 32,128 with --quick)")
    v.add_argument("--samples", type=int, default=None,
                   help="Monte Carlo networks per width (default 32; 8 with --quick)")
    v.add_argument("--steps", type=int, default=None,
                   help="gradient-descent steps of the loss-curve check (default 200; 30 with --quick)")
    v.add_argument("--out", default="report", help="report folder (default report)")
    v.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    v.add_argument("--quick", action="store_true", help="smaller run (seconds), for smoke tests")
    v.add_argument("--no-progress", action="store_true", help="no progress bars")

    s = sub.add_parser("spectrum", help="eigenvalues of the kernel on the sphere, decay exponent, log-log plot",
                       description="Mercer eigenvalues mu_k of the dot-product kernel on the unit sphere S^{dim-1} "
                                   "(Gegenbauer projection), the fitted decay exponent and, where derived, the "
                                   "theoretical one.")
    s.add_argument("arch", help="architecture expression (dense input)")
    s.add_argument("--dim", type=int, default=3, help="sphere dimension d (inputs on S^{d-1}; default 3)")
    s.add_argument("--kmax", type=int, default=60, help="largest degree k (default 60)")
    s.add_argument("--kernel", choices=("nngp", "ntk"), default="ntk", help="which kernel (default ntk)")
    s.add_argument("-o", "--output", help="save a log-log plot (PNG)")
    s.add_argument("--csv", help="save k, multiplicity, mu_k as CSV")

    sub.add_parser("layers", help="list the layer constructors an architecture expression may use")

    g = sub.add_parser("papers", help="check the central claims of the papers kernelalg serves -> table + PNGs",
                       description="Run the paper checks (all, or those named) and write papers.md, "
                                   "results.json and a PNG per check. Exit 0 iff every check passes.")
    g.add_argument("names", nargs="*", help=f"checks to run (default all): {', '.join(paper_names())}")
    g.add_argument("--out", default="papers", help="output folder (default: papers)")
    g.add_argument("--quick", action="store_true", help="small variants (seconds each; what CI runs)")
    return p


# ----------------------------------------------------------------------------------------- formula


def _program_text(sk: Any, which: Sequence[str], fmt: str) -> str:

    render = {"text": sp.sstr, "pretty": sp.sstr, "latex": sp.latex}[fmt]
    lines = []
    for ins in sk.program:
        if isinstance(ins, Op):
            lhs = ", ".join(render(t) for t in ins.targets)
            rhs = f"{ins.label or 'op'}({', '.join(render(s) for s in ins.sources)})"
            lines.append(f"{lhs} &= \\mathrm{{{rhs}}}" if fmt == "latex" else f"{lhs} = {rhs}")
        else:
            eq = " &= " if fmt == "latex" else " = "
            lines.append(render(ins.target) + eq + render(ins.expr))
    for name in which:
        for b, st in enumerate(sk.outputs):
            val = render(st.nngp if name == "nngp" else st.ntk)
            tag = name if len(sk.outputs) == 1 else f"{name}[{b}]"
            lines.append(f"\\mathrm{{{tag}}} &= {val}" if fmt == "latex" else f"{tag} = {val}")
    if fmt == "latex":
        return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"
    return "\n".join(lines)


def cmd_formula(args: argparse.Namespace) -> int:

    if args.output:
        check_output_path(args.output, "-o")
    net = parse(args.arch)
    sk = symbolic(net, keep_symbols=args.symbols)
    which = ("nngp", "ntk") if args.kernel == "both" else (args.kernel,)
    has_ops = any(isinstance(i, Op) for i in sk.program)
    program = args.program or (not args.closed and (has_ops or len(sk.program) > 40 or
                                                    not all(sk.closed_form_fits(w) for w in which)))
    out = [f"# architecture: {net!r}",
           "# inputs: q1 = |x|^2/d, q2 = |x'|^2/d, c = x.x'/d" + ("" if not has_ops else
                                                                    " (per pixel/time pair; ops act on arrays)")]
    if sk.params and args.symbols:
        out.append("# hyperparameters: " + ", ".join(f"{s.name}={v:g}" for s, v in sk.params.items()))
    for name, route in sk.routes.items():
        out.append(f"# {name}: dual by {route}")
    if sk.asymmetric:
        out.append("# the NTK is asymmetric: ntk(x, x') = J(x) J~(x')^T (surrogate gradient)")
    if program:
        out.append(f"# straight-line program ({len(sk.program)} instructions, size {sk.size()}):")
        out.append(_program_text(sk, which, args.format))
    else:
        for name in which:
            expr = getattr(sk, name)
            exprs = expr if isinstance(expr, tuple) else (expr,)
            for b, e in enumerate(exprs):
                tag = name if len(exprs) == 1 else f"{name}[{b}]"
                body = {"text": sp.sstr, "pretty": lambda x: sp.pretty(x, use_unicode=True),
                        "latex": sp.latex}[args.format](e)
                out.append(f"{tag} =" + ("\n" if args.format == "pretty" else " ") + body)
    at = at_values(args.at)
    if at:
        out += evaluate_at(net, which, at)
    text = "\n".join(out) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


# ----------------------------------------------------------------------------------------- kernel


def _pad(x: Any, rows: int) -> Any:
    """``x`` padded to ``rows`` rows with copies of its first row (valid inputs; the extra rows are dropped)."""
    if len(x) == rows:
        return x
    return np.concatenate([x, np.repeat(x[:1], rows - len(x), axis=0)])


def cmd_kernel(args: argparse.Namespace) -> int:

    net = parse(args.arch)
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".npy", ".zarr"):
        raise KernelalgError(OUT_SUFFIX.format(path=args.output))
    check_output_path(args.output, "-o", folder=suffix == ".zarr")
    if args.batch_size is not None and args.batch_size < 1:
        raise KernelalgError(f"--batch-size must be >= 1, got {args.batch_size}. Fix: e.g. --batch-size 512.")
    if args.dask and suffix != ".zarr":
        raise KernelalgError("--dask needs a .zarr output (workers write their tiles to the store). "
                             "Fix: e.g. -o kernel.zarr --dask.")
    x1 = load_array(args.x, "X", args.dtype)
    x2 = None if args.x2 is None else load_array(args.x2, "X2", args.dtype)
    if x2 is not None and x1.dtype != x2.dtype:
        dt = np.result_type(x1.dtype, x2.dtype)
        x1, x2 = x1.astype(dt), x2.astype(dt)
    check_inputs(layout_of(net), x1, x2)  # before any output is created: ka.kernel's checks
    names = ("nngp", "ntk") if args.get == "both" else (args.get,)
    if suffix == ".zarr":
        _kernel_zarr(args, net, x1, x2, names)
    else:
        _kernel_npy(args, net, x1, x2, names)
    return 0


def _kernel_zarr(args: argparse.Namespace, net: Any, x1: Any, x2: Any, names: tuple[str, ...]) -> None:
    """Resumable zarr store through ka.gram (per-tile completion records; optional Dask LocalCluster)."""
    path = Path(args.output)
    before = None
    if path.exists() and not args.overwrite and (path / "kernelalg.json").exists():
        try:
            old = open_gram(path)
            before = (len(old.done()), len(old.tiles))
        except (KernelalgError, KeyError, ValueError):
            before = None
    store = gram(net, x1, x2, names, tile=args.batch_size, store=str(path), overwrite=args.overwrite,
                 client="local" if args.dask else None, workers=args.workers, progress=not args.no_progress)
    if before and before[0]:
        print(f"resumed {path}: {before[0]} of {before[1]} tiles were already done, computed the other "
              f"{before[1] - before[0]}", file=sys.stderr)
    n, m = store.shape
    print(f"wrote {', '.join(names)} ({n} x {m}, tile {store.tile}) to {path}; read it with "
          f"kernelalg.open_gram({str(path)!r}).load()")


def _kernel_npy(args: argparse.Namespace, net: Any, x1: Any, x2: Any, names: tuple[str, ...]) -> None:
    """Tile by tile into memory-mapped .npy files (memory bounded by the tile)."""

    f = compile_kernel(net, names)
    if len(f.symbolic.outputs) != 1:
        raise KernelalgError(MULTI_OUTPUT.format(n=len(f.symbolic.outputs)))
    bs = args.batch_size
    layout = layout_of(net)
    if bs is None and layout.auto_batch is not None:
        bs = layout.auto_batch(x1, x2)
    bs = 1024 if bs is None else int(bs)
    symmetric = x2 is None and not f.symbolic.asymmetric
    other = x1 if x2 is None else x2
    n, m = len(x1), len(other)
    total = len(tile_offsets(n, m, bs, symmetric))
    pad = total > 1  # equal tile shapes: one compilation for all tiles
    from tqdm.auto import tqdm

    def compute(i: int, j: int) -> dict:
        a, b = x1[i:i + bs], other[j:j + bs]
        k = f(_pad(a, bs) if pad else a, None if symmetric and i == j else (_pad(b, bs) if pad else b))
        return {name: np.asarray(getattr(k, name))[:len(a), :len(b)] for name in names}

    sink = open_npy(args.output, names, (n, m), x1.dtype, args.overwrite)
    bar = tqdm(total=total, desc="kernel tiles", unit="tile", disable=args.no_progress or total <= 1)
    try:
        with terminate_as_interrupt():
            run_tiles(compute, n, m, bs, symmetric, sink.put, advance=bar.update)
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()
    for name, path in sink.close().items():
        print(f"wrote {name} ({n} x {m}) to {path}")


# ----------------------------------------------------------------------------------------- verify / spectrum


def cmd_verify(args: argparse.Namespace) -> int:
    check_output_path(args.out, "--out", folder=True)
    net = parse(args.arch)
    cfg = VerifyConfig.make(arch=args.arch, data=args.data, n=args.n, dim=args.dim, widths=args.widths,
                            samples=args.samples, steps=args.steps, out=args.out, seed=args.seed,
                            quick=args.quick, progress=not args.no_progress)
    with terminate_as_interrupt(), staged_folder(Path(cfg.out)) as stage:
        summary = run_verify(net, cfg, out_dir=stage)
    print(summary.text())
    return 0 if summary.passed else 1


def cmd_spectrum(args: argparse.Namespace) -> int:
    for option, path in (("-o", args.output), ("--csv", args.csv)):
        if path:
            check_output_path(path, option)
    net = parse(args.arch)
    print(spectrum_command(net, args.arch, dim=args.dim, kmax=args.kmax, which=args.kernel, png=args.output,
                           csv=args.csv))
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    print("Layer constructors allowed in architecture expressions:")
    for name, fn in sorted(layer_constructors().items(), key=lambda kv: kv[0].lower()):
        doc = (fn.__doc__ or "").strip().splitlines()
        print(f"  {name}{_signature(fn)}" + (f"\n      {doc[0]}" if doc else ""))
    print("  repeat(layer, n)\n      The layer n times in series.")
    print("Compose with >> (serial). Numbers may use + - * / ** (e.g. Dense(2 ** 0.5)).")
    print("Elementwise takes a formula in x, e.g. Elementwise(\"x * tanh(x)\"); functions: "
          + ", ".join(sorted(FORMULA_FUNCTIONS)) + ".")
    return 0


def cmd_papers(args: argparse.Namespace) -> int:
    with terminate_as_interrupt(), staged_folder(Path(args.out)) as stage:
        results = run_papers(args.names, stage, quick=args.quick)
    print(f"{sum(r.passed for r in results)} of {len(results)} checks pass; table in {Path(args.out) / 'papers.md'}")
    return 0 if all(r.passed for r in results) else 1


_COMMANDS = {"formula": cmd_formula, "kernel": cmd_kernel, "verify": cmd_verify, "spectrum": cmd_spectrum,
             "layers": cmd_layers, "papers": cmd_papers}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line. Returns the exit status (0 ok, 1 a verification failed, 2 bad input, 70 an internal error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status = _COMMANDS[args.command](args)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return status
    except BrokenPipeError:  # e.g. 'kernelalg layers | head': the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + getattr(signal, "SIGPIPE", 13)
    except KernelalgError as err:
        print(f"kernelalg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        print(f"kernelalg {args.command}: error: {err}. Fix: check the path.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kernelalg {args.command}: interrupted", file=sys.stderr)
        return 130
    except InternalError as err:  # a bug of kernelalg, not of the input: say so, with the exit code for it
        print(f"kernelalg {args.command}: internal error (a kernelalg bug, please report it): {err}",
              file=sys.stderr)
        return 70
