"""A target helper's time over its bare render's, both timed in one process in alternating blocks.

The targets "within 1.3x of the bare render" (W8 ``keypoint_heatmaps``, W9 ``center_heatmaps``,
W10 ``density_map``) compare two rows of ``make bench``, timed one after the other: on a machine
whose speed drifts, the two rows can fall in different phases and their ratio moves by tens of
percent. Here the helper and the bare render (numba, fresh outputs, as ``make bench`` times them)
take turns in blocks of ~50 ms, and the ratio is the median of the blocks' ratios, with its
quartiles.

Usage::

    python bench/helper_ratio.py W8,W9,W10 [--rounds 21]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

from gaussheat_gpu import workloads  # noqa: E402

BLOCK_S = 0.05


def block(call) -> float:
    """The median of ~``BLOCK_S`` seconds of calls (at least 5)."""
    times, begin = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - begin < BLOCK_S:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def helper_ratio(workload_id, rounds=21, tiny=False) -> dict:
    """Time ``workload_id``'s helper and bare render in alternating blocks.

    Returns
    -------
    dict
        ``bare_s`` and ``helper_s`` (medians of the blocks), ``ratio`` (median of the blocks'
        helper/bare ratios) and ``quartiles`` of those ratios.
    """
    case = workloads.build(workload_id, tiny)
    if case.helper is None:
        raise ValueError(f"{workload_id} has no target helper")
    calls = {"bare": lambda: case.render(backend="numba"), "helper": lambda: case.run_helper("numba")}
    for call in calls.values():  # compile, and warm up
        for _ in range(3):
            call()
    times = {name: [] for name in calls}
    for r in range(rounds):  # each goes first in every other round
        for name in (("bare", "helper") if r % 2 == 0 else ("helper", "bare")):
            times[name].append(block(calls[name]))
    ratios = [h / b for h, b in zip(times["helper"], times["bare"])]
    return dict(bare_s=statistics.median(times["bare"]), helper_s=statistics.median(times["helper"]),
                ratio=statistics.median(ratios), quartiles=tuple(float(q) for q in np.percentile(ratios, [25, 75])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", help="comma-separated workload ids with a helper, e.g. W8,W10")
    parser.add_argument("--rounds", type=int, default=21, help="blocks of each (default 21)")
    parser.add_argument("--tiny", action="store_true", help="tiny workloads (for trying the script)")
    args = parser.parse_args(argv)
    print(f"{'workload':<10} {'bare':>10} {'helper':>10}  helper/bare  (quartiles)  ({args.rounds} blocks each, us)")
    for workload_id in args.workloads.split(","):
        result = helper_ratio(workload_id, args.rounds, args.tiny)
        q1, q3 = result["quartiles"]
        print(f"{workload_id:<10} {result['bare_s'] * 1e6:10.1f} {result['helper_s'] * 1e6:10.1f}  "
              f"{result['ratio']:11.3f}  ({q1:.3f}-{q3:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
