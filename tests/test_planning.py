"""The planner's two evaluations of one set of formulas: NumPy arrays, and the compiled host loop.

``make_plan(compiled=True)`` (what the Numba backend asks for) must give the same bits as the array
code that plans for NumPy and CuPy, and fail with the same errors; these tests pin that on random
inputs, with rotated and axis-aligned kernels, reversed extents, exact and truncated supports,
kernels outside the image and bad image or por values.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussheat_gpu as gh
from gaussheat_gpu import planning
from gaussheat_gpu.planning import make_grid, make_plan

from strategies import render_cases

pytest.importorskip("numba")
from gaussheat_gpu.backends.numba import calls  # noqa: E402
from gaussheat_gpu.backends.numba import planning as numba_planning  # noqa: E402


def plans(kernels, shape, options, **extra):
    """The same plan made by the array code and by the compiled loop."""
    grid = make_grid(shape, options.get("extent"))
    modes = {k: v for k, v in options.items() if k != "extent"}
    return (make_plan(kernels, grid, compiled=False, **modes, **extra),
            make_plan(kernels, grid, compiled=True, **modes, **extra))


def assert_same_plan(array_plan, compiled_plan):
    for name in ("params", "boxes", "kernel_index"):
        expected, actual = getattr(array_plan, name), getattr(compiled_plan, name)
        assert actual.dtype == expected.dtype and actual.flags.c_contiguous
        np.testing.assert_array_equal(actual, expected, strict=True, err_msg=name)
    assert compiled_plan.axis_aligned == array_plan.axis_aligned


@settings(max_examples=150, deadline=None)
@given(render_cases(max_kernels=30))
def test_compiled_tables_have_the_array_codes_bits(case):
    kernels, shape, options = case
    assert_same_plan(*plans(kernels, shape, options))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([None, 0.5, 3.0]), st.booleans())
def test_bits_agree_on_many_kernels_mostly_outside_the_image(seed, truncate, rotated):
    rng = np.random.default_rng(seed)
    n = 400
    theta = rng.uniform(-4, 4, n) * (rng.random(n) < 0.7) if rotated else 0.0
    kernels = gh.Kernels(rng.uniform(-60, 90, n), rng.uniform(-60, 100, n), 10.0 ** rng.uniform(-2, 2, n),
                         10.0 ** rng.uniform(-2, 2, n), theta, rng.uniform(-2, 2, n), rng.integers(0, 3, n))
    options = dict(truncate=truncate, extent=(-7.5, 31.25, 40.0, -3.0), normalize="peak")
    array_plan, compiled_plan = plans(kernels, (3, 45, 61), options)
    assert_same_plan(array_plan, compiled_plan)
    if truncate == 0.5:
        assert 0 < compiled_plan.n_kernels < n  # the case drops kernels, so packing is exercised


def test_exact_boxes_cover_the_whole_image():
    kernels = gh.Kernels(x=[-1e6, 3.0], y=[2.0, 1e40], sigma_x=[1e-3, 1.0])
    for compiled in (False, True):
        plan = make_plan(kernels, make_grid((5, 7)), truncate=None, compiled=compiled)
        assert plan.boxes[:, :4].tolist() == [[0, 6, 0, 4]] * 2


@pytest.mark.parametrize("case, message", [
    (dict(kernel=dict(image=[0, 3, 5]), shape=(2, 9, 9)), r"image\[1\] = 3 is out of range"),
    (dict(kernel=dict(theta=[0.0, 0.0, 0.4]), normalize="integral"), r"kernel 2 has theta = 0\.4"),
    (dict(kernel=dict(amplitude=[0.5, 1.5, 2.0]), normalize="peak", combine="por"),
     r"kernel 1 has amplitude = 1\.5 and peak value 1\.5"),
    (dict(kernel=dict(amplitude=[1.0, 30.0, -1.0]), combine="por"),
     rf"kernel 1 has amplitude = 30\.0 and peak value {30 / (2 * math.pi * 2 * 0.5):.6f}"),
    (dict(kernel=dict(amplitude=[1.0, 0.5, -1e-3]), normalize="count", combine="por"),
     r"kernel 2 has amplitude = -0\.001"),
])
def test_compiled_and_array_plans_refuse_bad_kernels_alike(case, message):
    columns = dict(x=[1.0, 2.0, 3.0], y=[1.0, 2.0, 3.0], sigma_x=2.0, sigma_y=[2.0, 0.5, 1.0])
    columns.update(case["kernel"])
    kernels = gh.Kernels(**columns)
    grid = make_grid(case.get("shape", (9, 9)))
    modes = {k: v for k, v in case.items() if k in ("normalize", "combine")}
    for compiled in (False, True):
        with pytest.raises(ValueError, match=message):
            make_plan(kernels, grid, compiled=compiled, **modes)


@pytest.mark.parametrize("column, bad, modes, message", [
    ("image", 2, {}, r"image\[{k}\] = 2 is out of range"),
    ("theta", 0.25, dict(normalize="integral"), r"kernel {k} has theta = 0\.25"),
    ("amplitude", 7.0, dict(combine="por", normalize="peak"), r"kernel {k} has amplitude = 7\.0"),
])
def test_parallel_pass_reports_the_first_bad_kernel_of_any_chunk(column, bad, modes, message):
    n = 3 * numba_planning.CHUNK
    columns = dict(x=np.full(n, 5.0), y=5.0, sigma_x=1.0, sigma_y=2.0, amplitude=0.5)
    values = np.zeros(n) if column != "amplitude" else np.full(n, 0.5)
    first = numba_planning.CHUNK + 17  # in the second chunk; the third has one too
    values[[first, 2 * numba_planning.CHUNK + 3]] = bad
    columns[column] = values.astype(np.int64) if column == "image" else values
    kernels = gh.Kernels(**columns)
    for compiled in (False, True):
        with pytest.raises(ValueError, match=message.format(k=first)):
            make_plan(kernels, make_grid((2, 9, 9)), compiled=compiled, **modes)


def test_first_failed_check_wins_in_a_fixed_order():
    # Kernel 2 has a bad image index, kernel 0 a rotation under integral: the image error comes first.
    kernels = gh.Kernels(x=[1.0, 2, 3], y=1.0, sigma_x=1.0, sigma_y=2.0, theta=[0.3, 0, 0], image=[0, 0, 4])
    for compiled in (False, True):
        with pytest.raises(ValueError, match=r"image\[2\] = 4"):
            make_plan(kernels, make_grid((2, 5, 5)), normalize="integral", compiled=compiled)


def random_kernels(seed, n, off_image=0.0):
    """``n`` kernels on a 50 x 30 grid, half of them rotated, a share ``off_image`` far outside it."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(n) < off_image, 1e4, rng.uniform(-10, 60, n))
    return gh.Kernels(x, rng.uniform(-10, 40, n), rng.uniform(0.3, 5, n), rng.uniform(0.3, 5, n),
                      rng.uniform(-3, 3, n) * (rng.random(n) < 0.5), rng.uniform(0, 1, n), rng.integers(0, 2, n))


