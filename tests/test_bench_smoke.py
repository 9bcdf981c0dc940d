"""Keeps the benchmark suite runnable: one tiny round of each workload, backend and baseline.

Nothing is timed here. Each baseline must agree with the float64 reference of the same work (the
check the benchmark makes before timing it), each available host backend must render each tiny
workload within the float32 contract, and the report, README and GPU-script plumbing must work.
"""

import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a package at the repository root, not installed
    sys.path.insert(0, str(ROOT))

from bench import (baselines, compile_profile, dense, first_call, harness, helper_ratio, readme_table,  # noqa: E402
                   report)
from gaussheat_gpu import workloads  # noqa: E402

TINY = workloads.cpu_workloads(tiny=True)
# Timed parts small enough for a test: the seed loop on an 8x8 crop, CSRNet on 10 heads.
PARTS = {"W1-seed-loop": 8, "W5-csrnet-filter": 10, "W10-csrnet-adaptive": 10}


@pytest.fixture(scope="module")
def references():
    return harness.ReferenceCache()


def test_full_size_workloads_are_the_designed_cases():
    expected = {  # DESIGN.md section 5: shape, kernels, combine, normalize, truncate
        "W1": ((512, 512), 2, "por", "pdf", None),
        "W2": ((100, 100), 2, "sum", "pdf", None),
        "W3": ((4096, 4096), 16, "sum", "pdf", None),
        "W4": ((64, 256, 256), 64 * 17, "max", "peak", 3.0),
        "W5": ((768, 1024), 2000, "sum", "count", 3.0),
        "W6": ((1024, 1024), 100_000, "sum", "pdf", 3.0),
        "W4x4": ((256, 256, 256), 256 * 17, "max", "peak", 3.0),
        "G1-map": ((16384, 16384), 1_000_000, "sum", "pdf", 3.0),
    }
    cases = {**workloads.cpu_workloads(), **workloads.gpu_workloads()}
    for wid, (shape, n, combine, normalize, truncate) in expected.items():
        case = cases[wid]
        assert (case.shape, len(case.kernels)) == (shape, n), wid
        assert (case.options["combine"], case.options["normalize"], case.options["truncate"]) == \
            (combine, normalize, truncate), wid
    assert cases["W2"].options["extent"] == (-3.0, 3.0, -3.0, 3.0)
    assert np.any(cases["W6"].kernels.theta != 0) and np.any(cases["W3"].kernels.sigma_x != cases["W3"].kernels.sigma_y)
    assert np.any(cases["W4"].kernels.x % 1 != 0)  # sub-pixel keypoints
    # Fixed seeds: building twice gives the same kernels.
    assert np.array_equal(workloads.w6_splats(n_splats=50).kernels.x, workloads.w6_splats(n_splats=50).kernels.x)


@pytest.mark.parametrize("backend", harness.backend_names())
@pytest.mark.parametrize("workload_id", workloads.CPU_IDS)
def test_backend_renders_tiny_workload(references, workload_id, backend):
    case = TINY[workload_id]
    out = harness.render_call(case, backend)()
    assert out.shape == case.shape and out.dtype == np.float32
    assert harness.rel_error(out, references.get(case)) <= harness.TOLERANCE


@pytest.mark.parametrize("backend", harness.backend_names())
@pytest.mark.parametrize("workload_id", workloads.TARGET_IDS)
def test_target_helper_renders_its_workloads_kernels(references, workload_id, backend):
    # The helper row of bench/test_targets.py: the helper from annotations gives the bare render's pixels.
    case = TINY[workload_id]
    out = harness.helper_call(case, backend)()
    assert out.shape == case.shape and out.dtype == np.float32
    assert harness.rel_error(out, references.get(case)) <= harness.TOLERANCE
    np.testing.assert_array_equal(out, harness.render_call(case, backend)())


