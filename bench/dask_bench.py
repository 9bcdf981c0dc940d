"""D1 (DESIGN.md section 5): chunked rendering on Dask and to Zarr, against the in-memory call.

The map is G1's large map (``workloads.g1_large_map``: 16384 x 16384, 1,000,000 kernels, sigma
1-8, sum of pdfs, t=3). Each case runs in a new Python process, so its peak resident memory is
its own. The compared cases run in ``ROUNDS`` passes (in-memory, dask-1, ..., then again), so that
a burst of other load on a shared machine hits every case alike; a case's time is its best of
``ROUNDS`` x ``REPEATS`` runs, its memory the largest peak. Every case does the same work: render
every pixel, then read every pixel once with a float64 sum.

* ``in-memory``: one ``gaussheat_gpu.render`` call on the Numba backend (all cores), then the sum
  of the map; the call alone is reported beside it, and in a row of its own the same render into
  an ``out=`` buffer rendered into before (no fresh 1 GiB output to fault in), then the sum;
* ``dask-1`` / ``dask-2``: ``gaussheat_gpu.dask.render`` on a ``distributed.LocalCluster`` of one
  worker (one task at a time, Numba on all cores) or two workers (Numba on one thread each:
  ``NUMBA_NUM_THREADS=1`` for the workers only, the caller plans on every core), chunks of 2048^2,
  then ``heat.sum(dtype=float64)``: each chunk is summed where it was rendered (checked against
  the in-memory map's sum); the peak resident memory of each worker process. The time includes
  building the graph (planning and binning the kernels, sending each chunk's kernels to the
  workers); ``-4096`` cases use chunks of 4096^2 (64 MiB of float32, 16 tasks);
* ``dask-1-malloc``: ``dask-1`` with glibc's own memory trimming in the worker: Dask's nanny sets
  ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker (freed memory goes back to the system at once,
  so each chunk's output and temporaries are page-faulted afresh); here that setting is removed
  (``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null``);
* ``dask-2-gather``: the same two workers, the whole map gathered into the caller;
* ``zarr``: ``gaussheat_gpu.dask.to_zarr`` of a 32768 x 32768 map (4 GiB of float32, 4,000,000
  kernels: the same density) on the threaded scheduler, with its pixels per second and peak memory.

Usage::

    python bench/dask_bench.py [--tiny] [--out-dir DIR] [--cases in-memory,dask-1,...]

Writes ``<out-dir>/d1-<machine>-<date>.{json,md}`` (default bench/results) and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CASES = ("in-memory", "dask-1", "dask-2", "dask-1-4096", "dask-2-4096", "dask-1-malloc", "dask-2-gather", "zarr")
REPEATS = 3  # timed runs per process
ROUNDS = 3  # passes over the compared cases, each case in a new process every pass
ROUNDS_CASES = ("in-memory", "dask-1", "dask-2", "dask-1-4096", "dask-2-4096", "dask-1-malloc")
SIZES = {False: dict(size=16384, n_kernels=1_000_000, chunks=2048, big_chunks=4096, zarr_size=32768,
                     zarr_kernels=4_000_000, zarr_chunks=4096),
         True: dict(size=1024, n_kernels=4000, chunks=256, big_chunks=512, zarr_size=2048, zarr_kernels=16000,
                    zarr_chunks=512)}


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _warm_numba():
    import gaussheat_gpu as gh

    gh.render(gh.Kernels([3.0, 5.0], [4.0, 2.0], [1.0, 2.0]), (300, 300), backend="numba", truncate=3.0)
    return _peak_rss()


def _workload(size, n_kernels):
    from gaussheat_gpu import workloads

    return workloads.g1_large_map(size=size, n_kernels=n_kernels)


def run_case(case, tiny):
    """Run one case in this process; return its measurements as a dict."""
    import numpy as np

    import gaussheat_gpu as gh
    import gaussheat_gpu.dask as ghd

    sizes = SIZES[tiny]
    if case == "zarr":
        work = _workload(sizes["zarr_size"], sizes["zarr_kernels"])
        _warm_numba()
        where = Path(tempfile.mkdtemp(prefix="gaussheat-d1-", dir=os.environ.get("GAUSSHEAT_BENCH_TMP")))
        try:
            start = time.perf_counter()
            z = ghd.to_zarr(work.kernels, work.shape, where / "map.zarr", chunks=sizes["zarr_chunks"],
                            backend="numba", **work.options)
            seconds = time.perf_counter() - start
            stored = sum(f.stat().st_size for f in (where / "map.zarr").rglob("*") if f.is_file())
            corner = np.asarray(z[:sizes["zarr_chunks"] // 2, :sizes["zarr_chunks"] // 2])
        finally:
            shutil.rmtree(where, ignore_errors=True)
        pixels = work.shape[0] * work.shape[1]
        return dict(case=case, shape=list(work.shape), kernels=len(work.kernels), chunks=sizes["zarr_chunks"],
                    seconds=seconds, pixels_per_s=pixels / seconds, output_bytes=pixels * 4, stored_bytes=stored,
                    peak_rss=_peak_rss(), corner_max=float(corner.max()))

    work = _workload(sizes["size"], sizes["n_kernels"])
    result = dict(case=case, shape=list(work.shape), kernels=len(work.kernels))
    if case == "in-memory":
        _warm_numba()
        times, call_times, reused_times, cpu_times, reused_cpu_times = [], [], [], [], []
        for _ in range(REPEATS):
            start, cpu = time.perf_counter(), time.process_time()
            heat = gh.render(work.kernels, work.shape, backend="numba", **work.options)
            call_times.append(time.perf_counter() - start)
            checksum = float(heat.sum(dtype=np.float64))
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
            start, cpu = time.perf_counter(), time.process_time()
            gh.render(work.kernels, work.shape, backend="numba", out=heat, **work.options)
            reused_checksum = float(heat.sum(dtype=np.float64))
            reused_times.append(time.perf_counter() - start)
            reused_cpu_times.append(time.process_time() - cpu)
            assert reused_checksum == checksum
            del heat
        return dict(result, seconds=min(times), all_seconds=times, call_seconds=min(call_times),
                    all_call_seconds=call_times, reused_out_seconds=min(reused_times),
                    all_reused_out_seconds=reused_times, cpu_seconds=min(cpu_times), all_cpu_seconds=cpu_times,
                    reused_out_cpu_seconds=min(reused_cpu_times), all_reused_out_cpu_seconds=reused_cpu_times,
                    checksum=checksum, peak_rss=_peak_rss())

    import dask
    import distributed

    if case.endswith("-malloc"):
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    n_workers = 2 if case.startswith("dask-2") else 1
    chunks = sizes["big_chunks"] if case.endswith("-4096") else sizes["chunks"]
    # two single-core workers on two cores; the caller (planning, binning) keeps every core
    env = {"NUMBA_NUM_THREADS": "1"} if n_workers == 2 else {}
    with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, env=env,
                                  dashboard_address=None, worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        warm_rss = client.run(_warm_numba)
        times, graph_times, cpu_times = [], [], []
        for _ in range(REPEATS):
            workers_cpu = sum(client.run(time.process_time).values())
            start, cpu = time.perf_counter(), time.process_time()
            heat = ghd.render(work.kernels, work.shape, chunks=chunks, backend="numba", **work.options)
            built = time.perf_counter()
            if case.endswith("gather"):
                full = heat.compute()
                checksum = float(full.sum(dtype=np.float64))
                del full
            else:
                checksum = float(heat.sum(dtype=np.float64).compute())
            times.append(time.perf_counter() - start)
            graph_times.append(built - start)
            # CPU of the caller (and the scheduler, which LocalCluster runs in it) and of the workers
            cpu_times.append(time.process_time() - cpu + sum(client.run(time.process_time).values()) - workers_cpu)
        peaks = client.run(_peak_rss)
    return dict(result, chunks=chunks, seconds=min(times), all_seconds=times, graph_seconds=min(graph_times),
                all_graph_seconds=graph_times,
                cpu_seconds=min(cpu_times), all_cpu_seconds=cpu_times, checksum=checksum,
                workers=n_workers, worker_rss_after_warmup=sorted(warm_rss.values()),
                worker_peak_rss=sorted(peaks.values()), peak_rss=_peak_rss())


def run_in_new_process(case, tiny):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-case", case] + (["--tiny"] if tiny else [])
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def merge_runs(runs):
    """One result from a case's processes: the best times, the largest peaks, every time kept."""
    if len(runs) == 1:
        return runs[0]
    merged = dict(runs[0])
    for key in [k for k in merged if k.startswith("all_")]:
        merged[key] = [t for r in runs for t in r[key]]
        merged[key[4:]] = min(merged[key])
    for key in ("peak_rss", "worker_peak_rss", "worker_rss_after_warmup"):
        if key in merged:
            merged[key] = (max(r[key] for r in runs) if key == "peak_rss"
                           else [max(column) for column in zip(*(r[key] for r in runs))])
    merged["processes"] = len(runs)
    return merged


