"""Time this checkout against another one in alternating processes: a slower machine or slower code?

On a shared machine timings drift by tens of percent over minutes, so two ``make bench`` runs made
apart compare machines as much as code. Here every round runs one process per checkout, one after
the other, and the ratios come from the medians of the rounds (rows over 1.0: this checkout is slower).

Usage::

    python bench/ab.py W1,W6 ../other-checkout [--rounds 4] [--cold]

Warm (default): the median of a workload's warm ``render`` calls (numba), and of its target helper's
where it has one, per process. ``--cold``: the first call in a new process with an empty Numba cache.
Both checkouts run with this interpreter and its packages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
from gaussheat_gpu import workloads

def median_us(call):
    for _ in range(3):
        call()
    start = time.perf_counter()
    call()
    n = max(5, min(400, int(0.4 / max(1e-6, time.perf_counter() - start))))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)

out = {}
for wid in sys.argv[2].split(","):
    case = workloads.build(wid, False)
    if sys.argv[1] == "cold":
        start = time.perf_counter()
        case.render(backend="numba")
        out[wid] = (time.perf_counter() - start) * 1e6
        continue
    buffer = case.render(backend="numba")
    out[wid] = median_us(lambda: case.render(backend="numba", out=buffer))
    if case.helper is not None:
        out[wid + " helper"] = median_us(lambda: case.run_helper("numba"))
print(json.dumps(out))
"""


def run(checkout, mode, workload_ids) -> dict:
    """One process in ``checkout``: ``{row: microseconds}``."""
    with tempfile.TemporaryDirectory(prefix="gaussheat-ab-") as cache_dir:
        env = dict(os.environ, PYTHONPATH=str(checkout))
        if mode == "cold":
            env["NUMBA_CACHE_DIR"] = cache_dir
        done = subprocess.run([sys.executable, "-c", CHILD, mode, workload_ids], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{checkout}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", help="comma-separated workload ids, e.g. W1,W6")
    parser.add_argument("other", type=Path, help="the other checkout's root")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cold", action="store_true", help="first calls with an empty Numba cache")
    args = parser.parse_args(argv)
    checkouts = (ROOT, args.other.resolve())
    mode = "cold" if args.cold else "warm"
    groups = args.workloads.split(",") if args.cold else [args.workloads]  # cold: a new process a workload
    times = {}
    for _ in range(args.rounds):
        for checkout in checkouts:
            for group in groups:
                for row, us in run(checkout, mode, group).items():
                    times.setdefault(row, {}).setdefault(checkout, []).append(us)
    print(f"{'row':<14} {'this':>12} {'other':>12}  this/other  (medians of {args.rounds} rounds, us)")
    for row, by_checkout in times.items():
        this, other = (statistics.median(by_checkout[c]) for c in checkouts)
        print(f"{row:<14} {this:12.1f} {other:12.1f}  {this / other:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
