"""The Numba backend's compiled paths: what a call compiles, the relative flush of tiny kernels, the
on-disk cache and its fallback locations, and ``gaussheat warmup`` / ``gaussheat info``.

Cache and compile-count checks run in new processes with their own empty ``NUMBA_CACHE_DIR`` (or
none), so they see what a user's first call sees.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gaussheat_gpu as gh

pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parents[1]


def run_python(script, env=None, cwd=ROOT, timeout=600):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def fresh_env(tmp_path, **extra):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# -- (1) a call compiles only its path -----------------------------------------------------------

COMPILED_SCRIPT = """
    import json, numpy as np, gaussheat_gpu as gh
    from gaussheat_gpu.backends.numba import bands, calls, dense, planning, rotated, tiles
    case = {case!r}
    if case == "axis":
        k = gh.Kernels(x=[256, 260], y=[256, 250], sigma_x=[20, 40], sigma_y=[20, 80])
        gh.render(k, (512, 512), backend="numba", combine="por", truncate=None)
    else:
        k = gh.Kernels(x=[10.0, 20.0], y=[12.0, 5.0], sigma_x=[2.0, 3.0], sigma_y=[1.0, 4.0], theta=[0.4, 1.0])
        gh.render(k, (30, 40), backend="numba")
    functions = dict(separable=bands.set_pair_rows, prepare_separable=bands.prepare_separable,
                     rotated=rotated.prepare_rotated, dense=dense._panel_task, chunks=calls.run_tasks,
                     bands=tiles.render_bands, range=tiles.render_task, rows=planning.plan_chunk,
                     task=planning.plan_task, binning=tiles.bin_kernels)
    print(json.dumps({{name: len(f.signatures) for name, f in functions.items()}}))
"""


@pytest.mark.parametrize("case", ["axis", "rotated"])
def test_a_call_compiles_only_its_path(tmp_path, case):
    # The seed (axis-aligned kernels) never compiles the rotated visits, nor rotated kernels the
    # separable rows; neither compiles the dense product, the parallel planner or (small plans of
    # one image) the binning.
    result = run_python(COMPILED_SCRIPT.format(case=case), env=fresh_env(tmp_path))
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["bands"] == 1 and counts["range"] == 1 and counts["rows"] == 1
    assert counts["dense"] == 0 and counts["chunks"] == 0 and counts["task"] == 0 and counts["binning"] == 0
    if case == "axis":
        assert counts["separable"] == 1 and counts["prepare_separable"] == 1 and counts["rotated"] == 0
    else:
        assert counts["rotated"] == 1 and counts["separable"] == 0 and counts["prepare_separable"] == 0


# -- (2) the flush is relative to each kernel's peak --------------------------------------------------

@pytest.mark.parametrize("amplitude", [1e-37, 1e-30, 1e-20, 1.0, 1e20])
@pytest.mark.parametrize("path", ["axis", "rotated", "dense"])
def test_float32_results_keep_their_accuracy_for_any_amplitude(amplitude, path):
    # Tiny kernels are written (as subnormals where they must be), not flushed whole: float32
    # results stay within 1e-5 of max|reference| whatever the scale of the amplitudes.
    rng = np.random.default_rng(21)
    n, shape = (3, (1024, 1024)) if path == "dense" else (12, (90, 120))
    sigma = (150.0, 300.0) if path == "dense" else (1.0, 9.0)
    kernels = gh.Kernels(x=rng.uniform(0, shape[1], n), y=rng.uniform(0, shape[0], n),
                         sigma_x=rng.uniform(*sigma, n), sigma_y=rng.uniform(*sigma, n),
                         theta=rng.uniform(0.2, 1.2, n) if path == "rotated" else 0.0,
                         amplitude=amplitude * rng.uniform(0.5, 1.0, n))
    checked = 0
    for normalize in ("peak", "pdf", "count"):
        options = dict(normalize=normalize, truncate=None if path == "dense" else 4.0)
        expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
        actual = gh.render(kernels, shape, backend="numba", dtype="float32", **options)
        scale = np.abs(expected).max()
        assert scale > 0
        if scale < 1e-39:  # float32's smallest step, 1.4e-45, is more than 1e-5 of such a maximum
            continue
        assert np.abs(actual.astype(np.float64) - expected).max() <= 1e-5 * scale, (normalize, scale)
        checked += 1
    assert checked >= 1


def test_normal_kernels_still_write_no_subnormals():
    # The relative flush only applies to kernels whose peak is itself near float32's smallest
    # normal number: ordinary kernels' far tails are still flushed, never written as subnormals.
    kernels = gh.Kernels(x=[100.0, 30.0], y=[80.0, 150.0], sigma_x=[3.0, 2.0], sigma_y=[5.0, 4.0], theta=[0.0, 0.7])
    out = gh.render(kernels, (200, 200), backend="numba", normalize="peak", truncate=None)
    assert not ((out != 0) & (np.abs(out) < np.finfo(np.float32).tiny)).any()


# -- (3) the cache: warm processes load, read-only installs fall back --------------------------------

FIRST_CALL_SCRIPT = """
    import json, gaussheat_gpu as gh
    from gaussheat_gpu.backends.numba import cache, tiles
    k = gh.Kernels(x=[20.0], y=[12.0], sigma_x=[3.0], sigma_y=[2.0])
    gh.render(k, (30, 40), backend="numba")
    print(json.dumps(dict(location=cache.location(), hits=sum(tiles.render_task.stats.cache_hits.values()),
                          misses=sum(tiles.render_task.stats.cache_misses.values()))))