def _gib(n):
    return f"{n / 2**30:.2f} GiB"


def _rows(results):
    """The results with the in-memory case split in two rows: fresh output, and a reused ``out=``."""
    for r in results:
        if "reused_out_seconds" in r:
            yield dict(r, label="in-memory", time=f"{r['seconds']:.2f} s (call {r['call_seconds']:.2f} s)")
            yield dict(r, label="in-memory into a reused `out=`", seconds=r["reused_out_seconds"],
                       cpu_seconds=r["reused_out_cpu_seconds"], time=f"{r['reused_out_seconds']:.2f} s")
        else:
            extra = f" (graph {r['graph_seconds']:.2f} s)" if "graph_seconds" in r else ""
            yield dict(r, label=r["case"], time=f"{r['seconds']:.2f} s{extra}")


def table(results, machine, tiny, loads=None):
    """The D1 rows as Markdown (``loads``: the 1-minute load average before and after the run)."""
    base = next((r for r in results if r["case"] == "in-memory"), None)
    if base:  # the faster in-memory run, and the least CPU, of the two ways
        best_seconds = min(base["seconds"], base["reused_out_seconds"])
        best_cpu = min(base["cpu_seconds"], base["reused_out_cpu_seconds"])
    load = f" Load average before {loads[0]:.2f}, after {loads[1]:.2f}." if loads else ""
    lines = [f"# D1: Dask and Zarr, {datetime.date.today()}{' (tiny sizes)' if tiny else ''}", "",
             f"Machine: `{machine}`, {os.cpu_count()} cores. Command: `python bench/dask_bench.py"
             f"{' --tiny' if tiny else ''}`.{load} Best of {ROUNDS} x {REPEATS} runs for the compared cases "
             f"(a new process per pass, passes interleaved), {REPEATS} for the others. Every case renders "
             f"every pixel and reads each once with a float64 sum. `vs in-memory` divides by the faster "
             f"in-memory row (a fresh output, or a reused `out=` with no pages to fault in); CPU: seconds of "
             f"every process (caller, the scheduler in it, workers), divided by the lesser in-memory CPU.", "",
             "| case | map | chunks | time | vs in-memory | CPU | peak memory | check |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for r in _rows(results):
        shape = "x".join(map(str, r["shape"]))
        ratio = cpu = ""
        if base and r["case"] != "zarr":
            ratio = f"{r['seconds'] / best_seconds:.2f}x"
            cpu = f"{r['cpu_seconds']:.2f} s ({r['cpu_seconds'] / best_cpu:.2f}x)"
        if "worker_peak_rss" in r:
            memory = (f"workers {', '.join(_gib(m) for m in r['worker_peak_rss'])} (after warm-up "
                      f"{', '.join(_gib(m) for m in r['worker_rss_after_warmup'])}); caller {_gib(r['peak_rss'])}")
        else:
            memory = _gib(r["peak_rss"])
        if r["case"] == "zarr":
            check = (f"{r['pixels_per_s'] / 1e6:.0f} Mpixel/s; {_gib(r['output_bytes'])} of float32, "
                     f"{_gib(r['stored_bytes'])} stored")
        elif base and r["case"] != "in-memory":
            check = f"sum rel diff {abs(r['checksum'] - base['checksum']) / abs(base['checksum']):.1e}"
        else:
            check = f"sum {r['checksum']:.6g}"
        chunks = "whole map" if r["case"] == "in-memory" else r["chunks"]
        lines.append(f"| {r['label']} | {shape}, {r['kernels']:,} kernels | {chunks} | {r['time']} | {ratio} | {cpu} "
                     f"| {memory} | {check} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes (seconds), to check the script runs")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_case:
        print(json.dumps(run_case(args.run_case, args.tiny)))
        return 0
    from bench import report

    cases = args.cases.split(",")
    load_before = os.getloadavg()[0]
    runs = {case: [] for case in cases}
    for round_ in range(ROUNDS):
        for case in cases:
            if round_ == 0 or case in ROUNDS_CASES:
                print(f"running {case} (pass {round_ + 1}) ...", flush=True)
                runs[case].append(run_in_new_process(case, args.tiny))
    results = [merge_runs(runs[case]) for case in cases]
    info = report.machine_info()
    machine = report.machine_name(info)
    text = table(results, f"{machine}: {info['cpu']}", args.tiny, (load_before, os.getloadavg()[0]))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"d1-{machine}-{datetime.date.today()}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
