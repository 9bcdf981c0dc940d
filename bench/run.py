"""Run the CPU benchmark suite and write ``bench/results/<machine>-<date>.{json,md}``.

``make bench`` calls this. It runs the pytest-benchmark suites in bench/ once (one pytest
process, ``--benchmark-json``), then measures first calls of JIT backends in new processes, then
turns pytest-benchmark's JSON into the table (bench/report.py) and prints it.

Usage::

    python bench/run.py [--tiny] [--out-dir DIR] [-k EXPR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

from bench import baselines, first_call, harness, report  # noqa: E402
from gaussheat_gpu import workloads  # noqa: E402


def run_pytest(json_path, junit_path, tiny=False, select=None) -> int:
    """Run the benchmark suites in one pytest process; return pytest's exit status."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if tiny:
        env["GAUSSHEAT_BENCH_TINY"] = "1"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "bench"), "-q", "-p", "no:cacheprovider",
           f"--benchmark-json={json_path}", f"--junitxml={junit_path}", "--benchmark-sort=name",
           "--benchmark-columns=median,rounds,iterations"]
    if select:
        cmd += ["-k", select]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def failures(junit_path) -> list[str]:
    """``test id: message`` for each failed or errored test in a JUnit XML file."""
    try:
        tree = ET.parse(junit_path)
    except (OSError, ET.ParseError):
        return ["pytest wrote no JUnit report (see its output above)"]
    found = []
    for case in tree.iter("testcase"):
        for tag in ("failure", "error"):
            bad = case.find(tag)
            if bad is not None:
                message = (bad.get("message") or "").splitlines()[0][:300] if bad.get("message") else tag
                found.append(f"{case.get('name')}: {message}")
    return found


def rows_and_floors(bench_json) -> tuple[list, list]:
    """Turn pytest-benchmark's JSON (with our ``extra_info``) into report rows and floors."""
    rows, floors = [], []
    for b in bench_json["benchmarks"]:
        info, stats = b["extra_info"], b["stats"]
        if info.get("kind") == "floor":
            is_exp = info["floor"].startswith("exp")
            floors.append(report.Floor(name=info["floor"], median_s=stats["median"],
                                       size=info["elements"] if is_exp else info["bytes"],
                                       unit="elements" if is_exp else "B", workload=info.get("workload", ""),
                                       threads=info["threads"]))
            continue
        rows.append(report.Row(workload=info["workload"], title=info["workload_title"], kind=info["kind"],
                               method=info["method"], median_s=stats["median"] * info["scale"],
                               rel_error=info["rel_error"], scale=info["scale"], timed_part=info["timed_part"],
                               measured_median_s=stats["median"], rounds=stats["rounds"],
                               iterations=stats.get("iterations", 1), first_call_s=info["first_call_s"],
                               note=info["note"], floor=info.get("floor", ""),
                               min_s=stats["min"] * info["scale"]))
    rank = {wid: i for i, wid in enumerate(workloads.CPU_IDS)}
    listed = {(b.workload, b.name): i for i, b in enumerate(baselines.BASELINES)}  # baselines in their module's order
    rows.sort(key=lambda r: (rank.get(r.workload, 99), r.kind != "baseline", listed.get((r.workload, r.method), 0),
                             r.method))
    fastest = {}  # each floor was measured at several thread counts: the floor is the fastest
    for f in floors:
        key = (f.name, f.workload)
        if key not in fastest or f.median_s < fastest[key].median_s:
            fastest[key] = f
    floors = sorted(fastest.values(), key=lambda f: (f.name.startswith("exp"), rank.get(f.workload, 99), f.name))
    return rows, floors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny workloads (seconds; for trying the runner)")
    parser.add_argument("--out-dir", default=str(report.RESULTS_DIR), help="where results go (default bench/results)")
    parser.add_argument("-k", dest="select", help="pytest -k expression: run part of the suite")
    parser.add_argument("--no-first-call", action="store_true", help="skip the new-process first-call measurements")
    args = parser.parse_args(argv)

    load_start = os.getloadavg()[0]  # other processes on a small machine move every timing: say so
    with tempfile.TemporaryDirectory() as tmp:
        json_path, junit_path = Path(tmp) / "bench.json", Path(tmp) / "junit.xml"
        status = run_pytest(json_path, junit_path, tiny=args.tiny, select=args.select)
        if not json_path.exists():
            print(f"pytest exited with status {status} and wrote no benchmark JSON", file=sys.stderr)
            return status or 1
        bench_json = json.loads(json_path.read_text())
        failed = failures(junit_path)

    rows, floors = rows_and_floors(bench_json)
    calls = []
    if not args.no_first_call:
        workload_ids = list(dict.fromkeys(r.workload for r in rows))
        for backend in harness.backend_names():
            if backend in first_call.JIT_BACKENDS:
                print(f"first calls of {backend} in new processes (cold and warm cache) ...", flush=True)
                calls += first_call.measure(backend, workload_ids, tiny=args.tiny, repeats=1 if args.tiny else 3)

    info = report.machine_info(threads=harness.floor_threads())
    info["load_average"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    command = "make bench" + (" (tiny workloads)" if args.tiny else "")
    notes = [f"Backends measured: {', '.join(harness.backend_names() + harness.backend_names(device=True))} "
             f"(gh.available_backends() = {harness.backends.available()}).",
             f"1-minute load average {load_start:.2f} when the run started and {os.getloadavg()[0]:.2f} when it "
             f"ended, on {info['cores']} cores (the run itself adds up to {info['cores']}); other processes "
             f"sharing the cores slow multi-threaded rows most."]
    results = report.Results(machine=info, rows=rows, floors=floors, relevant_floor="write-fresh",
                             command=command, first_calls=calls, failures=failed, notes=notes, raw=bench_json)
    prefix = report.machine_name(info) + ("-tiny" if args.tiny else "")
    json_out, md_out = report.write_results(results, prefix, args.out_dir)
    print()
    print(report.markdown(results))
    print(f"wrote {json_out.relative_to(ROOT) if json_out.is_relative_to(ROOT) else json_out}")
    print(f"wrote {md_out.relative_to(ROOT) if md_out.is_relative_to(ROOT) else md_out}")
    return 0 if status == 0 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
