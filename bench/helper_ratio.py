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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

from bench.harness import interleaved_ratio  # noqa: E402
from gaussheat_gpu import workloads  # noqa: E402


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
    helper_s, bare_s, ratio, q1, q3 = interleaved_ratio(lambda: case.run_helper("numba"),
                                                        lambda: case.render(backend="numba"), rounds)
    return dict(bare_s=bare_s, helper_s=helper_s, ratio=ratio, quartiles=(q1, q3))


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
