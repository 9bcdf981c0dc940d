"""First-call time in a new process: what a user waits for in a fresh interpreter.

Cold means Numba's on-disk cache is empty (``NUMBA_CACHE_DIR`` points at a new temporary
directory), so the first call compiles; warm means a second process with the same directory, so
the first call loads the compiled code from the cache. The child prints one JSON line.

Child usage (what :func:`measure` runs)::

    python -m bench.first_call WORKLOAD_ID BACKEND [--tiny]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JIT_BACKENDS = ("numba",)  # backends with a compile step and an on-disk cache


def _child(argv) -> int:
    workload_id, backend = argv[0], argv[1]
    tiny = "--tiny" in argv[2:]
    start = time.perf_counter()
    import gaussheat_gpu as gh  # noqa: F401  (the import is part of what a user waits for)
    from gaussheat_gpu import workloads
    import_s = time.perf_counter() - start
    case = workloads.build(workload_id, tiny)  # untimed: building the inputs is the caller's business
    loaded_by_inputs = "numba" in sys.modules  # W10's inputs come from density_map's compiled k-NN
    start = time.perf_counter()
    case.render(backend=backend)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    case.render(backend=backend)
    second_s = time.perf_counter() - start
    print(json.dumps(dict(workload=workload_id, backend=backend, import_s=import_s, first_call_s=first_s,
                          second_call_s=second_s, numba_loaded_by_inputs=loaded_by_inputs)))
    return 0


def _run_child(workload_id, backend, cache_dir, tiny, timeout=300) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "bench.first_call", workload_id, backend] + (["--tiny"] if tiny else [])
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(backend, workload_ids, tiny=False, repeats=3) -> list[dict]:
    """Cold and warm-cache first-call times of ``backend`` on each workload, each in a new process.

    Parameters
    ----------
    backend : str
    workload_ids : iterable of str
    tiny : bool
        Use the tiny workloads (tests).
    repeats : int
        Cold-then-warm pairs per workload, each with a new cache directory: a cold first call
        moves by 10-20% from one process to the next on a shared machine.

    Returns
    -------
    list of dict
        Per workload, medians over the repeats: ``import_s`` (of the cold processes),
        ``cold_first_call_s``, ``warm_first_call_s`` and ``warm_second_call_s`` (a warm call in the
        same process, for scale); ``cold_range_s`` and ``warm_range_s``, the (fastest, slowest)
        first calls; ``repeats``; ``numba_loaded_by_inputs`` (building the inputs, untimed,
        already imported Numba).
    """
    results = []
    for workload_id in workload_ids:
        colds, warms = [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="gaussheat-numba-cache-") as cache_dir:
                colds.append(_run_child(workload_id, backend, cache_dir, tiny))
                warms.append(_run_child(workload_id, backend, cache_dir, tiny))
        cold_s = [c["first_call_s"] for c in colds]
        warm_s = [w["first_call_s"] for w in warms]
        results.append(dict(backend=backend, workload=workload_id,
                            import_s=statistics.median(c["import_s"] for c in colds),
                            cold_first_call_s=statistics.median(cold_s), warm_first_call_s=statistics.median(warm_s),
                            warm_second_call_s=statistics.median(w["second_call_s"] for w in warms),
                            cold_range_s=(min(cold_s), max(cold_s)), warm_range_s=(min(warm_s), max(warm_s)),
                            repeats=repeats, numba_loaded_by_inputs=colds[0]["numba_loaded_by_inputs"]))
    return results


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