"""


def first_call(env, cwd=ROOT, prelude=""):
    result = run_python(prelude + textwrap.dedent(FIRST_CALL_SCRIPT), env=env, cwd=cwd)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_second_process_loads_from_the_cache(tmp_path):
    env = fresh_env(tmp_path)
    cold, _ = first_call(env)
    warm, _ = first_call(env)
    assert cold["location"].startswith(str(tmp_path / "numba-cache"))
    assert cold["misses"] == 1 and cold["hits"] == 0
    assert warm["hits"] == 1 and warm["misses"] == 0


WARM_PATHS_SCRIPT = """
    import json, sys, numpy as np, gaussheat_gpu as gh
    from gaussheat_gpu import targets, workloads
    outputs = {{wid: workloads.build(wid, True).render(backend="numba") for wid in ("W1", "W4", "W6")}}
    dense = gh.Kernels(x=[30.0, 50.0], y=[20.0, 40.0], sigma_x=[40.0, 60.0], sigma_y=[30.0, 50.0])
    outputs["dense"] = gh.render(dense, (256, 256), backend="numba", truncate=None)
    rng = np.random.default_rng(5)
    many = gh.Kernels(x=rng.uniform(0, 64, 5000), y=rng.uniform(0, 48, 5000), sigma_x=1.5, theta=rng.uniform(0, 3, 5000))
    outputs["chunked planner"] = gh.render(many, (48, 64), backend="numba")  # more than planning.CHUNK kernels
    heads = rng.uniform(0, 60, (40, 2))
    outputs["density"] = targets.density_map(heads, (64, 64), sigma="adaptive", backend="numba")
    registries = "numba.np.arraymath" in sys.modules  # what Numba's target context refresh imports
    if {check!r}:
        saved = np.load({path!r})
        same = {{name: bool(np.array_equal(saved[name], value)) for name, value in outputs.items()}}
        # A path the cache does not hold is compiled, in a process that loaded others without the registries.
        kernels = gh.Kernels(x=[4.0, 9.5], y=[3.0, 7.0], sigma_x=[1.5, 2.0], theta=[0.0, 0.7])
        fresh = gh.render(kernels, (12, 16), backend="numba", dtype="float64", combine="max")
        reference = gh.render(kernels, (12, 16), backend="numpy", dtype="float64", combine="max")
        print(json.dumps(dict(registries=registries, same=same, fresh_error=float(np.abs(fresh - reference).max()))))
    else:
        np.savez({path!r}, **outputs)
        print(json.dumps(dict(registries=registries)))
"""


def test_code_loaded_from_the_cache_runs_without_numbas_registries(tmp_path):
    # Loading cached code skips Numba's refresh of its implementation registries (0.14 s of a first
    # call with a warm cache); the loaded code renders the very bits it rendered when compiled.
    env, path = fresh_env(tmp_path), str(tmp_path / "outputs.npz")
    cold = json.loads(run_python(WARM_PATHS_SCRIPT.format(check=False, path=path), env=env).stdout.splitlines()[-1])
    warm = json.loads(run_python(WARM_PATHS_SCRIPT.format(check=True, path=path), env=env).stdout.splitlines()[-1])
    assert cold["registries"]  # compiling loads them
    assert not warm["registries"]
    assert all(warm["same"].values()), warm["same"]
    assert warm["fresh_error"] <= 1e-12


def read_only_copy(tmp_path):
    """A copy of the package whose own __pycache__ folders cannot be created (a file stands in
    their place; root can write anywhere, so permissions would not do)."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "gaussheat_gpu", site / "gaussheat_gpu", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in [site / "gaussheat_gpu", *[p for p in (site / "gaussheat_gpu").rglob("*") if p.is_dir()]]:
        (folder / "__pycache__").write_text("not a folder")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file: nothing can be created below it")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", HOME=str(blocked / "home"),
               XDG_CACHE_HOME=str(blocked / "cache"))
    return env, blocked


