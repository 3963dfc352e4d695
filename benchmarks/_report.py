"""Render benchmarks/results/*.json (written by ``run.py``) as the Markdown of benchmarks/RESULTS.md."""
from __future__ import annotations

import json
import re
from pathlib import Path

NOTES = """\
## How kernelalg evaluates a dense network (the fast path)

The whole network is one jitted program: one matmul for the Gram matrix x x^T / d, per-sample
variances as (N, 1) / (1, N) vectors, then the layer recursion as elementwise maths on the N x N
pairs. Repeated [Dense, activation] blocks run as one `lax.scan` (compile time independent of depth;
XLA fuses the body into a few loop fusions per layer). On the CPU the pair arrays are cut into row
tiles of ~64k entries (`lax.map`), and all layers run on one tile before the next, so the layer state
stays in the L2 caches. The inverse trigonometric functions of the duals (arccos for ReLU, arcsin for
erf, arctan for GELU) are lowered to one vectorising polynomial (XLA's CPU acos/asin/atan are scalar
libm calls, 10-20x slower; max error 1-3 ulp against libm), and correlations use per-sample reciprocal
square roots (no N x N rsqrt). Each further ReLU layer then costs ~4 ns of wall time per pair on the
2 cores (difference of the depth-20 and depth-3 rows / 17 layers / N^2, in the run of 2026-11-30),
mostly its two vector square roots; the fused loops are AVX2-vectorised (checked in XLA's LLVM IR).
A depth-L stack has L - 1 identical [activation, Dense] units after the first Dense, so the scan
starts at 2 repeats (with 3, depth 3 fell back to the unrolled program and ran 2-2.5x slower).
Without the scan (every layer unrolled into one program) XLA re-computes the cheap parts of earlier
layers inside later fusions: measured at N = 1000, depth 10 GELU took 1.3 s of
CPU time per call instead of 0.13 s and depth 20 ReLU 13 s instead of 0.5 s, and compile time grows
with depth (the `unrolled` columns of the compile table).
neural-tangents materialises separate N x N temporaries per layer and calls libm's atan2.

## Agreement, and where the two differ

Off the diagonal the libraries agree to ~1e-13 relative. The largest differences are on the diagonal
of the ReLU NTK (x with itself, correlation 1), up to ~1e-7 relative at depth 20: neural-tangents computes
the arc-cosine angle as atan2(sqrt(s11 s22 - s12^2), s12), and the rounding of s11 s22 - s12^2 at
correlation 1 is amplified by the square root (an O(sqrt(eps)) angle instead of 0) and compounds over
layers. kernelalg snaps |rho| to 1 within 512 ulps, so its diagonal is exact to rounding; the harness
checks both against the closed-form diagonal (at correlation 1 the ReLU recursion is linear), see the
table under the dense results.

## GPU bandwidth check (`--device gpu`; not run: no GPU was available for these results)

    python benchmarks/run.py --device gpu --only dense --no-nt   # kernelalg on the GPU only
    python benchmarks/run.py --device gpu --only dense           # + NT on the CPU for agreement/ratios

On a GPU the dense closed form should be memory-bound. The worker runs kernelalg on JAX's GPU backend
(it refuses to fall back to the CPU silently; the CPU row tiling is off on accelerators, so each layer is
one fused kernel over the whole N x N state) and the harness reports, per workload:
`effective_gbs = (2 N^2 x 8 B of nngp + ntk written) / steady time` and its fraction of the card's
bandwidth (`--gpu-bandwidth-gbs`, default 4800 GB/s = H200), and the same for the per-layer state
traffic `2 (L + 1) x 2 N^2 x 8 B` (every layer reads and writes nngp and ntk). A layer-traffic fraction
near 1 means the fast path is bandwidth-bound (the best it can be); far below 1 means kernel-launch
or compute overhead dominates. Example: N = 8000, depth 20 moves 2 x 21 x 1.02 GB = 43 GB, i.e. a
floor of ~9 ms on an H200.
"""


