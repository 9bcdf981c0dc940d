"""Numba threading layers compared on W1, W4 and W6: render() medians, each layer in its own
interpreter (a process chooses its layer once), runs alternating so that load drifts hit both.

    .venv/bin/python bench/threading_layers.py [--rounds 3] [--layers tbb omp workqueue]

Prints one line per round and layer, then each workload's median over rounds and its ratio to
the first layer's, and W1 as a multiple of the accepted answer (timed in the same processes). The layer is chosen with NUMBA_THREADING_LAYER, which gaussheat_gpu honours.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = r"""
import json, statistics, sys, time
import gaussheat_gpu as gh
from gaussheat_gpu import workloads
from gaussheat_gpu._threading import current_layer
result = {}
for wid, calls in (("W1", 400), ("W4", 100), ("W6", 40)):
    case = workloads.build(wid)
    out = gh.render(case.kernels, case.shape, backend="numba", **case.options)  # compile / load the cache
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        gh.render(case.kernels, case.shape, backend="numba", out=out, **case.options)
        times.append(time.perf_counter() - start)
    result[wid] = statistics.median(times)
from bench.baselines import accepted_answer
case = workloads.build("W1")
accepted_answer(case)
times = []
for _ in range(30):
    start = time.perf_counter()
    accepted_answer(case)
    times.append(time.perf_counter() - start)
result["W1 accepted answer"] = statistics.median(times)
result["layer"] = current_layer()
print(json.dumps(result))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", nargs="+", default=["tbb", "omp"])
    args = parser.parse_args()
    medians = {layer: {} for layer in args.layers}
    for round_ in range(args.rounds):
        for layer in args.layers:
            env = dict(os.environ, NUMBA_THREADING_LAYER=layer, PYTHONPATH=ROOT)
            text = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                                  check=True).stdout
            result = json.loads(text.strip().splitlines()[-1])
            print(f"round {round_} {layer:<9} (ran {result.pop('layer')}): "
                  + "  ".join(f"{w} {t * 1e3:.3f} ms" for w, t in result.items()), flush=True)
            for w, t in result.items():
                medians[layer].setdefault(w, []).append(t)
    first = args.layers[0]
    for layer in args.layers:
        w1 = statistics.median(medians[layer]["W1 accepted answer"]) / statistics.median(medians[layer]["W1"])
        print(f"W1 on {layer}: {w1:.0f}x the accepted answer (medians of this run)")
    for layer in args.layers:
        line = "  ".join(f"{w} {statistics.median(ts) * 1e3:.3f} ms ({statistics.median(ts) / statistics.median(medians[first][w]):.2f}x)"
                         for w, ts in medians[layer].items())
        print(f"median {layer:<9}: {line}")


if __name__ == "__main__":
    main()