def test_read_only_install_falls_back_to_the_temporary_folder(tmp_path):
    env, _ = read_only_copy(tmp_path)
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    cold, stderr = first_call(env, cwd=tmp_path)
    assert "CacheWarning" not in stderr
    assert cold["location"].startswith(str(tmp_path / "tmp" / "gaussheat_gpu-numba-"))
    warm, _ = first_call(env, cwd=tmp_path)
    assert warm["hits"] == 1 and warm["misses"] == 0


LOCATION_SCRIPT = """
import json
from gaussheat_gpu.backends.numba import cache, tiles
print(json.dumps(dict(location=cache.location(), entries=len(cache.valid_entries(tiles.render_task)))))
"""


def cache_location(env, cwd):
    """Where the backend would cache (decided when it is imported), and how many cached
    specialisations of the band renderer a call could load; nothing is compiled."""
    return json.loads(run_python(LOCATION_SCRIPT, env=env, cwd=cwd).stdout.strip().splitlines()[-1])


def test_read_only_install_uses_the_user_cache_folder_first(tmp_path):
    env, _ = read_only_copy(tmp_path)
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    assert cache_location(env, tmp_path)["location"].startswith(str(tmp_path / "xdg" / "numba"))


def test_no_writable_location_compiles_without_a_cache_and_says_so(tmp_path):
    env, blocked = read_only_copy(tmp_path)
    # tempfile falls back to /tmp when $TMPDIR is unusable: the process sees a blocked one instead.
    prelude = f"import tempfile; tempfile.gettempdir = lambda: {str(blocked / 'tmp')!r}\n"
    cold, stderr = first_call(env, cwd=tmp_path, prelude=prelude)
    assert cold["location"] is None and cold["hits"] == 0
    assert "CacheWarning" in stderr and "Set NUMBA_CACHE_DIR to a writable folder" in stderr
    assert not list(tmp_path.rglob("*.nbi"))  # nothing cached anywhere


def test_cache_entries_follow_every_backend_source(tmp_path):
    # A cached function holds the code of the callees it was compiled with: a changed callee in
    # another file must make it compile again (Numba alone only checks the function's own file).
    env, _ = read_only_copy(tmp_path)
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    first_call(env, cwd=tmp_path)
    assert cache_location(env, tmp_path)["entries"] == 1
    factors = tmp_path / "site" / "gaussheat_gpu" / "backends" / "numba" / "factors.py"
    factors.write_text(factors.read_text() + "\n# changed\n")
    assert cache_location(env, tmp_path)["entries"] == 0


# -- (4) gaussheat warmup and gaussheat info ---------------------------------------------------------

def cli(*args, env):
    result = subprocess.run([sys.executable, "-m", "gaussheat_gpu", *args], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GAUSSHEAT_SLOW_TESTS"), reason="compiles every path (~1 min on 2 cores): "
                    "set GAUSSHEAT_SLOW_TESTS=1")
def test_warmup_all_makes_every_path_warm(tmp_path):
    env = fresh_env(tmp_path)
    before = cli("info", env=env)
    assert "float32: cold" in before and "float64: cold" in before and "gaussheat warmup --all" in before
    text = cli("warmup", "--all", env=env)
    from gaussheat_gpu.backends.numba import warmup

    for path in warmup.PATHS:
        assert text.count(path) == 2  # one line per dtype
    for name in warmup.HELPERS:
        assert text.count(name) == 1 and f"{name}: cold" in before
    after = cli("info", env=env)
    assert "float32: warm" in after and "float64: warm" in after
    assert all(f"{name}: warm" in after for name in warmup.HELPERS) and "warmup --all" not in after
    assert str(tmp_path / "numba-cache") in after


def test_info_reports_the_paths_a_render_cached(tmp_path):
    env = fresh_env(tmp_path)
    run_python("""
        import gaussheat_gpu as gh
        gh.render(gh.Kernels(x=[20.0], y=[12.0], sigma_x=[3.0], sigma_y=[2.0]), (30, 40), backend="numba")
    """, env=env)
    script = """
        import json
        from gaussheat_gpu.backends.numba import warmup
        print(json.dumps([[path, dtype] for (path, dtype), cached in warmup.cache_status().items() if cached]))
    """
    cached = json.loads(run_python(script, env=env).stdout.strip().splitlines()[-1])
    assert cached == [["bands, axis-aligned kernels", "float32"]]
    text = cli("info", env=env)
    assert "float32: cold for bands, rotated kernels" in text and "float64: cold" in text