DEEP_NOTES = """\
## How kernelalg evaluates a deep CNN, and where the time went before

Before (issue 15: 21-layer Flatten CNN 19.2 s steady and 462 s first call, 29x slower than NT), profiled on
small versions (8x8 images, N = 4, machine load ~10): the first call grew with depth (4.9, 10.4, 19.3, 37 s
at depth 2, 4, 6, 8) and so did the cost per layer (steady 0.6, 1.5, 7.5 ms at depth 2, 4, 6). Two causes:

* no loop over layers: only blocks of elementwise instructions were scanned, so the 21 [Conv, Relu] blocks
  (each holding a conv `Op`) were unrolled into one program, whose XLA compile time grows with its size;
* XLA's CPU fusion inlined each layer's stencil taps into the next layer's loops, recomputing earlier layers
  per output entry. The matching-pixel conv map had no fusion barrier at all, and the barrier of the chunked
  readout (a conditional on `chunk index >= 0`) was folded away whenever the pairs fit in one chunk (N = 16:
  136 pairs), because XLA removes a loop of one iteration and then knows its index.

Now: repeated [Conv, activation] blocks are one `lax.scan` (structural ops declare a static `key` and take
part in runs; `backends/_scan.py`), inside the `lax.map` over chunks of image pairs; the fusion barrier is a
predicate derived from the input data (not foldable); the symbolic build replays a layer met again on a state
of the same structure instead of redoing its sympy work (`core/_replay.py`: build of 100 [Conv, Relu] 4.8 s ->
0.8 s). Per pair and layer the matching-pixel path (Flatten) holds and updates HW entries per array, the
full-grid path (GlobalAvgPool) (HW)^2, one chunk of pairs at a time (~2^18 entries per array), and only the
N (N - 1) / 2 pairs of different images plus the N self pairs (the cyclic enumeration met the pairs at offset
N/2 twice for even N: 12 instead of 10 pairs at N = 4). Window sums pad once and add plain slices (3x faster
than zero-padding every shifted slice on the matching-pixel grid); the arc-cosine angle shared by T and Tdot
is computed once per entry together with the chain of cheap producers back to the conv output (one pass
over the grid per layer less: -28% CPU time on the GAP CNN); float32 uses a 5-coefficient arcsine
polynomial (0.77 ulp). The float32 correlation of same-shape variances is s12 rsqrt(s11) rsqrt(s22): the
product s11 s22 underflowed below variances of 1e-19, reached after ~63 ReLU layers with W_std = 1, and made
a depth-100 Flatten kernel 99.7% wrong (regression test in tests/test_deep_conv.py).

neural-tangents keeps the whole N x N batch of pixel-pair grids per layer (N^2 (HW)^2 entries per array with
GlobalAvgPool; see the peak RSS columns), computes every (i, j) and (j, i), and takes the
arc-cosine angle from atan2(sqrt(s11 s22 - s12^2), s12), which in float32 loses ~3e-4 relative at correlations
near 1 (the self pairs and, in deep networks, most pairs): its float32 kernels differ from its float64 ones by
~4e-4 to 2e-3, kernelalg's by ~1e-6. In float64 the same formula costs NT ~1e-10 relative on each input paired
with itself after a few ReLU layers (the diagonal column of the accuracy table; the tests hold kernelalg's
self-pair NTK to the closed form at correlation 1 instead).

No GPU was lent to this task: all numbers are from the 2-core CPU. For a later session:

    python benchmarks/bench_deepcnn.py --device gpu            # kernelalg on the GPU, NT on the CPU
    python benchmarks/bench_deepcnn.py --device gpu --no-nt    # kernelalg only
"""


