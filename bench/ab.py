"""Time this checkout against another one in alternating processes: a slower machine or slower code?

On a shared machine timings drift by tens of percent over minutes, so two ``make bench`` runs made
apart compare machines as much as code. Here every round runs one process per checkout, one after
the other, and the ratios come from the medians of the rounds (rows over 1.0: this checkout is slower).

Usage::

    python bench/ab.py W1,W6 ../other-checkout [--rounds 4] [--cold | --interleaved]

Warm (default): the median of a workload's warm ``render`` calls (numba), and of its target helper's
where it has one, per process. ``--cold``: the first call in a new process with an empty Numba cache.
``--interleaved``: warm calls of both checkouts in one process, in alternating blocks of ~50 ms (the
other checkout's package imported under another name); each row's ratio is the median of the
blocks' ratios, with its quartiles, and the two outputs are checked bit for bit first. Drift that
moves one process's median by 10-50% here moves these ratios by a percent or two. Both checkouts
run with this interpreter and its packages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


INTERLEAVED = r"""
import json, sys
import numpy as np
from bench.harness import interleaved_ratio
import gaussheat_gpu.workloads as this_workloads
import gaussheat_other.workloads as other_workloads

out = {}
for wid in sys.argv[1].split(","):
    cases = (this_workloads.build(wid, False), other_workloads.build(wid, False))
    buffers = [case.render(backend="numba") for case in cases]
    if not np.array_equal(buffers[0], buffers[1]):
        raise SystemExit(f"{wid}: the two checkouts' outputs differ")
    this, other, ratio, q1, q3 = interleaved_ratio(lambda: cases[0].render(backend="numba", out=buffers[0]),
                                                   lambda: cases[1].render(backend="numba", out=buffers[1]),
                                                   int(sys.argv[2]))
    out[wid] = [this * 1e6, other * 1e6, ratio, q1, q3]
print(json.dumps(out))
"""


def run_interleaved(other, workload_ids, rounds) -> dict:
    """Both checkouts in one process (the other's package copied as ``gaussheat_other``):
    ``{row: [this us, other us, median ratio, first quartile, third quartile]}``."""
    with tempfile.TemporaryDirectory(prefix="gaussheat-ab-") as folder:
        copy = Path(folder) / "gaussheat_other"
        shutil.copytree(other / "gaussheat_gpu", copy, ignore=shutil.ignore_patterns("__pycache__"))
        for source in copy.rglob("*.py"):  # module paths held in strings (the backend registry)
            source.write_text(source.read_text().replace('"gaussheat_gpu.', '"gaussheat_other.'))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), folder]))
        done = subprocess.run([sys.executable, "-c", INTERLEAVED, workload_ids, str(rounds)], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 4)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--cold", action="store_true", help="first calls with an empty Numba cache")
    modes.add_argument("--interleaved", action="store_true",
                       help="warm calls of both checkouts in one process, alternating (--rounds: blocks, default 21)")
    args = parser.parse_args(argv)
    if args.interleaved:
        rows = run_interleaved(args.other.resolve(), args.workloads, args.rounds or 21)
        print(f"{'row':<14} {'this':>12} {'other':>12}  this/other  (quartiles)  ({args.rounds or 21} blocks each, us)")
        for row, (this, other, ratio, q1, q3) in rows.items():
            print(f"{row:<14} {this:12.1f} {other:12.1f}  {ratio:10.3f}  ({q1:.3f}-{q3:.3f})")
        return 0
    args.rounds = args.rounds or 4
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