def test_compiled_loop_runs_as_python_too(monkeypatch, helpers_as_python):
    """The loop bodies as plain Python (as NUMBA_DISABLE_JIT runs them) give the compiled tables; with
    chunks of 7 kernels, the parallel pass packs rows across chunks and keeps the first failed checks."""
    kernels = random_kernels(4, 50, off_image=0.3)
    grid = make_grid((2, 30, 50), extent=(0, 10, 7.5, -1))
    compiled = numba_planning.plan_tables(kernels, grid, 2.5, "count")
    columns = (kernels.x, kernels.y, kernels.sigma_x, kernels.sigma_y, kernels.amplitude)
    trig = (np.empty(0), np.empty(0))
    inputs = (columns, kernels.image, kernels.theta, trig, numba_planning.LIBM_TRIG)
    setup = ((grid.x0, grid.dx, grid.y0, grid.dy), (2, 30, 50), (2.5, np.empty(0)), planning.NORMALIZE_CODES["count"])
    monkeypatch.setattr(numba_planning, "CHUNK", 7)
    # Their callees as Python too (and by address: the parallel pass is given the Python function).
    helpers_as_python(numba_planning)
    monkeypatch.setattr(calls, "run_tasks", calls.parallel_calls_python)
    monkeypatch.setattr(numba_planning, "plan_task", numba_planning.plan_task.py_func)
    monkeypatch.setattr(calls, "address", lambda function, args, varying=None: function)
    for run in (numba_planning.plan_chunk, numba_planning.plan_chunks):
        tables = (np.empty((50, 10)), np.empty((50, 5), np.int64), np.empty(50, np.int64))
        if run is numba_planning.plan_chunk:
            kept, checks, any_rotated = run(inputs, setup, tables, 0, 50)
            tables = tuple(table[:kept] for table in tables)
        else:
            tables, checks, any_rotated = run(inputs, setup, tables)
        assert 0 < tables[0].shape[0] < 50
        for table, expected in zip(tables, (compiled.params, compiled.boxes, compiled.kernel_index)):
            np.testing.assert_array_equal(table, expected, strict=True)
        assert checks == (-1, compiled.first_rotated, compiled.first_bad_por) and any_rotated