def _f(v, fmt="{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _diff(a: dict) -> str:
    if "max_rel_err_diagonal" in a:
        return f"{a['max_rel_err_off_diagonal']:.1e} ({a['max_rel_err_diagonal']:.1e})"
    return f"{a['max_rel_err']:.1e}"


def _ok(r: dict) -> bool:
    return isinstance(r, dict) and r.get("status") == "ok"


def _machine(doc: dict) -> list[str]:
    m = doc["machine"]
    kv, nv = doc.get("kernelalg_versions", {}), doc.get("nt_versions") or {}
    return [
        f"- Machine: {m['cpu_model']}, {m['logical_cores']} logical cores "
        f"({m['affinity_cores']} usable), {m['ram_gb']} GB RAM, {m['platform']}, device `{doc['device']}`",
        f"- kernelalg side: jax {kv.get('jax')}, jaxlib {kv.get('jaxlib')}, numpy {kv.get('numpy')}",
        f"- neural-tangents side: neural-tangents {nv.get('neural_tangents')}, jax {nv.get('jax')}, "
        f"jaxlib {nv.get('jaxlib')}, numpy {nv.get('numpy')}",
    ]


def _dense(doc: dict) -> list[str]:
    s = doc["settings"]
    out = [f"## Dense NNGP + NTK (`{doc['command']}`, {doc['date']})", "",
           f"float64, NTK parameterization, depth x [Dense(W_std={s['W_std']}, b_std={s['b_std']}), act] + "
           f"Dense(W_std={s['W_std']}, b_std={s['b_std']}); x ~ N(0,1) of shape (N, {s['d']}), seed "
           f"{s['seed']}; x2 = None (full N x N); get = (nngp, ntk). Steady = median of the calls after the "
           f"first; first call = trace + compile + 1st evaluation (kernelalg: + symbolic build). "
           f"Agreement: elementwise rtol {doc['rtol']} (floor 1e-3 max|K|). Load average (1 min) "
           f"before -> after each workload.", "",
           *[f"Re-run (merged into this table): {', '.join(r['workloads'])} with `{r['command']}` at {r['date']}."
             for r in doc.get("reruns", [])], "",
           "| workload | NT steady s | ka steady s | speedup | NT first s | ka build+first s | "
           "NT peak RSS MB | ka peak RSS MB | max rel diff nngp / ntk: off-diagonal (diagonal) | agree | load |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in doc["results"].items():
        nt, ka = r.get("nt", {}), r.get("ka", {})
        agr = r.get("agreement", {})
        diff = " / ".join(_diff(agr[k]) for k in ("nngp", "ntk") if k in agr) or "-"
        kfirst = ka["first_call_s"] + ka["build_s"] if _ok(ka) else None
        out.append(
            f"| {name} | {_f(nt.get('steady_s'))} | {_f(ka.get('steady_s'))} | "
            f"{_f(r.get('speedup_steady'), '{:.1f}x')} | {_f(nt.get('first_call_s'), '{:.2f}')} | "
            f"{_f(kfirst, '{:.2f}')} | {_f(nt.get('peak_rss_mb'), '{:.0f}')} | "
            f"{_f(ka.get('peak_rss_mb'), '{:.0f}')} | {diff} | {r.get('agree', '-')} | "
            f"{r['load_before'][0]} -> {r['load_after'][0]} |")
        for side, v in (("NT", nt), ("kernelalg", ka)):
            if v and not _ok(v):
                err = (v.get("error") or "").splitlines()
                out.append(f"|  {side} {v.get('status')}: {err[0][:40] if err else ''} {v.get('note', '')} "
                           "|||||||||||")
        if "gpu_bandwidth" in r:
            g = r["gpu_bandwidth"]
            out.append(f"|  GPU: {g['output_bytes'] / 1e9:.2f} GB out, {g['effective_gbs']:.1f} GB/s = "
                       f"{100 * g['fraction_of_card']:.2f}% of the card; with per-layer state traffic "
                       f"{g['layer_traffic_gbs']:.0f} GB/s = {100 * g['layer_traffic_fraction_of_card']:.1f}% "
                       "|||||||||||")
    diag = [(n, r["relu_ntk_diagonal_rel_err"]) for n, r in doc["results"].items()
            if r.get("relu_ntk_diagonal_rel_err")]
    if diag:
        out += ["", "ReLU NTK diagonal ntk(x, x) against its closed form (max relative error):", "",
                "| workload | NT | kernelalg |", "|---|---|---|"]
        out += [f"| {n} | {_f(e.get('nt'), '{:.1e}')} | {_f(e.get('ka'), '{:.1e}')} |" for n, e in diag]
    return out + [""]


def _compile(doc: dict) -> list[str]:
    out = [f"## Build and compile time vs depth (`{doc['command']}`, {doc['date']})", "",
           "Dense ReLU, N = 64 (evaluation negligible). kernelalg: `build` = symbolic trace + lowering "
           "(`ka.compile`), `compile` = first call - steady (jit trace + XLA compile); `unrolled` = the "
           "same program without the scan of repeated blocks. NT: kernel_fn (nt.batch, jitted) first "
           "call - steady.", "",
           "| depth | ka build s | ka compile s | ka total s | ka unrolled compile s | ka unrolled steady s | "
           "NT compile s | NT first call s | ka steady s | NT steady s | load |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"].values():
        ka, un, nt = r.get("ka", {}), r.get("ka_unrolled", {}), r.get("nt", {})
        tot = ka["build_s"] + ka["first_call_s"] if _ok(ka) else None
        nt_cell = _f(nt.get("compile_s")) if _ok(nt) else ("timeout/failed" if nt else "-")
        out.append(f"| {r['depth']} | {_f(ka.get('build_s'))} | {_f(ka.get('compile_s'))} | {_f(tot)} | "
                   f"{_f(un.get('compile_s'))} | {_f(un.get('steady_s'), '{:.4f}')} | {nt_cell} | "
                   f"{_f(nt.get('first_call_s'))} | {_f(ka.get('steady_s'), '{:.4f}')} | "
                   f"{_f(nt.get('steady_s'), '{:.4f}')} | {r['load_before'][0]} -> {r['load_after'][0]} |")
    return out + [""]


_KEYS = re.compile(r"(first_call|steady|peak_rss|speedup|max_rel|agree|status|^n$|^N$)")


def _leaves(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif not isinstance(obj, list):
        yield path, obj


def _hook(doc: dict, res_dir: Path) -> list[str]:
    r = doc["results"]
    title = f"## {doc['section'].capitalize()} (`{r.get('command', r.get('script'))}`)"
    if r["status"] == "absent":
        return [title, "", f"`benchmarks/{r['script']}` not present: section skipped.", ""]
    out = [title, "", f"Run by `run.py` ({doc['date']}): status {r['status']} (rc {r['returncode']}), "
           f"{r['wall_s']:.0f} s, load {r['load_before'][0]} -> {r['load_after'][0]}; results: "
           f"{', '.join('benchmarks/' + w for w in r['results_written']) or 'none written'}.", ""]
    for w in r["results_written"]:
        p = Path(__file__).resolve().parent / w
        if p.exists():
            rows = [(k, v) for k, v in _leaves(json.loads(p.read_text()))
                    if _KEYS.search(k.rsplit(".", 1)[-1]) and "all" not in k.rsplit(".", 1)[-1]]
            out += ["| " + w + " | value |", "|---|---|"]
            out += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows[:40]]
            out.append("")
    if not r["results_written"]:
        out += ["```"] + r["output_tail"].splitlines()[-25:] + ["```", ""]
    return out


def _deep_targets(w: dict, sweep: dict) -> list[str]:
    """The targets of the deep-CNN benchmark (issue 15), checked on the numbers of the tables."""
    d = {k: v.get("derived", {}) for k, v in w.items()}
    out = []

    def line(ok, text):
        out.append(f"- {'met' if ok else 'NOT met'}: {text}")
    for name, want in (("flatten", 5), ("gap", 50)):
        if "speedup_steady" in d.get(name, {}):
            sp_ = d[name]["speedup_steady"]
            line(sp_ >= want, f"21 layers + {name}: steady {sp_:.1f}x faster than NT (target >= {want}x; "
                 f"CPU time {d[name].get('speedup_steady_cpu', float('nan')):.1f}x)")
    for name in ("gap", "flatten"):
        r = sweep.get(f"{name}_L21", {}).get("ka", {})
        r100 = sweep.get(f"{name}_L100", {}).get("ka", {})
        if _ok(r) and _ok(r100):
            line(r["first_call_total_s"] <= 15, f"{name}, depth 21: first call {r['first_call_total_s']:.1f} s "
                 "(target <= 15 s)")
            ratio = r100["first_call_total_s"] / r["first_call_total_s"]
            bc = r100["build_and_compile_s"] / r["build_and_compile_s"]
            line(ratio <= 1.5, f"{name}, depth 100: first call {r100['first_call_total_s']:.1f} s = {ratio:.2f}x "
                 f"depth 21's (target <= 1.5x); of which build + compile (first call - steady) "
                 f"{r100['build_and_compile_s']:.1f} s = {bc:.2f}x, the rest is the evaluation itself "
                 f"(steady {r100['steady_s']:.2f} s vs {r['steady_s']:.2f} s, linear in depth)")
    rss = [(n, v["rss_fraction_of_nt"]) for n, v in d.items() if "rss_fraction_of_nt" in v]
    if rss:
        line(all(f <= 1 for _, f in rss), "peak RSS <= NT's on every workload (" + ", ".join(
            f"{n} {f:.2f}" for n, f in rss) + " of NT's)")
    f32 = [(n, v["ka_f32_error_max_rel"], v["nt_f32_error_max_rel"]) for n, v in d.items()
           if "ka_f32_error_max_rel" in v and "nt_f32_error_max_rel" in v]
    if f32:
        line(all(a <= b for _, a, b in f32), "float32 error vs float64 no worse than NT's (" + ", ".join(
            f"{n} {a:.1e} vs {b:.1e}" for n, a, b in f32) + ")")
    return out


def _deepcnn(doc: dict) -> list[str]:
    w, pub = doc.get("workloads", {}), doc["nt_published_ms_per_entry"]
    sweep = doc.get("sweep", {}).get("results", {})
    out = ["## Deep CNNs: neural-tangents' own README workloads (`python benchmarks/bench_deepcnn.py`)", "",
           doc["description"], "", "Runs (each row of a table is one run of both libraries, "
           "back to back): " + "; ".join(f"`{r['command']}` {r['date']} (load {r['load_start'][0]})"
                                         for r in doc.get("runs", [])[-8:]) + ".", "",
           "| workload | N | NT steady s | ka steady s | speedup wall (CPU time) | NT first call s | "
           "ka first call s | NT ms / entry | ka ms / entry | NT README ms / entry (>56-core CPU) | "
           "NT peak RSS MB | ka peak RSS MB | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in w.items():
        f32, d = e.get("f32", {}), e.get("derived", {})
        nt, ka = f32.get("nt", {}), f32.get("ka", {})
        out.append(
            f"| {name} | {e['settings']['N']} | {_f(nt.get('steady_s'))} | {_f(ka.get('steady_s'))} | "
            f"{_f(d.get('speedup_steady'), '{:.1f}x')} ({_f(d.get('speedup_steady_cpu'), '{:.1f}x')}) | "
            f"{_f(nt.get('first_call_total_s'), '{:.1f}')} | {_f(ka.get('first_call_total_s'), '{:.1f}')} | "
            f"{_f(d.get('nt_ms_per_entry'), '{:.4g}')} | {_f(d.get('ka_ms_per_entry'), '{:.4g}')} | "
            f"{_f(pub.get(name), '{:.4g}')} | {_f(nt.get('peak_rss_mb'), '{:.0f}')} | "
            f"{_f(ka.get('peak_rss_mb'), '{:.0f}')} | {f32.get('load_before', ['-'])[0]} -> "
            f"{f32.get('load_after', ['-'])[0]} |")
    out += ["", "Accuracy. float64: both libraries on the first n inputs, max |ka - nt| / max |nt| over pairs of "
            "different inputs (and over each input with itself). float32: each library against its own float64 "
            "kernel, max |K32 - K64| / max |K64| (and the largest elementwise relative error).", "",
            "| workload | n | float64 ka vs NT: off-diagonal (diagonal) | NT float32 error | ka float32 error | "
            "float32 ka vs NT |", "|---|---|---|---|---|---|"]
    for name, e in w.items():
        d = e.get("derived", {})
        out.append(
            f"| {name} | {e['settings']['n_small']} | {_f(d.get('f64_agreement_max_rel_off_diagonal'), '{:.1e}')} "
            f"({_f(d.get('f64_agreement_max_rel_diagonal'), '{:.1e}')}) | "
            f"{_f(d.get('nt_f32_error_max_rel'), '{:.1e}')} ({_f(d.get('nt_f32_error_max_elementwise_rel'), '{:.1e}')}) | "
            f"{_f(d.get('ka_f32_error_max_rel'), '{:.1e}')} ({_f(d.get('ka_f32_error_max_elementwise_rel'), '{:.1e}')}) | "
            f"{_f(d.get('f32_agreement_max_rel'), '{:.1e}')} |")
    if sweep:
        out += ["", "First call vs depth (kernelalg, float32, each CNN at its workload's N; `build` = symbolic "
                "trace + lowering, `first call` = build + jit trace + XLA compile + first evaluation):", "",
                "| network | depth | build s | first call s | steady s | first call - steady s | peak RSS MB | "
                "NT first call s | load |", "|---|---|---|---|---|---|---|---|---|"]
        for key, r in sweep.items():
            ka, nt = r.get("ka", {}), r.get("nt", {})
            out.append(f"| {key.rsplit('_', 1)[0]} | {r['depth']} | {_f(ka.get('build_s'))} | "
                       f"{_f(ka.get('first_call_total_s'), '{:.2f}')} | {_f(ka.get('steady_s'))} | "
                       f"{_f(ka.get('build_and_compile_s'), '{:.2f}')} | {_f(ka.get('peak_rss_mb'), '{:.0f}')} | "
                       f"{_f(nt.get('first_call_total_s'), '{:.1f}')} | {r['load_before'][0]} -> "
                       f"{r['load_after'][0]} |")
    notes = [f"- {name}.{part}: {e[part]['note']}" for name, e in w.items() for part in ("f32", "f64")
             if isinstance(e.get(part), dict) and e[part].get("note")]
    notes += [f"- {name}.f64 NT: {e['f64']['nt']['note']}" for name, e in w.items()
              if e.get("f64", {}).get("nt", {}).get("note")]
    if doc.get("sweep", {}).get("note"):
        notes.append(f"- depth sweep: {doc['sweep']['note']}")
    if notes:
        out += ["", "Provenance of rows not from the latest code:", ""] + notes
    out += ["", "Targets (issue 15):", ""] + _deep_targets(w, sweep)
    return out + [""]


def render(res_dir: Path) -> str:
    docs = {}
    for sec in ("dense", "compile", "hook_conv", "hook_empirical", "dense_gpu", "deepcnn"):
        p = Path(res_dir) / f"{sec}.json"
        if p.exists():
            docs[sec] = json.loads(p.read_text())
    lines = ["# kernelalg vs neural-tangents: benchmark results", "",
             "Generated by `python benchmarks/run.py` (see its docstring); the tables are the latest run of "
             "each section (benchmarks/results/<section>.json hold every number, incl. per-call times, "
             "CPU times and versions).", ""]
    if docs:
        first = next(iter(docs.values()))
        lines += _machine(first)
        lines += [f"- Load average (1, 5, 15 min) at the start of each section: " + "; ".join(
            f"{k} {d['load_avg_start']}" for k, d in docs.items() if "load_avg_start" in d), ""]
    for sec, doc in docs.items():
        if sec.startswith("dense"):
            lines += _dense(doc)
        elif sec == "compile":
            lines += _compile(doc)
        elif sec == "deepcnn":
            lines += _deepcnn(doc)
        else:
            lines += _hook(doc, Path(res_dir))
    notes = NOTES if "dense_gpu" not in docs else NOTES.replace(
        "; not run: no GPU was available for these results", "")
    return "\n".join(lines + ([DEEP_NOTES] if "deepcnn" in docs else []) + [notes])
