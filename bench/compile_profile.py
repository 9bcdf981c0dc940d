"""Where a cold first call's seconds go: Numba's start-up, each function compiled, LLVM.

One new process with an empty Numba cache renders the workload once (backend ``numba``), as the
cold column of ``make bench``'s first-call table does, but takes the time apart:

- Numba's import, and the registries of implementations its first compile loads (loaded here
  before the render, timed on their own; a render that finds them loaded does not load them again);
- every function compiled, with its *own* seconds (those of the callees compiled inside its
  compile are left out, so the rows add up to the compiling), and how many of them LLVM took
  (optimising and emitting its module; the rest is Numba's typing and lowering in Python);
- LLVM's part of all of it, by stage: per-function passes, module optimisation, machine code;
- Python's garbage collections during the render: how many of each generation, and their seconds
  (``--no-freeze``: without the backend's freezing of older objects while it compiles,
  ``backends/numba/collector.py``, to see what that saves).

Usage::

    python bench/compile_profile.py W1 [--top 15] [--tiny] [--no-freeze]

This reaches into Numba's compiler (``numba.core.compiler.compile_extra``) and code libraries to
time them: a diagnostic for the backend's developers, not a benchmark (timings move with the
machine's load; compare code with ``bench/ab.py --cold``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import collections, json, sys, time
import gc
workload_id, tiny, freeze = sys.argv[1], sys.argv[2] == "tiny", sys.argv[3] == "freeze"
from gaussheat_gpu import workloads
case = workloads.build(workload_id, tiny)
start = time.perf_counter()
import numba
from numba.core import codegen, compiler, dispatcher
from numba.core.registry import cpu_target
imported = time.perf_counter()
cpu_target.target_context.refresh()
refreshed = time.perf_counter()

rows, stack = [], []  # stack: [callees' seconds, LLVM seconds] of each compile in progress
llvm = collections.Counter()
compile_extra = compiler.compile_extra

def timed_compile_extra(*args, **kwargs):
    begin = time.perf_counter()
    stack.append([0.0, 0.0])
    result = compile_extra(*args, **kwargs)
    callees, llvm_s = stack.pop()
    seconds = time.perf_counter() - begin
    if stack:
        stack[-1][0] += seconds
    function = args[2]
    rows.append(dict(function=f"{function.__module__.rsplit('.', 1)[-1]}.{function.__qualname__}",
                     own_s=seconds - callees, llvm_s=llvm_s))
    return result

compiler.compile_extra = dispatcher.compiler.compile_extra = timed_compile_extra

def timing(cls, method, part):
    original = getattr(cls, method, None)
    if original is None:  # another Numba: that part is not reported
        return
    def timed(self, *args, **kwargs):
        begin = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            seconds = time.perf_counter() - begin
            llvm[part] += seconds
            if stack:  # LLVM compiles no Numba function: these seconds are the innermost compile's own
                stack[-1][1] += seconds
    setattr(cls, method, timed)

timing(codegen.CPUCodeLibrary, "_optimize_functions", "function passes")
timing(codegen.CPUCodeLibrary, "_optimize_final_module", "module optimisation")
timing(codegen.JITCodeLibrary, "_finalize_specific", "machine code")
if not freeze:
    from numba.core import event
    from gaussheat_gpu.backends.numba import collector
    event.unregister("numba:compile", collector.LISTENER)
collections, collected_s, began = [0, 0, 0], [0.0, 0.0, 0.0], [0.0]

def on_collection(phase, info):
    if phase == "start":
        began[0] = time.perf_counter()
    else:
        collections[info["generation"]] += 1
        collected_s[info["generation"]] += time.perf_counter() - began[0]

gc.callbacks.append(on_collection)
rendering = time.perf_counter()
case.render(backend="numba")
done = time.perf_counter()
gc.callbacks.remove(on_collection)
print(json.dumps(dict(workload=workload_id, numba_import_s=imported - start, registries_s=refreshed - imported,
                      render_s=done - rendering, first_call_s=done - start, functions=rows, llvm_s=dict(llvm),
                      collections=collections, collections_s=collected_s, freeze=freeze)))
"""


def profile(workload_id, tiny=False, freeze=True) -> dict:
    """The cold first call of ``workload_id`` taken apart, from a new process (see the module docstring).

    Returns
    -------
    dict
        ``numba_import_s``, ``registries_s``, ``render_s`` (the render after those, compiles
        included) and ``first_call_s`` (all three); ``functions``: one dict per function compiled,
        in the order they finished (callees first), with ``function``, ``own_s`` and ``llvm_s`` (LLVM's
        share of it); ``llvm_s``: seconds per LLVM stage, in all; ``collections`` and
        ``collections_s``: the garbage collections during the render and their seconds, per
        generation (0, 1, 2); ``freeze``: whether the backend froze older objects while compiling
        (``freeze=False`` turns that off for this process).
    """
    with tempfile.TemporaryDirectory(prefix="gaussheat-compile-profile-") as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = subprocess.run([sys.executable, "-c", CHILD, workload_id, "tiny" if tiny else "full",
                               "freeze" if freeze else "no-freeze"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"profiling {workload_id} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(result, top=15) -> str:
    """``profile``'s result as text: the start-up, the ``top`` costliest functions, the LLVM stages."""
    functions = result["functions"]
    compiling = sum(f["own_s"] for f in functions)
    lines = [f"{result['workload']}: first call {result['first_call_s']:.2f} s, cold cache",
             f"  Numba import          {result['numba_import_s']:6.3f} s",
             f"  Numba registries      {result['registries_s']:6.3f} s",
             f"  compiling             {compiling:6.3f} s  ({len(functions)} functions)",
             f"  the rest of render    {result['render_s'] - compiling:6.3f} s",
             "", f"  {'function':<40} {'own':>7} {'of it LLVM':>11}"]
    for f in sorted(functions, key=lambda f: -f["own_s"])[:top]:
        lines.append(f"  {f['function']:<40} {f['own_s']:7.3f} {f['llvm_s']:11.3f}")
    if len(functions) > top:
        rest = sorted(functions, key=lambda f: -f["own_s"])[top:]
        lines.append(f"  {f'{len(rest)} more':<40} {sum(f['own_s'] for f in rest):7.3f}")
    lines += ["", "  LLVM, in all of the above: " + ", ".join(f"{part} {seconds:.3f} s"
                                                           for part, seconds in result["llvm_s"].items())]
    counts, seconds = result["collections"], result["collections_s"]
    lines.append(f"  garbage collections during the render ({'with' if result['freeze'] else 'without'} the freeze "
                 f"while compiling): full {counts[2]} taking {seconds[2]:.3f} s, younger {counts[0] + counts[1]} "
                 f"taking {seconds[0] + seconds[1]:.3f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", help="a workload id, e.g. W1")
    parser.add_argument("--top", type=int, default=15, help="functions listed (the costliest)")
    parser.add_argument("--tiny", action="store_true", help="the tiny version of the workload")
    parser.add_argument("--no-freeze", action="store_true",
                        help="compile without freezing older objects out of the garbage collector's way")
    args = parser.parse_args(argv)
    print(report(profile(args.workload, args.tiny, freeze=not args.no_freeze), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