def test_info_judges_each_path_by_the_entry_that_runs_its_tasks(tmp_path):
    # The dense product and density_map both run their tasks through calls.run_tasks, compiled
    # once for each type of the tasks' shared arguments: without the dense product's entry, that
    # path is cold though its tasks and density_map's entry are cached.
    script = """
        import json, numpy as np, gaussheat_gpu as gh
        from gaussheat_gpu import targets
        from gaussheat_gpu.backends.numba import cache, calls, dense, warmup
        side = int(dense.DENSE_MIN_PIXELS ** 0.5) + 1
        gh.render(gh.Kernels(x=[side / 2], y=[side / 2], sigma_x=[side], sigma_y=[side]), (side, side),
                  backend="numba", truncate=None)
        points = np.array([[5.0, 5.0], [9.0, 7.0], [20.0, 12.0], [3.0, 30.0]])
        targets.density_map(points, (40, 40), sigma="adaptive", border="constant", backend="numba")
        paths = [("dense product", "float32"), ("density_map: k-NN, window sums", "any")]
        status = warmup.cache_status()
        entries = cache.valid_entries
        dense_shared = {tuple(key[0][1:]) for key in entries(dense._factor_task)}
        cache.valid_entries = lambda f: [key for key in entries(f)
                                         if f is not calls.run_tasks or tuple(key[0][2]) not in dense_shared]
        without = warmup.cache_status()
        print(json.dumps([[status[path] for path in paths], [without[path] for path in paths]]))
    """
    result = json.loads(run_python(script, env=fresh_env(tmp_path)).stdout.strip().splitlines()[-1])
    assert result == [[True, True], [False, True]]


@pytest.mark.parametrize("shape", [(5, 1), (40, 30), (1024, 1024)])
def test_kernels_whose_factors_all_underflow_write_nothing(shape):
    # Untruncated, far outside the image: every column factor is 0 in float64 (the kernel's peak
    # over its box is 0). It renders nothing, and the other kernels are rendered as usual; the
    # last shape takes the dense path.
    wide = 300.0 if shape[0] > 100 else 3.0
    kernels = gh.Kernels(x=[-5000.0, shape[1] / 2], y=[2.0, shape[0] / 2], sigma_x=[0.3, wide], sigma_y=[2.0, wide])
    for dtype in ("float32", "float64"):
        expected = gh.render(kernels, shape, backend="numpy", dtype="float64", truncate=None)
        actual = gh.render(kernels, shape, backend="numba", dtype=dtype, truncate=None)
        assert np.abs(expected).max() > 0
        tolerance = 1e-5 if dtype == "float32" else 1e-12
        assert np.abs(actual - expected).max() <= tolerance * np.abs(expected).max()


# -- (5) calls by address ------------------------------------------------------------------------------

def test_tasks_called_by_address_on_the_threads_give_the_direct_results():
    import numba

    from gaussheat_gpu.backends.numba import calls

    def prefix_sum(task, values, scale, skip, results, seen):
        total = 0.0
        for i in range(task + 1):
            if skip is None or i != skip:
                total += values[i]
        results[task] = total * scale
        seen[task] += 1
        return np.int64(0)

    callee = numba.njit(no_cpython_wrapper=True)(prefix_sum)  # a C entry point only, as by_address gives

    @numba.njit
    def run(address, n_tasks, values, scale, skip, results, seen):
        return calls.parallel_calls(address, n_tasks, (values, scale, skip, results, seen))

    values = np.random.default_rng(2).uniform(0, 100, 1000)
    threads, chunk_size = numba.get_num_threads(), numba.get_parallel_chunksize()
    try:
        for skip in (None, 3):
            results, seen = np.zeros(values.size), np.zeros(values.size, dtype=np.int64)
            found = calls.address(callee, (0, values, 2.5, skip, results, seen))
            assert found == calls.address(callee, (5, values[:5], 1.0, skip, results, seen))  # the same types
            # Fewer tasks than threads and many more; one thread; chunks of 3 tasks (a thread then
            # runs several rows of the schedule). The caller's chunk size is restored.
            for n_tasks, n_threads, chunk in ((0, threads, 0), (1, threads, 0), (7, threads, 0), (1000, threads, 0),
                                              (1000, 1, 0), (1000, threads, 3), (-5, threads, 0)):
                numba.set_num_threads(n_threads)
                numba.set_parallel_chunksize(chunk)
                results[:], seen[:] = 0.0, 0
                assert run(found, n_tasks, values, 2.5, skip, results, seen) == 0
                assert numba.get_parallel_chunksize() == chunk
                n_run = max(n_tasks, 0)
                assert seen.tolist() == [1] * n_run + [0] * (values.size - n_run)  # each task once
                expected = [0.0] * values.size
                for task in range(n_run):
                    prefix_sum(task, values, 2.5, skip, expected, [0] * values.size)
                assert results.tolist() == expected
    finally:
        numba.set_num_threads(threads)
        numba.set_parallel_chunksize(chunk_size)
    assert len(callee.signatures) == 2  # one per type of skip