def test_device_calls_return_after_the_stream_is_synchronised(monkeypatch):
    # A stand-in for CuPy records the order: each call's work, then the stream's synchronisation.
    events = []
    stream = types.SimpleNamespace(synchronize=lambda: events.append("sync"))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        cuda=types.SimpleNamespace(get_current_stream=lambda: stream)))
    case = types.SimpleNamespace(render=lambda **options: events.append(("render", options)) or "image",
                                 run_helper=lambda **options: events.append(("helper", options)) or "helped")
    assert harness.render_call(case, "cupy", out="out")() == "image"
    assert harness.helper_call(case, "cupy", dtype="float64")() == "helped"
    assert events == [("render", {"backend": "cupy", "dtype": "float32", "out": "out"}), "sync",
                      ("helper", {"backend": "cupy", "dtype": "float64"}), "sync"]
    assert harness.render_call(case, "numpy")() == "image" and events[-1] != "sync"  # host calls: no stream


def test_gpu_counts_compiles_each_render_variant_once_and_cleans_up(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))  # gpu_counts runs the device code through tests/cuda_harness.py
    import cuda_harness

    from bench import gpu_counts

    if cuda_harness.find_nvrtc() is None or cuda_harness.find_nvdisasm() is None or \
            not cuda_harness.host_compilers(tmp_path):
        pytest.skip("needs NVRTC, nvdisasm and a host C++ compiler (the dev extra)")
    compiled = []
    compile_ = cuda_harness.NVRTC.compile
    monkeypatch.setattr(cuda_harness.NVRTC, "compile", lambda self, *a, **k: compiled.append(1) or compile_(self, *a, **k))
    monkeypatch.setattr(gpu_counts, "WORKLOADS", ("W1", "W1"))  # one render variant, two rows
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    first, second = gpu_counts.measure()
    assert first == second and first["path"] == "tiles" and first["sass_per_visit"] > 0 and first["registers"] > 0
    assert len(compiled) == 1
    assert not any((tmp_path / "temp").iterdir())  # the host builds are gone


@pytest.mark.parametrize("baseline", baselines.BASELINES, ids=lambda b: b.id)
def test_baseline_agrees_with_reference(references, baseline):
    prepared = baselines.prepare(baseline, TINY[baseline.workload], references, PARTS.get(baseline.id))
    error, note = baselines.check(prepared, prepared.call())
    assert error <= harness.TOLERANCE, note
    assert prepared.scale >= 1


def test_seed_loop_crop_matches_seed_formula():
    case = workloads.seed_workload()
    crop = workloads.seed_loop(case, rows=4, cols=4)
    rows, cols = workloads.centre_crop(case.shape, 4, 4)
    y, x = np.mgrid[rows, cols]
    p1 = np.exp(-((x - 256) ** 2 + (y - 256) ** 2) / (2 * 20 ** 2)) / (2 * np.pi * 400)
    p2 = np.exp(-((x - 260) ** 2 / (2 * 40 ** 2) + (y - 250) ** 2 / (2 * 80 ** 2))) / (2 * np.pi * 40 * 80)
    np.testing.assert_allclose(crop, 1 - (1 - p1) * (1 - p2), rtol=1e-12)


def test_csrnet_check_uses_only_comparable_heads():
    case = workloads.w5_crowd()
    heads = baselines.csrnet_comparable(case)
    sigma = case.kernels.sigma_x[heads]
    assert 0 < len(heads) < len(case.kernels)
    assert np.array_equal((3 * sigma + 0.5).astype(int), np.floor(3 * sigma).astype(int))


@pytest.mark.parametrize("workload_id", workloads.GPU_IDS)
def test_dense_broadcast_baseline_on_host(references, workload_id):
    # The G1 baseline's code, run with NumPy: small blocks force the image and kernel chunking.
    case = workloads.gpu_workloads(tiny=True)[workload_id]
    out = dense.dense_broadcast(case, dense.numpy_ops(), max_block=4 * 48 * 48)
    assert out.shape == case.shape
    assert harness.rel_error(out, references.get(case)) <= harness.TOLERANCE


def test_rounds_policy():
    assert harness.rounds_for(10.0) == (1, 1)
    rounds, iterations = harness.rounds_for(1e-5)
    assert iterations * 1e-5 >= harness.MIN_ROUND_S and harness.MIN_ROUNDS <= rounds <= harness.MAX_ROUNDS


def test_floor_calls_write_what_they_claim():
    shape = (64, 64)
    assert harness.write_fresh_call(shape)().shape == shape
    harness.write_reused_call((1024, 2048))()  # large enough to be split across threads
    harness.exp_call(n=1 << 20)()