@pytest.mark.parametrize("trig_from_numpy", [False, True])
def test_parallel_pass_packs_many_chunks_with_the_array_codes_bits(monkeypatch, trig_from_numpy):
    """Past CHUNK kernels the compiled pass runs chunks in parallel and packs the kept rows; NumPy's
    cos/sin are read instead of the C library's where the probe finds them different."""
    if trig_from_numpy:
        monkeypatch.setattr(numba_planning, "libm_trig_matches_numpy", lambda: False)
    kernels = random_kernels(5, 5 * numba_planning.CHUNK + 123, off_image=0.4)
    array_plan, compiled_plan = plans(kernels, (2, 30, 50), dict(normalize="count", truncate=2.5))
    assert_same_plan(array_plan, compiled_plan)
    assert 0.2 < compiled_plan.n_kernels / len(kernels) < 0.6  # rows from every chunk moved down


def test_trig_probe_catches_an_ulp(monkeypatch):
    class OneUlpOff:  # NumPy, but cos one ulp up, as a vectorised cos gives on some angles
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def cos(angles):
            return np.nextafter(np.cos(angles), np.inf)

    monkeypatch.setattr(numba_planning, "np", OneUlpOff())
    assert not numba_planning.libm_trig_matches_numpy.__wrapped__()


def test_compiled_tables_can_live_in_a_workspace():
    from gaussheat_gpu._workspace import Workspace

    workspace = Workspace()
    kernels = random_kernels(6, 20_000)
    grid = make_grid((2, 30, 50))
    fresh = make_plan(kernels, grid, compiled=True)
    reused = make_plan(kernels, grid, compiled=True, workspace=workspace)
    assert_same_plan(fresh, reused)
    again = make_plan(random_kernels(7, 19_000), grid, compiled=True, workspace=workspace)
    assert np.shares_memory(again.params, reused.params)  # the second plan took the first one's memory


def test_numba_backend_plans_compiled_and_numpy_backend_does_not(monkeypatch):
    seen = []
    original = numba_planning.plan_tables
    monkeypatch.setattr(numba_planning, "plan_tables", lambda *a: seen.append(a) or original(*a))
    kernels = gh.Kernels(x=[3.0], y=[4.0], sigma_x=1.5)
    numba_out = gh.render(kernels, (8, 9), backend="numba")
    assert len(seen) == 1
    numpy_out = gh.render(kernels, (8, 9), backend="numpy")
    assert len(seen) == 1
    np.testing.assert_allclose(numba_out, numpy_out, rtol=0, atol=1e-5 * numpy_out.max())