def test_calling_by_address_needs_a_c_entry_point():
    import numba

    from gaussheat_gpu.backends.numba import calls

    python_only = numba.njit(no_cfunc_wrapper=True)(lambda values: np.int64(values.size))
    with pytest.raises(TypeError, match="has no C entry point"):
        calls.address(python_only, (np.zeros(3),))


# -- (6) helpers kept as LLVM IR ----------------------------------------------------------------------

def test_helpers_are_compiled_only_inside_their_callers():
    import numba

    from gaussheat_gpu.backends.numba import cache, linking

    assert linking.supported(), "this Numba lacks what linking.IRLibrary overrides: helpers compile in full"

    @cache.jit
    def checked_square(x):
        if x < 0.0:
            raise ValueError("negative value")
        return x * x

    @cache.jit(forceinline=True)
    def half(x):
        return 0.5 * x

    @numba.njit
    def total(values):
        result = 0.0
        for value in values:
            result += half(checked_square(value))
        return result

    values = np.array([1.0, 2.0, 3.5])
    assert total(values) == sum(0.5 * value * value for value in values)
    with pytest.raises(ValueError, match="negative value"):  # raised inside a helper, reaches Python
        total(np.array([1.0, -2.0]))
    for helper in (checked_square, half):
        (compiled,) = helper.overloads.values()
        assert isinstance(compiled.library, linking.IRLibrary)
        assert compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name) == 0  # no machine code
        assert not isinstance(helper._cache, numba.core.caching.FunctionCache)  # nothing cached on disk
    (compiled,) = total.overloads.values()
    assert not isinstance(compiled.library, linking.IRLibrary)


# -- (7) the garbage collector during compiles -----------------------------------------------------

def _compile_counting_frozen(function, module="gaussheat_gpu.backends.numba.probe"):
    """Compile ``function`` (as a function of ``module``) and return the number of frozen objects a
    listener registered after the backend's saw when the compile began."""
    import gc

    import numba
    from numba.core import event

    from gaussheat_gpu.backends.numba import collector

    seen = []

    class Record(event.Listener):
        def on_start(self, ev):
            seen.append(gc.get_freeze_count())

        def on_end(self, ev):
            pass

    function.__module__ = module
    listener = Record()
    event.register("numba:compile", listener)
    try:
        numba.njit(function)(1.0)
    finally:
        event.unregister("numba:compile", listener)
        assert collector.LISTENER.depth == 0
    return seen[0]


def test_objects_older_than_a_compile_of_the_backend_are_frozen_only_while_it_runs():
    import gc

    import numba

    from gaussheat_gpu.backends.numba import cache  # noqa: F401  (registers the listener)

    def ours(x):
        return x + 1.0

    def theirs(x):
        return x - 1.0

    def broken(x):
        return x + "text"

    assert gc.get_freeze_count() == 0
    assert _compile_counting_frozen(ours) > 1000  # everything the process held when it began
    assert gc.get_freeze_count() == 0  # unfrozen when it ended
    assert _compile_counting_frozen(theirs, module="someone_else.kernels") == 0  # other code's compiles: untouched
    with pytest.raises(numba.core.errors.TypingError):
        _compile_counting_frozen(broken)
    assert gc.get_freeze_count() == 0  # unfrozen when the compile failed too


def test_a_process_that_froze_objects_or_disabled_the_collector_keeps_them_so():
    import gc

    from gaussheat_gpu.backends.numba import cache  # noqa: F401  (registers the listener)

    def first(x):
        return x * 2.0

    def second(x):
        return x * 3.0

    gc.freeze()  # as a pre-fork server does
    try:
        frozen = gc.get_freeze_count()
        assert _compile_counting_frozen(first) == frozen
        # Its objects still frozen, not unfrozen by the compile (a few freed by their reference counts).
        assert frozen * 0.99 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        assert _compile_counting_frozen(second) == 0
    finally:
        gc.enable()
