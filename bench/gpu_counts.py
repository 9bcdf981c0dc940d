"""What one ``render`` call costs on a GPU, counted without one.

For each GPU workload the cupy backend runs on the host against a counting stand-in for CuPy
(tests/cuda_harness.py: the real device code compiled by g++, CuPy's calls counted), with the kernels
already on the "device" as a GPU pipeline has them; the render kernel variant the call picks is
compiled by NVRTC for the target architecture and its per-visit loop counted in SASS (nvdisasm)::

    python bench/gpu_counts.py [--json] [--arch sm_90] [--out-dir bench/results]

Columns: the path the call takes, kernel launches (CuPy calls that start device work; CuPy's sort
is one call here, several CUB passes on the device), host synchronisations, host-to-device copies
when the kernels start on the host instead, tile-list entries, and for the render kernel's
in-box visit (float32 output): SASS instructions, float64 instructions, registers.

Needs g++ (or clang++), the nvidia-cuda-nvrtc and nvidia-cuda-nvdisasm wheels (the dev extra);
no GPU, no CuPy. These are counts, not timings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402

import cuda_harness as harness  # noqa: E402
from gaussheat_gpu import cuda_sources, workloads  # noqa: E402
from gaussheat_gpu.planning import COMBINE_CODES, NORMALIZE_CODES  # noqa: E402

WORKLOADS = ("W1", "W3", "W4x4", "W5", "W6", "G1-map")
# Rendering every pixel of the largest maps on the host would take minutes and count nothing more:
# there the render kernel's launch is counted but not run.
RUN_RENDER_UP_TO = 2**24


def visit_counts(nvrtc, nvdisasm, defines, arch):
    """(SASS instructions, float64 instructions, registers) of the render kernel's visit loop, from one
    compilation (ptxas reports the registers, the cubin holds the loop)."""
    source = harness.operation_module(cuda_sources.RENDER_TILES, "float32", defines=defines)
    ok, log, cubin = nvrtc.compile(source, [f"--gpu-architecture={arch}", *harness.CUPY_OPTIONS, "-Xptxas", "-v"],
                                   cubin=True)
    if not ok:
        raise RuntimeError(f"NVRTC cannot compile {cuda_sources.RENDER_TILES} with {defines}:\n{log}")
    loop = harness.visit_loop(harness.sass_lines(nvdisasm, cubin))
    registers = max(int(n) for n in re.findall(r"Used (\d+) registers", log))
    return len(loop), sum(1 for line in loop if harness.FP64_OPCODES.search(line)), registers


def measure(arch="sm_90"):
    """One row per workload (dicts), counted as the module docstring says."""
    nvrtc_path, nvdisasm = harness.find_nvrtc(), harness.find_nvdisasm()
    if nvrtc_path is None or nvdisasm is None:
        raise SystemExit("bench/gpu_counts.py needs the nvidia-cuda-nvrtc and nvidia-cuda-nvdisasm wheels "
                         "(pip install -e '.[dev]')")
    nvrtc = harness.NVRTC(nvrtc_path)
    visits = {}  # render variant -> visit_counts: each variant compiled once

    def visit(defines):
        key = tuple(sorted(defines.items()))
        if key not in visits:
            visits[key] = visit_counts(nvrtc, nvdisasm, defines, arch)
        return visits[key]

    with tempfile.TemporaryDirectory(prefix="gaussheat_counts_") as folder:  # the host builds of the device code
        compiler = harness.host_compilers(Path(folder))["ieee"]
        return [_count(workload, compiler, visit) for workload in WORKLOADS]


def _count(workload, compiler, visit):
    """The row of ``workload`` (see :func:`measure`); ``visit(defines)`` gives the render variant's visit counts."""
    case = workloads.build(workload)
    pixels = int(np.prod(case.shape))
    skip = () if pixels <= RUN_RENDER_UP_TO else ("gaussheat_render_tiles",)
    fake = harness.counting_cupy(compiler, skip_kernels=skip)
    backend = harness.load_cupy_backend(fake)
    plan, counts, _ = harness.counted_render(backend, fake, case, case.kernels.to(fake))
    row = {"workload": workload, "shape": list(case.shape), "kernels": len(case.kernels), "path": plan.path,
           "launches": counts.launches, "host_syncs": counts.syncs,
           "launched": [what for kind, what in counts.events if kind == "launch"],
           "tile_entries": plan.n_entries if plan.path == "tiles" else 0}
    _, host_counts, _ = harness.counted_render(backend, fake, case, case.kernels)
    row["uploads_from_host_kernels"] = host_counts.uploads
    if plan.path == "tiles":
        defines = cuda_sources.render_defines(COMBINE_CODES[plan.combine], NORMALIZE_CODES[plan.normalize], plan.eval64)
        row["render_variant"] = cuda_sources.kernel_name(cuda_sources.RENDER_TILES, "float32", defines)
        row["sass_per_visit"], row["fp64_per_visit"], row["registers"] = visit(defines)
    return row


def markdown(rows, arch):
    lines = [f"# GPU path, counted without a GPU ({arch}, float32 output, kernels on the device)", "",
             "| workload | path | launches | host syncs | uploads (host kernels) | tile entries | "
             "SASS / visit | FP64 / visit | registers |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['path']} | {r['launches']} | {r['host_syncs']} | "
                     f"{r['uploads_from_host_kernels']} | {r['tile_entries']:,} | {r.get('sass_per_visit', '-')} | "
                     f"{r.get('fp64_per_visit', '-')} | {r.get('registers', '-')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--arch", default="sm_90", help="architecture the render kernel is counted for")
    parser.add_argument("--out-dir", type=Path, help="also write gpu-counts-<arch>-<date>.{json,md} there")
    args = parser.parse_args(argv)
    rows = measure(args.arch)
    table = markdown(rows, args.arch)
    print(json.dumps(rows, indent=1) if args.json else table)
    if args.out_dir:
        stem = args.out_dir / f"gpu-counts-{args.arch}-{datetime.date.today().isoformat()}"
        stem.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
        stem.with_suffix(".md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