def test_report_and_readme_section(tmp_path, references):
    case = TINY["W4"]
    rows = [report.Row(case.id, case.title, "baseline", "centernet-loop", 2e-3, 3e-8),
            report.Row(case.id, case.title, "backend", "numpy (float32)", 1e-3, 3e-8, first_call_s=4e-3)]
    floors = [report.Floor("write-fresh", 1e-5, case.output_bytes(), workload=case.id),
              report.Floor("exp-float32", 1e-3, 1 << 20, unit="elements")]
    results = report.Results(machine=report.machine_info(), rows=rows, floors=floors,
                             relevant_floor="write-fresh", command="make bench", date="2000-01-01")
    json_path, md_path = report.write_results(results, "test-machine", tmp_path)
    text = md_path.read_text()
    assert "2x vs centernet-loop" in text and "| 100 |" in text  # speed-up, multiple of the floor
    # Other tables in the results folder (D1, GPU counts: lists of rows) are not CPU results.
    (tmp_path / "d1-test-machine-2100-01-01.json").write_text('[{"case": "in-memory"}]')
    (tmp_path / "gpu-counts-sm_90-2100-01-01.json").write_text('[{"workload": "W1"}]')
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_table.START}\nold\n{readme_table.END}\nrest\n")
    assert readme_table.main(["--readme", str(readme), "--results-dir", str(tmp_path)]) == 0
    updated = readme.read_text()
    assert "old" not in updated and "2x vs centernet-loop" in updated and updated.endswith("rest\n")
    assert report.Results.from_dict(__import__("json").loads(json_path.read_text())).rows == rows


def test_first_call_in_new_process():
    (result,) = first_call.measure("numpy", ["W2"], tiny=True, repeats=2)
    assert result["repeats"] == 2
    for kind in ("cold", "warm"):
        fastest, slowest = result[f"{kind}_range_s"]
        assert 0 < fastest <= result[f"{kind}_first_call_s"] <= slowest
    table = report.first_call_table(report.Results({}, [], [], {}, "test", first_calls=[result]))
    assert "Medians of 2 new processes" in table and f"({report.fmt_seconds(fastest)}-" in table


def test_compile_profile_takes_a_cold_first_call_apart():
    result = compile_profile.profile("W1", tiny=True)
    names = [f["function"] for f in result["functions"]]
    # The seed's path: the planner's loop and the band renderer, each compiled once, callees first.
    assert names.count("planning.plan_chunk") == 1 and names.count("tiles.render_task") == 1
    assert names.index("bands.set_pair_rows") < names.index("tiles.render_task")
    assert "tiles.bin_kernels" not in names and "rotated.prepare_rotated" not in names
    compiling = sum(f["own_s"] for f in result["functions"])
    assert 0 < compiling <= result["render_s"] <= result["first_call_s"]
    assert all(0 <= f["llvm_s"] < f["own_s"] for f in result["functions"])
    assert 0 < sum(result["llvm_s"].values()) == pytest.approx(sum(f["llvm_s"] for f in result["functions"]))
    assert sum(result["llvm_s"].values()) < compiling
    text = compile_profile.report(result, top=3)
    assert f"({len(names)} functions)" in text and "tiles.render_task" in text and f"{len(names) - 3} more" in text
    assert result["freeze"] and len(result["collections"]) == len(result["collections_s"]) == 3
    assert sum(result["collections"]) > 0 and 0 <= sum(result["collections_s"]) < result["render_s"]
    assert "with the freeze" in text
    unfrozen = compile_profile.profile("W1", tiny=True, freeze=False)
    assert not unfrozen["freeze"] and "without the freeze" in compile_profile.report(unfrozen)


def test_gpu_bench_fails_clearly_without_a_gpu():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed: make gpu-check runs the GPU script itself")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_bench.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "G1 needs a CUDA GPU" in done.stderr and "CuPy" in done.stderr


