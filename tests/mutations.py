"""Plant one-line bugs in a copy of the package, one at a time, and check that the tests catch each.

    .venv/bin/python tests/mutations.py [--full] [--only NAME ...] [--list]

For every mutation: copy the repository's package, tests and data files to a temporary folder
(keeping file times, so Numba's cache stays valid for the files left alone), replace one line,
and run pytest there: first the tests that target the bug, then, if they all pass, the whole
suite. A bug is caught when pytest fails. ``--full`` runs the whole suite for every mutation.
The unmutated copy is checked first: its targeted tests must pass. Exit status 1 if a bug
survived. Not collected by pytest (the name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("gaussheat_gpu", "tests", "kernels", "bench", "docs", ".ci", "pyproject.toml", "README.md")


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple
    why: str


MUTATIONS = [
    Mutation("dense-when-accumulating", "gaussheat_gpu/backends/numba/dense.py",
             "if combine != SUM or plan.accumulate or not plan.axis_aligned", "if combine != SUM or not plan.axis_aligned",
             ("tests/test_paths.py", "-k", "dense"), "the Numba dense path overwrites a prefilled out"),
    Mutation("dense-for-batches", "gaussheat_gpu/backends/numba/dense.py",
             "not plan.axis_aligned or grid.n_images != 1:", "not plan.axis_aligned:",
             ("tests/test_paths.py", "-k", "dense"), "the dense path renders a batch into its first image"),
    Mutation("numpy-first-strip-only", "gaussheat_gpu/backends/numpy_backend.py",
             "    for ra, rb in strips:\n        first, second", "    for ra, rb in strips[:1]:\n        first, second",
             ("tests/test_paths.py", "-k", "large"), "NumPy's large windows render their first strip only"),
    Mutation("accumulate-type-unchecked", "gaussheat_gpu/api.py",
             "if not isinstance(accumulate, (bool, np.bool_)):", "if False:",
             ("tests/test_hardening.py", "-k", "accumulate"), "accumulate='yes' accepted"),
    Mutation("env-backend-not-folded", "gaussheat_gpu/backends/__init__.py",
             'name = _fold(os.environ.get(ENV_VAR, ""), f"environment variable {ENV_VAR}") or "auto"',
             'name = os.environ.get(ENV_VAR, "").strip() or "auto"',
             ("tests/test_hardening.py", "-k", "case_folded"), "GAUSSHEAT_BACKEND=NUMPY refused"),
    Mutation("demo-saves-zeros", "gaussheat_gpu/cli.py", "_save_png(heat, output)", "_save_png(heat * 0, output)",
             ("tests/test_cli_errors.py", "-k", "demo"), "the demo's PNG shows an all-zero heatmap"),
    Mutation("box-a-pixel-wider", "gaussheat_gpu/planning.py", "np.ceil(centre - radius)", "np.floor(centre - radius)",
             ("tests/test_equality.py", "tests/test_semantics.py"), "support boxes one pixel too wide on one side"),
    Mutation("no-lattice-minimum", "gaussheat_gpu/planning.py", "LATTICE_GAP = 600.0", "LATTICE_GAP = math.inf",
             ("tests/test_hardening.py", "-k", "thin"), "thin rotated count kernels sum to 0 or NaN"),
    Mutation("out-dtype-unchecked", "gaussheat_gpu/api.py",
             "        if resolved not in _DTYPES:\n            raise ValueError(f\"out has dtype",
             "        if False:\n            raise ValueError(f\"out has dtype",
             ("tests/test_hardening.py", "-k", "dtype"), "an int32 or float16 out= is written"),
    Mutation("kernels-writable", "gaussheat_gpu/kernel_set.py", "arr.flags.writeable = False", "arr.flags.writeable = True",
             ("tests/test_hardening.py", "-k", "read_only"), "k.sigma_x[0] = -1 bypasses validation"),
    Mutation("range-check-skipped", "gaussheat_gpu/planning.py", "if extremes is None or _ranges_hold(",
             "if True or _ranges_hold(", ("tests/test_hardening.py", "-k", "refused or limit"),
             "sigma 1e155 reaches the planner (NaN boxes)"),
    Mutation("por-as-sum", "gaussheat_gpu/backends/numpy_backend.py", "        window += values * (1 - window)",
             "        window += values", ("tests/test_equality.py", "-k", "many_overlapping"),
             "NumPy's large windows add under por"),
    Mutation("band-last-row-dropped", "gaussheat_gpu/backends/numba/tiles.py",
             "r_last = smaller(boxes[k, B_ROW1], band_last)", "r_last = smaller(boxes[k, B_ROW1], band_last - 1)",
             ("tests/test_paths.py", "-k", "bands"), "each band's last row misses its kernels"),
    Mutation("no-fork-fallback", "gaussheat_gpu/backends/__init__.py",
             'if name == "numba" and _threading.FORKED and _threading.fork_unsafe_reason():', "if False:",
             ("tests/test_fork.py", "-k", "fall_back"), "children forked after GNU OpenMP abort"),
    Mutation("tbb-not-preferred", "gaussheat_gpu/_threading.py", '    if _state["tried"]:\n        return _state["loaded"]',
             "    if True:\n        return None", ("tests/test_fork.py", "-k", "pool"),
             "Numba stays on OpenMP: forked pools fall back"),
    Mutation("masks-ignored", "gaussheat_gpu/kernel_set.py", "    if isinstance(value, np.ma.MaskedArray):",
             "    if False:", ("tests/test_hardening.py", "-k", "masked"), "masked values render"),
    Mutation("pickle-truncates", "gaussheat_gpu/kernel_set.py", "return _restore, (self._arrays, self._bounds)",
             "return _restore, ({k: v[:1] for k, v in self._arrays.items()}, self._bounds)",
             ("tests/test_hardening.py", "-k", "pickle"), "an unpickled Kernels loses kernels"),
    Mutation("chunks-not-packed", "gaussheat_gpu/backends/numba/planning.py", "        if total != lo:",
             "        if False:", ("tests/test_paths.py", "-k", "chunked"),
             "the chunked planner leaves gaps where kernels were dropped"),
    Mutation("scratch-not-counted", "gaussheat_gpu/api.py", "output_bytes + call_bytes(plan),\n",
             "output_bytes,\n", ("tests/test_hardening.py", "-k", "scratch"),
             "the memory check counts the output only"),
    Mutation("rotated-count-unshifted", "gaussheat_gpu/planning.py", "shift_col = xp.where(aligned, shift_col, q_min)",
             "shift_col = xp.where(aligned, shift_col, 0.0)", ("tests/test_hardening.py", "-k", "thin"),
             "far rotated count kernels underflow"),
    Mutation("workspace-too-small", "gaussheat_gpu/_workspace.py", "if buffer is None or buffer.nbytes < nbytes:",
             "if buffer is None:", ("tests/test_workspace.py",), "a reused buffer is too small"),
]


def copy_tree(destination: Path):
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, copy_function=shutil.copy2,
                            ignore=shutil.ignore_patterns(".hypothesis", ".pytest_cache"))
        elif source.exists():
            shutil.copy2(source, destination / name)


def pytest(folder: Path, args, timeout=1800):
    env = dict(os.environ, PYTHONPATH=str(folder), PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    failed = next((line.split()[1] for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))), "")
    return result.returncode, time.perf_counter() - start, failed, result.stdout[-2000:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run the whole suite for every mutation")
    parser.add_argument("--only", nargs="+", help="names of the mutations to run")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:<26} {m.path}: {m.why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="gaussheat-mutations-") as tmp:
        folder = Path(tmp)
        copy_tree(folder)
        where = subprocess.run([sys.executable, "-c", "import gaussheat_gpu; print(gaussheat_gpu.__file__)"], cwd=folder,
                               env=dict(os.environ, PYTHONPATH=str(folder)), capture_output=True, text=True, check=True)
        assert where.stdout.strip().startswith(str(folder)), f"the copy is not the package imported: {where.stdout}"
        baseline = sorted({t for m in chosen for t in m.tests if t.startswith("tests/")})
        code, seconds, failed, tail = pytest(folder, baseline)
        if code != 0:
            print(f"the unmutated copy fails its targeted tests ({failed}):\n{tail}")
            return 2
        print(f"unmutated copy: targeted tests pass ({seconds:.0f} s)")
        survivors = []
        full_suite_passes = False
        for m in chosen:
            path = folder / m.path
            original = path.read_text()
            assert original.count(m.old) == 1, f"{m.name}: the line to mutate occurs {original.count(m.old)} times"
            stages = [("full", ())] if args.full else [("targeted", m.tests), ("full", ())]
            try:
                for stage, tests in stages:
                    if stage == "full" and not full_suite_passes:  # once, unmutated: a failure must be the bug's
                        path.write_text(original)
                        full_code, full_seconds, full_failed, tail = pytest(folder, ())
                        if full_code != 0:
                            print(f"the unmutated copy fails the whole suite ({full_failed}):\n{tail}")
                            return 2
                        print(f"unmutated copy: the whole suite passes ({full_seconds:.0f} s)")
                        full_suite_passes = True
                    path.write_text(original.replace(m.old, m.new))
                    code, seconds, failed, _ = pytest(folder, tests)
                    if code != 0:
                        break
            finally:
                path.write_text(original)
                os.utime(path, ns=((ROOT / m.path).stat().st_atime_ns, (ROOT / m.path).stat().st_mtime_ns))
            verdict = f"caught by {stage} run: {failed}" if code != 0 else "SURVIVED"
            print(f"{m.name:<26} {seconds:6.1f} s  {verdict}   ({m.why})", flush=True)
            if code == 0:
                survivors.append(m.name)
        print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} planted bugs caught"
              + (f"; survived: {', '.join(survivors)}" if survivors else ""))
        return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
