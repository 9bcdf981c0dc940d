"""G1 on a CUDA GPU: the cupy backend against dense broadcasting in CuPy (and PyTorch), one run.

For a GPU machine with no network and no virtual environment (``make gpu-check`` runs it with the
system python3 and CuPy installed)::

    PYTHONPATH=. python3 bench/gpu_bench.py [--tiny] [--out-dir DIR]

Workloads (gaussheat_gpu.workloads.gpu_workloads): W3, W4 with a 4x batch (W4x4), W6 and a
16384x16384 map of 1,000,000 kernels (G1-map). Kernels are put on the device first (rendering
from device arrays, as a GPU pipeline does). Every row is checked against the float64 NumPy
reference of the same work before it is timed; times are medians of CUDA-event intervals after
warm-up. The floor is a device-to-device copy of an output-sized buffer. Writes
``bench/results/gpu-<device>-<date>.{json,md}`` through the same report code as the CPU suite.

Exits with status 2 and a message saying what is missing when CuPy, a CUDA device or the cupy
backend is not there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

MISSING = 2  # exit status when this machine cannot run G1

# Dense baselines evaluate every kernel on every pixel; on the large cases they are timed on the
# first kernels and scaled by kernel count (marked in the table), like the CPU suite's loops.
DENSE_KERNELS = {"W6": 5_000, "G1-map": 64}
WARMUP_CALLS = 2


def require_gpu():
    """Import CuPy and check the device and the cupy backend; exit with a clear message if not.

    Returns
    -------
    cupy module, device name (str)
    """
    try:
        import cupy
    except ImportError as exc:
        raise SystemExit(_missing(f"CuPy is not importable ({exc}). Install the CuPy wheel for this CUDA "
                                  "version (pip install 'gaussheat_gpu[cuda12]' or '[cuda13]').")) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError and driver errors alike: no usable device
        raise SystemExit(_missing(f"CuPy sees no CUDA device ({exc}).")) from None
    if count == 0:
        raise SystemExit(_missing("CuPy sees no CUDA device."))
    from gaussheat_gpu import backends

    reason = backends.unavailable_reason("cupy")
    if reason:
        raise SystemExit(_missing(f"the gaussheat cupy backend cannot run: {reason}"))
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return cupy, name


def _missing(why):
    print(f"bench/gpu_bench.py: G1 needs a CUDA GPU: {why}", file=sys.stderr)
    return MISSING


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


class EventTimer:
    """Times calls with CUDA events on the stream the measured library uses.

    Events bracket the whole call, host work included (planning, launches), so an interval is the
    wall time of a finished result on the device.
    """

    def __init__(self, library):
        self.library = library
        if library == "torch":
            import torch

            self._event = lambda: torch.cuda.Event(enable_timing=True)
            self._elapsed_s = lambda a, b: a.elapsed_time(b) / 1e3
        else:
            import cupy

            self._event = cupy.cuda.Event
            self._elapsed_s = lambda a, b: cupy.cuda.get_elapsed_time(a, b) / 1e3

    def once(self, call) -> float:
        start, end = self._event(), self._event()
        start.record()
        call()
        end.record()
        end.synchronize()
        return self._elapsed_s(start, end)

    def median(self, call) -> tuple[float, int]:
        """Warm up, then median seconds over the rounds the shared policy picks; ``(median, rounds)``."""
        import statistics

        from bench import harness

        for _ in range(WARMUP_CALLS):
            estimate = self.once(call)
        rounds, iterations = harness.rounds_for(estimate)
        samples = []
        for _ in range(rounds):
            samples.append(self.once(lambda: [call() for _ in range(iterations)]) / iterations)
        return statistics.median(samples), rounds


def _synchronized(call, library):
    if library == "torch":
        import torch

        def run():
            out = call()
            torch.cuda.synchronize()
            return out
    else:
        import cupy

        def run():
            out = call()
            cupy.cuda.get_current_stream().synchronize()
            return out
    return run


def device_floors(case, cupy):
    """Copy and write (fill) of an output-sized float32 buffer on the device (CUDA events)."""
    from bench import report

    nbytes = case.output_bytes()
    src = cupy.ones(case.shape, cupy.float32)
    dst = cupy.empty_like(src)
    timer = EventTimer("cupy")
    copy_s, _ = timer.median(lambda: cupy.copyto(dst, src))
    fill_s, _ = timer.median(lambda: dst.fill(0))
    # Copy moves nbytes in and nbytes out: its rate is 2 * nbytes / time (the bandwidth convention).
    return [report.Floor("device-copy", copy_s, 2 * nbytes, workload=case.id, threads=0),
            report.Floor("device-write", fill_s, nbytes, workload=case.id, threads=0)]


def measure(case, cupy, references, torch=None):
    """Rows (dense baselines, the cupy backend), floors and failures for one workload."""
    from bench import dense, harness, report
    from gaussheat_gpu.workloads import Workload

    rows, failures = [], []
    baselines = [("cupy-dense", dense.cupy_ops(), "cupy")]
    if torch is not None:
        baselines.append(("torch-dense", dense.torch_ops(), "torch"))
    n_timed = min(DENSE_KERNELS.get(case.id, len(case.kernels)), len(case.kernels))
    part = case if n_timed == len(case.kernels) else case.subset(slice(0, n_timed))
    for name, ops, library in baselines:
        call = _synchronized(dense.dense_prepare(part, ops), library)
        error = harness.rel_error(call(), references.get(part))
        if error > harness.TOLERANCE:
            failures.append(f"{case.id} {name}: error {error:.3g} > {harness.TOLERANCE}; not timed")
            continue
        median_s, rounds = EventTimer(library).median(call)
        scale = len(case.kernels) / n_timed
        rows.append(report.Row(case.id, case.title, "baseline", name, median_s * scale, error, scale=scale,
                               timed_part=f"first {n_timed:,} kernels" if scale != 1 else "",
                               measured_median_s=median_s, rounds=rounds))

    on_device = Workload(case.id, case.title, case.kernels.to(cupy), case.shape, dict(case.options))
    call = harness.render_call(on_device, "cupy")
    first_s, out = harness.timed(call)
    error = harness.rel_error(out, references.get(case))
    del out
    if error > harness.TOLERANCE:
        failures.append(f"{case.id} cupy backend: error {error:.3g} > {harness.TOLERANCE}; not timed")
    else:
        median_s, rounds = EventTimer("cupy").median(call)
        rows.append(report.Row(case.id, case.title, "backend", "cupy (float32)", median_s, error,
                               measured_median_s=median_s, rounds=rounds, first_call_s=first_s))
    return rows, device_floors(case, cupy), failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny workloads (seconds; for trying the script)")
    parser.add_argument("--out-dir", default=None, help="where results go (default bench/results)")
    args = parser.parse_args(argv)

    cupy, device = require_gpu()
    from bench import harness, report
    from gaussheat_gpu import workloads

    torch = _torch_cuda()
    references = harness.ReferenceCache()
    rows, floors, failures = [], [], []
    for case in workloads.gpu_workloads(tiny=args.tiny).values():
        start = time.perf_counter()
        case_rows, case_floors, case_failures = measure(case, cupy, references, torch)
        rows += case_rows
        floors += case_floors
        failures += case_failures
        print(f"{case.id}: {len(case_rows)} rows in {time.perf_counter() - start:.1f} s", flush=True)
        cupy.get_default_memory_pool().free_all_blocks()

    info = report.machine_info(device=device)
    info["cupy"] = cupy.__version__
    info["torch"] = torch.__version__ if torch is not None else None
    notes = ["Kernels are on the device before each call; times are CUDA-event medians after warm-up; "
             "x floor: over a device-to-device copy of the output's size (`device-copy`).",
             "torch-dense: " + ("measured." if torch is not None else "torch with CUDA not importable, no row.")]
    results = report.Results(machine=info, rows=rows, floors=floors, relevant_floor="device-copy",
                             command="PYTHONPATH=. python3 bench/gpu_bench.py" + (" --tiny" if args.tiny else ""),
                             failures=failures, notes=notes)
    prefix = report.machine_name(info) + ("-tiny" if args.tiny else "")
    json_path, md_path = report.write_results(results, prefix, args.out_dir or report.RESULTS_DIR)
    print(report.markdown(results))
    print(f"wrote {json_path}\nwrote {md_path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