def _numpy_standing_in_for_cupy():
    """A module with the few CuPy names bench/gpu_bench.py uses, backed by NumPy and perf_counter."""
    import time
    import types

    class Event:
        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    class Stream:
        def synchronize(self):
            pass

    class Pool:
        def free_all_blocks(self):
            pass

    cuda = types.SimpleNamespace(
        Event=Event, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3, get_current_stream=Stream,
        Device=lambda: types.SimpleNamespace(id=0),
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"Stand-in"}))
    fake = types.ModuleType("cupy")
    fake.__dict__.update(asarray=np.asarray, asnumpy=np.asarray, zeros=np.zeros, ones=np.ones, empty_like=np.empty_like,
                         exp=np.exp, maximum=np.maximum, copyto=np.copyto, float32=np.float32, ndarray=np.ndarray,
                         cuda=cuda, __version__="stand-in", get_default_memory_pool=Pool)
    return fake


def test_gpu_bench_flow_with_a_stand_in_device(monkeypatch, tmp_path):
    # No GPU here: run the GPU script's whole flow with NumPy standing in for CuPy and the NumPy
    # backend for the cupy backend, so a GPU session does not find its bugs first.
    from bench import gpu_bench
    from gaussheat_gpu import backends
    from gaussheat_gpu.backends import numpy_backend

    monkeypatch.setitem(sys.modules, "cupy", _numpy_standing_in_for_cupy())
    monkeypatch.setitem(backends._loaded, "cupy", numpy_backend)
    monkeypatch.setattr(backends, "unavailable_reason", lambda name: None)
    monkeypatch.setattr(gpu_bench, "_torch_cuda", lambda: None)
    assert gpu_bench.main(["--tiny", "--out-dir", str(tmp_path)]) == 0
    (md,) = tmp_path.glob("gpu-stand-in-tiny-*.md")
    text = md.read_text()
    for wid in workloads.GPU_IDS:
        assert f"| {wid}: " in text
    assert "vs cupy-dense" in text and "device-copy" in text and "Failed" not in text


def test_runner_reads_pytest_benchmark_json():
    # bench/run.py's only input is pytest-benchmark's JSON with our extra_info: rows are scaled,
    # and of the floors measured at several thread counts the fastest is kept.
    from bench import run

    row = dict(workload="W6", workload_title="t", kind="baseline", method="splat-loop", rel_error=1e-7, scale=20.0,
               timed_part="first 5,000 kernels", first_call_s=None, note="", floor="")
    floor = dict(kind="floor", floor="write-fresh", workload="W6", bytes=4 << 20)
    data = {"benchmarks": [
        {"extra_info": row, "stats": {"median": 0.07, "min": 0.06, "rounds": 3, "iterations": 1}},
        {"extra_info": {**floor, "threads": 1}, "stats": {"median": 3e-4, "rounds": 30, "iterations": 1}},
        {"extra_info": {**floor, "threads": 2}, "stats": {"median": 2e-4, "rounds": 30, "iterations": 1}},
    ]}
    rows, floors = run.rows_and_floors(data)
    assert rows[0].median_s == pytest.approx(1.4) and rows[0].measured_median_s == 0.07
    assert rows[0].min_s == pytest.approx(1.2)
    assert len(floors) == 1 and floors[0].threads == 2 and floors[0].median_s == 2e-4


def test_ab_times_two_checkouts_in_alternating_processes(capsys):
    from bench import ab

    assert ab.main(["W2", str(ROOT), "--rounds", "1"]) == 0
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("W2")]
    this, other, ratio = map(float, row[1:])
    assert this > 0 and other > 0 and abs(ratio - this / other) < 1e-3


def test_ab_interleaved_times_two_checkouts_in_one_process(capsys):
    from bench import ab

    assert ab.main(["W2", str(ROOT), "--interleaved", "--rounds", "2"]) == 0
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("W2")]
    this, other, ratio = map(float, row[1:4])
    low, high = map(float, row[4].strip("()").split("-"))
    assert this > 0 and other > 0 and low <= ratio <= high


def test_helper_ratio_times_a_helper_against_its_bare_render(capsys):
    result = helper_ratio.helper_ratio("W8", rounds=2, tiny=True)
    assert result["bare_s"] > 0 and result["helper_s"] > 0
    assert result["quartiles"][0] <= result["ratio"] <= result["quartiles"][1]
    with pytest.raises(ValueError, match="no target helper"):
        helper_ratio.helper_ratio("W1", rounds=1, tiny=True)
    assert helper_ratio.main(["W10", "--rounds", "1", "--tiny"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("W10")
